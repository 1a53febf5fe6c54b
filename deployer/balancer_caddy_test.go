package deployer

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

const appHostCaddy = fourInstances + "caddy: {}\n"

// fakeCaddy is Caddy's admin API as 2.6 answers it: GET and PATCH at any
// path of the config, the ETag in a trailer, If-Match honoured (412).
type fakeCaddy struct {
	srv *httptest.Server
	mu  sync.Mutex
	cfg any
	// patches are the upstreams' ports after each PATCH; status, when
	// set, answers every request with it.
	patches []string
	status  int
	// noEtag: Caddy before 2.6, which sends none.
	noEtag bool
	// failGets fails that many GETs after the next PATCH.
	failGets int
	// onPatch runs before a PATCH is checked (mu not held).
	onPatch func()
}

// caddyConfig is the config Caddy adapts from the Caddyfile setup shows
// (a reverse_proxy to the ports, keepalive off), beside a site of its own.
func caddyConfig(keepAlive bool, ports ...int) string {
	var ups []string
	for _, p := range ports {
		ups = append(ups, fmt.Sprintf(`{"dial":"127.0.0.1:%d"}`, p))
	}
	return `{"admin":{"listen":"localhost:2019"},"apps":{"http":{"servers":{"srv0":{"listen":[":80"],"routes":[{"match":[{"host":["example.com"]}],"handle":[{"handler":"subroute","routes":[{"handle":[{"handler":"file_server"}]}]}],"terminal":true}]},` +
		`"srv1":{"listen":[":8080"],"routes":[{"handle":[{"handler":"reverse_proxy","transport":{"keep_alive":{"enabled":` + strconv.FormatBool(keepAlive) + `},"protocol":"http"},"upstreams":[` + strings.Join(ups, ",") + `]}]}]}}}}}`
}

func newFakeCaddy(t *testing.T, config string) *fakeCaddy {
	c := &fakeCaddy{}
	c.load(config)
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *fakeCaddy) load(config string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := json.Unmarshal([]byte(config), &c.cfg); err != nil {
		panic(err)
	}
}

// at is the value at path (/config/a/0/b) and a setter for it.
func (c *fakeCaddy) at(path string) (any, func(any), bool) {
	var parent any
	var set func(any)
	v := any(map[string]any{"config": c.cfg})
	for _, k := range strings.Split(strings.Trim(path, "/"), "/") {
		if k == "" {
			continue
		}
		parent = v
		switch x := parent.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[k]; !ok {
				return nil, nil, false
			}
			set = func(n any) { x[k] = n }
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i >= len(x) {
				return nil, nil, false
			}
			v = x[i]
			set = func(n any) { x[i] = n }
		default:
			return nil, nil, false
		}
	}
	if path == "/config/" || path == "/config" {
		set = func(n any) { c.cfg = n }
	}
	return v, set, true
}

func (c *fakeCaddy) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPatch && c.onPatch != nil {
		c.onPatch()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status != 0 {
		http.Error(w, `{"error":"host not allowed: localhost:2019"}`, c.status)
		return
	}
	if r.Method == http.MethodGet && c.failGets > 0 && len(c.patches) > 0 {
		c.failGets--
		http.Error(w, `{"error":"busy"}`, http.StatusInternalServerError)
		return
	}
	v, set, ok := c.at(r.URL.Path)
	if !ok {
		http.Error(w, `{"error":"invalid traversal path"}`, http.StatusNotFound)
		return
	}
	cur, _ := json.Marshal(v)
	etag := fmt.Sprintf(`"%s %x"`, r.URL.Path, crc32.ChecksumIEEE(cur))
	switch r.Method {
	case http.MethodGet:
		if c.noEtag {
			w.Write(cur)
			return
		}
		w.Header().Set("Trailer", "Etag")
		w.Write(cur)
		w.Header().Set("Etag", etag)
	case http.MethodPatch:
		if m := r.Header.Get("If-Match"); m != "" && m != etag {
			http.Error(w, `{"error":"precondition failed"}`, http.StatusPreconditionFailed)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var n any
		if err := json.Unmarshal(body, &n); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		set(n)
		c.patches = append(c.patches, fmt.Sprint(c.ports()))
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// ports are the reverse_proxy's upstreams' ports (mu held).
func (c *fakeCaddy) ports() []int {
	v, _, _ := c.at("/config/apps/http/servers/srv1/routes/0/handle/0/upstreams")
	var out []int
	list, _ := v.([]any)
	for _, u := range list {
		_, p, _ := strings.Cut(u.(map[string]any)["dial"].(string), ":")
		n, _ := strconv.Atoi(p)
		out = append(out, n)
	}
	return out
}

func (c *fakeCaddy) upstreams() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprint(c.ports())
}

// fakeCaddyHost is an app host whose own Caddy serves its four instances
// at 127.0.0.1 (and no Nginx).
func fakeCaddyHost(t *testing.T) *fakeRemote {
	app := newFakeRemote(t, 3000, 3001, 3002, 3003)
	app.upstream = ""
	app.caddy = newFakeCaddy(t, caddyConfig(false, 3000, 3001, 3002, 3003))
	return app
}

// With Caddy on the app host, each change is one PATCH of the upstreams
// through the admin API (the next drain puts the last instance back in
// the same change), each instance restarts out of the upstreams, and its
// requests in flight are waited for on the host.
func TestCaddyDeploysThroughTheAdminAPI(t *testing.T) {
	app := fakeCaddyHost(t)
	var outAtRestart []string
	app.onRestart = func(port int) {
		if slices.Contains(app.caddy.ports(), port) {
			outAtRestart = append(outAtRestart, fmt.Sprint(port))
		}
	}
	d, events := fakeDeployer(t, appHostCaddy, app)
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Hosts[0].Restarted; fmt.Sprint(got) != "[3000 3001 3002 3003]" {
		t.Errorf("restarted %v", got)
	}
	if len(outAtRestart) > 0 {
		t.Errorf("restarted while in the upstreams: %v", outAtRestart)
	}
	want := "[[3001 3002 3003] [3000 3002 3003] [3000 3001 3003] [3000 3001 3002] [3000 3001 3002 3003]]"
	if fmt.Sprint(app.caddy.patches) != want {
		t.Errorf("patches %v, want %s", app.caddy.patches, want)
	}
	if fmt.Sprint(app.drained) != "[[3000] [3001] [3002] [3003]]" || len(app.writes) != 0 {
		t.Errorf("waited for %v; nginx writes %d", app.drained, len(app.writes))
	}
	if !hasEvent(*events, 3001, StepDrain, StatusOK, "one admin API change") {
		t.Errorf("no drain event naming the admin API change: %v", *events)
	}
}

// The preflight refuses, before any change, a Caddy it cannot change
// safely, saying why.
func TestCaddyPreflightRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch func(r *fakeRemote)
		want  string
	}{
		{"admin off", func(r *fakeRemote) { r.caddy = nil }, "GET /config/: "},
		{"admin refuses", func(r *fakeRemote) { r.caddy.status = http.StatusForbidden }, "403 Forbidden: {\"error\":\"host not allowed: localhost:2019\"}"},
		{"no etag", func(r *fakeRemote) { r.caddy.noEtag = true }, "sends no ETag (Caddy before 2.6?)"},
		{"keep-alive", func(r *fakeRemote) { r.caddy.load(caddyConfig(true, 3000, 3001, 3002, 3003)) }, "keeps idle connections to the instances"},
		{"none", func(r *fakeRemote) { r.caddy.load(caddyConfig(false, 4000)) }, "no reverse_proxy in its config sends requests to 127.0.0.1:3000, 3001, 3002, 3003"},
		{"foreign upstream", func(r *fakeRemote) {
			r.caddy.load(strings.Replace(caddyConfig(false, 3000, 3001, 3002, 3003), `{"dial":"127.0.0.1:3003"}`, `{"dial":"127.0.0.1:3003"},{"dial":"10.0.0.9:3000"}`, 1))
		}, `upstream "10.0.0.9:3000" is not an instance at 127.0.0.1`},
		{"two", func(r *fakeRemote) {
			r.caddy.load(strings.Replace(caddyConfig(false, 3000), `"file_server"`, `"reverse_proxy","upstreams":[{"dial":"127.0.0.1:3001"}]`, 1))
		}, "2 reverse_proxy handlers send requests to 127.0.0.1:3000, 3001, 3002, 3003"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := fakeCaddyHost(t)
			tc.patch(app)
			d, _ := fakeDeployer(t, appHostCaddy, app)
			_, err := d.Deploy(testCtx(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if len(app.ops) != 0 || app.caddy != nil && len(app.caddy.patches) != 0 {
				t.Errorf("changed: %v", app.ops)
			}
		})
	}
}

// A Caddy restarted mid-deploy loads its Caddyfile again (every instance
// in the upstreams): the next change's If-Match is refused, rollout reads
// the upstreams again, checks capacity on them and goes on; no instance
// restarts while in service, and all end in it.
func TestCaddyRestartedMidDeploy(t *testing.T) {
	app := fakeCaddyHost(t)
	var inAtRestart []int
	app.onRestart = func(port int) {
		if slices.Contains(app.caddy.ports(), port) {
			inAtRestart = append(inAtRestart, port)
		}
		if port == 3001 {
			go app.caddy.load(caddyConfig(false, 3000, 3001, 3002, 3003)) // r.mu held
		}
	}
	d, _ := fakeDeployer(t, appHostCaddy, app)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if len(inAtRestart) > 0 {
		t.Errorf("restarted in service: %v", inAtRestart)
	}
	if got := app.caddy.upstreams(); got != "[3000 3001 3002 3003]" {
		t.Errorf("upstreams at the end %s", got)
	}
}

// preflightedCaddy is a host with Caddy and its balancer, through the
// preflight, with the servers it read.
func preflightedCaddy(t *testing.T) (*fakeRemote, *caddyBalancer, servers) {
	t.Helper()
	app := fakeCaddyHost(t)
	d, _ := fakeDeployer(t, appHostCaddy, app)
	b := newCaddyBalancer(d.Config, app)
	srv, err := b.preflight(testCtx(t), d.Config.Ports())
	if err != nil {
		t.Fatal(err)
	}
	return app, b, srv
}

// A change someone else made between two of rollout's is not overwritten:
// the PATCH is refused (If-Match), and the balancer says so.
func TestCaddyChangedUnderneath(t *testing.T) {
	app, b, srv := preflightedCaddy(t)
	app.caddy.onPatch = func() { app.caddy.load(caddyConfig(false, 3000, 3001, 3003)); app.caddy.onPatch = nil }
	if _, err := b.change(testCtx(t), srv, srv.with(true, 3000), []int{3000}); err != errUpstreamChanged {
		t.Fatalf("change on upstreams changed meanwhile: %v", err)
	}
	if len(app.caddy.patches) != 0 || app.caddy.upstreams() != "[3000 3001 3003]" {
		t.Errorf("overwrote: %v %s", app.caddy.patches, app.caddy.upstreams())
	}
	now, err := b.read(testCtx(t))
	if err != nil || fmt.Sprint(now) != "map[3000:false 3001:false 3003:false]" {
		t.Fatalf("read again: %v %v", now, err)
	}
	if _, err := b.change(testCtx(t), now, now.with(true, 3000, 3001, 3003), []int{3000, 3001, 3003}); err == nil || !strings.Contains(err.Error(), "no upstream") {
		t.Errorf("emptied the upstreams: %v", err)
	}
}

// A change whose PATCH landed but whose read of the new ETag failed has
// still been made (no error, the drain waited for); the next change reads
// first instead of sending no If-Match.
func TestCaddyReadAfterPatchFails(t *testing.T) {
	app, b, srv := preflightedCaddy(t)
	app.caddy.failGets = 1
	drained := srv.with(true, 3000)
	if _, err := b.change(testCtx(t), srv, drained, []int{3000}); err != nil {
		t.Fatalf("change whose read failed: %v", err)
	}
	if b.etag != "" || fmt.Sprint(app.drained) != "[[3000]]" {
		t.Fatalf("etag %q, waited for %v", b.etag, app.drained)
	}
	app.caddy.onPatch = func() { app.caddy.load(caddyConfig(false, 3001, 3002)); app.caddy.onPatch = nil }
	if _, err := b.change(testCtx(t), drained, drained.with(false, 3000), nil); err != errUpstreamChanged {
		t.Fatalf("next change: %v, want it refused by If-Match", err)
	}
	if got := app.caddy.upstreams(); got != "[3001 3002]" {
		t.Errorf("overwrote someone's change: %s", got)
	}
}

// Scaling with Caddy adds the new instances to the upstreams once
// healthy, and removes the surplus, without a reload of any file.
func TestCaddyScale(t *testing.T) {
	app := newFakeRemote(t, 3000, 3001)
	app.upstream = ""
	app.caddy = newFakeCaddy(t, caddyConfig(false, 3000, 3001))
	d, _ := fakeDeployer(t, "base_port: 3000\ninstances: 3\ncaddy: {}\n", app)
	if _, err := d.Scale(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := app.caddy.upstreams(); got != "[3000 3001 3002]" || fmt.Sprint(app.ops) != "[start 3002]" || !app.units[3002].enabled {
		t.Fatalf("scale out: upstreams %s, ops %v", got, app.ops)
	}
	d, _ = fakeDeployer(t, "base_port: 3000\ninstances: 1\ncaddy: {}\n", app)
	if _, err := d.Scale(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := app.caddy.upstreams(); got != "[3000]" || fmt.Sprint(app.ops) != "[start 3002 stop 3002 stop 3001]" {
		t.Errorf("scale in: upstreams %s, ops %v", got, app.ops)
	}
}

// An instance drained by hand is out of Caddy's upstreams; a deploy
// restarts it and keeps it out (it is not taken for a new instance to
// add), and undrain puts it back.
func TestCaddyDrainByHand(t *testing.T) {
	app := fakeCaddyHost(t)
	d, _ := fakeDeployer(t, appHostCaddy, app)
	d.Holder = NewLockInfo(opDrain, "")
	d.Targets = map[string][]int{"web1": {3001}}
	if _, err := d.Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := app.caddy.upstreams(); got != "[3000 3002 3003]" {
		t.Fatalf("after the drain: %s", got)
	}
	d.Holder, d.Targets = NewLockInfo(opDeploy, ""), nil
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := app.caddy.upstreams(); got != "[3000 3002 3003]" || !slices.Contains(rep.Hosts[0].Restarted, 3001) || slices.Contains(app.ops, "start 3001") {
		t.Fatalf("after the deploy: upstreams %s, restarted %v, ops %v", got, rep.Hosts[0].Restarted, app.ops)
	}
	d.Holder, d.Targets = NewLockInfo(opUndrain, ""), map[string][]int{"web1": {3001}}
	if _, err := d.Undrain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := app.caddy.upstreams(); got != "[3000 3001 3002 3003]" {
		t.Errorf("after the undrain: %s", got)
	}
}

func TestCaddyConfig(t *testing.T) {
	base := "app: my-app\nhosts: [web1]\nports: [3000]\n"
	cfg, err := ParseConfig("rollout.yaml", []byte(base+"caddy: {admin: '127.0.0.1:2999', server_address: 10.0.0.5}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Caddy.Admin != "127.0.0.1:2999" || cfg.Nginx.ServerAddress != "10.0.0.5" {
		t.Errorf("parsed %+v", cfg.Caddy)
	}
	for yaml, want := range map[string]string{
		"caddy: {admin: '10.0.0.1:2019'}\n":                             "caddy.admin: must be the admin API's loopback address",
		"caddy: {admin: 'localhost'}\n":                                 "caddy.admin: must be",
		"caddy: {server_address: web}\n":                                "caddy.server_address: must be an IP address",
		"caddy: {}\nnginx: {upstream: x}\n":                             "nginx: is for Nginx beside the instances",
		"caddy: {}\nhaproxy: {backend: app}\n":                          "and haproxy: both put a balancer on the app hosts",
		"caddy: {}\nstrategy: {max_surge: 1}\n":                         "strategy.max_surge: with caddy: needs Caddy run with --resume, and caddy.resume: true",
		"caddy: {}\nlb: {hosts: [lb1]}\n":                               "is Caddy on the app hosts",
		"caddy: {}\nstrategy: {bake: 1m}\n":                             "strategy.bake: reads Nginx's access log",
		"caddy: {admin: localhost:2019, upstreams: [127.0.0.1:3000]}\n": "upstreams",
	} {
		_, err := ParseConfig("rollout.yaml", []byte(base+yaml))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", yaml, err, want)
		}
	}
}

// Setup shows the Caddyfile site to add (and writes no Nginx file); the
// plan's steps are the admin API's.
func TestCaddySetupAndPlan(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [web1]\nbase_port: 3000\ninstances: 2\ncaddy: {}\nsetup: {exec_start: /usr/bin/node server.js, server_name: example.com www.example.com}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var site *ManagedFile
	for _, f := range Render(cfg, cfg.Ports()) {
		if strings.Contains(f.Path, "nginx") {
			t.Errorf("renders an Nginx file with caddy: %s", f.Path)
		}
		if f.Path == "/etc/caddy/Caddyfile" {
			site = &f
		}
	}
	want := "example.com:80, www.example.com:80 {\n\treverse_proxy 127.0.0.1:3000 127.0.0.1:3001 {\n\t\tlb_try_duration 2s\n\t\ttransport http {\n\t\t\tkeepalive off\n\t\t}\n\t}\n}\n"
	if site == nil || !site.Doc || !strings.HasSuffix(site.Content, want) {
		t.Fatalf("caddy site: %+v", site)
	}
	p := caddyPlan(cfg)
	drain := p.drain([]int{3001}, []int{3000})
	if drain.Command != "PATCH http://localhost:2019/PATH" || !strings.Contains(drain.Does, "If-Match") || !strings.Contains(drain.Stdin, `{"dial":"127.0.0.1:3000"}`) {
		t.Errorf("drain step %+v", drain)
	}
	if w := p.wait([]int{3001}); !strings.Contains(w.Command, "write-upstream") && !strings.Contains(w.Command, "3001") {
		t.Errorf("wait step %+v", w)
	}
	if s := p.surge([]int{3002, 3003}, []int{3000, 3001}); s.Command != "PATCH http://localhost:2019/PATH" || !strings.Contains(s.Does, "in one change, put 3002, 3003 into the upstreams and take 3000, 3001 out") {
		t.Errorf("surge step %+v", s)
	}
	cfg.Caddy.Resume = true
	files := Render(cfg, cfg.Ports())
	if !slices.ContainsFunc(files, func(f ManagedFile) bool {
		return f.Path == "/etc/systemd/system/caddy.service.d/resume.conf" && f.Doc && strings.Contains(f.Content, "caddy run --environ --resume --config /etc/caddy/Caddyfile")
	}) {
		t.Errorf("with caddy.resume, setup does not show the drop-in")
	}
}

// With strategy.max_surge and caddy.resume, the new instances start on
// the spare ports while the old ones serve, one PATCH puts them in and
// takes the old ones out, and the old ones' connections are waited for
// before they stop; the next deploy finds the live ports in Caddy's
// upstreams and moves back. A Caddy whose admin config persists nothing
// (what --resume would load) is refused before any change.
func TestCaddySurgeIsOnePatch(t *testing.T) {
	const yaml = appHostCaddy + "strategy: {max_surge: 100%}\n"
	app := fakeCaddyHost(t)
	var upAtStart []string
	app.onRestart = func(int) { upAtStart = append(upAtStart, app.caddy.upstreams()) }
	d, events := fakeDeployer(t, strings.Replace(yaml, "caddy: {}", "caddy: {resume: true}", 1), app)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(app.caddy.patches) != "[[3004 3005 3006 3007]]" || fmt.Sprint(app.drained) != "[[3000 3001 3002 3003]]" {
		t.Errorf("patches %v, waited for %v: want one change, then the old ones' wait", app.caddy.patches, app.drained)
	}
	for _, u := range upAtStart {
		if u != "[3000 3001 3002 3003]" {
			t.Errorf("a new instance started while Caddy sent to %s: capacity dropped", u)
		}
	}
	for p := 3000; p < 3004; p++ {
		if u := app.units[p]; u.active || u.enabled {
			t.Errorf("old instance %d still active or enabled", p)
		}
	}
	if !hasEvent(*events, 3000, StepDrain, StatusOK, "one admin API change") {
		t.Error("no change event naming the admin API")
	}
	d.Version = "v3"
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := app.caddy.upstreams(); got != "[3000 3001 3002 3003]" {
		t.Errorf("upstreams %s after the second surge", got)
	}

	app = fakeCaddyHost(t)
	app.caddy.load(strings.Replace(caddyConfig(false, 3000, 3001, 3002, 3003), `"admin":{`, `"admin":{"config":{"persist":false},`, 1))
	d, _ = fakeDeployer(t, strings.Replace(yaml, "caddy: {}", "caddy: {resume: true}", 1), app)
	if _, err := d.Deploy(testCtx(t)); err == nil || !strings.Contains(err.Error(), "its admin config has persist off") || len(app.ops) != 0 {
		t.Errorf("persist off: %v; did %v", err, app.ops)
	}
}
