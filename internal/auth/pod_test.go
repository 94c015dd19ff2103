package auth

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"
)

const (
	testPodUID  = "3f1c2b9a-7d4e-4c1a-9b2f-0e8d7c6b5a41"
	otherPodUID = "3f1c2b9a-7d4e-4c1a-9b2f-0e8d7c6b5a42"
)

func TestPodWorkloadIDIsAContainerIDPerUID(t *testing.T) {
	a, b := PodWorkloadID(testPodUID), PodWorkloadID(otherPodUID)
	if !IsContainerID(a) || !IsContainerID(b) {
		t.Fatalf("workload IDs %q %q are not 64-hex", a, b)
	}
	if a == b {
		t.Fatal("two pod UIDs derived one workload ID")
	}
	if a != PodWorkloadID(testPodUID) {
		t.Fatal("workload ID is not a function of the UID")
	}
}

func TestMintAgentPodBindsTheUID(t *testing.T) {
	now := time.Now()
	ca, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ca.MintAgentPod(mustProject(t, "proj"), mustName(t, "alpha"), testPodUID, now)
	if err != nil {
		t.Fatal(err)
	}
	uid, err := PodUIDFromCert(l.Cert)
	if err != nil || uid != testPodUID {
		t.Fatalf("PodUIDFromCert = %q, %v", uid, err)
	}
	cid, err := ContainerIDFromCert(l.Cert)
	if err != nil || cid != PodWorkloadID(testPodUID) {
		t.Fatalf("container SAN = %q, %v; want the pod's workload ID", cid, err)
	}
	if name, err := AgentFullNameFromCert(l.Cert); err != nil || name != "clawker.proj.alpha" {
		t.Fatalf("agent SAN = %q, %v", name, err)
	}
	if _, err := ca.MintAgentPod(mustProject(t, "proj"), mustName(t, "alpha"), "not-a-uid", now); err == nil {
		t.Fatal("minted a pod leaf for a malformed UID")
	}
}

func TestPodUIDFromCertRefusesMismatchedSANs(t *testing.T) {
	now := time.Now()
	ca, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	mint := func(uris ...string) *x509.Certificate {
		t.Helper()
		l, err := ca.Mint(LeafSpec{CommonName: "clawker-clawkerd", URIs: uris}, now)
		if err != nil {
			t.Fatal(err)
		}
		return l.Cert
	}
	agent := AgentURN("clawker.alpha").String()
	cases := map[string]*x509.Certificate{
		// The pod SAN names one pod, the container SAN binds another.
		"other pod's container SAN": mint(agent, ContainerURN(PodWorkloadID(otherPodUID)).String(), PodURN(testPodUID).String()),
		"two pod SANs": mint(agent, ContainerURN(PodWorkloadID(testPodUID)).String(),
			PodURN(testPodUID).String(), PodURN(otherPodUID).String()),
		"no container SAN": mint(agent, PodURN(testPodUID).String()),
		"malformed UID":    mint(agent, ContainerURN(PodWorkloadID("x")).String(), PodURN("x").String()),
	}
	for name, cert := range cases {
		if uid, err := PodUIDFromCert(cert); err == nil {
			t.Errorf("%s: accepted, uid %q", name, uid)
		}
	}
	docker := mint(agent, ContainerURN(testCID).String())
	if _, err := PodUIDFromCert(docker); !errors.Is(err, ErrNoPodSAN) {
		t.Fatalf("container leaf: err = %v, want ErrNoPodSAN", err)
	}
}
