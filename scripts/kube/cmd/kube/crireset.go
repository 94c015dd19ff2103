package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// runCRIReset stops and removes every pod sandbox of a CRI runtime, the way
// the kubelet would when pods go away. kube-down.sh runs it against the
// cluster's containerd after the kubelet is stopped: stopping a sandbox makes
// containerd kill its containers, run the CNI DEL (releasing the IP, the veth
// and the bridge plugin's iptables rules) and unmount the network namespace,
// so the teardown does not have to undo all of that by hand.
//
// Usage: kube cri-reset --endpoint unix:///path/to/containerd.sock
func runCRIReset() int {
	fs := flag.NewFlagSet("cri-reset", flag.ExitOnError)
	endpoint := fs.String("endpoint", "", "CRI endpoint, unix:///path.sock")
	timeout := fs.Duration("timeout", 60*time.Second, "overall deadline")
	_ = fs.Parse(os.Args[1:])
	if !strings.HasPrefix(*endpoint, "unix://") {
		fmt.Fprintln(os.Stderr, "cri-reset: --endpoint unix:///path.sock is required")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	conn, err := grpc.NewClient(*endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintf(os.Stderr, "cri-reset: %v\n", err)
		return 1
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)

	list, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "cri-reset: list sandboxes: %v\n", err)
		return 1
	}
	failed := 0
	for _, sb := range list.Items {
		name := sb.Id
		if md := sb.Metadata; md != nil {
			name = md.Namespace + "/" + md.Name
		}
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			fmt.Fprintf(os.Stderr, "cri-reset: stop %s: %v\n", name, err)
			failed++
			continue
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			fmt.Fprintf(os.Stderr, "cri-reset: remove %s: %v\n", name, err)
			failed++
			continue
		}
		fmt.Fprintf(os.Stderr, "cri-reset: removed pod sandbox %s\n", name)
	}
	if failed > 0 {
		return 1
	}
	return 0
}
