// Command fakenet is the e2e suite's fake internet and its client.
//
//	fakenet serve -zone a.test,b.test -ip 10.1.2.3 -ca /fakenet/ca.pem
//
// serves HTTPS on 443 and HTTP on 80 (both answer "fakenet <scheme>
// <method> <path>"), an ssh server on 22 (any user, no auth; each exec
// answers one line), and an
// authoritative DNS zone on 53 mapping every zone name to -ip; a
// WebSocket upgrade on either is answered with 101 and an echo. The
// client modes run inside agents and print one line; exit 0 = success.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fakenet serve|get|connect|dns|tcp|ws [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(fs, os.Args[2:])
	case "get":
		err = get(fs, os.Args[2:])
	case "connect":
		err = connect(fs, os.Args[2:])
	case "dns":
		err = query(fs, os.Args[2:])
	case "tcp":
		err = dialTCP(fs, os.Args[2:])
	case "ws":
		err = wsDial(fs, os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Println("FAIL", err)
		os.Exit(1)
	}
}
