// Command imaginebot runs the image bot and its operator tools.
package main

import "os"

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}
