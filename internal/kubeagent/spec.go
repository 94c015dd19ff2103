package kubeagent

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/clawker/clawker/internal/auth"
	"github.com/clawker/clawker/internal/consts"
	"github.com/clawker/clawker/internal/egress/agentenv"
)

// Container and volume names inside an agent pod.
const (
	installContainer = "clawkerd-install"
	binVolume        = "clawkerd"
	bootstrapVolume  = "bootstrap"
)

// Spec is one agent pod.
type Spec struct {
	Namespace string
	Project   auth.ProjectSlug
	Agent     auth.AgentName
	// Image is the agent's image; ClawkerdImage the clawker image holding
	// only /clawkerd, which the init container copies into the pod.
	Image, ClawkerdImage string
	// Cmd is the user command clawkerd starts. A pod cannot inherit the
	// image's CMD once its command is clawkerd, so it must be given.
	Cmd  []string
	User string   // CLAWKER_USER
	Env  []string // KEY=VALUE for the user command
	TTY  bool     // run -t: clawkerd gives the user command a terminal
	// CPAgentAddr (IP:port) and CPTokenURL are where clawkerd reaches
	// the CP from inside the pod.
	CPAgentAddr, CPTokenURL string
	// EgressCA is the gateway's interception CA (PEM), carried in the
	// bootstrap Secret: clawkerd adds it to the image's trust bundles.
	EgressCA []byte
	// CPPeer is the CP as the isolation policy admits it; nil means an
	// IP block of CPAgentAddr's IP (a CP outside the cluster).
	CPPeer *networkingv1.NetworkPolicyPeer
	Labels map[string]string // extra labels (tests mark their pods)
}

// PodName is the agent's pod name: its AgentFullName, which Kubernetes
// accepts when the names are DNS labels.
func PodName(p auth.ProjectSlug, a auth.AgentName) string { return auth.AgentFullName(p, a) }

// SecretName is the pod's bootstrap Secret.
func SecretName(pod string) string { return pod + "-bootstrap" }

// validate refuses what the API server would, with the reason in clawker's
// terms; agent names may hold '_', which no Kubernetes name or label may.
func (s Spec) validate() error {
	var errs []error
	for what, v := range map[string]string{"agent name": s.Agent.String(), "project": s.Project.String()} {
		if v == "" && what == "project" {
			continue
		}
		if msgs := validation.IsDNS1123Label(v); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("%s %q cannot name a pod: %s", what, v, strings.Join(msgs, "; ")))
		}
	}
	if s.Namespace == "" || s.Image == "" || s.ClawkerdImage == "" {
		errs = append(errs, errors.New("namespace, image and clawkerd image are required"))
	}
	if len(s.Cmd) == 0 {
		errs = append(errs, errors.New("a command is required: the pod's command is clawkerd, so the image's own CMD does not apply"))
	}
	if _, _, err := cpPorts(s); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Pod is the agent pod for s. Its bootstrap Secret does not exist yet:
// the kubelet holds the containers until it does (see Create).
func Pod(s Spec) (*corev1.Pod, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	name := PodName(s.Project, s.Agent)
	cp, _, _ := cpPorts(s) // validated
	labels := map[string]string{consts.LabelManaged: "true", consts.LabelPurpose: consts.PurposeAgent, consts.LabelAgent: s.Agent.String()}
	if !s.Project.IsZero() {
		labels[consts.LabelProject] = s.Project.String()
	}
	for k, v := range s.Labels {
		if _, ours := labels[k]; !ours {
			labels[k] = v
		}
	}
	env := []corev1.EnvVar{
		{Name: consts.EnvAgent, Value: s.Agent.String()},
		{Name: consts.EnvProject, Value: s.Project.String()},
		{Name: consts.EnvUser, Value: s.User},
		{Name: consts.EnvCPAgentAddr, Value: s.CPAgentAddr},
		{Name: consts.EnvCPTokenURL, Value: s.CPTokenURL},
	}
	if s.TTY {
		env = append(env, corev1.EnvVar{Name: consts.EnvTTY, Value: "1"})
	}
	// The CP's egress gateway is the agent's only way out: its proxy here,
	// its resolver below. These are clawker's, as on Docker where they
	// come last: a user's -e of the same name does not replace them.
	gateway := map[string]string{}
	for _, kv := range agentenv.Env(cp) {
		k, v, _ := strings.Cut(kv, "=")
		gateway[k] = v
	}
	for _, kv := range s.Env {
		k, v, _ := strings.Cut(kv, "=")
		if _, ours := gateway[k]; !ours {
			env = append(env, corev1.EnvVar{Name: k, Value: v})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(gateway)) {
		env = append(env, corev1.EnvVar{Name: k, Value: gateway[k]})
	}
	root := int64(0)
	no := false
	readOnly := int32(0o400)
	bin := corev1.VolumeMount{Name: binVolume, MountPath: consts.ClawkerdDir}
	// Read-only in the agent: the user command must not swap the binary
	// that is PID 1, the git credential helper and ssh's ProxyCommand.
	binRO := bin
	binRO.ReadOnly = true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Namespace, Labels: labels},
		Spec: corev1.PodSpec{
			// An agent gets no API credentials and no service env: the CP
			// is its only contact with the cluster.
			AutomountServiceAccountToken: &no,
			EnableServiceLinks:           &no,
			// As docker run without --restart: the agent ends with its command.
			RestartPolicy: corev1.RestartPolicyNever,
			// Names resolve at the gateway, which answers only what the
			// project's egress policy allows; the cluster's DNS is not asked.
			DNSPolicy: corev1.DNSNone,
			DNSConfig: &corev1.PodDNSConfig{Nameservers: []string{cp.String()}},
			// Docker applies its default seccomp profile; Kubernetes only
			// when asked.
			SecurityContext: &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			InitContainers: []corev1.Container{{
				Name: installContainer, Image: s.ClawkerdImage, ImagePullPolicy: corev1.PullIfNotPresent,
				Command:      []string{"/clawkerd", "install", consts.ClawkerdDir},
				VolumeMounts: []corev1.VolumeMount{bin},
			}},
			Containers: []corev1.Container{{
				Name: consts.PodAgentContainer, Image: s.Image, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{consts.ClawkerdPath, "--"}, Args: s.Cmd, Env: env,
				// clawkerd is PID 1 as root: it reads its 0400 bootstrap
				// files and drops to CLAWKER_USER for the user command.
				SecurityContext: &corev1.SecurityContext{RunAsUser: &root, RunAsGroup: &root},
				VolumeMounts: []corev1.VolumeMount{binRO,
					{Name: bootstrapVolume, MountPath: consts.BootstrapDir, ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{
				{Name: binVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: bootstrapVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
					SecretName: SecretName(name), DefaultMode: &readOnly}}},
			},
		},
	}, nil
}

// Secret is the bootstrap Secret for a created pod, with the egress CA's
// cert when given. It is owned by the pod, so the garbage collector
// deletes it with the pod.
func Secret(pod *corev1.Pod, b auth.Bootstrap, egressCA []byte) *corev1.Secret {
	yes := true
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: SecretName(pod.Name), Namespace: pod.Namespace,
			Labels: map[string]string{consts.LabelManaged: "true"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
				Controller: &yes}},
		},
		Immutable: &yes,
		Data: map[string][]byte{
			consts.BootstrapCert:   b.Cert,
			consts.BootstrapKey:    b.Key,
			consts.BootstrapCA:     b.CA,
			consts.BootstrapAssert: []byte(b.Assertion),
		},
	}
	if len(egressCA) > 0 {
		sec.Data[consts.BootstrapEgressCA] = egressCA
	}
	return sec
}
