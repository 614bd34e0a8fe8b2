// Command ttrpc-peer is the Go side of bunwasi's ttrpc interop tests and
// benchmarks. It speaks the Echo service (../echo.proto) through the real
// github.com/containerd/ttrpc library, as a server, as a scenario-driven
// client, or as a load generator.
package main

import (
	"fmt"
	"os"
)

const usage = `usage:
  ttrpc-peer server       -socket PATH
  ttrpc-peer client       -socket PATH -case NAME
  ttrpc-peer bench-client -socket PATH [-conns C] [-inflight N] [-duration 5s] [-size 1024] [-warmup 1s]
  ttrpc-peer cases        (list client case names)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "server":
		err = runServer(args)
	case "client":
		err = runClient(args)
	case "bench-client":
		err = runBench(args)
	case "cases":
		for _, name := range caseNames() {
			fmt.Println(name)
		}
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "unknown subcommand %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ttrpc-peer %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
