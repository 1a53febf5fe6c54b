package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// appHostHAProxyCfg is an app host's own HAProxy in front of its
// instances, on port 80 in Nginx's place, its runtime API at level admin.
func appHostHAProxyCfg() string {
	var b strings.Builder
	b.WriteString(haproxyHead("admin"))
	for i := range instances {
		fmt.Fprintf(&b, "    server my-app-%d 127.0.0.1:%d check inter 1s\n", basePort+i, basePort+i)
	}
	return b.String()
}

// appHostHAProxySurgeCfg is appHostHAProxyCfg with strategy.max_surge's
// spare servers, each in maintenance ("disabled") until a surge wakes it.
func appHostHAProxySurgeCfg() string {
	var b strings.Builder
	b.WriteString(appHostHAProxyCfg())
	for i := range instances {
		fmt.Fprintf(&b, "    server my-app-%d 127.0.0.1:%d check inter 1s disabled\n", basePort+instances+i, basePort+instances+i)
	}
	return b.String()
}

// useAppHostHAProxy puts HAProxy (Debian's package) in front of each
// host's instances, in place of its Nginx.
func useAppHostHAProxy(t testing.TB, hosts ...*testbed.Host) {
	t.Helper()
	ctx := context.Background()
	for _, h := range hosts {
		if _, err := fleet.RunInput(ctx, h, "sudo -n tee /etc/haproxy/haproxy.cfg >/dev/null", strings.NewReader(appHostHAProxyCfg())); err != nil {
			t.Fatal(err)
		}
		if out, err := fleet.Run(ctx, h, "sudo -n systemctl stop nginx && sudo -n haproxy -c -q -f /etc/haproxy/haproxy.cfg 2>&1 && sudo -n systemctl restart haproxy 2>&1"); err != nil {
			t.Fatalf("%s: %v\n%s", h.Name, err, out)
		}
		for range 2 * instances {
			if code, _ := getVersion(t, "http://"+h.Addr+"/"); code != 200 {
				t.Fatalf("GET through %s's HAProxy: %d", h.Name, code)
			}
		}
	}
}

// appHostHAProxyConfig is fleetConfig with haproxy: in place of nginx:.
func appHostHAProxyConfig(t testing.TB, minHealthy string) string {
	t.Helper()
	return fleetConfigWith(t, minHealthy, "haproxy:\n  backend: app\n")
}

// fleetConfigWith is fleetConfig with another balancer's section in place
// of nginx:.
func fleetConfigWith(t testing.TB, minHealthy, section string) string {
	t.Helper()
	path := fleetConfig(t, minHealthy)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const nginx = "nginx:\n  upstream_file: /etc/nginx/conf.d/my-app-upstream.conf\n  upstream: my_app\n"
	cfg := strings.Replace(string(b), nginx, section, 1)
	if cfg == string(b) {
		t.Fatal("no nginx section to replace")
	}
	path = filepath.Join(t.TempDir(), "balancer.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// apiSessions counts the HAProxy runtime API sessions rollout opened on h
// (sudo logs each command it runs).
func apiSessions(t testing.TB, h *testbed.Host) int {
	t.Helper()
	out, err := fleet.RunRoot(context.Background(), h, "journalctl -q --no-pager _COMM=sudo | grep -c 'COMMAND=/usr/bin/socat -t 2 stdio unix-connect:/run/haproxy/admin.sock' || true")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(out, &n)
	return n
}

// adminStates are the srv_admin_state of h's backend app, by server: one
// per instance.
func adminStates(t *testing.T, h *testbed.Host) map[string]string {
	t.Helper()
	out := serverStates(t, h)
	if len(out) != instances {
		t.Fatalf("%s: backend app has %d servers: %v", h.Name, len(out), out)
	}
	return out
}

// serverStates are the srv_admin_state of h's backend app, by server.
func serverStates(t testing.TB, h *testbed.Host) map[string]string {
	t.Helper()
	state, err := fleet.RunRoot(context.Background(), h, "echo 'show servers state app' | socat stdio unix-connect:/run/haproxy/admin.sock")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(state, "\n")[2:] {
		// srv_name is the 4th field, srv_admin_state the 7th.
		if f := strings.Fields(line); len(f) > 6 {
			out[f[3]] = f[6]
		}
	}
	return out
}

// With HAProxy on each app host (haproxy:), rollout drains and readies
// each instance through the runtime API: no reload, so a strict client
// sees not one failed request and not one resend. A server someone put in
// maintenance stops the next deploy at its preflight, and the same deploy
// runs with sudo: helper, whose app-host helper takes only this socket
// and backend.
func TestAppHostHAProxy(t *testing.T) {
	resetFleet(t)
	t.Cleanup(func() { resetFleet(t) }) // Nginx back in front, and sudo
	useAppHostHAProxy(t, fleet.Hosts...)
	stageEverywhere(t, testbed.GoodRelease("v2"))
	cfg := appHostHAProxyConfig(t, testMinHealthy)

	out, results := deployThrough(t, cfg, fleet.Hosts)
	for _, r := range results {
		if len(r.Resent) != 0 {
			t.Errorf("through HAProxy (no reload), requests were resent on closed connections: %v", r.Resent)
		}
	}
	for _, h := range fleet.Hosts {
		for port, v := range versionsServed(t, h) {
			if v != "v2" {
				t.Errorf("%s:%d serves %q", h.Name, port, v)
			}
		}
		for name, st := range adminStates(t, h) {
			if st != "0" {
				t.Errorf("%s: server %s left with admin state %s", h.Name, name, st)
			}
		}
		if n, err := fleet.Run(context.Background(), h, "pgrep -c -x nginx || true"); err != nil || strings.TrimSpace(n) != "0" {
			t.Errorf("%s: nginx runs (%q, %v): the deploy went through it", h.Name, n, err)
		}
	}
	for _, h := range fleet.Hosts {
		if n := apiSessions(t, h); n == 0 {
			t.Errorf("%s: no runtime API session was opened: every change was an SSH command", h.Name)
		}
	}
	for _, want := range []string{"one runtime API call (no reload)", "wait-drain", "deploy v2: ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if text, code := rollout(t, "status", "-c", cfg); code != 0 || strings.Count(text, "active") < len(fleet.Hosts)*instances {
		t.Errorf("status (exit %d):\n%s", code, text)
	}

	reloadedMidDeploy(t, cfg)

	// A server put in maintenance by hand: the next deploy stops at the
	// preflight, naming it, and changes nothing on any host; status shows
	// it out of service.
	h := fleet.Hosts[1]
	maint := fmt.Sprintf("my-app-%d", basePort+2)
	haproxyAPI(t, h, "set server app/"+maint+" state maint")
	states := instanceStates(t, h)
	out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2", "--force")
	if code == 0 || !strings.Contains(out, "server app/"+maint+fmt.Sprintf(" (127.0.0.1:%d) is in maintenance", basePort+2)) {
		t.Errorf("deploy with a server in maintenance: exit %d:\n%s", code, out)
	}
	if after := instanceStates(t, h); fmt.Sprint(after) != fmt.Sprint(states) {
		t.Errorf("instances changed: %v, then %v", states, after)
	}
	if st := adminStates(t, h)[maint]; st == "0" {
		t.Errorf("%s readied", maint)
	}
	if text, code := rollout(t, "status", "-c", cfg); code == 0 {
		t.Errorf("status with %s out of service exited 0:\n%s", maint, text)
	}
	haproxyAPI(t, h, "set server app/"+maint+" state ready")

	surgeThroughHAProxy(t, fleet.Hosts[0])

	// sudo: helper: the app host's helper drains and readies this backend
	// through the runtime API, and deploy runs nothing else as root (no
	// activation hook then: it needs sudo).
	// One host is enough: the helper is the same on each.
	helperCfg := helperConfig(t, cfg)
	installHelpers(t, helperCfg)
	onlyHelper(t, fleet.Hosts...)
	results = underLoad(t, fleet.Hosts[:1], func() {
		out, code = rollout(t, "deploy", "-c", helperCfg, "--version", "v2", "--force", "--hosts", fleet.Hosts[0].Addr)
	})
	if code != 0 || !strings.Contains(out, "deploy v2: ok") {
		t.Fatalf("deploy with the helper exited %d:\n%s", code, out)
	}
	for _, r := range results {
		if r.Failed != 0 || len(r.Resent) != 0 {
			t.Errorf("deploy with the helper: %d failed, resent %v", r.Failed, r.Resent)
		}
	}
	for _, h := range fleet.Hosts {
		for name, st := range adminStates(t, h) {
			if st != "0" {
				t.Errorf("%s: server %s left with admin state %s after the helper's deploy", h.Name, name, st)
			}
		}
	}
}

// reloadedMidDeploy: HAProxy on the first host reloaded (systemctl
// reload) while its second instance restarts, and later stopped for 3 s
// while its last one restarts. Each new process forgot the states set
// through the API. After the reload rollout's session still talks to the
// old process, which it keeps alive; after the stop rollout's next change
// finds nothing at the socket and waits. The next change after each
// reaches the new process and warns of what was undone; the instances in
// between are drained in the reloaded process (seen through a socket of
// its own every 100 ms); the deploy ends with every server in service on
// v2.
func reloadedMidDeploy(t *testing.T, cfg string) {
	t.Helper()
	h := fleet.Hosts[0]
	p0 := haproxyPid(t, h)
	last := fmt.Sprintf("my-app-%d", basePort+instances-1)
	var (
		code   int
		events []stepEvent
		mu     sync.Mutex
		seen   = map[string]bool{} // "PID SERVER" drained
		p1     string              // the process the last instance was drained in
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	onHost := func(e stepEvent) bool { return at(basePort+1, "restart", "start")(e) }
	results := underLoad(t, []*testbed.Host{h}, func() {
		code, events, _ = runWithFault(t, []string{"deploy", "-c", cfg, "--version", "v2", "--force", "--hosts", h.Addr}, onHost, func() {
			if out, err := fleet.RunRoot(context.Background(), h, "systemctl reload haproxy 2>&1"); err != nil {
				t.Errorf("reload haproxy: %v\n%s", err, out)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					// One connection: both answers come from one process.
					out, err := fleet.RunRoot(context.Background(), h, "printf 'show info; show servers state app\\n' | socat stdio unix-connect:/run/haproxy/admin.sock")
					if err != nil {
						continue // HAProxy down
					}
					pid := ""
					for _, line := range strings.Split(out, "\n") {
						f := strings.Fields(line)
						switch {
						case len(f) == 2 && f[0] == "Pid:":
							pid = f[1]
						case len(f) > 6 && f[1] == "app" && f[6] == "8": // srv_name, srv_admin_state
							mu.Lock()
							seen[pid+" "+f[3]] = true
							mu.Unlock()
						}
					}
					mu.Lock()
					stopNow := p1 == "" && seen[pid+" "+last]
					if stopNow {
						p1 = pid
					}
					mu.Unlock()
					if stopNow {
						// Down for 3 s: rollout's next change comes within
						// them (the instance's restart and health check take
						// about 1.5 s) and waits for HAProxy to answer again.
						if out, err := fleet.RunRoot(context.Background(), h, "systemctl stop haproxy && sleep 3 && systemctl start haproxy 2>&1"); err != nil {
							t.Errorf("stop and start haproxy: %v\n%s", err, out)
						}
					}
				}
			}()
		})
	})
	close(stop)
	wg.Wait()
	// The 3 s without HAProxy fail the requests sent then: not the
	// deploy's.
	t.Logf("HAProxy reloaded, then stopped for 3 s, mid-deploy: %d failed (%v), %d resent", results[0].Failed, results[0].Failures, len(results[0].Resent))
	if code != 0 {
		t.Fatalf("deploy with HAProxy reloaded and stopped mid-deploy exited %d", code)
	}
	p2 := haproxyPid(t, h)
	if p1 == "" || p1 == p0 || p2 == p1 {
		t.Fatalf("HAProxy was not reloaded and then started again: processes %s, %q, %s", p0, p1, p2)
	}
	for _, w := range []struct {
		port     int
		was, now string
	}{{basePort + 1, p0, p1}, {basePort + instances - 1, p1, p2}} {
		if !slices.ContainsFunc(events, func(e stepEvent) bool {
			return e.Port == w.port && e.Step == "undrain" && e.Status == "warn" && strings.Contains(e.Message, fmt.Sprintf("(process %s, now %s)", w.was, w.now))
		}) {
			t.Errorf("no warning on the undrain of %d that HAProxy was reloaded or restarted (process %s, now %s)", w.port, w.was, w.now)
		}
	}
	if !seen[fmt.Sprintf("%s my-app-%d", p1, basePort+2)] {
		t.Errorf("%d was never seen drained in the reloaded process %s (seen: %v): rollout's changes went elsewhere", basePort+2, p1, seen)
	}
	for name, st := range adminStates(t, h) {
		if st != "0" {
			t.Errorf("%s: server %s left with admin state %s", h.Name, name, st)
		}
	}
	for port, v := range versionsServed(t, h) {
		if v != "v2" {
			t.Errorf("%s:%d serves %q", h.Name, port, v)
		}
	}
}

// haproxyPid is the process answering h's runtime API.
func haproxyPid(t testing.TB, h *testbed.Host) string {
	t.Helper()
	for _, line := range strings.Split(haproxyAPI(t, h, "show info"), "\n") {
		if pid, ok := strings.CutPrefix(line, "Pid: "); ok {
			return strings.TrimSpace(pid)
		}
	}
	t.Fatalf("%s: show info gives no Pid", h.Name)
	return ""
}

// haproxyReady are the slots' ports (home and spare) whose server in h's
// backend app is ready: neither drained nor in maintenance. A slot with
// no server fails the test.
func haproxyReady(t testing.TB, h *testbed.Host) []int {
	t.Helper()
	states := serverStates(t, h)
	var ready []int
	for _, p := range portRange(basePort, 2*instances) {
		st, ok := states[fmt.Sprintf("my-app-%d", p)]
		if !ok {
			t.Fatalf("%s: backend app has no server my-app-%d: %v", h.Name, p, states)
		}
		if n, _ := strconv.Atoi(st); n&0x23 == 0 {
			ready = append(ready, p)
		}
	}
	return ready
}

// surgeThroughHAProxy: max_surge 100% with HAProxy on h, its backend
// holding the spare servers in maintenance: a deploy wakes 3004-3007 and
// puts 3000-3003 in maintenance in one runtime API call, and the next one
// moves back, each with not one failed request and not one resend (no
// reload). h's HAProxy is then as it was.
func surgeThroughHAProxy(t *testing.T, h *testbed.Host) {
	t.Helper()
	ctx := context.Background()
	if _, err := fleet.RunInput(ctx, h, "sudo -n tee /etc/haproxy/haproxy.cfg >/dev/null", strings.NewReader(appHostHAProxySurgeCfg())); err != nil {
		t.Fatal(err)
	}
	if out, err := fleet.Run(ctx, h, "sudo -n systemctl reload haproxy 2>&1"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	defer useAppHostHAProxy(t, h)
	cfg := withLines(t, appHostHAProxyConfig(t, testMinHealthy), "strategy:\n  max_surge: 100%\n")
	surgeAndBack(t, cfg, h, haproxyReady, false, func(to []int, out string) {
		if !strings.Contains(out, "one runtime API call (no reload)") {
			t.Errorf("surge onto %v was not one runtime API call:\n%s", to, out)
		}
	})
}
