// Command etcd is the etcd server that backs the local cluster's
// kube-apiserver. It is built in its own module because etcd v3.6's server
// requires much newer grpc and OpenTelemetry releases than Kubernetes v1.34
// was built with; sharing one module (and so one version of each) with the
// kube binary risked breaking one or the other.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
