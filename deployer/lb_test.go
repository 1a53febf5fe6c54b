package deployer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// lbUpstream is a balancer's upstream file: web1 (10.0.0.5) and web2
// (10.0.0.6), four instances each, and a line of its own.
const lbUpstream = `upstream my_app {
    least_conn;
    server 10.0.0.5:3000;
    server 10.0.0.5:3001;
    server 10.0.0.5:3002;
    server 10.0.0.5:3003;
    server 10.0.0.6:3000;
    server 10.0.0.6:3001;
    server 10.0.0.6:3002;
    server 10.0.0.6:3003;
    server 10.0.0.9:8080 backup;
}
`

const lbConfig = fourInstances + `lb:
  hosts: [lb1, lb2]
  server_addresses: {web1: 10.0.0.5}
`

// fakeBalancer is a load balancer host whose dials reach app.
func fakeBalancer(t *testing.T, app *fakeRemote) *fakeRemote {
	lb := newFakeRemote(t)
	lb.upstream = lbUpstream
	lb.forward = app
	return lb
}

// lbDeployer is fakeDeployer with balancer hosts lb1, lb2, ... as well.
func lbDeployer(t *testing.T, yaml string, app *fakeRemote, lbs ...*fakeRemote) (*Deployer, *[]Event) {
	t.Helper()
	app.upstream = "" // Nginx is on the balancers
	d, events := fakeDeployer(t, yaml, app)
	byName := map[string]*fakeRemote{}
	for i, lb := range lbs {
		byName[fmt.Sprintf("lb%d", i+1)] = lb
	}
	connect, appRemote := d.Connect, d.remote
	d.Connect = func(ctx context.Context, host string) (Conn, error) {
		if lb, ok := byName[host]; ok {
			lb.mu.Lock()
			defer lb.mu.Unlock()
			if lb.unreachable {
				return nil, fmt.Errorf("dial %s: connection timed out", host)
			}
			return fakeHostConn{host: host, r: lb}, nil
		}
		return connect(ctx, host)
	}
	d.remote = func(cfg *Config, c Conn) remote {
		if lb, ok := byName[connHost(c)]; ok {
			if cfg.LB != nil {
				t.Errorf("balancer %s reached with the app host's config", connHost(c))
			}
			return lb.over(c)
		}
		return appRemote(cfg, c)
	}
	return d, events
}

// lbDown is the ports of addr marked down in a balancer's file.
func lbDown(t *testing.T, content, addr string) []int {
	t.Helper()
	servers, err := upstreamServers([]byte(content), "my_app", addr)
	if err != nil {
		t.Fatal(err)
	}
	var down []int
	for p, d := range servers {
		if d {
			down = append(down, p)
		}
	}
	slices.Sort(down)
	return down
}

func TestLBDeployDrainsOnEveryBalancer(t *testing.T) {
	app := newFakeRemote(t, 3000, 3001, 3002, 3003)
	lb1, lb2 := fakeBalancer(t, app), fakeBalancer(t, app)
	d, _ := lbDeployer(t, lbConfig, app, lb1, lb2)
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Hosts[0].Restarted; fmt.Sprint(got) != "[3000 3001 3002 3003]" {
		t.Errorf("restarted %v", got)
	}
	for i, lb := range []*fakeRemote{lb1, lb2} {
		// One write per step, as on a host of its own: drain 3000, then
		// undrain+drain three times, then the last undrain.
		if len(lb.writes) != 5 {
			t.Fatalf("lb%d: %d writes, want 5", i+1, len(lb.writes))
		}
		for k, want := range [][]int{{3000}, {3001}, {3002}, {3003}, nil} {
			if got := lbDown(t, lb.writes[k], "10.0.0.5"); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("lb%d write %d: 10.0.0.5 down %v, want %v", i+1, k, got, want)
			}
			if got := lbDown(t, lb.writes[k], "10.0.0.6"); len(got) > 0 {
				t.Errorf("lb%d write %d: web2's lines changed: %v down", i+1, k, got)
			}
		}
		if lb.upstream != lbUpstream {
			t.Errorf("lb%d: the file is not as it was:\n%s", i+1, lb.upstream)
		}
	}
	// The requests in flight are waited for on the app host, once per drain.
	if fmt.Sprint(app.drained) != "[[3000] [3001] [3002] [3003]]" {
		t.Errorf("app host waited for %v", app.drained)
	}
	// Health checks reached the instances from the first balancer, at the
	// address the balancers use.
	if len(lb1.dials) == 0 || len(app.dials) != len(lb1.dials) || len(lb2.dials) != 0 {
		t.Errorf("dials: lb1 %d, lb2 %d, app %d", len(lb1.dials), len(lb2.dials), len(app.dials))
	}
	for _, a := range lb1.dials {
		if a != "10.0.0.5" {
			t.Fatalf("health check dialled %s, want 10.0.0.5", a)
		}
	}
}

func TestLBDrainFailurePutsBackAndStops(t *testing.T) {
	app := newFakeRemote(t, 3000, 3001, 3002, 3003)
	lb1, lb2 := fakeBalancer(t, app), fakeBalancer(t, app)
	d, _ := lbDeployer(t, lbConfig+"ssh: {user: deploy, reconnect: 0s}\n", app, lb1, lb2)
	// lb2 is lost after its first write: the next one, the drain of 3001
	// (with 3000's undrain), fails there.
	lb2.onWrite = func(n int) {
		if n == 0 {
			lb2.unreachable = true
		}
	}
	_, err := d.Deploy(testCtx(t))
	if err == nil {
		t.Fatal("deploy passed with a balancer lost")
	}
	for _, want := range []string{"load balancer lb2", "10.0.0.5:3001 in service or drained"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	// 3001 was never restarted, and it is in service again on lb1; 3000
	// (healthy) is in service on lb1 too.
	if slices.Contains(app.ops, "restart 3001") {
		t.Error("3001 restarted after its drain failed on lb2")
	}
	if got := lbDown(t, lb1.upstream, "10.0.0.5"); len(got) > 0 {
		t.Errorf("lb1 left %v down", got)
	}
	// lb2 still holds 3000 down: it was lost before it was put back.
	if got := lbDown(t, lb2.upstream, "10.0.0.5"); fmt.Sprint(got) != "[3000]" {
		t.Errorf("lb2 holds %v down, want [3000]", got)
	}
}

func TestLBCapacityCountsEveryBalancer(t *testing.T) {
	app := newFakeRemote(t, 3000, 3001)
	lb1, lb2 := fakeBalancer(t, app), fakeBalancer(t, app)
	// Someone drained 3001 on lb2: it serves only through lb1, so it does
	// not count as serving, and 3000 may not be drained.
	lb2.upstream = strings.Replace(lbUpstream, "10.0.0.5:3001;", "10.0.0.5:3001 down;", 1)
	d, _ := lbDeployer(t, "ports: [3000, 3001]\nmin_serving: 1\nlb: {hosts: [lb1, lb2], server_addresses: {web1: 10.0.0.5}}\n", app, lb1, lb2)
	_, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	// 3001 (out of service) went first, so 3000 could go after it.
	if fmt.Sprint(app.ops[:2]) != "[restart 3001 restart 3000]" {
		t.Errorf("ops %v", app.ops)
	}
	if got := lbDown(t, lb2.upstream, "10.0.0.5"); len(got) > 0 {
		t.Errorf("lb2 left %v down", got)
	}
}

func TestLBConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"lb: {hosts: []}", "lb.hosts: required"},
		{"lb: {hosts: [web1]}", `lb.hosts[0]: "web1" is also an app host`},
		{"lb: {hosts: [lb1], driver: traefik, server_addresses: {web1: 10.0.0.5}}", `lb.driver: must be nginx or haproxy, got "traefik"`},
		{"lb: {hosts: [lb1], driver: haproxy, server_addresses: {web1: 10.0.0.5}}", "lb.backend: required"},
		{"lb: {hosts: [lb1], driver: haproxy, backend: app, socket: run/x, server_addresses: {web1: 10.0.0.5}}", "lb.socket: must be an absolute path"},
		{"lb: {hosts: [lb1], backend: app, server_addresses: {web1: 10.0.0.5}}", "lb.backend: is HAProxy's"},
		{"lb: {hosts: [lb1], driver: haproxy, backend: app, server_addresses: {web1: 10.0.0.5}}", "nginx: is for driver: nginx"},
		{"lb: {hosts: [lb1], upstream_file: /etc/nginx/conf.d/b.conf, server_addresses: {web1: 10.0.0.5}}", "lb.upstream_file: is nginx.upstream_file, also given"},
		{"lb: {hosts: [lb1], server_addresses: {web1: 10.0.0.5}}\nstrategy: {bake: 1m}", "strategy.bake: reads the access log on the app hosts"},
		{"lb: {hosts: [lb1]}", `app host "web1" is not an IP address`},
		{"lb: {hosts: [lb1], server_addresses: {web1: nope}}", `lb.server_addresses.web1: must be an IPv4 address`},
		{"lb: {hosts: [lb1], server_addresses: {web1: '::1'}}", `lb.server_addresses.web1: must be an IPv4 address`},
		{"lb: {hosts: [lb1], server_addresses: {web9: 10.0.0.5}}", `lb.server_addresses.web9: "web9" is not one of hosts`},
		{"lb: {hosts: [lb1], server_addresses: [web1]}", "lb.server_addresses: must be a mapping"},
	} {
		_, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [web1]\nports: [3000]\nnginx: {upstream_file: /etc/nginx/conf.d/a.conf, upstream: a}\n"+tc.yaml+"\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// fakeHAProxy is a backend as HAProxy's runtime API shows it.
type fakeHAProxy struct {
	servers []haproxyServer
	ops     []string // "drain web1-3000", "ready web1-3000"
	pid     int      // the process; reload starts another
}

func newFakeHAProxy(addr string, ports ...int) *fakeHAProxy {
	h := &fakeHAProxy{pid: 100}
	for _, p := range ports {
		h.servers = append(h.servers, haproxyServer{name: fmt.Sprintf("app%d", p), addr: addr, port: p})
	}
	h.servers = append(h.servers, haproxyServer{name: "other", addr: "10.0.0.6", port: 3000})
	return h
}

// reload is HAProxy reloaded (or restarted): a new process, which
// forgot the drains set through the API.
func (h *fakeHAProxy) reload() {
	h.pid++
	for i := range h.servers {
		h.servers[i].admin &^= haproxyDrainBits
	}
}

func (h *fakeHAProxy) run(op string, names []string) ([]byte, error) {
	switch op {
	case "check", "state":
		var b strings.Builder
		fmt.Fprintf(&b, "pid %d\n1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord\n", h.pid)
		for i, s := range h.servers {
			fmt.Fprintf(&b, "3 app %d %s %s 2 %d 1 1 10 6 3 4 6 0 0 0 - %d -\n", i+1, s.name, s.addr, s.admin, s.port)
		}
		return []byte(b.String()), nil
	case "apply":
		if len(names) > 0 && strings.HasPrefix(names[0], "pid:") {
			if names[0] != fmt.Sprintf("pid:%d", h.pid) {
				state, _ := h.run("state", nil)
				return append([]byte("restarted\n"), state...), nil
			}
			names = names[1:]
		}
		for _, item := range names {
			op, n, _ := strings.Cut(item, ":")
			i := slices.IndexFunc(h.servers, func(s haproxyServer) bool { return s.name == n })
			if i < 0 {
				return nil, fmt.Errorf("set server app/%s: No such server", n)
			}
			if op == "ready" && h.servers[i].maint() {
				return nil, fmt.Errorf("server app/%s is in maintenance", n)
			}
			h.ops = append(h.ops, op+" "+n)
			switch op {
			case "drain":
				h.servers[i].admin |= 0x08
			case "maint":
				h.servers[i].admin |= 0x01
			default:
				// HAProxy keeps 0x04 ("disabled" in haproxy.cfg) and 0x40.
				h.servers[i].admin &^= 0x01 | 0x08
			}
		}
		state, _ := h.run("state", nil)
		return append([]byte("drained 12\n"), state...), nil
	}
	return nil, fmt.Errorf("unknown op %s", op)
}

const haproxyConfig = fourInstances + `lb:
  hosts: [lb1, lb2]
  driver: haproxy
  backend: app
  server_addresses: {web1: 10.0.0.5}
`

// fakeHAProxyBalancer is a balancer running HAProxy in front of app.
func fakeHAProxyBalancer(t *testing.T, app *fakeRemote) *fakeRemote {
	lb := fakeBalancer(t, app)
	lb.upstream = ""
	lb.haproxy = newFakeHAProxy("10.0.0.5", 3000, 3001, 3002, 3003)
	return lb
}

func TestLBHAProxyDrainsAndReadiesThroughTheAPI(t *testing.T) {
	app := newFakeRemote(t, 3000, 3001, 3002, 3003)
	lb1, lb2 := fakeHAProxyBalancer(t, app), fakeHAProxyBalancer(t, app)
	d, events := lbDeployer(t, haproxyConfig, app, lb1, lb2)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	want := "[drain app3000 ready app3000 drain app3001 ready app3001 drain app3002 ready app3002 drain app3003 ready app3003]"
	for i, lb := range []*fakeRemote{lb1, lb2} {
		if fmt.Sprint(lb.haproxy.ops) != want {
			t.Errorf("lb%d: %v", i+1, lb.haproxy.ops)
		}
		if len(lb.writes) != 0 {
			t.Errorf("lb%d: %d file writes", i+1, len(lb.writes))
		}
	}
	// The balancer waited for the sessions; the app host counts nothing.
	if len(app.drained) != 0 {
		t.Errorf("app host waited for %v", app.drained)
	}
	found := false
	for _, e := range *events {
		found = found || e.Step == StepWaitDrain && e.Duration == 12*time.Millisecond
	}
	if !found {
		t.Error("no wait-drain event with the balancer's wait")
	}
}

func TestLBHAProxyRefusesMaintenanceAndMissingServers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch func(h *fakeHAProxy)
		want  string
	}{
		{"maintenance", func(h *fakeHAProxy) { h.servers[1].admin = 0x01 }, "server app/app3001 (10.0.0.5:3001) is in maintenance (admin state 0x1), put there by someone: rollout never readies it"},
		{"missing", func(h *fakeHAProxy) { h.servers = h.servers[1:] }, `no server at 10.0.0.5:3000: rollout does not write haproxy.cfg`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := newFakeRemote(t, 3000, 3001, 3002, 3003)
			lb1, lb2 := fakeHAProxyBalancer(t, app), fakeHAProxyBalancer(t, app)
			tc.patch(lb2.haproxy)
			d, _ := lbDeployer(t, haproxyConfig, app, lb1, lb2)
			_, err := d.Deploy(testCtx(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "load balancer lb2") {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if len(lb1.haproxy.ops)+len(lb2.haproxy.ops) != 0 || len(app.ops) != 0 {
				t.Errorf("changed: %v %v %v", lb1.haproxy.ops, lb2.haproxy.ops, app.ops)
			}
		})
	}
}

func TestLBPlan(t *testing.T) {
	for _, tc := range []struct{ lb, drain, wait string }{
		{"{hosts: [lb1, lb2]}", "/etc/nginx/conf.d/my-app.conf 'nginx -t' '' /run/nginx.pid - 3000", "rollout-write-upstream '' '' '' '' 30000 3000"},
		{"{hosts: [lb1, lb2], driver: haproxy, backend: app}", "rollout-haproxy /run/haproxy/admin.sock app 30000 apply drain:SERVER", ""},
	} {
		nginx := "nginx: {upstream_file: /etc/nginx/conf.d/my-app.conf, upstream: my_app}\n"
		if strings.Contains(tc.lb, "haproxy") {
			nginx = ""
		}
		cfg, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [10.0.0.5]\nports: [3000, 3001]\n"+nginx+"lb: "+tc.lb+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		steps := BuildPlan(cfg, "v2").Hosts[0].Instances[0].Steps
		if steps[1].Name != StepDrain || !strings.HasSuffix(steps[1].Command, tc.drain) || !strings.Contains(steps[1].Does, "on every load balancer (lb1 and lb2) at once") {
			t.Errorf("%s: drain %+v", tc.lb, steps[1])
		}
		if steps[2].Name != StepWaitDrain || !strings.HasSuffix(steps[2].Command, tc.wait) || tc.wait == "" && steps[2].Command != "" {
			t.Errorf("%s: wait-drain %+v", tc.lb, steps[2])
		}
	}
}

// Scaling behind balancers adds the new instances' server lines on every
// balancer, after their health check, and keeps every other line.
func TestLBScaleAddsOnEveryBalancer(t *testing.T) {
	app := newFakeRemote(t, 3000, 3001, 3002, 3003)
	lb1, lb2 := fakeBalancer(t, app), fakeBalancer(t, app)
	d, _ := lbDeployer(t, "base_port: 3000\ninstances: 5\nlb: {hosts: [lb1, lb2], server_addresses: {web1: 10.0.0.5}}\n", app, lb1, lb2)
	if _, err := d.Scale(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	for i, lb := range []*fakeRemote{lb1, lb2} {
		// After the block's last server line, as on a host of its own.
		want := strings.Replace(lbUpstream, "backup;\n", "backup;\n    server 10.0.0.5:3004;\n", 1)
		if lb.upstream != want {
			t.Errorf("lb%d:\n%s", i+1, lb.upstream)
		}
	}
	if fmt.Sprint(app.ops) != "[start 3004]" {
		t.Errorf("ops %v", app.ops)
	}
}

// status: an instance is in nginx only when every balancer sends it
// requests, each balancer's word is shown, and the health check dials from
// the first balancer read, at the address the balancers use.
func TestLBHostStatus(t *testing.T) {
	app := newFakeRemote(t, 3000, 3001)
	app.upstream = ""
	lb1 := fakeBalancer(t, app)
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\nlb: {hosts: [lb1, lb2], server_addresses: {web1: 10.0.0.5}}\n", app)
	down := strings.Replace(lbUpstream, "10.0.0.5:3001;", "10.0.0.5:3001 down;", 1)
	lbs := Balancers{
		{host: "lb1", content: []byte(lbUpstream), dial: lb1.DialContext, driver: newLBDriver(d.Config)},
		{host: "lb2", content: []byte(down), err: nil, dial: lb1.DialContext, driver: newLBDriver(d.Config)},
	}
	hs := hostStatus(testCtx(t), d.Config, "web1", app, lbs)
	if hs.Error != "" || len(hs.Instances) != 2 {
		t.Fatalf("status %+v", hs)
	}
	a, b := hs.Instances[0], hs.Instances[1]
	if !a.OK() || fmt.Sprint(a.Balancers) != "[{lb1 true } {lb2 true }]" {
		t.Errorf("3000: %+v", a)
	}
	if b.InNginx || b.OK() || !b.Healthy || fmt.Sprint(b.Balancers) != "[{lb1 true } {lb2 false }]" {
		t.Errorf("3001: %+v", b)
	}
	if len(lb1.dials) == 0 || lb1.dials[0] != "10.0.0.5" {
		t.Errorf("health checks dialled %v", lb1.dials)
	}
	// A balancer that cannot be read: nothing counts as in service there.
	lbs[1] = balancerRead{host: "lb2", err: fmt.Errorf("connection refused")}
	hs = hostStatus(testCtx(t), d.Config, "web1", app, lbs)
	if hs.Instances[0].InNginx || hs.Instances[0].Balancers[1].Error == "" {
		t.Errorf("with lb2 unread: %+v", hs.Instances[0])
	}
	// One whose file lacks the block, read by hosts at once (as status
	// does): each says so, and lbs, which they share, stays as read.
	lbs[1] = balancerRead{host: "lb2", content: []byte("# no upstream\n"), dial: lb1.DialContext, driver: newLBDriver(d.Config)}
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hs := hostStatus(testCtx(t), d.Config, "web1", app, lbs)
			if hs.Instances[0].InNginx || !strings.Contains(hs.Instances[0].Balancers[1].Error, "my_app") {
				t.Errorf("with lb2's block missing: %+v", hs.Instances[0])
			}
		}()
	}
	wg.Wait()
	if lbs[1].err != nil {
		t.Errorf("a host's status changed the shared balancers: %v", lbs[1].err)
	}
}

// lb.upstream_file is nginx.upstream_file given in lb:, as the issue's
// users write it.
func TestLBUpstreamFileInLB(t *testing.T) {
	a, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [10.0.0.5]\nports: [3000]\nnginx: {upstream: a}\nlb: {hosts: [lb1], upstream_file: /etc/nginx/conf.d/a.conf}\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [10.0.0.5]\nports: [3000]\nnginx: {upstream: a, upstream_file: /etc/nginx/conf.d/a.conf}\nlb: {hosts: [lb1]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Nginx != b.Nginx || a.lbSide().Nginx.UpstreamFile != "/etc/nginx/conf.d/a.conf" {
		t.Errorf("lb.upstream_file: %+v; nginx.upstream_file: %+v", a.Nginx, b.Nginx)
	}
	if _, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [10.0.0.5]\nports: [3000]\nnginx: {upstream: a}\nlb: {hosts: [lb1], upstream_file: etc/a.conf}\n")); err == nil || !strings.Contains(err.Error(), "lb.upstream_file: must be an absolute path") {
		t.Errorf("a relative lb.upstream_file: %v", err)
	}
}

// Scaling behind HAProxy cannot add a server (rollout never writes
// haproxy.cfg): the preflight refuses, naming the line to add, before any
// instance starts or any balancer changes.
func TestLBHAProxyScaleRefusesNewServers(t *testing.T) {
	app := newFakeRemote(t, 3000, 3001, 3002, 3003)
	lb1, lb2 := fakeHAProxyBalancer(t, app), fakeHAProxyBalancer(t, app)
	d, _ := lbDeployer(t, strings.Replace(haproxyConfig, "instances: 4", "instances: 5", 1), app, lb1, lb2)
	_, err := d.Scale(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "no server at 10.0.0.5:3004: rollout does not write haproxy.cfg") {
		t.Fatalf("got %v", err)
	}
	if len(lb1.haproxy.ops)+len(lb2.haproxy.ops) != 0 || len(app.ops) != 0 {
		t.Errorf("changed: %v %v %v", lb1.haproxy.ops, lb2.haproxy.ops, app.ops)
	}
}

// Half of a change (the put-back after a balancer failed) changes only its
// own ports: every other server line of the file stays.
func TestNginxDriverEditsOnlyTheChangedPorts(t *testing.T) {
	n := nginxDriver{n: NginxConfig{Upstream: "my_app", UpstreamFile: "/etc/nginx/conf.d/up.conf"}}
	const file = "upstream my_app {\n    server 10.0.0.5:3000;\n    server 10.0.0.5:3001 down;\n    server 10.0.0.6:3000;\n}\n"
	full := lbChange{addr: "10.0.0.5", from: map[int]bool{3000: true, 3001: false}, to: map[int]bool{3000: false, 3001: true}}
	_, out := full.split()
	got, err := n.edit([]byte(file), out.reverse())
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Replace(file, "3001 down;", "3001;", 1); string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// With strategy.max_surge and lb:, a surge moves web1's server lines on
// every balancer to the spare ports in one write each (web2's untouched),
// waits on the app host for the old ones, and stops them; the next
// deploy (whose live ports come from the balancers, not from the units)
// moves them back. status reads the live ports from the balancers too.
func TestLBSurge(t *testing.T) {
	app := newFakeRemote(t, 3000, 3001, 3002, 3003)
	lb1, lb2 := fakeBalancer(t, app), fakeBalancer(t, app)
	d, _ := lbDeployer(t, lbConfig+"strategy: {max_surge: 100%}\n", app, lb1, lb2)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	for i, lb := range []*fakeRemote{lb1, lb2} {
		web1, _ := upstreamServers([]byte(lb.upstream), "my_app", "10.0.0.5")
		web2, _ := upstreamServers([]byte(lb.upstream), "my_app", "10.0.0.6")
		if len(lb.writes) != 1 || fmt.Sprint(slices.Sorted(maps.Keys(web1))) != "[3004 3005 3006 3007]" || len(web2) != 4 || web2[3000] {
			t.Errorf("lb%d: %d writes, web1 %v, web2 %v:\n%s", i+1, len(lb.writes), web1, web2, lb.upstream)
		}
	}
	if fmt.Sprint(app.drained) != "[[3000 3001 3002 3003]]" {
		t.Errorf("app host waited for %v, want the old instances once", app.drained)
	}
	for p := 3000; p <= 3003; p++ {
		if app.units[p].active || !app.units[p+4].active {
			t.Errorf("slot %d: old active %v, new active %v", p, app.units[p].active, app.units[p+4].active)
		}
	}
	// status: the live ports from the balancers.
	lbs := Balancers{{host: "lb1", content: []byte(lb1.upstream), dial: lb1.DialContext, driver: newLBDriver(d.Config)},
		{host: "lb2", content: []byte(lb2.upstream), dial: lb1.DialContext, driver: newLBDriver(d.Config)}}
	hs := hostStatus(testCtx(t), d.Config, "web1", app, lbs)
	if len(hs.Instances) != 4 || hs.Instances[0].Port != 3004 || !hs.OK() {
		t.Errorf("status after the surge: %+v", hs)
	}
	// A unit left on an idle port both run: the units cannot say which
	// serves, the balancers can.
	app.unit(3000).active, app.unit(3000).healthy = true, true
	d.Force = true
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	web1, _ := upstreamServers([]byte(lb1.upstream), "my_app", "10.0.0.5")
	if fmt.Sprint(slices.Sorted(maps.Keys(web1))) != "[3000 3001 3002 3003]" || app.units[3004].active {
		t.Errorf("back: web1 %v, 3004 active %v", web1, app.units[3004].active)
	}
}

// HAProxy balancers with max_surge: the spare servers are in maintenance;
// a surge wakes web1's new ones and puts the old ones in maintenance on
// every balancer; a balancer without a spare server is refused at the
// preflight, naming the line; setup shows both ranges' lines.
func TestLBHAProxySurge(t *testing.T) {
	app := newFakeRemote(t, 3000, 3001, 3002, 3003)
	spare := func(lb *fakeRemote) *fakeRemote {
		for p := 3004; p <= 3007; p++ {
			lb.haproxy.servers = append(lb.haproxy.servers, haproxyServer{name: fmt.Sprintf("app%d", p), addr: "10.0.0.5", port: p, admin: 0x05})
		}
		return lb
	}
	lb1, lb2 := spare(fakeHAProxyBalancer(t, app)), spare(fakeHAProxyBalancer(t, app))
	d, _ := lbDeployer(t, haproxyConfig+"strategy: {max_surge: 100%}\n", app, lb1, lb2)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	want := "[wake app3004 wake app3005 wake app3006 wake app3007 maint app3000 maint app3001 maint app3002 maint app3003]"
	for i, lb := range []*fakeRemote{lb1, lb2} {
		if fmt.Sprint(lb.haproxy.ops) != want {
			t.Errorf("lb%d: %v", i+1, lb.haproxy.ops)
		}
	}
	if app.units[3000].active || !app.units[3004].active {
		t.Error("the old instances run, or the new ones do not")
	}
	lines := BalancerFiles(d.Config, map[string][]int{"web1": {3000, 3001, 3002, 3003}})[0].Content
	if !strings.Contains(lines, "server web1-3000 10.0.0.5:3000 check\n") || !strings.Contains(lines, "server web1-3007 10.0.0.5:3007 check disabled\n") {
		t.Errorf("haproxy.cfg lines:\n%s", lines)
	}

	bare := newFakeRemote(t, 3000, 3001, 3002, 3003)
	lb3 := fakeHAProxyBalancer(t, bare)
	d, _ = lbDeployer(t, haproxyConfig+"strategy: {max_surge: 100%}\n", bare, lb3, spare(fakeHAProxyBalancer(t, bare)))
	_, err := d.Deploy(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), `load balancer lb1: haproxy backend app: no server at 10.0.0.5:3004 for strategy.max_surge's spare port`) ||
		!strings.Contains(err.Error(), `add "server web1-3004 10.0.0.5:3004 check disabled"`) || len(lb3.haproxy.ops) != 0 || bare.units[3004] != nil && bare.units[3004].active {
		t.Errorf("err = %v, ops %v", err, lb3.haproxy.ops)
	}
}

// With lb: and max_surge, a command that reaches only the app host takes
// each slot's port from its units: the spare one when only it runs; the
// home one when both do (the balancers, read by the commands that reach
// them, decide then).
func TestLBSurgeLiveFromTheUnits(t *testing.T) {
	// Slot 0 runs on its home port, slots 1 and 2 on their spare ones,
	// slot 3 on both.
	app := newFakeRemote(t, 3000, 3005, 3006, 3003, 3007)
	d, _ := fakeDeployer(t, lbConfig+"strategy: {max_surge: 100%}\n", app)
	hc, err := resolveHost(testCtx(t), d.Config, "web1", app)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(hc.Ports()); got != "[3000 3005 3006 3003]" {
		t.Errorf("live ports %s", got)
	}
}

// A surge's change that fails on one balancer is taken back whole on the
// others: the new ports' lines removed again as well as the old ones'
// put back, before the new instances stop. Otherwise a balancer that took
// it would send requests to stopped instances.
func TestLBSurgeChangeFailsOnOneBalancer(t *testing.T) {
	app := newFakeRemote(t, 3000, 3001, 3002, 3003)
	lb1, lb2 := fakeBalancer(t, app), fakeBalancer(t, app)
	lb2.writeErr = errors.New("nginx -t failed")
	d, _ := lbDeployer(t, lbConfig+"strategy: {max_surge: 100%}\n", app, lb1, lb2)
	_, err := d.Deploy(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "load balancer lb2") || !strings.Contains(err.Error(), "taken back on lb1") {
		t.Fatalf("err = %v", err)
	}
	for i, lb := range []*fakeRemote{lb1, lb2} {
		web1, _ := upstreamServers([]byte(lb.upstream), "my_app", "10.0.0.5")
		if fmt.Sprint(slices.Sorted(maps.Keys(web1))) != "[3000 3001 3002 3003]" || slices.Contains(slices.Collect(maps.Values(web1)), true) {
			t.Errorf("lb%d holds web1 as %v:\n%s", i+1, web1, lb.upstream)
		}
	}
	for p := 3000; p <= 3003; p++ {
		if !app.units[p].active || app.units[p+4].active {
			t.Errorf("slot %d: old active %v, new active %v", p, app.units[p].active, app.units[p+4].active)
		}
	}
}
