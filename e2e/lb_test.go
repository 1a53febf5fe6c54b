package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
	"github.com/rollout-dev/rollout/internal/loadgen"
)

// lbSite is a balancer's Nginx: the upstream names both app hosts'
// instances, and the site on :80 sends every request to it.
const lbSite = `server {
    listen 80 default_server;
    location / {
        proxy_pass http://my_app;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
    }
}
`

// lbUpstream is a balancer's upstream file before any deploy.
func lbUpstream() string {
	var b strings.Builder
	b.WriteString("# my-app on both app hosts\nupstream my_app {\n    keepalive 16;\n")
	for _, h := range fleet.Hosts {
		for i := range instances {
			fmt.Fprintf(&b, "    server %s:%d;\n", h.Addr, basePort+i)
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// setUpBalancers gives the test fresh app hosts whose instances listen on
// every address, and fresh balancer hosts, each an Nginx in front of both
// app hosts. The app hosts are fresh again after the test.
func setUpBalancers(t testing.TB) {
	t.Helper()
	resetFleet(t)
	t.Cleanup(func() { resetFleet(t) })
	ctx := context.Background()
	for _, h := range fleet.Hosts {
		if _, err := fleet.Run(ctx, h, `sudo -n sh -c 'mkdir -p /etc/systemd/system/my-app@.service.d &&
printf "[Service]\nEnvironment=BIND_ADDRESS=0.0.0.0\n" >/etc/systemd/system/my-app@.service.d/bind.conf &&
systemctl daemon-reload && systemctl restart my-app@3000 my-app@3001 my-app@3002 my-app@3003'`); err != nil {
			t.Fatal(err)
		}
	}
	for _, lb := range balancers {
		if err := fleet.Reboot(ctx, lb); err != nil {
			t.Fatal(err)
		}
		if _, err := fleet.RunInput(ctx, lb, "sudo -n tee /etc/nginx/conf.d/my-app-upstream.conf >/dev/null", strings.NewReader(lbUpstream())); err != nil {
			t.Fatal(err)
		}
		if _, err := fleet.RunInput(ctx, lb, "sudo -n tee /etc/nginx/sites-enabled/default >/dev/null", strings.NewReader(lbSite)); err != nil {
			t.Fatal(err)
		}
		// Notices in the error log count the reloads (reloads); a restart
		// starts the count at 0.
		if out, err := fleet.Run(ctx, lb, `sudo -n sed -i 's|^error_log .*|error_log /var/log/nginx/error.log notice;|' /etc/nginx/nginx.conf && sudo -n nginx -t 2>&1 && sudo -n systemctl restart nginx`); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	// Every instance answers through every balancer.
	for _, lb := range balancers {
		for range 2 * fleetHosts * instances {
			if code, _ := getVersion(t, "http://"+lb.Addr+"/"); code != 200 {
				t.Fatalf("GET through %s: %d", lb.Name, code)
			}
		}
	}
}

// lbConfig is the fleet's config with both balancers in lb: and more
// (YAML) after it, health.min_healthy testMinHealthy.
func lbConfig(t testing.TB, lbHosts []string, more string) string {
	return lbConfigHealthy(t, testMinHealthy, lbHosts, more)
}

// lbConfigHealthy is lbConfig with health.min_healthy.
func lbConfigHealthy(t testing.TB, minHealthy string, lbHosts []string, more string) string {
	t.Helper()
	path := fleetConfig(t, minHealthy)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b) + "lb:\n  hosts: [" + strings.Join(lbHosts, ", ") + "]\n" + more
	path = filepath.Join(t.TempDir(), "rollout.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func balancerAddrs() []string {
	var addrs []string
	for _, lb := range balancers {
		addrs = append(addrs, lb.Addr)
	}
	return addrs
}

// The topology of larger fleets: two app hosts behind two Nginx load
// balancers of their own. Under 400 req/s sent to the balancers, every
// instance is drained on both, restarted and put back, without one failed
// request; the app hosts' own Nginx is never touched.
func TestLBDeployThroughTwoBalancers(t *testing.T) {
	setUpBalancers(t)
	stageEverywhere(t, testbed.GoodRelease("v2"))
	cfg := lbConfig(t, balancerAddrs(), "")
	local := map[string]string{}
	for _, h := range fleet.Hosts {
		local[h.Name] = upstreamFile(t, h)
	}
	out, _ := deployThroughBalancers(t, cfg)
	for _, h := range fleet.Hosts {
		if got := upstreamFile(t, h); got != local[h.Name] {
			t.Errorf("%s: its own upstream file changed:\n%s", h.Name, got)
		}
	}
	for _, lb := range balancers {
		if got := upstreamFile(t, lb); got != lbUpstream() {
			t.Errorf("%s: upstream not as before:\n%s", lb.Name, got)
		}
		nginxTestPasses(t, lb)
		// Each balancer reloaded once per step: 4 instances on each of 2
		// hosts is 5 writes per host.
		if n := reloads(t, lb); n != 2*(instances+1) {
			t.Errorf("%s: %d reloads, want %d", lb.Name, n, 2*(instances+1))
		}
	}
	for _, want := range []string{"load balancer", "drain", "wait-drain", "undrain", "deploy v2: ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	// status shows each instance in or out on each balancer.
	js, code := rollout(t, "status", "-c", cfg, "-o", "json")
	if code != 0 {
		t.Fatalf("status exited %d:\n%s", code, js)
	}
	var st struct {
		Hosts []struct {
			Host      string
			Instances []struct {
				Port      int
				InNginx   bool `json:"in_nginx"`
				Healthy   bool
				Balancers []struct {
					Host string
					In   bool
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		t.Fatalf("%v:\n%s", err, js)
	}
	n := 0
	for _, h := range st.Hosts {
		for _, i := range h.Instances {
			n++
			if !i.InNginx || !i.Healthy || len(i.Balancers) != lbCount || !i.Balancers[0].In || !i.Balancers[1].In {
				t.Errorf("status of %s:%d: %+v", h.Host, i.Port, i)
			}
		}
	}
	if n != fleetHosts*instances {
		t.Errorf("status lists %d instances:\n%s", n, js)
	}
	// Drained by hand on one balancer: out there, and not OK.
	lb2 := balancers[1]
	if _, err := fleet.Run(context.Background(), lb2, fmt.Sprintf(`sudo -n sed -i 's/server %s:%d;/server %s:%d down;/' /etc/nginx/conf.d/my-app-upstream.conf`,
		fleet.Hosts[0].Addr, basePort, fleet.Hosts[0].Addr, basePort)); err != nil {
		t.Fatal(err)
	}
	text, code := rollout(t, "status", "-c", cfg)
	want := fmt.Sprintf("%s:in %s:OUT", balancers[0].Addr, lb2.Addr)
	if code == 0 || !strings.Contains(text, want) {
		t.Errorf("status (exit %d) lacks %q:\n%s", code, want, text)
	}
	t.Run("DrainAHostForMaintenance", func(t *testing.T) { drainAHost(t, cfg) })
	t.Run("Surge", func(t *testing.T) {
		surgeThroughBalancers(t, cfg, func(lb *testbed.Host, serving []int) {
			up := upstreamFile(t, lb)
			for _, h := range fleet.Hosts {
				for _, p := range portRange(basePort, 2*instances) {
					if listed := strings.Contains(up, fmt.Sprintf("server %s:%d;", h.Addr, p)); listed != slices.Contains(serving, p) {
						t.Errorf("%s: %s:%d listed %v, want the ports %v:\n%s", lb.Name, h.Addr, p, listed, serving, up)
					}
				}
			}
			nginxTestPasses(t, lb)
		})
	})
}

// drainAHost runs on the fleet behind two balancers as the deploy above
// left it (its first instance marked down on lb2 by hand-editing), under
// 400 req/s sent to the balancers: undrain puts that instance back; the
// first host is drained whole on both balancers, shown drained by hand by
// status, kept out by a restart, then put back by undrain; draining the
// second host too is refused. Not one request fails.
func drainAHost(t *testing.T, cfg string) {
	web1, web2 := fleet.Hosts[0], fleet.Hosts[1]
	down := func(lb *testbed.Host, addr string) []string {
		var out []string
		for _, line := range strings.Split(upstreamFile(t, lb), "\n") {
			if strings.Contains(line, "server "+addr+":") && strings.Contains(line, " down;") {
				out = append(out, strings.TrimSpace(line))
			}
		}
		return out
	}
	step := func(want int, args ...string) string {
		t.Helper()
		out, code := rollout(t, append([]string{args[0], "-c", cfg}, args[1:]...)...)
		if code != want {
			t.Fatalf("rollout %s exited %d, want %d:\n%s", strings.Join(args, " "), code, want, out)
		}
		return out
	}
	pids := map[string]map[int]instanceState{}
	results := underLoad(t, balancers, func() {
		step(0, "undrain", fmt.Sprintf("%s:%d", web1.Addr, basePort))
		if got := down(balancers[1], web1.Addr); len(got) != 0 {
			t.Errorf("after the undrain of %s:%d, down on %s: %v", web1.Addr, basePort, balancers[1].Name, got)
		}
		out := step(0, "drain", web1.Addr)
		for _, lb := range balancers {
			if got := down(lb, web1.Addr); len(got) != instances {
				t.Errorf("%s after the drain of %s: down %v\n%s", lb.Name, web1.Addr, got, out)
			}
			if got := down(lb, web2.Addr); len(got) != 0 {
				t.Errorf("%s: %s drained too: %v", lb.Name, web2.Addr, got)
			}
		}
		out = step(1, "drain", web2.Addr)
		if !strings.Contains(out, "would leave 0 instance(s) of the other hosts in service") {
			t.Errorf("the drain of the second host too:\n%s", out)
		}
		// One instance of web2 may go: the 3 others keep serving.
		web2one := fmt.Sprintf("%s:%d", web2.Addr, basePort)
		step(0, "drain", web2one)
		// Drained by hand is what status shows, and not a problem.
		js := step(0, "status", "-o", "json")
		if n := strings.Count(js, `"drained_by_hand":{"port":`); n != instances+1 {
			t.Errorf("status shows %d instances drained by hand, want %d:\n%s", n, instances+1, js)
		}
		if text := step(0, "status"); !strings.Contains(text, fmt.Sprintf("%s:%d: drained by hand by ", web1.Addr, basePort)) {
			t.Errorf("status does not say who drained it:\n%s", text)
		}
		// A restart with min_serving at its default rolls web2's other 3
		// one at a time, and keeps the 5 drained by hand out.
		for _, h := range fleet.Hosts {
			pids[h.Name] = instanceStates(t, h)
		}
		out = step(0, "restart")
		if n := strings.Count(out, "kept out: drained by hand by "); n != instances+1 {
			t.Errorf("the restart said %d times that it kept an instance out, want %d:\n%s", n, instances+1, out)
		}
		for _, lb := range balancers {
			if got := down(lb, web1.Addr); len(got) != instances {
				t.Errorf("%s after the restart: down %v", lb.Name, got)
			}
			if got := down(lb, web2.Addr); len(got) != 1 || !strings.Contains(got[0], web2one+" ") {
				t.Errorf("%s after the restart: down on %s %v, want %s", lb.Name, web2.Addr, got, web2one)
			}
		}
		step(0, "undrain", web1.Addr, web2one)
	})
	servedThroughout(t, results)
	for _, h := range fleet.Hosts {
		for port, st := range instanceStates(t, h) {
			if st.MainPID == pids[h.Name][port].MainPID {
				t.Errorf("%s:%d was not restarted", h.Addr, port)
			}
		}
	}
	for _, lb := range balancers {
		if got := upstreamFile(t, lb); got != lbUpstream() {
			t.Errorf("%s: after the undrain, not as before:\n%s", lb.Name, got)
		}
	}
	hist := step(0, "history", "--hosts", web1.Addr)
	if !strings.Contains(hist, fmt.Sprintf("instances %d %d %d %d", basePort, basePort+1, basePort+2, basePort+3)) {
		t.Errorf("history lacks the drain's instances:\n%s", hist)
	}
}

// deployThroughBalancers deploys v2 with cfg under 400 req/s sent to the
// balancers, and checks that no request failed and that every instance
// was restarted once, by rollout (none by systemd).
func deployThroughBalancers(t *testing.T, cfg string) (string, []loadgen.Result) {
	t.Helper()
	return deployThrough(t, cfg, balancers)
}

// deployThrough is deployThroughBalancers with the load sent to
// frontends.
func deployThrough(t *testing.T, cfg string, frontends []*testbed.Host) (string, []loadgen.Result) {
	t.Helper()
	before := map[string]map[int]instanceState{}
	for _, h := range fleet.Hosts {
		before[h.Name] = instanceStates(t, h)
	}
	var out string
	var code int
	results := underLoad(t, frontends, func() { out, code = rollout(t, "deploy", "-c", cfg, "--version", "v2") })
	if code != 0 {
		t.Fatalf("deploy exited %d:\n%s", code, out)
	}
	servedThroughout(t, results)
	for _, h := range fleet.Hosts {
		after := instanceStates(t, h)
		for port, b := range before[h.Name] {
			if a := after[port]; a.MainPID == b.MainPID || a.Restarts != "0" {
				t.Errorf("%s:%d: before %+v, after %+v", h.Name, port, b, a)
			}
		}
	}
	return out, results
}

// reloads counts the reloads of a balancer's Nginx since it booted.
func reloads(t testing.TB, h *testbed.Host) int {
	t.Helper()
	out, err := fleet.Run(context.Background(), h, "sudo -n grep -c 'signal 1 (SIGHUP) received' /var/log/nginx/error.log || true")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(out, &n)
	return n
}

// A balancer that cannot be reached stops the deploy before any change.
func TestLBUnreachableRefusedAtPreflight(t *testing.T) {
	setUpBalancers(t)
	cfg := lbConfig(t, []string{balancers[0].Addr, "10.213.0.99"}, "")
	cfg2, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(cfg2), "ssh:\n", "ssh:\n  connect_timeout: 2s\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	before := instanceStates(t, fleet.Hosts[0])
	out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2")
	if code == 0 || !strings.Contains(out, "10.213.0.99") || !strings.Contains(out, "load balancer") {
		t.Fatalf("deploy with a balancer unreachable: exit %d", code)
	}
	if after := instanceStates(t, fleet.Hosts[0]); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("instances changed: %v, then %v", before, after)
	}
	if got := upstreamFile(t, balancers[0]); got != lbUpstream() {
		t.Errorf("%s changed:\n%s", balancers[0].Name, got)
	}
	if n := reloads(t, balancers[0]); n != 0 {
		t.Errorf("%s reloaded %d times", balancers[0].Name, n)
	}
}

// A balancer that fails mid-deploy (its Nginx config broken by someone):
// the instance being drained is put back on the other balancer and never
// restarted; rollout stops, every instance is in service on the balancer
// that works, and the error says what the failed one may hold.
func TestLBFailsMidDeploy(t *testing.T) {
	setUpBalancers(t)
	stageEverywhere(t, testbed.GoodRelease("v2"))
	cfg := lbConfig(t, balancerAddrs(), "")
	lb1, lb2 := balancers[0], balancers[1]
	h := fleet.Hosts[0]
	code, _, out := deployWithFault(t, cfg, "v2", at(basePort, "health", "ok"), func() {
		if _, err := fleet.Run(context.Background(), lb2, "echo 'not nginx;' | sudo -n tee /etc/nginx/conf.d/broken.conf >/dev/null"); err != nil {
			t.Error(err)
		}
	})
	if code == 0 {
		t.Fatal("deploy passed with a broken balancer")
	}
	for _, want := range []string{"load balancer " + lb2.Addr, fmt.Sprintf("%s:%d in service or drained", h.Addr, basePort+1)} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	log, err := fleet.Run(context.Background(), h, fmt.Sprintf("cat /var/log/my-app/stdout-%d.log", basePort+1))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(log, "v2 listening") {
		t.Errorf("%d was restarted after its drain failed on %s", basePort+1, lb2.Name)
	}
	if got := upstreamFile(t, lb1); got != lbUpstream() {
		t.Errorf("%s: not every instance in service:\n%s", lb1.Name, got)
	}
	// lb2 kept the file it had: 3000 drained (its undrain could not be
	// written there either).
	want := strings.Replace(lbUpstream(), fmt.Sprintf("server %s:%d;", h.Addr, basePort), fmt.Sprintf("server %s:%d down;", h.Addr, basePort), 1)
	if got := upstreamFile(t, lb2); got != want {
		t.Errorf("%s holds:\n%s", lb2.Name, got)
	}
}

// haproxyCfg is a balancer's HAProxy in front of both app hosts, its
// runtime API at level (admin, or less).
func haproxyCfg(level string) string {
	var b strings.Builder
	b.WriteString(haproxyHead(level))
	for _, h := range fleet.Hosts {
		for i := range instances {
			fmt.Fprintf(&b, "    server %s-%d %s:%d check inter 1s\n", h.Name, basePort+i, h.Addr, basePort+i)
		}
	}
	return b.String()
}

// haproxySurgeCfg is haproxyCfg with each app host's spare servers
// (strategy.max_surge), in maintenance.
func haproxySurgeCfg(level string) string {
	conf := haproxyCfg(level)
	for _, h := range fleet.Hosts {
		for _, p := range portRange(basePort+instances, instances) {
			conf += fmt.Sprintf("    server %s-%d %s:%d check inter 1s disabled\n", h.Name, p, h.Addr, p)
		}
	}
	return conf
}

// reloadHAProxy writes conf as every balancer's haproxy.cfg and reloads
// HAProxy there.
func reloadHAProxy(t testing.TB, conf string) {
	t.Helper()
	for _, lb := range balancers {
		if _, err := fleet.RunInput(context.Background(), lb, "sudo -n tee /etc/haproxy/haproxy.cfg >/dev/null", strings.NewReader(conf)); err != nil {
			t.Fatal(err)
		}
		if out, err := fleet.Run(context.Background(), lb, "sudo -n systemctl reload haproxy 2>&1"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
}

// haproxyHead is haproxy.cfg up to backend app's server lines: the
// runtime API at level, and a frontend on port 80.
func haproxyHead(level string) string {
	return fmt.Sprintf(`global
    stats socket /run/haproxy/admin.sock mode 660 level %s
    stats timeout 30s
    user haproxy
    group haproxy

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend web
    bind :80
    default_backend app

backend app
    balance roundrobin
    option httpchk GET /healthz
`, level)
}

// useHAProxy makes every balancer an HAProxy (from Debian's package) in
// front of both app hosts instead of Nginx, its API at level.
func useHAProxy(t testing.TB, level string) {
	t.Helper()
	ctx := context.Background()
	for _, lb := range balancers {
		if _, err := fleet.RunInput(ctx, lb, "sudo -n tee /etc/haproxy/haproxy.cfg >/dev/null", strings.NewReader(haproxyCfg(level))); err != nil {
			t.Fatal(err)
		}
		if out, err := fleet.Run(ctx, lb, "sudo -n systemctl stop nginx && sudo -n haproxy -c -q -f /etc/haproxy/haproxy.cfg 2>&1 && sudo -n systemctl restart haproxy 2>&1"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	for _, lb := range balancers {
		for range 2 * fleetHosts * instances {
			if code, _ := getVersion(t, "http://"+lb.Addr+"/"); code != 200 {
				t.Fatalf("GET through %s: %d", lb.Name, code)
			}
		}
	}
}

// haproxyAPI runs a runtime API command on a balancer.
func haproxyAPI(t testing.TB, lb *testbed.Host, cmd string) string {
	t.Helper()
	out, err := fleet.Run(context.Background(), lb, fmt.Sprintf("echo %q | sudo -n socat stdio unix-connect:/run/haproxy/admin.sock", cmd))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

const haproxyLB = "  driver: haproxy\n  backend: app\n"

// haproxyConfig is lbConfig without the nginx section (HAProxy's backend
// holds the instances).
func haproxyConfig(t testing.TB, minHealthy string) string {
	t.Helper()
	path := lbConfigHealthy(t, minHealthy, balancerAddrs(), haproxyLB)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "nginx:\n  upstream_file: /etc/nginx/conf.d/my-app-upstream.conf\n  upstream: my_app\n", "", 1)
	if cfg == string(b) {
		t.Fatal("no nginx section to remove")
	}
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// With HAProxy on the balancers, rollout drains and readies each server
// through the runtime API: nothing reloads, so the load sees not one
// failed request and not one resend.
func TestLBHAProxyDeploy(t *testing.T) {
	setUpBalancers(t)
	useHAProxy(t, "admin")
	stageEverywhere(t, testbed.GoodRelease("v2"))
	cfg := haproxyConfig(t, testMinHealthy)
	out, results := deployThroughBalancers(t, cfg)
	for _, r := range results {
		if len(r.Resent) != 0 {
			t.Errorf("through HAProxy (no reload), requests were resent on closed connections: %v", r.Resent)
		}
	}
	for _, lb := range balancers {
		state := haproxyAPI(t, lb, "show servers state app")
		for _, line := range strings.Split(state, "\n")[2:] {
			// srv_admin_state, the 7th field: 0 is neither drained nor in
			// maintenance.
			if f := strings.Fields(line); len(f) > 6 && f[6] != "0" {
				t.Errorf("%s: server left with admin state %s: %s", lb.Name, f[6], line)
			}
		}
		if n, err := fleet.Run(context.Background(), lb, "pgrep -c -x haproxy || true"); err != nil || strings.TrimSpace(n) == "0" {
			t.Errorf("%s: haproxy not running (%q, %v)", lb.Name, n, err)
		}
		if n := apiSessions(t, lb); n == 0 {
			t.Errorf("%s: no runtime API session was opened: every change was an SSH command", lb.Name)
		}
	}
	for _, want := range []string{"load balancer", "wait-drain", "deploy v2: ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	text, code := rollout(t, "status", "-c", cfg)
	if code != 0 || strings.Count(text, balancers[1].Addr+":in") != fleetHosts*instances {
		t.Errorf("status (exit %d):\n%s", code, text)
	}

	// max_surge: the backends hold the spare servers in maintenance; each
	// surge wakes the new ones and puts the old ones in maintenance, on
	// every balancer, no reload, no resend.
	reloadHAProxy(t, haproxySurgeCfg("admin"))
	t.Run("Surge", func(t *testing.T) {
		results := surgeThroughBalancers(t, cfg, func(lb *testbed.Host, serving []int) {
			for _, line := range strings.Split(haproxyAPI(t, lb, "show servers state app"), "\n")[2:] {
				// srv_addr, srv_port and srv_admin_state: the 5th, 19th and 7th fields.
				f := strings.Fields(line)
				if len(f) < 19 {
					continue
				}
				port, _ := strconv.Atoi(f[18])
				admin, _ := strconv.Atoi(f[6])
				if in := admin&0x23 == 0; in != slices.Contains(serving, port) {
					t.Errorf("%s: server %s (%s:%d) admin state %d, want the ports %v in service", lb.Name, f[3], f[4], port, admin, serving)
				}
			}
		})
		for _, r := range results {
			if len(r.Resent) != 0 {
				t.Errorf("a surge through HAProxy (no reload) had requests resent on closed connections: %v", r.Resent)
			}
		}
	})
	reloadHAProxy(t, haproxyCfg("admin"))

	// The same with sudo: helper: the app hosts' helper and the balancers'
	// (which takes only this socket and backend), as rollout render shows
	// them, and deploy may run nothing else as root; no activation hook
	// then (it needs sudo), so the deploy restarts what the hosts have.
	helperCfg := helperConfig(t, cfg)
	installHelpers(t, helperCfg)
	onlyHelper(t, append(slices.Clone(fleet.Hosts), balancers...)...)
	if out, err := fleet.Run(context.Background(), balancers[0], "sudo -n /usr/local/lib/rollout/my-app x haproxy /run/haproxy/admin.sock app 100 state 2>&1 | grep -o 'has helper [0-9a-f]*'"); err != nil {
		t.Fatalf("the balancer's helper: %v\n%s", err, out)
	}
	out, _ = deployThroughBalancers(t, helperCfg)
	if !strings.Contains(out, "deploy v2: ok") {
		t.Errorf("the deploy with the helpers:\n%s", out)
	}
}

// helperConfig is cfg with sudo: helper and without the activation hook
// (it needs sudo): the deploy restarts what the hosts have.
func helperConfig(t *testing.T, cfg string) string {
	t.Helper()
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hook := "hooks:\n  host_before:\n    - sudo -n /usr/local/sbin/my-app-activate \"$ROLLOUT_VERSION\"\n"
	if !strings.Contains(string(b), hook) {
		t.Fatalf("no activation hook to remove:\n%s", b)
	}
	helperCfg := filepath.Join(t.TempDir(), "helper.yaml")
	if err := os.WriteFile(helperCfg, []byte(strings.Replace(string(b), hook, "", 1)+"sudo: helper\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return helperCfg
}

// installHelpers writes the helpers and sudoers files rollout render
// shows for cfg on the fleet's hosts and the balancers (with lb:), as root (what
// rollout setup would write; TestLBSetupBareHosts runs setup itself).
func installHelpers(t *testing.T, cfg string) {
	t.Helper()
	out, code := rollout(t, "render", "-c", cfg, "--output", "json")
	var doc struct {
		Files []struct{ Host, Path, Owner, Mode, Content string }
	}
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil {
		t.Fatalf("render exited %d:\n%s", code, out)
	}
	n, lbHosts := 0, map[string]bool{}
	for _, f := range doc.Files {
		if f.Path != "/usr/local/lib/rollout/my-app" && f.Path != "/etc/sudoers.d/rollout-my-app" {
			continue
		}
		targets := fleet.Hosts
		if f.Host != "" {
			lbHosts[f.Host] = true
			targets = nil
			for _, lb := range balancers {
				if lb.Addr == f.Host {
					targets = append(targets, lb)
				}
			}
		}
		for _, x := range targets {
			cmd := fmt.Sprintf("sudo -n mkdir -p /usr/local/lib/rollout && sudo -n tee %s >/dev/null && sudo -n chown %s %s && sudo -n chmod %s %s", f.Path, f.Owner, f.Path, f.Mode, f.Path)
			if out, err := fleet.RunInput(context.Background(), x, cmd, strings.NewReader(f.Content)); err != nil {
				t.Fatalf("%s: %v\n%s", x.Name, err, out)
			}
			n++
		}
	}
	if want := 2 * (len(fleet.Hosts) + len(lbHosts)); n != want || len(lbHosts) != 0 && len(lbHosts) != len(balancers) {
		t.Fatalf("render showed %d helper files, for the app hosts and balancers %v: want %d", n, lbHosts, want)
	}
}

// A server a human put in maintenance is never readied: the deploy stops
// at the preflight, naming it; and a socket below level admin is refused
// with what to change.
func TestLBHAProxyRefusals(t *testing.T) {
	setUpBalancers(t)
	useHAProxy(t, "admin")
	cfg := haproxyConfig(t, testMinHealthy)
	h := fleet.Hosts[1]
	haproxyAPI(t, balancers[1], fmt.Sprintf("set server app/%s-%d state maint", h.Name, basePort+2))
	before := instanceStates(t, h)
	out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2")
	want := fmt.Sprintf("server app/%s-%d (%s:%d) is in maintenance", h.Name, basePort+2, h.Addr, basePort+2)
	if code == 0 || !strings.Contains(out, want) || !strings.Contains(out, "rollout never readies it") {
		t.Errorf("deploy with a server in maintenance (exit %d) lacks %q", code, want)
	}
	if after := instanceStates(t, h); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("instances changed: %v, then %v", before, after)
	}
	if state := haproxyAPI(t, balancers[1], "show servers state app"); !strings.Contains(state, fmt.Sprintf("%s-%d %s 0 1 ", h.Name, basePort+2, h.Addr)) {
		t.Errorf("the server is no longer in maintenance:\n%s", state)
	}

	useHAProxy(t, "operator")
	out, code = rollout(t, "deploy", "-c", cfg, "--version", "v2")
	if code == 0 || !strings.Contains(out, "is at level operator, not admin") {
		t.Errorf("deploy with the API at level operator (exit %d)", code)
	}
}

// rollout setup on a bare app host and a bare balancer: the app host gets
// its user and unit and no Nginx files; the balancer gets the upstream
// naming the app host's instances and the site. A deploy through it
// follows, and a second setup changes nothing.
func TestLBSetupBareHosts(t *testing.T) {
	h, lb := fleet.Hosts[0], balancers[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, x := range []*testbed.Host{h, lb} {
		if err := fleet.Reboot(ctx, x); err != nil { // without Provision: bare
			t.Fatal(err)
		}
	}
	defer resetHost(t, h)
	// The upstream file given in lb:, as the users write it.
	cfg := oneHostConfig(t, fmt.Sprintf("setup:\n  server_name: %s\nlb:\n  hosts: [%s]\n  upstream_file: /etc/nginx/conf.d/my-app-upstream.conf\n", lb.Addr, lb.Addr))
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	noHooks := strings.Replace(string(b), "hooks:\n  host_before:\n    - sudo -n /usr/local/sbin/my-app-activate \"$ROLLOUT_VERSION\"\n", "", 1)
	noHooks = strings.Replace(noHooks, "nginx:\n  upstream_file: /etc/nginx/conf.d/my-app-upstream.conf\n", "nginx:\n", 1)
	noHooks += "sudo: helper\n" // setup installs a helper on the app host and on the balancer
	if !strings.Contains(noHooks, "nginx:\n  upstream: my_app\n") {
		t.Fatalf("could not move the upstream file into lb::\n%s", noHooks)
	}
	if err := os.WriteFile(cfg, []byte(noHooks), 0o600); err != nil {
		t.Fatal(err)
	}

	out, code := rollout(t, "setup", "-c", cfg)
	if code != 0 || !strings.Contains(out, "write /etc/systemd/system/my-app@.service") || !strings.Contains(out, lb.Addr+": changed:") {
		t.Fatalf("setup exited %d", code)
	}
	if files, _ := fleet.Run(ctx, h, "ls /etc/nginx/conf.d/"); strings.TrimSpace(files) != "" {
		t.Errorf("setup wrote Nginx files on the app host: %s", files)
	}
	up := upstreamFile(t, lb)
	for i := range instances {
		if !strings.Contains(up, fmt.Sprintf("server %s:%d;", h.Addr, basePort+i)) {
			t.Errorf("the balancer's upstream lacks %s:%d:\n%s", h.Addr, basePort+i, up)
		}
	}
	nginxTestPasses(t, lb)

	// The release, and an env file making the app listen for the balancer.
	if err := fleet.StageRelease(ctx, h, testbed.GoodRelease("v2")); err != nil {
		t.Fatal(err)
	}
	if out, err := fleet.Run(ctx, h, `sudo -n sh -c 'cp -a /srv/releases/v2/. /var/www/my-app/ && printf "DATABASE_URL=postgres://x@127.0.0.1/x\nBIND_ADDRESS=0.0.0.0\n" > /etc/my-app/.env'`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, code := rollout(t, "setup", "-c", cfg); code != 0 || !strings.Contains(out, h.Addr+": no changes") || !strings.Contains(out, lb.Addr+": no changes") {
		t.Errorf("a second setup exited %d or changed something:\n%s", code, out)
	}
	// From here on deploy may run only the helpers, on both hosts.
	onlyHelper(t, h, lb)
	if _, code := rollout(t, "deploy", "-c", cfg, "--version", "v2"); code != 0 {
		t.Fatalf("deploy after setup exited %d", code)
	}
	for range 8 {
		if code, v := getVersion(t, "http://"+lb.Addr+"/"); code != 200 || v != "v2" {
			t.Fatalf("through the balancer: %d, version %q", code, v)
		}
	}
}

// onlyHelper removes deploy's NOPASSWD: ALL from hosts, which must have
// the app's helper: deploy may then run only the helper as root.
func onlyHelper(t *testing.T, hosts ...*testbed.Host) {
	t.Helper()
	ctx := context.Background()
	for _, x := range hosts {
		if out, err := fleet.Run(ctx, x, "sudo -n test -x /usr/local/lib/rollout/my-app && sudo -n rm -f /etc/sudoers.d/deploy"); err != nil {
			t.Fatalf("%s: %v\n%s", x.Name, err, out)
		}
		if out, err := fleet.Run(ctx, x, "sudo -n true"); err == nil {
			t.Fatalf("%s: deploy still runs anything as root:\n%s", x.Name, out)
		}
	}
}

// A balancer lost mid-deploy (its SSH connection silent past
// ssh.reconnect): rollout stops with every instance in service on the
// balancer it still reaches, says what the lost one may hold, and drops no
// request; once it is back, a rerun leaves both balancers whole.
func TestLBLostMidDeploy(t *testing.T) {
	setUpBalancers(t)
	stageEverywhere(t, testbed.GoodRelease("v2"))
	cfg := lbConfig(t, balancerAddrs(), "")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), "ssh:\n", "ssh:\n  keepalive: 1s\n  reconnect: 3s\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	lb1, lb2 := balancers[0], balancers[1]
	h := fleet.Hosts[0]
	unblock := make(chan struct{})
	var code int
	var out string
	res := underLoad(t, balancers, func() {
		code, _, out = deployWithFault(t, cfg, "v2", at(basePort+1, "stable", "start"), func() {
			blockSSHUntil(t, lb2, unblock)
		})
	})
	noFailedRequests(t, res)
	if code == 0 {
		t.Fatal("deploy passed with a balancer lost")
	}
	for _, want := range []string{"load balancer " + lb2.Addr + " (it may hold " + fmt.Sprintf("%s:%d drained or in service", h.Addr, basePort+1), "could not reconnect within 3s"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if got := upstreamFile(t, lb1); got != lbUpstream() {
		t.Errorf("%s: not every instance in service:\n%s", lb1.Name, got)
	}
	close(unblock)
	time.Sleep(500 * time.Millisecond) // the rule removed
	if got := upstreamFile(t, lb2); !strings.Contains(got, fmt.Sprintf("server %s:%d down;", h.Addr, basePort+1)) {
		t.Errorf("%s does not hold %d drained, as rollout said it may:\n%s", lb2.Name, basePort+1, got)
	}
	if out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2"); code != 0 {
		t.Fatalf("rerun exited %d:\n%s", code, out)
	}
	for _, lb := range balancers {
		if got := upstreamFile(t, lb); got != lbUpstream() {
			t.Errorf("%s after the rerun:\n%s", lb.Name, got)
		}
	}
}

// surgeThroughBalancers: max_surge 100% behind the balancers of cfg (lb:,
// Nginx or HAProxy), under 400 req/s sent to them: a deploy moves every
// app host's instances to the spare ports on every balancer, and the next
// one moves them back, not one request failing; status, with the config,
// finds the ports that serve. check says what a balancer holds after each.
// It returns the load's results, both deploys'.
func surgeThroughBalancers(t *testing.T, cfg string, check func(lb *testbed.Host, serving []int)) []loadgen.Result {
	t.Helper()
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(t.TempDir(), "surge.yaml")
	if err := os.WriteFile(cfg, append(b, "strategy:\n  max_surge: 100%\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	home, spare := portRange(basePort, instances), portRange(basePort+instances, instances)
	var all []loadgen.Result
	for i, to := range [][]int{spare, home} {
		from := [][]int{home, spare}[i]
		var out string
		var code int
		results := underLoad(t, balancers, func() { out, code = rollout(t, "deploy", "-c", cfg, "--version", "v2", "--force") })
		if code != 0 {
			t.Fatalf("surge onto %v exited %d:\n%s", to, code, out)
		}
		servedThroughout(t, results)
		all = append(all, results...)
		for _, lb := range balancers {
			check(lb, to)
		}
		for _, h := range fleet.Hosts {
			runsOn(t, h, to, from, "v2")
		}
		st, code := rollout(t, "status", "-c", cfg)
		for _, h := range fleet.Hosts {
			if code != 0 || !strings.Contains(st, fmt.Sprintf("%s  %d", h.Addr, to[0])) {
				t.Errorf("status after the surge onto %v exited %d:\n%s", to, code, st)
			}
		}
	}
	return all
}
