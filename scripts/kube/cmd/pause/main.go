// Command pause is the sandbox ("infra") container of every pod in the local
// cluster. containerd's CRI plugin starts it first in each pod so that the
// pod's namespaces have an owner; it must do nothing but wait.
//
// No image can be pulled on the CI machine, so kube-up.sh builds this program
// statically (CGO_ENABLED=0) and packs it alone into an image.
//
// When the pod shares one PID namespace this process is PID 1 there, so it
// also reaps orphaned children, as an init process must.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
