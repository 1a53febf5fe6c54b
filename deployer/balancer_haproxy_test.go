package deployer

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const appHostHAProxy = fourInstances + "haproxy: {backend: app}\n"

// fakeHAProxyHost is an app host whose own HAProxy serves its four
// instances at 127.0.0.1 (and no Nginx).
func fakeHAProxyHost(t *testing.T) *fakeRemote {
	app := newFakeRemote(t, 3000, 3001, 3002, 3003)
	app.upstream = ""
	app.haproxy = newFakeHAProxy("127.0.0.1", 3000, 3001, 3002, 3003)
	return app
}

// With HAProxy on the app host, each instance is drained and readied
// through the runtime API in one call per change: no file is written, no
// reload happens, and the wait is HAProxy's, not a count of sockets.
func TestAppHostHAProxyDeploysThroughTheAPI(t *testing.T) {
	app := fakeHAProxyHost(t)
	d, events := fakeDeployer(t, appHostHAProxy, app)
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Hosts[0].Restarted; fmt.Sprint(got) != "[3000 3001 3002 3003]" {
		t.Errorf("restarted %v", got)
	}
	want := "[drain app3000 ready app3000 drain app3001 ready app3001 drain app3002 ready app3002 drain app3003 ready app3003]"
	if fmt.Sprint(app.haproxy.ops) != want {
		t.Errorf("runtime API: %v", app.haproxy.ops)
	}
	if len(app.writes) != 0 || len(app.drained) != 0 {
		t.Errorf("file writes %d, socket waits %v", len(app.writes), app.drained)
	}
	for _, s := range app.haproxy.servers {
		if s.admin != 0 {
			t.Errorf("server %s left with admin state %#x", s.name, s.admin)
		}
	}
	var waits int
	for _, e := range *events {
		if e.Step == StepWaitDrain && e.Duration == 12*time.Millisecond {
			waits++
		}
	}
	if waits != 4 {
		t.Errorf("%d wait-drain events with HAProxy's wait, want 4", waits)
	}
}

// The preflight refuses, before any change, a backend that lacks an
// instance's server or holds one in maintenance, and a host without the
// runtime API.
func TestAppHostHAProxyPreflightRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch func(r *fakeRemote)
		want  string
	}{
		{"maintenance", func(r *fakeRemote) { r.haproxy.servers[2].admin = 0x01 }, "haproxy backend app: server app/app3002 (127.0.0.1:3002) is in maintenance"},
		{"missing", func(r *fakeRemote) { r.haproxy.servers = r.haproxy.servers[1:] }, `no server at 127.0.0.1:3000: rollout does not write haproxy.cfg; add "server NAME 127.0.0.1:3000 check" to backend app`},
		{"no api", func(r *fakeRemote) { r.haproxy = nil }, "haproxy check: not a balancer running HAProxy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := fakeHAProxyHost(t)
			tc.patch(app)
			d, _ := fakeDeployer(t, appHostHAProxy, app)
			_, err := d.Deploy(testCtx(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if len(app.ops) != 0 || app.haproxy != nil && len(app.haproxy.ops) != 0 {
				t.Errorf("changed: %v", app.ops)
			}
		})
	}
}

// A server someone put in maintenance while rollout deploys is seen at
// the next change: rollout reads the backend again and returns
// errUpstreamChanged (its caller checks capacity on what it finds), and
// never readies that server.
func TestAppHostHAProxyChangedUnderneath(t *testing.T) {
	app := fakeHAProxyHost(t)
	d, _ := fakeDeployer(t, appHostHAProxy, app)
	b := newHAProxyBalancer(d.Config, app)
	srv, err := b.preflight(testCtx(t), d.Config.Ports())
	if err != nil {
		t.Fatal(err)
	}
	app.haproxy.servers[1].admin = 0x01 // 3001 put in maintenance meanwhile
	drained := srv.with(true, 3000)
	if _, err := b.change(testCtx(t), srv, drained, []int{3000}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.change(testCtx(t), drained, drained.with(false, 3000).with(true, 3002), []int{3002}); err != errUpstreamChanged {
		t.Fatalf("change on a backend changed meanwhile: %v", err)
	}
	if fmt.Sprint(app.haproxy.ops) != "[drain app3000]" {
		t.Errorf("changed: %v", app.haproxy.ops)
	}
	now, err := b.read(testCtx(t))
	if err != nil || now.in(3001) || now.in(3000) || !now.in(3002) {
		t.Fatalf("read again: %v %v", now, err)
	}
	if _, err := b.change(testCtx(t), now, now.with(false, 3001), nil); err == nil || !strings.Contains(err.Error(), "is in maintenance") {
		t.Errorf("readied a server in maintenance: %v", err)
	}
}

func TestAppHostHAProxyConfig(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [web1]\nports: [3000]\nhaproxy: {backend: app, server_address: 10.0.0.5, socket: /run/h.sock}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Nginx.ServerAddress != "10.0.0.5" || cfg.HAProxy.Socket != "/run/h.sock" {
		t.Errorf("%+v %+v", cfg.Nginx, cfg.HAProxy)
	}
	if s, b := cfg.helperHAProxy(); s != "/run/h.sock" || b != "app" {
		t.Errorf("helper takes %q %q", s, b)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"haproxy: {}", "haproxy.backend: required"},
		{"haproxy: {backend: 'a b'}", "haproxy.backend: must be a backend name"},
		{"haproxy: {backend: app, socket: run/x}", "haproxy.socket: must be an absolute path"},
		{"haproxy: {backend: app, server_address: web1}", `haproxy.server_address: must be an IP address or "localhost", got "web1"`},
		{"haproxy: {backend: app}\nnginx: {upstream: my_app}", "nginx: is for Nginx beside the instances"},
		{"haproxy: {backend: app}\nnginx: {server_address: 10.0.0.5}", "nginx: is for Nginx beside the instances"},
		{"haproxy: {backend: app}\nlb: {hosts: [lb1], driver: haproxy, backend: app, server_addresses: {web1: 10.0.0.5}}", "haproxy: is HAProxy on the app hosts; with lb:"},
		{"haproxy: {backend: app}\nstrategy: {bake: 1m}", "strategy.bake: reads Nginx's access log"},
		{"haproxy: {backend: app, port: 80}", `unknown key "port" (in haproxy)`},
	} {
		_, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [web1]\nports: [3000]\n"+tc.yaml+"\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// The plan shows the runtime API's commands on the app host, and render
// the backend's server lines to add (setup does not write haproxy.cfg).
func TestAppHostHAProxyPlanAndRender(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [10.0.0.5]\nports: [3000, 3001]\nhaproxy: {backend: app}\n"))
	if err != nil {
		t.Fatal(err)
	}
	steps := BuildPlan(cfg, "v2").Hosts[0].Instances[0].Steps
	if steps[1].Name != StepDrain || !strings.HasSuffix(steps[1].Command, "rollout-haproxy /run/haproxy/admin.sock app 30000 apply drain:SERVER") || strings.Contains(steps[1].Does, "load balancer") {
		t.Errorf("drain %+v", steps[1])
	}
	if steps[2].Name != StepWaitDrain || steps[2].Command != "" || !strings.Contains(steps[2].Does, "HAProxy counts no current session") {
		t.Errorf("wait-drain %+v", steps[2])
	}
	var doc *ManagedFile
	for _, f := range Render(cfg, []int{3000, 3001}) {
		if strings.Contains(f.Path, "nginx") {
			t.Errorf("renders an Nginx file: %s", f.Path)
		}
		if f.Path == "/etc/haproxy/haproxy.cfg" {
			doc = &f
		}
	}
	if doc == nil || !doc.Doc || !strings.Contains(doc.Content, "backend app\n    server my-app-3000 127.0.0.1:3000 check\n    server my-app-3001 127.0.0.1:3001 check\n") {
		t.Fatalf("haproxy lines: %+v", doc)
	}
	for _, f := range cfg.setupWant([]int{3000, 3001}).Files {
		if f.Doc {
			t.Errorf("setup writes %s", f.Path)
		}
	}
}

// HAProxy reloaded while an instance restarts: the instance served again
// before rollout put it back, which the change that puts it back says as
// a warning; the deploy goes on through the new process and ends with
// every server in service.
func TestAppHostHAProxyReloadedMidDeploy(t *testing.T) {
	app := fakeHAProxyHost(t)
	app.onRestart = func(port int) {
		if port == 3001 {
			app.haproxy.reload()
		}
	}
	d, events := fakeDeployer(t, appHostHAProxy, app)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	var warned []string
	for _, e := range *events {
		if e.Status == StatusWarn {
			warned = append(warned, fmt.Sprintf("%d %s: %s", e.Port, e.Step, e.Message))
		}
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "(process 100, now 101)") || !strings.Contains(warned[0], "127.0.0.1:3001 served again before rollout put it back") {
		t.Errorf("warnings %q", warned)
	}
	want := "[drain app3000 ready app3000 drain app3001 drain app3002 ready app3002 drain app3003 ready app3003]"
	if fmt.Sprint(app.haproxy.ops) != want {
		t.Errorf("runtime API: %v", app.haproxy.ops)
	}
	for _, s := range app.haproxy.servers {
		if s.admin != 0 {
			t.Errorf("server %s left with admin state %#x", s.name, s.admin)
		}
	}
}

// Only HAProxy's maintenance bits (SRV_ADMF_MAINT: forced, inherited,
// address resolution) and drain bits take a server out of service. A
// server with "disabled" in haproxy.cfg that was put in service (0x04
// stays) or whose FQDN changed (0x40) serves: the deploy goes through it
// and readies it again with its bit; one still in maintenance is refused.
func TestAppHostHAProxyAdminStateBits(t *testing.T) {
	app := fakeHAProxyHost(t)
	app.haproxy.servers[1].admin = 0x04
	app.haproxy.servers[2].admin = 0x40
	d, _ := fakeDeployer(t, appHostHAProxy, app)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%#x %#x", app.haproxy.servers[1].admin, app.haproxy.servers[2].admin); got != "0x4 0x40" {
		t.Errorf("admin states after the deploy %s, want 0x4 0x40", got)
	}
	for _, is := range hostStatus(testCtx(t), d.Config, "web1", app, nil).Instances {
		if !is.InNginx {
			t.Errorf("%d shown out of service: %+v", is.Port, is)
		}
	}
	for _, admin := range []int{0x05, 0x20} {
		app := fakeHAProxyHost(t)
		app.haproxy.servers[1].admin = admin
		d, _ := fakeDeployer(t, appHostHAProxy, app)
		if _, err := d.Deploy(testCtx(t)); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("is in maintenance (admin state %#x)", admin)) {
			t.Errorf("admin state %#x: %v", admin, err)
		}
	}
}

// max_surge with HAProxy on the app host: the backend holds both ports of
// every slot, the idle ones in maintenance; a surge wakes the new ones and
// puts the old ones in maintenance in one call (no reload), and the next
// deploy moves back the same way. A backend without the spare servers is
// refused at the preflight, naming the line to add.
func TestAppHostHAProxySurge(t *testing.T) {
	app := fakeHAProxyHost(t)
	for p := 3004; p <= 3007; p++ {
		app.haproxy.servers = append(app.haproxy.servers, haproxyServer{name: fmt.Sprintf("app%d", p), addr: "127.0.0.1", port: p, admin: 0x05})
	}
	d, _ := fakeDeployer(t, appHostHAProxy+"strategy: {max_surge: 100%}\n", app)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	want := "[wake app3004 wake app3005 wake app3006 wake app3007 maint app3000 maint app3001 maint app3002 maint app3003]"
	if fmt.Sprint(app.haproxy.ops) != want {
		t.Errorf("runtime API: %v, want %s", app.haproxy.ops, want)
	}
	for _, s := range app.haproxy.servers {
		if s.addr == "127.0.0.1" && s.maint() != (s.port < 3004) {
			t.Errorf("server %s admin state %#x", s.name, s.admin)
		}
	}
	for p := 3000; p <= 3003; p++ {
		if app.units[p].active || !app.units[p+4].active {
			t.Errorf("slot %d: old active %v, new active %v", p, app.units[p].active, app.units[p+4].active)
		}
	}
	app.haproxy.ops = nil
	d.Force = true
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if want := "[wake app3000 wake app3001 wake app3002 wake app3003 maint app3004 maint app3005 maint app3006 maint app3007]"; fmt.Sprint(app.haproxy.ops) != want {
		t.Errorf("back: %v", app.haproxy.ops)
	}

	// What setup shows to add to haproxy.cfg: both ports of every slot.
	lines := appHostBalancerFiles(d.Config, d.Config.Ports())[0].Content
	if !strings.Contains(lines, "server my-app-3000 127.0.0.1:3000 check\n") || !strings.Contains(lines, "server my-app-3007 127.0.0.1:3007 check disabled\n") {
		t.Errorf("haproxy.cfg lines:\n%s", lines)
	}

	bare := fakeHAProxyHost(t) // no spare servers
	d, _ = fakeDeployer(t, appHostHAProxy+"strategy: {max_surge: 100%}\n", bare)
	_, err := d.Deploy(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), `add "server my-app-3004 127.0.0.1:3004 check disabled" to backend app`) || len(bare.haproxy.ops) != 0 {
		t.Errorf("err = %v, ops %v", err, bare.haproxy.ops)
	}
}

// HAProxy reloaded while a surge's new instances start: the change finds
// the new process and makes the surge from its states, where the idle
// ports' servers are in maintenance (not servers rollout took out).
func TestAppHostHAProxySurgeReloadedMidDeploy(t *testing.T) {
	app := fakeHAProxyHost(t)
	for p := 3004; p <= 3007; p++ {
		app.haproxy.servers = append(app.haproxy.servers, haproxyServer{name: fmt.Sprintf("app%d", p), addr: "127.0.0.1", port: p, admin: 0x05})
	}
	app.onRestart = func(port int) {
		if port == 3004 {
			app.haproxy.reload()
		}
	}
	d, events := fakeDeployer(t, appHostHAProxy+"strategy: {max_surge: 100%}\n", app)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(*events, func(e Event) bool {
		return e.Status == StatusWarn && strings.Contains(e.Message, "(process 100, now 101)")
	}) {
		t.Errorf("no warning of the new process: %v", *events)
	}
	for _, s := range app.haproxy.servers {
		if s.addr == "127.0.0.1" && s.maint() != (s.port < 3004) {
			t.Errorf("server %s admin state %#x", s.name, s.admin)
		}
	}
}
