package main

import (
	"fmt"
	"io"
)

func cli(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fmt.Fprintln(stderr, "not yet")
	return 2
}
