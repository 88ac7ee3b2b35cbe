package configs

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The deployment files are checked here without Docker or a cluster: the
// Dockerfile against the Makefile's build, the systemd unit's keys, and the
// Kubernetes manifests' wiring, with the ConfigMap's herald.yaml loaded and
// validated by Load as each pod would, under the pod's environment.

func readDeployFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// buildFlags are the go build flags of a build line, variables blanked.
func buildFlags(t *testing.T, line string) string {
	t.Helper()
	for _, v := range []string{"$(GO)", "${VERSION}", "$(VERSION)", "$(LDFLAGS)", "$(BIN)", "/out/herald"} {
		line = strings.ReplaceAll(line, v, "X")
	}
	line = strings.NewReplacer(`"`, "", `'`, "").Replace(line)
	return strings.Join(strings.Fields(line), " ")
}

func TestDockerfileMatchesMakefileBuild(t *testing.T) {
	docker := readDeployFile(t, "../Dockerfile")
	mk := readDeployFile(t, "../Makefile")
	var dBuild, mBuild, ldflags string
	for _, l := range strings.Split(docker, "\n") {
		if strings.Contains(l, "go build") {
			dBuild = strings.TrimPrefix(strings.TrimSpace(l), "RUN ")
		}
	}
	for _, l := range strings.Split(mk, "\n") {
		if strings.Contains(l, "$(GO) build") && mBuild == "" {
			mBuild = strings.TrimSpace(l)
		}
		if v, ok := strings.CutPrefix(l, "LDFLAGS :="); ok {
			ldflags = strings.TrimSpace(v)
		}
	}
	if dBuild == "" || mBuild == "" || ldflags == "" {
		t.Fatalf("build lines not found: Dockerfile %q, Makefile %q, LDFLAGS %q", dBuild, mBuild, ldflags)
	}
	mBuild = strings.ReplaceAll(mBuild, "'$(LDFLAGS)'", "'"+ldflags+"'")
	dBuild = strings.Replace(dBuild, "go build", "$(GO) build", 1)
	if d, m := buildFlags(t, dBuild), buildFlags(t, mBuild); d != m {
		t.Fatalf("the image builds differently from make build:\n  Dockerfile: %s\n  Makefile:   %s", d, m)
	}
	for _, want := range []string{
		"CGO_ENABLED=0",
		"FROM gcr.io/distroless/static",
		`VOLUME ["/etc/herald", "/var/lib/herald"]`,
		`CMD ["serve", "--config", "/etc/herald/herald.yaml"]`,
		"EXPOSE 6001 4222 6222 7946 7946/udp",
	} {
		if !strings.Contains(docker, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	m := regexp.MustCompile(`(?m)^USER (\S+)`).FindStringSubmatch(docker)
	if m == nil || strings.HasPrefix(m[1], "0") || strings.HasPrefix(m[1], "root") {
		t.Errorf("Dockerfile runs as %v, want a non-root user", m)
	}
}

func TestSystemdUnit(t *testing.T) {
	unit := map[string]string{}
	for _, l := range strings.Split(readDeployFile(t, "systemd/herald.service"), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			unit[k] = v
		}
	}
	for k, want := range map[string]string{
		"ExecStart":       "/usr/local/bin/herald serve --config /etc/herald/herald.yaml",
		"ExecReload":      "/bin/kill -HUP $MAINPID",
		"KillSignal":      "SIGTERM",
		"NoNewPrivileges": "yes",
		"ProtectSystem":   "strict",
		"ReadWritePaths":  "/var/lib/herald",
	} {
		if unit[k] != want {
			t.Errorf("%s=%q, want %q", k, unit[k], want)
		}
	}
	if u := unit["User"]; u == "" || u == "root" {
		t.Errorf("User=%q, want a non-root user", u)
	}
	stop, err := time.ParseDuration(unit["TimeoutStopSec"])
	if err != nil || stop <= Default().Shutdown.Deadline.D() {
		t.Errorf("TimeoutStopSec=%q must exceed shutdown.deadline (%s)", unit["TimeoutStopSec"], Default().Shutdown.Deadline.D())
	}
	if n, err := strconv.Atoi(unit["LimitNOFILE"]); err != nil || n < 65536 {
		t.Errorf("LimitNOFILE=%q", unit["LimitNOFILE"])
	}
}

// k8sObject is the part of a manifest the wiring checks read.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		// StatefulSet
		ServiceName          string         `yaml:"serviceName"`
		Replicas             int            `yaml:"replicas"`
		PodManagementPolicy  string         `yaml:"podManagementPolicy"`
		Selector             k8sSelector    `yaml:"selector"`
		Template             k8sPodTemplate `yaml:"template"`
		MaxUnavailable       int            `yaml:"maxUnavailable"`
		ClusterIP            string         `yaml:"clusterIP"`
		PublishNotReady      bool           `yaml:"publishNotReadyAddresses"`
		Ports                []k8sPort      `yaml:"ports"`
		Rules                []k8sRule      `yaml:"rules"`
		VolumeClaimTemplates []struct {
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type k8sSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

// UnmarshalYAML takes both forms: a Service's plain map and matchLabels.
func (s *k8sSelector) UnmarshalYAML(n *yaml.Node) error {
	var m struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	}
	if err := n.Decode(&m); err == nil && m.MatchLabels != nil {
		s.MatchLabels = m.MatchLabels
		return nil
	}
	return n.Decode(&s.MatchLabels)
}

type k8sPort struct {
	Name          string `yaml:"name"`
	Port          int    `yaml:"port"`
	ContainerPort int    `yaml:"containerPort"`
	TargetPort    string `yaml:"targetPort"`
	Protocol      string `yaml:"protocol"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sPodTemplate struct {
	Metadata struct {
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
		SecurityContext               struct {
			RunAsNonRoot bool `yaml:"runAsNonRoot"`
		} `yaml:"securityContext"`
		Containers []struct {
			Args  []string  `yaml:"args"`
			Ports []k8sPort `yaml:"ports"`
			Env   []struct {
				Name  string `yaml:"name"`
				Value string `yaml:"value"`
			} `yaml:"env"`
			EnvFrom []struct {
				SecretRef struct {
					Name string `yaml:"name"`
				} `yaml:"secretRef"`
			} `yaml:"envFrom"`
			ReadinessProbe k8sProbe `yaml:"readinessProbe"`
			LivenessProbe  k8sProbe `yaml:"livenessProbe"`
			Lifecycle      struct {
				PreStop struct {
					Exec struct {
						Command []string `yaml:"command"`
					} `yaml:"exec"`
				} `yaml:"preStop"`
			} `yaml:"lifecycle"`
			VolumeMounts []struct {
				Name      string `yaml:"name"`
				MountPath string `yaml:"mountPath"`
			} `yaml:"volumeMounts"`
		} `yaml:"containers"`
		Volumes []struct {
			Name      string `yaml:"name"`
			ConfigMap struct {
				Name string `yaml:"name"`
			} `yaml:"configMap"`
		} `yaml:"volumes"`
	} `yaml:"spec"`
}

type k8sRule struct {
	HTTP struct {
		Paths []struct {
			Backend struct {
				Service struct {
					Name string `yaml:"name"`
					Port struct {
						Name string `yaml:"name"`
					} `yaml:"port"`
				} `yaml:"service"`
			} `yaml:"backend"`
		} `yaml:"paths"`
	} `yaml:"http"`
}

// loadManifests parses every YAML document under kubernetes/.
func loadManifests(t *testing.T) []k8sObject {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var out []k8sObject
	for _, f := range files {
		dec := yaml.NewDecoder(bytes.NewReader([]byte(readDeployFile(t, f))))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: a document without kind or name", f)
			}
			out = append(out, o)
		}
	}
	return out
}

func portOf(t *testing.T, hostport string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

func TestKubernetesManifestsWiring(t *testing.T) {
	objs := loadManifests(t)
	one := func(kind, name string) *k8sObject {
		for i := range objs {
			if objs[i].Kind == kind && (name == "" || objs[i].Metadata.Name == name) {
				return &objs[i]
			}
		}
		t.Fatalf("no %s %s", kind, name)
		return nil
	}
	sts := one("StatefulSet", "")
	cm := one("ConfigMap", "")
	secret := one("Secret", "")
	headless := one("Service", sts.Spec.ServiceName)
	pdb := one("PodDisruptionBudget", "")
	ing := one("Ingress", "")
	for _, o := range objs {
		if o.Kind != "Namespace" && o.Metadata.Namespace != sts.Metadata.Namespace {
			t.Errorf("%s %s in namespace %q, the StatefulSet in %q", o.Kind, o.Metadata.Name, o.Metadata.Namespace, sts.Metadata.Namespace)
		}
	}

	if sts.Spec.Replicas != 3 || sts.Spec.PodManagementPolicy != "Parallel" {
		t.Errorf("StatefulSet: %d replicas, %q pod management; want 3, Parallel", sts.Spec.Replicas, sts.Spec.PodManagementPolicy)
	}
	pod := sts.Spec.Template
	labels := pod.Metadata.Labels
	matches := func(sel map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	if !matches(sts.Spec.Selector.MatchLabels) || !matches(pdb.Spec.Selector.MatchLabels) || !matches(headless.Spec.Selector.MatchLabels) {
		t.Errorf("selectors do not all match the pod labels %v", labels)
	}
	if pdb.Spec.MaxUnavailable != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable %d", pdb.Spec.MaxUnavailable)
	}
	if headless.Spec.ClusterIP != "None" || !headless.Spec.PublishNotReady {
		t.Errorf("%s: clusterIP %q, publishNotReadyAddresses %v; want None, true", headless.Metadata.Name, headless.Spec.ClusterIP, headless.Spec.PublishNotReady)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if !pod.Spec.SecurityContext.RunAsNonRoot {
		t.Error("pods may run as root")
	}

	// The config each pod loads: the ConfigMap's herald.yaml at the path
	// the container mounts it, with the pod's environment (herald-1's).
	var cfgPath string
	for _, a := range c.Args {
		if strings.HasSuffix(a, ".yaml") {
			cfgPath = a
		}
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		for _, v := range pod.Spec.Volumes {
			if v.Name == vm.Name && v.ConfigMap.Name == cm.Metadata.Name && filepath.Dir(cfgPath) == vm.MountPath {
				mounted = true
			}
		}
	}
	if !mounted || cm.Data[filepath.Base(cfgPath)] == "" {
		t.Fatalf("--config %s is not the ConfigMap %s mounted", cfgPath, cm.Metadata.Name)
	}
	file := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(file, []byte(cm.Data[filepath.Base(cfgPath)]), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{}
	vars := map[string]string{"POD_NAME": sts.Metadata.Name + "-1", "POD_NAMESPACE": sts.Metadata.Namespace}
	for _, e := range c.Env {
		v := e.Value
		for k, val := range vars {
			v = strings.ReplaceAll(v, "$("+k+")", val)
		}
		env = append(env, e.Name+"="+v)
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].SecretRef.Name != secret.Metadata.Name {
		t.Errorf("envFrom %+v, want the Secret %s", c.EnvFrom, secret.Metadata.Name)
	}
	for k, v := range secret.StringData {
		env = append(env, k+"="+v)
	}
	cfg, warnings, err := Load(file, LoadOptions{Env: env, Strict: true})
	if err != nil {
		t.Fatalf("the ConfigMap's herald.yaml does not load: %v", err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %v", warnings)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the ConfigMap's herald.yaml: %v", err)
	}
	if len(cfg.Apps) != 1 || cfg.Apps[0].Secret != secret.StringData["HERALD_APP_SECRET"] || cfg.Admin.Token != secret.StringData["HERALD_ADMIN_TOKEN"] {
		t.Errorf("the Secret does not set the app and admin token: %+v %q", cfg.Apps, cfg.Admin.Token)
	}

	// Every port the config listens on is a named container port, and
	// the headless Service carries route and gossip.
	ports := map[string]k8sPort{}
	for _, p := range c.Ports {
		ports[p.Name] = p
	}
	for name, hostport := range map[string]string{
		"client": cfg.Listen, "nats": cfg.Bus.ClientListen, "route": cfg.Cluster.RouteListen,
		"gossip-tcp": cfg.Cluster.Bind, "gossip-udp": cfg.Cluster.Bind, "admin": cfg.Admin.Listen,
	} {
		if p, ok := ports[name]; !ok || p.ContainerPort != portOf(t, hostport) {
			t.Errorf("container port %s = %+v, the config listens on %s", name, p, hostport)
		}
	}
	if ports["gossip-udp"].Protocol != "UDP" {
		t.Error("memberlist needs its UDP port")
	}
	svcPorts := map[string]k8sPort{}
	for _, p := range headless.Spec.Ports {
		svcPorts[p.TargetPort] = p
	}
	for _, name := range []string{"route", "gossip-tcp", "gossip-udp"} {
		if p, ok := svcPorts[name]; !ok || p.Port != ports[name].ContainerPort {
			t.Errorf("headless Service port for %s: %+v", name, p)
		}
	}

	// Seeds and routes: one per replica, each the pod's DNS name through
	// the headless Service, on the port that pod listens on.
	if len(cfg.Cluster.Seeds) != sts.Spec.Replicas || len(cfg.Cluster.Routes) != sts.Spec.Replicas {
		t.Errorf("%d seeds and %d routes for %d replicas", len(cfg.Cluster.Seeds), len(cfg.Cluster.Routes), sts.Spec.Replicas)
	}
	for i := range sts.Spec.Replicas {
		host := sts.Metadata.Name + "-" + strconv.Itoa(i) + "." + headless.Metadata.Name + "." + sts.Metadata.Namespace + ".svc.cluster.local"
		if i < len(cfg.Cluster.Seeds) && cfg.Cluster.Seeds[i] != net.JoinHostPort(host, strconv.Itoa(portOf(t, cfg.Cluster.Bind))) {
			t.Errorf("seed %d = %s, want %s", i, cfg.Cluster.Seeds[i], host)
		}
		if i < len(cfg.Cluster.Routes) && cfg.Cluster.Routes[i] != net.JoinHostPort(host, strconv.Itoa(portOf(t, cfg.Cluster.RouteListen))) {
			t.Errorf("route %d = %s, want %s", i, cfg.Cluster.Routes[i], host)
		}
	}
	if want := "herald-1." + headless.Metadata.Name + "." + sts.Metadata.Namespace + ".svc.cluster.local:7946"; cfg.Cluster.AdvertiseAddr() != want {
		t.Errorf("herald-1 advertises %s, want %s", cfg.Cluster.AdvertiseAddr(), want)
	}

	// Probes, the drain on the way out, and the grace period above the
	// node's own deadline.
	if p := c.ReadinessProbe.HTTPGet; p.Path != "/readyz" || p.Port != "client" {
		t.Errorf("readiness %+v", p)
	}
	if p := c.LivenessProbe.HTTPGet; p.Path != "/healthz" || p.Port != "client" {
		t.Errorf("liveness %+v", p)
	}
	adminURL := "http://127.0.0.1:" + strconv.Itoa(portOf(t, cfg.Admin.Listen))
	if got := strings.Join(c.Lifecycle.PreStop.Exec.Command, " "); got != "/usr/local/bin/herald drain --admin "+adminURL+" --wait" {
		t.Errorf("preStop %q", got)
	}
	if g := time.Duration(pod.Spec.TerminationGracePeriodSeconds) * time.Second; g <= cfg.Shutdown.Deadline.D() {
		t.Errorf("terminationGracePeriodSeconds %s not above shutdown.deadline %s", g, cfg.Shutdown.Deadline.D())
	}
	dataMounted := false
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == cfg.DataDir && len(sts.Spec.VolumeClaimTemplates) == 1 && vm.Name == sts.Spec.VolumeClaimTemplates[0].Metadata.Name {
			dataMounted = true
		}
	}
	if !dataMounted {
		t.Errorf("data_dir %s is not the volume claim", cfg.DataDir)
	}

	// The client Service and the ingress reach the client port.
	client := one("Service", "herald")
	clientPort := false
	for _, p := range client.Spec.Ports {
		clientPort = clientPort || (p.TargetPort == "client" && p.Port == portOf(t, cfg.Listen))
	}
	if !clientPort || !matches(client.Spec.Selector.MatchLabels) {
		t.Errorf("Service herald does not reach the client port: %+v", client.Spec.Ports)
	}
	for _, r := range ing.Spec.Rules {
		for _, p := range r.HTTP.Paths {
			if b := p.Backend.Service; b.Name != client.Metadata.Name || b.Port.Name != "client" {
				t.Errorf("ingress backend %+v", b)
			}
		}
	}
}
