package kube

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/kubeagent"
	"github.com/clawker/clawker/internal/testenv"
)

// TestGateRefusesAPodOnAReusedIP: an agent pod is deleted and another
// pod gets its IP, holding a cert (and a fresh assertion) for the gone
// pod. The CP's informer may still map that IP to the old pod, whose UID
// the cert names; the lookup's GET finds it gone and the fresh LIST finds
// the new pod, so the cert is refused: no Register, no exec.
func TestGateRefusesAPodOnAReusedIP(t *testing.T) {
	ipam := os.Getenv("CLAWKER_KUBE_IPAM_DIR")
	if ipam == "" {
		testenv.Unavailable(t, "CLAWKER_KUBE_IPAM_DIR unset: re-run scripts/kube-up.sh and source its env")
	}
	c := setup(t)
	ns := c.namespace(t)
	p := startCP(t, c, ns)
	ctx := context.Background()
	ca, signer := loadSigners(t, p.keys())
	pods := c.kube.CoreV1().Pods(ns)

	victim, err := kubeagent.Create(ctx, kubeagent.Clients{Core: c.kube.CoreV1(), Networking: c.kube.NetworkingV1()}, ca, signer, agentSpec(t, ns, p, "victim"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	victimID := auth.PodWorkloadID(string(victim.UID))
	testenv.Eventually(t, 3*time.Minute, "victim registered", func() error {
		agents, err := p.api().agents(ctx)
		if err != nil {
			return err
		}
		if a := agents[victimID]; a == nil || !a.GetRegistered() || !a.GetTrusted() {
			return fmt.Errorf("victim: %v; pod: %s", a, c.podStatus(ctx, ns, victim.Name))
		}
		return nil
	})
	ip, err := netip.ParseAddr(c.podIP(t, ns, victim.Name))
	if err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	if err := pods.Delete(ctx, victim.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, time.Minute, "victim's pod gone", func() error {
		if _, err := pods.Get(ctx, victim.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	// The API drops a pod deleted with no grace before the kubelet's CNI
	// DEL frees its address: until host-local's file for it is gone, the
	// next pod would get the address after it.
	testenv.Eventually(t, time.Minute, "the victim's IP released", func() error {
		if _, err := os.Stat(filepath.Join(ipam, ip.String())); !os.IsNotExist(err) {
			return fmt.Errorf("%s still reserved (%v)", ip, err)
		}
		return nil
	})
	// host-local hands out the address after the last one it reserved:
	// with the victim's predecessor recorded, the next pod gets its IP.
	if err := os.WriteFile(filepath.Join(ipam, "last_reserved_ip.0"), []byte(ip.Prev().String()), 0o644); err != nil {
		t.Fatal(err)
	}
	pod, err := kubeagent.Pod(agentSpec(t, ns, p, "heir"))
	if err != nil {
		t.Fatal(err)
	}
	heir := impostor(t, c, ns, pod, ca, signer, "victim", string(victim.UID))
	heirID := auth.PodWorkloadID(string(heir.UID))
	testenv.Eventually(t, 2*time.Minute, "the heir running", func() error {
		if got := c.podIP(t, ns, heir.Name); got == "" {
			return fmt.Errorf("no IP yet: %s", c.podStatus(ctx, ns, heir.Name))
		}
		return nil
	})
	if got := c.podIP(t, ns, heir.Name); got != ip.String() {
		t.Fatalf("the heir got %s, not the victim's %s: the IP reuse this test needs did not happen", got, ip)
	}
	c.awaitMismatch(t, p, ns, heir)
	agents, err := p.api().agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a := agents[victimID]; a != nil && a.GetRegistered() {
		t.Fatalf("the victim's row outlived its pod: %v", a)
	}
	if a := agents[heirID]; a.GetRegistered() {
		t.Fatalf("the heir registered: %v", a)
	}
	if out, _, err := p.api().exec(ctx, heirID, "echo", "pwned"); err == nil || strings.Contains(out, "pwned") {
		t.Fatalf("exec in the heir ran: %q %v", out, err)
	}
	if out, _, err := p.api().exec(ctx, victimID, "echo", "pwned"); err == nil || strings.Contains(out, "pwned") {
		t.Fatalf("exec by the victim's ID reached the heir: %q %v", out, err)
	}
	if n := p.api().metric(t, "clawker_cp_registrations_total", `{outcome="ok",reason=""}`); n != 1 {
		t.Fatalf("%v Registers ok; want only the victim's", n)
	}
}
