package kubecp

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"path"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/clawker/clawker/internal/consts"
)

// Name names every object of the CP (service account, Role, Deployment,
// Service...), and AppLabel selects its pod.
const (
	Name     = "clawker-cp"
	AppLabel = "app.kubernetes.io/name"

	// KeysAnnotation on the pod template is the hash of the keys Secret.
	KeysAnnotation = "clawker.dev/keys-sha256"
	// ClawkerdImageAnnotation on the Service names the clawkerd image
	// agents of this CP install from (clawker run reads it there).
	ClawkerdImageAnnotation = "clawker.dev/clawkerd-image"

	configDir = "/etc/clawker"
	dataDir   = "/var/lib/clawker-cp"
)

// KeyFiles are the files of the CLI home the CP needs: never the CA's or
// the assertion signer's private key. The egress CA's key is the
// gateway's, to intercept what the policy says to (as on Docker).
var KeyFiles = []string{consts.CPCertFile, consts.CPKeyFile, consts.CACertFile, consts.SigningPubFile,
	consts.EgressCAFile, consts.EgressCAKeyFile}

// Spec is one CP in one namespace; its agents run in the same namespace.
type Spec struct {
	Namespace string
	Image     string
	// ClawkerdImage is recorded for clawker run ("": run must be told).
	ClawkerdImage string
	// Keys holds KeyFiles by name.
	Keys map[string][]byte
	// Env is extra environment of the CP: the egress gateway's upstream
	// overrides, as cp up passes them to the Docker CP.
	Env map[string]string
	// Storage is the registry's claim size; VolumeName binds the claim to
	// a pre-made PersistentVolume ("" lets the default class provision).
	Storage    resource.Quantity
	VolumeName string
}

// Objects are the CP's objects, in the order they are applied.
type Objects struct {
	ServiceAccount *corev1.ServiceAccount
	Role           *rbacv1.Role
	RoleBinding    *rbacv1.RoleBinding
	Keys           *corev1.Secret
	Data           *corev1.PersistentVolumeClaim
	Deployment     *appsv1.Deployment
	Service        *corev1.Service
}

// Build returns the CP's objects for s.
func Build(s Spec) (Objects, error) {
	for _, f := range KeyFiles {
		if len(s.Keys[f]) == 0 {
			return Objects{}, fmt.Errorf("control plane key file %s missing", f)
		}
	}
	if s.Namespace == "" || s.Image == "" {
		return Objects{}, fmt.Errorf("namespace and image are required")
	}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: s.Namespace,
			Labels: map[string]string{consts.LabelManaged: "true", AppLabel: Name}}
	}
	keysMode, yes, one := int32(0o400), true, int32(1)
	storage := s.Storage
	if storage.IsZero() {
		storage = resource.MustParse("1Gi")
	}
	pod := corev1.PodSpec{
		ServiceAccountName: Name,
		// The CP reads pods through the API; nothing else needs a token.
		AutomountServiceAccountToken: &yes,
		SecurityContext:              &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		Containers: []corev1.Container{{
			Name: Name, Image: s.Image, ImagePullPolicy: corev1.PullIfNotPresent,
			Command: []string{"/clawker-cp", "--runtime=kubernetes", "--namespace=" + s.Namespace,
				"--config-dir=" + configDir, "--data-dir=" + dataDir},
			Env: env(s.Env),
			Ports: []corev1.ContainerPort{
				{Name: "admin", ContainerPort: consts.PortAdmin}, {Name: "agent", ContainerPort: consts.PortAgent},
				{Name: "token", ContainerPort: consts.PortToken}, {Name: "health", ContainerPort: consts.PortHealth},
				{Name: "dns", ContainerPort: consts.PortEgressDNS, Protocol: corev1.ProtocolUDP},
				{Name: "dns-tcp", ContainerPort: consts.PortEgressDNS, Protocol: corev1.ProtocolTCP},
				{Name: "proxy", ContainerPort: consts.PortEgressProxy},
			},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/healthz", Port: intstr.FromInt32(consts.PortHealth)}}, PeriodSeconds: 2},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "keys", MountPath: configDir, ReadOnly: true},
				{Name: "data", MountPath: dataDir},
			},
		}},
		Volumes: []corev1.Volume{
			{Name: "keys", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: Name + "-keys", DefaultMode: &keysMode}}},
			{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: Name + "-data"}}},
		},
	}
	sel := map[string]string{AppLabel: Name}
	o := Objects{
		ServiceAccount: &corev1.ServiceAccount{ObjectMeta: meta(Name)},
		// What the CP does with the API: watch and read agent pods, and
		// contain them (label one contained, delete one), after reading
		// the policies a detach relies on.
		Role: &rbacv1.Role{ObjectMeta: meta(Name), Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "patch", "delete"}},
			{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"get"}},
		}},
		RoleBinding: &rbacv1.RoleBinding{ObjectMeta: meta(Name),
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: Name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: Name, Namespace: s.Namespace}}},
		Keys: &corev1.Secret{ObjectMeta: meta(Name + "-keys"), Immutable: &yes, Data: map[string][]byte{}},
		Data: &corev1.PersistentVolumeClaim{ObjectMeta: meta(Name + "-data"), Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: storage}},
			VolumeName:  s.VolumeName,
		}},
		Deployment: &appsv1.Deployment{ObjectMeta: meta(Name), Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			// One writer of the sqlite registry: the old pod is gone before
			// the new one starts.
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			// The keys' hash in the template: new keys roll the pod, which
			// reads them only at start.
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: sel,
				Annotations: map[string]string{KeysAnnotation: keysHash(s.Keys)}}, Spec: pod},
		}},
		Service: &corev1.Service{ObjectMeta: meta(Name), Spec: corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{
			{Name: "admin", Port: consts.PortAdmin, TargetPort: intstr.FromString("admin")},
			{Name: "agent", Port: consts.PortAgent, TargetPort: intstr.FromString("agent")},
			{Name: "token", Port: consts.PortToken, TargetPort: intstr.FromString("token")},
			// The egress gateway: the agents' resolver and proxy.
			{Name: "dns", Port: consts.PortEgressDNS, TargetPort: intstr.FromString("dns"), Protocol: corev1.ProtocolUDP},
			{Name: "dns-tcp", Port: consts.PortEgressDNS, TargetPort: intstr.FromString("dns-tcp"), Protocol: corev1.ProtocolTCP},
			{Name: "proxy", Port: consts.PortEgressProxy, TargetPort: intstr.FromString("proxy")},
		}}},
	}
	if s.ClawkerdImage != "" {
		o.Service.Annotations = map[string]string{ClawkerdImageAnnotation: s.ClawkerdImage}
	}
	if s.VolumeName != "" {
		empty := ""
		o.Data.Spec.StorageClassName = &empty
	}
	for _, f := range KeyFiles {
		o.Keys.Data[path.Base(f)] = s.Keys[f]
	}
	return o, nil
}

// env is m as container environment, sorted so the template (and so the
// rollout decision) does not depend on map order.
func env(m map[string]string) []corev1.EnvVar {
	var out []corev1.EnvVar
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, corev1.EnvVar{Name: k, Value: m[k]})
	}
	return out
}

// keysHash is a SHA-256 over the key files, in KeyFiles order.
func keysHash(keys map[string][]byte) string {
	h := sha256.New()
	for _, f := range KeyFiles {
		fmt.Fprintf(h, "%s %d\n", f, len(keys[f]))
		h.Write(keys[f])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// AgentPeer is the CP as the agents' NetworkPolicy names it: its pods.
func AgentPeer() networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{AppLabel: Name}}}
}
