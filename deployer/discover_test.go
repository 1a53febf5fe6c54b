package deployer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// discoverOut is discover.sh's output on a host set up as the seed
// article's, plus a second app (auth) on 4190-4191 and a non-port
// instance of it.
const discoverOut = `@@rollout@@ id
1001
deploy
@@rollout@@ sudo
yes
@@rollout@@ cores
4
@@rollout@@ units
my-app@3000.service loaded active running my-app instance on port 3000
my-app@3001.service loaded active running my-app instance on port 3001
my-app@3002.service loaded failed failed my-app instance on port 3002
my-app@3003.service loaded active running my-app instance on port 3003
auth@4190.service loaded active running auth 4190
auth@4191.service loaded active running auth 4191
auth@worker.service loaded active running auth worker
getty@tty1.service loaded inactive dead Getty on tty1
@@rollout@@ wants
my-app@3000.service
my-app@3001.service
my-app@3002.service
my-app@3003.service
getty@tty1.service
@@rollout@@ memory
available 1048576
rss my-app@3000.service 49152
rss my-app@3001.service 40960
rss my-app@3003.service 57344
rss auth@4190.service 10240
@@rollout@@ nginx
nginx: the configuration file /etc/nginx/nginx.conf syntax is ok
nginx: configuration file /etc/nginx/nginx.conf test is successful
# configuration file /etc/nginx/nginx.conf:
http {
    include /etc/nginx/conf.d/*.conf;
    include /etc/nginx/sites-enabled/*;
}

# configuration file /etc/nginx/conf.d/my-app-upstream.conf:
# Upstream for my-app: one line per instance.
upstream my_app {
    server 127.0.0.1:3000;
    server 127.0.0.1:3001;
    server 127.0.0.1:3002 max_fails=3;
    server 127.0.0.1:3003;   # last
    server 127.0.0.1:3999 backup;
}

# configuration file /etc/nginx/conf.d/auth.conf:
upstream auth_pool {
    server 127.0.0.1:4190;
    server 127.0.0.1:4191;
}
server {
    listen 127.0.0.1:8081;
    location / { proxy_pass http://auth_pool; }
}

# configuration file /etc/nginx/sites-enabled/my-app:
server {
    listen 80 default_server;
    location / {
        proxy_pass http://my_app;
    }
}
`

func TestParseDiscovery(t *testing.T) {
	d, nginxT := parseDiscovery("web1", []byte(discoverOut))
	if d.User != "deploy" || d.Root || !d.Sudo || d.Cores != 4 || d.NginxErr != "" {
		t.Fatalf("host facts: %+v", d)
	}
	if got := AppNames([]*Discovery{d}); !slices.Equal(got, []string{"auth", "my-app"}) {
		t.Fatalf("apps %v, want auth and my-app (getty@tty1 is named by no port)", got)
	}
	app := d.Apps[1]
	if !slices.Equal(app.Ports, []int{3000, 3001, 3002, 3003}) || !slices.Equal(app.Running, []int{3000, 3001, 3003}) {
		t.Fatalf("my-app ports %v running %v", app.Ports, app.Running)
	}
	auth := d.Apps[0]
	if !slices.Equal(auth.Ports, []int{4190, 4191}) || !slices.Equal(auth.Other, []string{"auth@worker.service"}) {
		t.Fatalf("auth: %+v", auth)
	}
	if d.MemAvailable != 1<<30 || app.MemoryEach != 48<<20 || auth.MemoryEach != 10<<20 {
		t.Fatalf("memory: available %d, my-app %d each, auth %d each", d.MemAvailable, app.MemoryEach, auth.MemoryEach)
	}
	ups, listen := findUpstreams(nginxT, app.Ports)
	if len(ups) != 1 || ups[0].Name != "my_app" || ups[0].File != "/etc/nginx/conf.d/my-app-upstream.conf" ||
		ups[0].Addr != "127.0.0.1" || !slices.Equal(ups[0].Ports, app.Ports) || !slices.Equal(ups[0].Extra, []int{3999}) {
		t.Fatalf("my-app upstreams %+v", ups)
	}
	if listen != "127.0.0.1:80" {
		t.Fatalf("my-app's site listens on %q, want 127.0.0.1:80", listen)
	}
	ups, listen = findUpstreams(nginxT, auth.Ports)
	if len(ups) != 1 || ups[0].Name != "auth_pool" || listen != "127.0.0.1:8081" {
		t.Fatalf("auth upstreams %+v listen %q", ups, listen)
	}
}

func TestParseDiscoveryNginxRefused(t *testing.T) {
	out := strings.Replace(discoverOut, "@@rollout@@ nginx\n", "@@rollout@@ nginx\nsudo: a password is required\n@@rollout@@ nginx-failed\n@@rollout@@ ignored\n", 1)
	d, nginxT := parseDiscovery("web1", []byte(out))
	if nginxT != "" || !strings.Contains(d.NginxErr, "password is required") {
		t.Fatalf("nginx -T refused: err %q, config %d bytes", d.NginxErr, len(nginxT))
	}
}

// discovered is a Discovery of my-app as the seed article runs it.
func discovered(host string, cores int, ports ...int) *Discovery {
	d, nginxT := parseDiscovery(host, []byte(discoverOut))
	d.Cores = cores
	app := &d.Apps[1]
	app.Ports, app.Running = ports, ports
	app.Upstreams, app.Listen = findUpstreams(nginxT, ports)
	app.LogFiles = []string{"/var/log/my-app/stderr-{port}.log", "/var/log/my-app/stdout-{port}.log"}
	app.Health = []HealthAnswer{{Path: "/healthz", Status: 200}, {Path: "/health", Status: 404}, {Path: "/", Status: 200}}
	return d
}

func TestInitConfigWritesAConfigThatLoads(t *testing.T) {
	ds := []*Discovery{discovered("web1", 4, 3000, 3001, 3002, 3003), discovered("web2", 4, 3000, 3001, 3002, 3003)}
	r, err := InitConfig(ds, InitOptions{Hosts: []string{"web1", "web2"}, User: "deploy", App: "my-app", Now: time.Unix(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig("rollout.yaml", r.YAML)
	if err != nil {
		t.Fatalf("%v\n%s", err, r.YAML)
	}
	if cfg.App != "my-app" || cfg.UnitName(3000) != "my-app@3000" || !slices.Equal(cfg.Hosts, []string{"web1", "web2"}) ||
		cfg.SSH.User != "deploy" || !cfg.InstancesAuto() || cfg.BasePort() != 3000 ||
		cfg.Nginx.UpstreamFile != "/etc/nginx/conf.d/my-app-upstream.conf" || cfg.Nginx.Upstream != "my_app" ||
		cfg.Health.Path != "/healthz" || !cfg.Probe.Enabled {
		t.Fatalf("config:\n%s", r.YAML)
	}
	if len(r.Undecided) != 2 || !strings.Contains(r.Undecided[0], "3999") {
		t.Fatalf("undecided: want the upstream's extra line on each host, got %q", r.Undecided)
	}
}

func TestInitConfigInstances(t *testing.T) {
	for _, tc := range []struct {
		name string
		ds   []*Discovery
		want string // in the YAML, or in the error
		err  bool
	}{
		{"one per core on hosts of different sizes", []*Discovery{discovered("a", 2, 3000, 3001), discovered("b", 4, 3000, 3001, 3002, 3003)}, "instances: auto", false},
		{"the same count, not the cores", []*Discovery{discovered("a", 8, 3000, 3001), discovered("b", 4, 3000, 3001)}, "instances: 2\n", false},
		{"the same ports with a gap", []*Discovery{discovered("a", 8, 3000, 3002), discovered("b", 4, 3000, 3002)}, "ports: [3000, 3002]", false},
		{"different counts, not the cores", []*Discovery{discovered("a", 8, 3000, 3001), discovered("b", 8, 3000, 3001, 3002)}, "hosts disagree on the instances of my-app: a: 3000, 3001 (8 cores); b: 3000, 3001, 3002 (8 cores)", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := InitConfig(tc.ds, InitOptions{Hosts: []string{"a", "b"}, App: "my-app"})
			if tc.err {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, want an error with %q", err, tc.want)
				}
				return
			}
			if err != nil || !strings.Contains(string(r.YAML), tc.want) {
				t.Fatalf("got %v, want %q in:\n%s", err, tc.want, r.YAML)
			}
		})
	}
}

func TestInitConfigRefuses(t *testing.T) {
	two := discovered("web1", 4, 3000, 3001, 3002, 3003)
	if _, err := InitConfig([]*Discovery{two}, InitOptions{Hosts: []string{"web1"}}); !errors.Is(err, ErrPickApp) || !strings.Contains(err.Error(), "auth, my-app") {
		t.Fatalf("two apps, none picked: %v", err)
	}
	if _, err := InitConfig([]*Discovery{{Host: "bare"}}, InitOptions{Hosts: []string{"bare"}}); !errors.Is(err, ErrNoInstances) {
		t.Fatalf("no instances: %v", err)
	}
	other := discovered("web2", 4, 3000, 3001, 3002, 3003)
	other.Apps[1].Upstreams[0].Name = "app_pool"
	if _, err := InitConfig([]*Discovery{two, other}, InitOptions{Hosts: []string{"web1", "web2"}, App: "my-app"}); err == nil ||
		!strings.Contains(err.Error(), "hosts disagree on the upstream of my-app: web1: my_app") || !strings.Contains(err.Error(), "web2: app_pool") {
		t.Fatalf("upstreams that disagree: %v", err)
	}
	noAuth := discovered("web2", 4, 3000, 3001, 3002, 3003)
	noAuth.Apps = noAuth.Apps[1:]
	if _, err := InitConfig([]*Discovery{two, noAuth}, InitOptions{Hosts: []string{"web1", "web2"}, App: "auth"}); err == nil || !strings.Contains(err.Error(), "web2 has no instances of auth") {
		t.Fatalf("an app on one host only: %v", err)
	}
	half := discovered("web1", 4, 3000, 3001, 3002, 3003, 3004)
	if _, err := InitConfig([]*Discovery{half}, InitOptions{Hosts: []string{"web1"}, App: "my-app"}); err == nil || !strings.Contains(err.Error(), "add a server line for each") {
		t.Fatalf("an upstream without every instance: %v", err)
	}
}

func TestInitConfigQuotesWhatItWrites(t *testing.T) {
	d := discovered("web1", 4, 3000, 3001, 3002, 3003)
	r, err := InitConfig([]*Discovery{d}, InitOptions{Hosts: []string{"web1"}, App: "my-app", Key: "/keys/a key: #1"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig("rollout.yaml", r.YAML)
	if err != nil || cfg.SSH.Key != "/keys/a key: #1" {
		t.Fatalf("key %q (%v):\n%s", cfg.SSH.Key, err, r.YAML)
	}
}

func TestInitConfigProbeAddress(t *testing.T) {
	for listen, want := range map[string]string{"127.0.0.1:8081": "127.0.0.1:8081", "127.0.0.1:80": "127.0.0.1:80", "": ""} {
		d := discovered("web1", 4, 3000, 3001, 3002, 3003)
		d.Apps[1].Listen = listen
		r, err := InitConfig([]*Discovery{d}, InitOptions{Hosts: []string{"web1"}, App: "my-app"})
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := ParseConfig("rollout.yaml", r.YAML)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.ProbeAddress(); cfg.Probe.Enabled != (want != "") || (want != "" && got != want) {
			t.Fatalf("site at %q: probe %v at %q, want %q:\n%s", listen, cfg.Probe.Enabled, got, want, r.YAML)
		}
	}
}

// A host whose user may run only the app's helper: init writes sudo:
// helper and does not ask for passwordless sudo; a host without it keeps
// the question.
func TestInitConfigFindsTheHelper(t *testing.T) {
	out := strings.Replace(discoverOut, "@@rollout@@ sudo\nyes\n", "@@rollout@@ sudo\nno\n", 1)
	out = strings.Replace(out, "@@rollout@@ nginx\n", "@@rollout@@ helpers\nmy-app allowed\nauth refused\n@@rollout@@ nginx\n", 1)
	d, _ := parseDiscovery("web1", []byte(out))
	if d.Sudo || !slices.Equal(d.Helpers, []string{"my-app"}) {
		t.Fatalf("sudo %v, helpers %q", d.Sudo, d.Helpers)
	}
	helper := discovered("web1", 4, 3000, 3001, 3002, 3003)
	helper.Sudo, helper.Helpers = false, []string{"my-app"}
	r, err := InitConfig([]*Discovery{helper}, InitOptions{Hosts: []string{"web1"}, User: "deploy", App: "my-app", Now: time.Unix(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig("rollout.yaml", r.YAML)
	if err != nil || !cfg.UsesHelper() {
		t.Fatalf("%v\n%s", err, r.YAML)
	}
	for _, u := range r.Undecided {
		if strings.Contains(u, "sudo") {
			t.Errorf("asks for sudo with the helper there: %s", u)
		}
	}
	bare := discovered("web2", 4, 3000, 3001, 3002, 3003)
	bare.Sudo = false
	r, err = InitConfig([]*Discovery{helper, bare}, InitOptions{Hosts: []string{"web1", "web2"}, User: "deploy", App: "my-app", Now: time.Unix(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(r.YAML), "sudo: helper") || !slices.ContainsFunc(r.Undecided, func(u string) bool { return strings.Contains(u, "web2") && strings.Contains(u, "sudo") }) {
		t.Errorf("one host without the helper:\n%s\n%q", r.YAML, r.Undecided)
	}
}

// Hosts some of which serve from the ports after the others' (moved there
// by deploys with strategy.max_surge): init writes the first range as the
// instances, and the strategy. Otherwise it says what a surge would need
// and, when it fits the tightest host, proposes it commented out.
func TestInitConfigSurge(t *testing.T) {
	moved := func(host string, ports ...int) *Discovery {
		d := discovered(host, 8, ports...)
		out := strings.NewReplacer("3000;", fmt.Sprint(ports[0], ";"), "3001;", fmt.Sprint(ports[1], ";"),
			"3002 max_fails=3;", fmt.Sprint(ports[2], ";"), "3003;", fmt.Sprint(ports[3], ";")).Replace(discoverOut)
		_, nginxT := parseDiscovery(host, []byte(out))
		d.Apps[1].Upstreams, d.Apps[1].Listen = findUpstreams(nginxT, ports)
		return d
	}
	ds := []*Discovery{moved("web1", 3000, 3001, 3002, 3003), moved("web2", 3004, 3005, 3006, 3007)}
	r, err := InitConfig(ds, InitOptions{Hosts: []string{"web1", "web2"}, App: "my-app"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig("rollout.yaml", r.YAML)
	if err != nil || cfg.BasePort() != 3000 || len(cfg.Ports()) != 4 || cfg.Strategy.MaxSurge.String() != "100%" ||
		!strings.Contains(string(r.YAML), "# The hosts serve from web1 3000-3003, web2 3004-3007") {
		t.Fatalf("moved hosts (%v):\n%s", err, r.YAML)
	}
	if _, spare := cfg.slots(); fmt.Sprint(spare) != "[3004 3005 3006 3007]" {
		t.Errorf("spare ports %v", spare)
	}
	if _, err := InitConfig([]*Discovery{ds[0], moved("web2", 3005, 3006, 3007, 3008)}, InitOptions{Hosts: []string{"web1", "web2"}, App: "my-app"}); err == nil || !strings.Contains(err.Error(), "hosts disagree on the instances") {
		t.Errorf("ranges that are no slots: %v", err)
	}

	// Not moved: 4 of 48 MiB (the most any host's use) on the tightest.
	a, b := discovered("web1", 8, 3000, 3001, 3002, 3003), discovered("web2", 8, 3000, 3001, 3002, 3003)
	b.MemAvailable = 512 << 20
	r, err = InitConfig([]*Discovery{a, b}, InitOptions{Hosts: []string{"web1", "web2"}, App: "my-app"})
	if err != nil {
		t.Fatal(err)
	}
	want := "# New instances beside the old ones (strategy.max_surge: 100%) would need\n# about 192 MiB more on a host (4 of about 48 MiB each, as they run now); the\n# tightest, web2, has 512 MiB available. To deploy that way (3004-3007\n# become the spare ports: nothing else may listen there), uncomment:\n# strategy:\n#   max_surge: 100%\n"
	if !strings.Contains(string(r.YAML), want) {
		t.Errorf("a surge that fits: want\n%s\nin:\n%s", want, r.YAML)
	}
	if cfg, err := ParseConfig("rollout.yaml", r.YAML); err != nil || cfg.surging() {
		t.Errorf("the suggestion is not commented out: %v %+v", err, cfg.Strategy)
	}
	b.MemAvailable = 100 << 20
	r, err = InitConfig([]*Discovery{a, b}, InitOptions{Hosts: []string{"web1", "web2"}, App: "my-app"})
	if err != nil || !strings.Contains(string(r.YAML), "has 100 MiB available: 92 MiB short. One at a time it is.\n") || strings.Contains(string(r.YAML), "# strategy:") {
		t.Errorf("a surge that does not fit (%v):\n%s", err, r.YAML)
	}
	a.Apps[1].MemoryEach = 0 // nothing running to measure
	if r, err = InitConfig([]*Discovery{a, b}, InitOptions{Hosts: []string{"web1", "web2"}, App: "my-app"}); err != nil || strings.Contains(string(r.YAML), "max_surge") {
		t.Errorf("memory unknown (%v):\n%s", err, r.YAML)
	}
}
