package deployer

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const appHostTraefik = fourInstances + "traefik: {}\n"

// fakeTraefik is Traefik's API for one service, serving what the host's
// file (the fake's upstream) says, lag polls after each write; stale: it
// never reads the file again (its file provider is not watching it).
type fakeTraefik struct {
	srv   *httptest.Server
	mu    sync.Mutex
	host  *fakeRemote
	tr    TraefikConfig
	lag   int
	stale bool
	// served is what it serves; seen the file it last read; polls counts
	// the API's answers since.
	served []int
	seen   string
	polls  int
}

func newFakeTraefik(t *testing.T, host *fakeRemote, tr TraefikConfig) *fakeTraefik {
	f := &fakeTraefik{host: host, tr: tr}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeTraefik) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/http/services/"+f.tr.Service+"@file" {
		http.NotFound(w, r)
		return
	}
	f.host.mu.Lock()
	file := f.host.upstream
	f.host.mu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if file != f.seen && !f.stale {
		if f.polls >= f.lag || f.seen == "" {
			s, err := parseTraefik(&f.tr, []byte(file))
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			f.served, f.seen, f.polls = inService(s), file, 0
		} else {
			f.polls++
		}
	}
	var out struct {
		LoadBalancer struct {
			Servers []map[string]string `json:"servers"`
		} `json:"loadBalancer"`
	}
	for _, p := range f.served {
		out.LoadBalancer.Servers = append(out.LoadBalancer.Servers, map[string]string{"url": fmt.Sprintf("http://127.0.0.1:%d", p)})
	}
	json.NewEncoder(w).Encode(out)
}

func (f *fakeTraefik) servedNow() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.served)
}

// fakeTraefikHost is an app host whose own Traefik serves its four
// instances from rollout's file.
func fakeTraefikHost(t *testing.T) (*fakeRemote, *Config) {
	cfg, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [web1]\nprobe: false\n"+appHostTraefik))
	if err != nil {
		t.Fatal(err)
	}
	app := newFakeRemote(t, 3000, 3001, 3002, 3003)
	app.upstream = string(renderTraefik(cfg.Traefik, servers{3000: false, 3001: false, 3002: false, 3003: false}))
	app.traefik = newFakeTraefik(t, app, *cfg.Traefik)
	app.traefik.lag = 2
	return app, cfg
}

// With Traefik on the app host, each change is one write of rollout's
// file, then polls of Traefik's API until it serves it; each instance
// restarts out of service, a drained one is a comment in the file, and
// its requests in flight are waited for on the host.
func TestTraefikDeploysThroughItsFile(t *testing.T) {
	app, _ := fakeTraefikHost(t)
	var inAtRestart []int
	app.onRestart = func(port int) {
		if strings.Contains(app.upstream, fmt.Sprintf("          - url: \"http://127.0.0.1:%d\"", port)) || slices.Contains(app.traefik.servedNow(), port) {
			inAtRestart = append(inAtRestart, port)
		}
	}
	d, events := fakeDeployer(t, appHostTraefik, app)
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(rep.Hosts[0].Restarted) != "[3000 3001 3002 3003]" || len(inAtRestart) > 0 {
		t.Errorf("restarted %v; in service at their restart: %v", rep.Hosts[0].Restarted, inAtRestart)
	}
	if len(app.writes) != 5 || !strings.Contains(app.writes[0], `# drained: - url: "http://127.0.0.1:3000"`) {
		t.Errorf("%d writes; the first:\n%s", len(app.writes), app.writes[0])
	}
	if got := app.traefik.servedNow(); fmt.Sprint(got) != "[3000 3001 3002 3003]" {
		t.Errorf("traefik serves %v at the end", got)
	}
	var waited [][]int // the fake notes each write's (none) and each wait's ports
	for _, w := range app.drained {
		if len(w) > 0 {
			waited = append(waited, w)
		}
	}
	if fmt.Sprint(waited) != "[[3000] [3001] [3002] [3003]]" {
		t.Errorf("waited for %v", app.drained)
	}
	if !hasEvent(*events, 3001, StepDrain, StatusOK, "one write of the file Traefik watches") {
		t.Errorf("no drain event naming the write")
	}
}

// The preflight refuses a Traefik that does not answer, or that does not
// serve the file (its file provider not watching it), and a file rollout
// did not write or someone edited.
func TestTraefikPreflightRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch func(r *fakeRemote)
		want  string
	}{
		{"api off", func(r *fakeRemote) { r.traefik = nil }, "traefik's API at localhost:8080"},
		{"not watching", func(r *fakeRemote) { r.traefik.stale, r.traefik.seen = true, "x" }, "traefik serves [] for my-app, but /etc/traefik/dynamic/my-app.yml says [3000 3001 3002 3003]: is its file provider watching the file?"},
		{"not ours", func(r *fakeRemote) { r.upstream = "http:\n  services: {}\n" }, "was not written by rollout"},
		{"edited", func(r *fakeRemote) {
			r.upstream = strings.Replace(r.upstream, "maxIdleConnsPerHost: -1", "maxIdleConnsPerHost: 10", 1)
		}, "was changed by hand"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app, _ := fakeTraefikHost(t)
			tc.patch(app)
			d, _ := fakeDeployer(t, appHostTraefik, app)
			_, err := d.Deploy(testCtx(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if len(app.ops) != 0 || len(app.writes) != 0 {
				t.Errorf("changed: %v, %d writes", app.ops, len(app.writes))
			}
		})
	}
}

// A file Traefik does not take up within the timeout fails the change,
// saying so; the instance is not restarted.
func TestTraefikChangeNotApplied(t *testing.T) {
	app, cfg := fakeTraefikHost(t)
	b := newTraefikBalancer(cfg, app)
	b.applyTimeout = 50 * time.Millisecond
	srv, err := b.preflight(testCtx(t), cfg.Ports())
	if err != nil {
		t.Fatal(err)
	}
	app.traefik.stale = true
	if _, err := b.change(testCtx(t), srv, srv.with(true, 3000), []int{3000}); err == nil || !strings.Contains(err.Error(), "traefik did not apply /etc/traefik/dynamic/my-app.yml within 50ms (want [3001 3002 3003]): it serves [3000 3001 3002 3003]") {
		t.Fatalf("change not applied: %v", err)
	}
	for _, w := range app.drained {
		if len(w) > 0 {
			t.Errorf("waited for the drained instance's requests before Traefik took it out: %v", app.drained)
		}
	}
}

// The file keeps what is drained (a restarted Traefik reads it again), and
// a file written by hand is refused; render and parse agree.
func TestTraefikFileRoundTrips(t *testing.T) {
	tr := &TraefikConfig{File: "/etc/traefik/dynamic/my-app.yml", Service: "my-app", ServerAddress: "127.0.0.1"}
	s := servers{3000: false, 3001: true, 3002: false}
	content := renderTraefik(tr, s)
	want := `        servers:
          - url: "http://127.0.0.1:3000"
          # drained: - url: "http://127.0.0.1:3001"
          - url: "http://127.0.0.1:3002"
  serversTransports:
    my-app:
      maxIdleConnsPerHost: -1
`
	if !strings.HasSuffix(string(content), want) {
		t.Errorf("rendered:\n%s", content)
	}
	got, err := parseTraefik(tr, content)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(s) {
		t.Errorf("parsed %v, %v", got, err)
	}
	if _, err := parseTraefik(tr, []byte(strings.Replace(string(content), "3002", "3003", 1)+"\n")); err == nil {
		t.Error("a file edited by hand was taken")
	}
}

// Drained by hand, an instance stays a comment in the file through a
// deploy; scale adds new instances to the file once healthy and removes
// surplus ones.
func TestTraefikDrainAndScale(t *testing.T) {
	app, _ := fakeTraefikHost(t)
	d, _ := fakeDeployer(t, appHostTraefik, app)
	d.Holder, d.Targets = NewLockInfo(opDrain, ""), map[string][]int{"web1": {3001}}
	if _, err := d.Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	d.Holder, d.Targets = NewLockInfo(opDeploy, ""), nil
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := app.traefik.servedNow(); fmt.Sprint(got) != "[3000 3002 3003]" || !strings.Contains(app.upstream, `# drained: - url: "http://127.0.0.1:3001"`) {
		t.Fatalf("after drain and deploy: served %v\n%s", got, app.upstream)
	}
	d, _ = fakeDeployer(t, "base_port: 3000\ninstances: 6\ntraefik: {}\n", app)
	if _, err := d.Scale(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := app.traefik.servedNow(); fmt.Sprint(got) != "[3000 3002 3003 3004 3005]" || !app.units[3005].enabled {
		t.Errorf("scale out: served %v", got)
	}
}

func TestTraefikConfig(t *testing.T) {
	base := "app: my-app\nhosts: [web1]\nports: [3000]\n"
	cfg, err := ParseConfig("rollout.yaml", []byte(base+"traefik: {file: /etc/traefik/conf/app.yaml, service: web, api: '127.0.0.1:9000'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tr := cfg.Traefik; tr.File != "/etc/traefik/conf/app.yaml" || tr.Service != "web" || cfg.Nginx.UpstreamFile != tr.File {
		t.Errorf("parsed %+v", tr)
	}
	if cfg, _ := ParseConfig("rollout.yaml", []byte(base+"traefik: {}\n")); cfg.Traefik.File != "/etc/traefik/dynamic/my-app.yml" || cfg.Traefik.Service != "my-app" {
		t.Errorf("defaults %+v", cfg.Traefik)
	}
	for yaml, want := range map[string]string{
		"traefik: {file: /etc/traefik/x.toml}\n":           "traefik.file: must end in .yml or .yaml",
		"traefik: {api: '10.0.0.1:8080'}\n":                "traefik.api: must be the loopback address",
		"traefik: {service: 'a b'}\n":                      "traefik.service",
		"traefik: {}\nnginx: {upstream: x}\n":              "nginx: is for Nginx beside the instances",
		"traefik: {}\ncaddy: {}\n":                         "traefik: and caddy: both put a balancer",
		"traefik: {}\nstrategy: {max_surge: 1}\n":          "",
		"traefik: {}\nsudo: helper\nssh: {user: deploy}\n": "",
		"traefik: {}\nlb: {hosts: [lb1]}\n":                "and lb: both put a balancer",
		"traefik: {server_address: web}\n":                 "traefik.server_address: must be an IP address",
		"traefik: {}\nwatch: {webhook: 'http://x'}\n":      "watch: host alerts read Nginx",
		"traefik: {file: /etc/traefik/dynamic/a.yml}\n":    "",
	} {
		_, err := ParseConfig("rollout.yaml", []byte(base+yaml))
		if want == "" {
			if err != nil {
				t.Errorf("%s: %v", yaml, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", yaml, err, want)
		}
	}
}

// Setup writes the file (when missing) and shows Traefik's static
// configuration; the plan's drain is the file's write.
func TestTraefikSetupAndPlan(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [web1]\nbase_port: 3000\ninstances: 2\ntraefik: {}\nsetup: {exec_start: /usr/bin/node server.js}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var file, static *ManagedFile
	for _, f := range Render(cfg, cfg.Ports()) {
		switch f.Path {
		case "/etc/traefik/dynamic/my-app.yml":
			file = &f
		case "/etc/traefik/traefik.yml":
			static = &f
		}
		if strings.Contains(f.Path, "nginx") {
			t.Errorf("renders an Nginx file with traefik: %s", f.Path)
		}
	}
	if file == nil || !file.Keep || file.Doc || !strings.Contains(file.Content, `- url: "http://127.0.0.1:3001"`) {
		t.Fatalf("the file: %+v", file)
	}
	if static == nil || !static.Doc || !strings.Contains(static.Content, "directory: /etc/traefik/dynamic") || !strings.Contains(static.Content, "providersThrottleDuration: 0s") {
		t.Fatalf("the static configuration: %+v", static)
	}
	p := traefikPlan(cfg)
	if s := p.drain([]int{3001}, []int{3000}); !strings.Contains(s.Command, "write-upstream") || !strings.Contains(s.Does, "GET http://localhost:8080/api/http/services/my-app@file") {
		t.Errorf("drain step %+v", s)
	}
	if s := p.surge([]int{3002, 3003}, []int{3000, 3001}); !strings.Contains(s.Command, "write-upstream") || !strings.Contains(s.Does, "put 3002, 3003 into the service's servers and remove 3000, 3001, in one write") {
		t.Errorf("surge step %+v", s)
	}
}

// With strategy.max_surge, the new instances start on the spare ports and
// one write of the file puts them in the service and removes the old
// ones; Traefik serves it before the old ones' connections are waited for
// and they are stopped. The next deploy moves them back.
func TestTraefikSurgeIsOneWrite(t *testing.T) {
	app, _ := fakeTraefikHost(t)
	var servedAtStart [][]int
	app.onRestart = func(int) { servedAtStart = append(servedAtStart, app.traefik.servedNow()) }
	d, events := fakeDeployer(t, appHostTraefik+"strategy: {max_surge: 100%}\n", app)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := app.traefik.servedNow(); fmt.Sprint(got) != "[3004 3005 3006 3007]" {
		t.Errorf("traefik serves %v after the surge", got)
	}
	if len(app.writes) != 1 || strings.Contains(app.writes[0], ":3000") || strings.Contains(app.writes[0], "# drained:") {
		t.Errorf("%d writes; the first:\n%s", len(app.writes), app.writes[0])
	}
	if fmt.Sprint(app.drained) != "[[] [3000 3001 3002 3003]]" {
		t.Errorf("waited for %v, want the old instances after the write", app.drained)
	}
	for _, s := range servedAtStart {
		if fmt.Sprint(s) != "[3000 3001 3002 3003]" {
			t.Errorf("a new instance started while Traefik served %v: capacity dropped", s)
		}
	}
	for p := 3000; p < 3004; p++ {
		if u := app.units[p]; u.active || u.enabled {
			t.Errorf("old instance %d still active or enabled", p)
		}
	}
	if !hasEvent(*events, 3000, StepDrain, StatusOK, "one write of the file Traefik watches") {
		t.Error("no change event naming the write")
	}

	d.Version = "v3"
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := app.traefik.servedNow(); fmt.Sprint(got) != "[3000 3001 3002 3003]" {
		t.Errorf("traefik serves %v after the second surge", got)
	}
}

// status shows what Traefik serves, not what the file says: a Traefik that
// does not answer, or serves other than the file, is an error, and an
// instance it does not serve is shown out of service.
func TestTraefikStatusIsTraefiksWord(t *testing.T) {
	app, cfg := fakeTraefikHost(t)
	hs := hostStatus(testCtx(t), cfg, "web1", app, nil)
	if hs.Error != "" || len(hs.Instances) != 4 || !hs.Instances[1].InNginx {
		t.Fatalf("status with Traefik serving the file: %+v", hs)
	}
	// The file gains a drained 3001 that Traefik never reads.
	app.traefik.stale = true
	app.upstream = string(renderTraefik(cfg.Traefik, servers{3000: false, 3001: true, 3002: false, 3003: false}))
	hs = hostStatus(testCtx(t), cfg, "web1", app, nil)
	if !strings.Contains(hs.Error, "traefik serves [3000 3001 3002 3003] for my-app, but /etc/traefik/dynamic/my-app.yml says [3000 3002 3003]") || !hs.Instances[1].InNginx {
		t.Errorf("status with Traefik not watching the file: %q, 3001 in service %v", hs.Error, hs.Instances[1].InNginx)
	}
	app.traefik = nil
	hs = hostStatus(testCtx(t), cfg, "web1", app, nil)
	if !strings.Contains(hs.Error, "is Traefik running") || hs.Instances[0].InNginx {
		t.Errorf("status with Traefik down: %q, 3000 in service %v", hs.Error, hs.Instances[0].InNginx)
	}
}
