package kubepods

import (
	"context"
	"maps"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/clawker/clawker/controlplane/dockerevents"
	"github.com/clawker/clawker/internal/auth"
)

// The feed turns pod transitions into the bus's container events, in the
// Docker action vocabulary every subscriber already understands. Like the
// Docker feeder, the first list only seeds the baseline: at boot
// agent.Start dials every running agent itself.

// podState is what the feed last saw of a pod.
type podState struct {
	running bool
	// instance changes when the kubelet restarts the container, so a
	// restart seen only through its result still reads as die + start.
	instance string
	labels   map[string]string
}

func stateOf(pod *corev1.Pod) podState {
	s := podState{running: running(pod), labels: eventLabels(pod, nil)}
	if cs := agentContainer(pod); cs != nil {
		s.instance = cs.ContainerID
	}
	return s
}

// eventLabels are the pod's labels plus the keys the Docker actor
// attributes carry (name, and exitCode on die).
func eventLabels(pod *corev1.Pod, exit *int32) map[string]string {
	l := make(map[string]string, len(pod.Labels)+2)
	maps.Copy(l, pod.Labels)
	l["name"] = pod.Name
	if exit != nil {
		l["exitCode"] = strconv.Itoa(int(*exit))
	}
	return l
}

// exitCode is the agent container's last exit code, if the status has it.
func exitCode(pod *corev1.Pod) *int32 {
	cs := agentContainer(pod)
	switch {
	case cs == nil:
		return nil
	case cs.State.Terminated != nil:
		return &cs.State.Terminated.ExitCode
	case cs.LastTerminationState.Terminated != nil:
		return &cs.LastTerminationState.Terminated.ExitCode
	}
	return nil
}

func (p *Pods) onAdd(obj any, initial bool) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	cur := stateOf(pod)
	p.mu.Lock()
	p.seen[pod.UID] = cur
	p.watchErr = ""
	if _, ok := p.firstLabels[pod.UID]; !ok {
		p.firstLabels[pod.UID] = pod.Labels
	}
	p.mu.Unlock()
	if initial {
		return
	}
	id := auth.PodWorkloadID(string(pod.UID))
	p.publish(dockerevents.ActionCreate, id, cur.labels, false)
	if cur.running {
		p.publish(dockerevents.ActionStart, id, cur.labels, false)
	}
}

func (p *Pods) onUpdate(_, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	cur := stateOf(pod)
	p.mu.Lock()
	prev, had := p.seen[pod.UID]
	p.seen[pod.UID] = cur
	p.watchErr = ""
	p.mu.Unlock()
	id := auth.PodWorkloadID(string(pod.UID))
	// A starting container has no ID yet: getting one is its start, not
	// a restart.
	restarted := had && prev.running && cur.running && prev.instance != "" && prev.instance != cur.instance
	if had && prev.running && (!cur.running || restarted) {
		p.publish(dockerevents.ActionDie, id, eventLabels(pod, exitCode(pod)), false)
	}
	// The start published while the container was being created is
	// repeated once it has run: a dial cycle that gave up during a long
	// image pull (its budget is 30 s) gets another; a live one ignores it.
	firstRun := had && prev.running && prev.instance == "" && cur.running && cur.instance != ""
	if cur.running && (!had || !prev.running || restarted || firstRun) {
		p.publish(dockerevents.ActionStart, id, cur.labels, false)
	}
}

// onDelete ends a pod. A tombstone (a delete the watch missed, found by a
// relist) is published as synthesized, as the Docker feeder's reconcile is.
// The watch also reports a pod that merely lost the agent label as deleted:
// that one only dies (its Session ends), and keeps its registry row.
func (p *Pods) onDelete(obj any) {
	synthesized := false
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj, synthesized = t.Obj, true
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	p.mu.Lock()
	prev, had := p.seen[pod.UID]
	delete(p.seen, pod.UID)
	delete(p.firstLabels, pod.UID)
	p.mu.Unlock()
	id := auth.PodWorkloadID(string(pod.UID))
	if had && prev.running {
		p.publish(dockerevents.ActionDie, id, eventLabels(pod, exitCode(pod)), synthesized)
	}
	if p.stillExists(pod) {
		p.log.Warn().Str("event", "kube_pod_left_selector").Str("pod", pod.Name).
			Msg("agent pod lost its agent label: Session ended, registry row kept")
		return
	}
	p.publish(dockerevents.ActionDestroy, id, eventLabels(pod, nil), synthesized)
}

// stillExists reports whether the API server still has this very pod (same
// UID). An error counts as gone: a destroy for a live pod only costs it a
// re-Register, and keeping rows of vanished pods forever is worse.
func (p *Pods) stillExists(pod *corev1.Pod) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := p.client.Pods(p.namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	return err == nil && got.UID == pod.UID && got.DeletionTimestamp == nil
}

func (p *Pods) publish(action, id string, labels map[string]string, synthesized bool) {
	p.bus.Publish(dockerevents.DockerEvent{Action: action, ContainerID: id, Labels: labels,
		At: time.Now(), Synthesized: synthesized})
}
