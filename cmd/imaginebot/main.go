// Command imaginebot runs the image bot and its operator tools.
package main

import (
	"os"

	// The zone database inside the binary: quotas.time_zone works on a
	// scratch or distroless image without /usr/share/zoneinfo.
	_ "time/tzdata"
)

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}
