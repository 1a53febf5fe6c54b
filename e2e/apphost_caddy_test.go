package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
	"github.com/rollout-dev/rollout/internal/loadgen"
	"github.com/rollout-dev/rollout/sshexec"
)

// caddyfile is an app host's Caddy in Nginx's place, on port 80, sending
// requests to n instances as rollout setup shows it (keepalive off), its
// admin API at Caddy's default address.
func caddyfile(n int) string {
	var b strings.Builder
	b.WriteString("{\n\tadmin localhost:2019\n}\n:80 {\n\treverse_proxy")
	for i := range n {
		fmt.Fprintf(&b, " 127.0.0.1:%d", basePort+i)
	}
	b.WriteString(" {\n\t\tlb_try_duration 2s\n\t\ttransport http {\n\t\t\tkeepalive off\n\t\t}\n\t}\n}\n")
	return b.String()
}

// useAppHostCaddy puts Caddy (Debian's package) in front of each host's
// instances, in place of its Nginx.
func useAppHostCaddy(t testing.TB, hosts ...*testbed.Host) {
	t.Helper()
	ctx := context.Background()
	for _, h := range hosts {
		if _, err := fleet.RunInput(ctx, h, "sudo -n tee /etc/caddy/Caddyfile >/dev/null", strings.NewReader(caddyfile(instances))); err != nil {
			t.Fatal(err)
		}
		if out, err := fleet.Run(ctx, h, "sudo -n systemctl stop nginx && sudo -n systemctl restart caddy 2>&1"); err != nil {
			t.Fatalf("%s: %v\n%s", h.Name, err, out)
		}
		answers(t, h, "Caddy", 10*time.Second)
	}
}

// answers waits until h answers 200 on port 80 through what (a balancer
// just started in Nginx's place), at most within.
func answers(t testing.TB, h *testbed.Host, what string, within time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(within); ; time.Sleep(50 * time.Millisecond) {
		resp, err := client.Get("http://" + h.Addr + "/")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s does not answer 200 on port 80 %s after its start (%v)", h.Name, what, within, err)
		}
	}
}

// restartedMidDeploy deploys to h under load with its balancer (the
// systemd unit unit) restarted while the second instance restarts; the
// deploy must end with every instance served, as served says. It returns
// the load's result (the restart's own failures are the caller's to judge).
func restartedMidDeploy(t *testing.T, cfg string, h *testbed.Host, unit string, served func(testing.TB, *testbed.Host) []int) loadgen.Result {
	t.Helper()
	var code int
	results := underLoad(t, []*testbed.Host{h}, func() {
		code, _, _ = runWithFault(t, []string{"deploy", "-c", cfg, "--version", "v2", "--force", "--hosts", h.Addr}, at(basePort+1, "restart", "start"), func() {
			if out, err := fleet.RunRoot(context.Background(), h, "systemctl restart "+unit+" 2>&1"); err != nil {
				t.Errorf("restart %s: %v\n%s", unit, err, out)
			}
		})
	})
	t.Logf("%s restarted mid-deploy: %d failed (%v), resent %v", unit, results[0].Failed, results[0].Failures, results[0].Resent)
	if code != 0 {
		t.Fatalf("deploy with %s restarted mid-deploy exited %d", unit, code)
	}
	if got := served(t, h); fmt.Sprint(got) != fmt.Sprint(portRange(basePort, instances)) {
		t.Errorf("%s serves %v after a restart mid-deploy", unit, got)
	}
	return results[0]
}

// scaleThrough scales h in to 2 and out to 4 again under load: the
// balancer follows (served), the surplus units stop, and no request fails
// (nor is resent, unless resends are the balancer's way).
func scaleThrough(t *testing.T, cfg string, h *testbed.Host, served func(testing.TB, *testbed.Host) []int, resends bool) {
	t.Helper()
	for _, n := range []int{2, instances} {
		var out string
		var code int
		results := underLoad(t, []*testbed.Host{h}, func() {
			out, code = rollout(t, "scale", "-c", cfg, "--instances", strconv.Itoa(n), "--hosts", h.Addr)
		})
		if code != 0 {
			t.Fatalf("scale to %d exited %d:\n%s", n, code, out)
		}
		if r := results[0]; r.Failed != 0 || !resends && len(r.Resent) != 0 {
			t.Errorf("scale to %d: %d failed (%v), resent %v", n, r.Failed, r.Failures, r.Resent)
		}
		if got := served(t, h); fmt.Sprint(got) != fmt.Sprint(portRange(basePort, n)) {
			t.Errorf("scale to %d: the balancer serves %v", n, got)
		}
		states := instanceStates(t, h)
		for i := range instances {
			if running := states[basePort+i].MainPID != "0"; running != (i < n) {
				t.Errorf("scale to %d: %d running %v", n, basePort+i, running)
			}
		}
	}
}

// surgeAndBack deploys v2 to h under load with cfg (max_surge: 100%)
// twice: onto the spare ports, then back home. Each time no request fails
// (nor is resent, unless resends are the balancer's way), the balancer
// serves the new range (served) and only it runs v2, the other stopped and
// disabled. after, when given, runs after each deploy with its target
// ports and output.
func surgeAndBack(t *testing.T, cfg string, h *testbed.Host, served func(testing.TB, *testbed.Host) []int, resends bool, after func(to []int, out string)) {
	t.Helper()
	home, spare := portRange(basePort, instances), portRange(basePort+instances, instances)
	for _, to := range [][]int{spare, home} {
		var out string
		var code int
		results := underLoad(t, []*testbed.Host{h}, func() {
			out, code = rollout(t, "deploy", "-c", cfg, "--version", "v2", "--force", "--hosts", h.Addr)
		})
		if code != 0 || !strings.Contains(out, "serves in its place") {
			t.Fatalf("surge deploy onto %v exited %d:\n%s", to, code, out)
		}
		t.Logf("surge onto %v: %d failed, resent %v", to, results[0].Failed, results[0].Resent)
		if r := results[0]; r.Failed != 0 || !resends && len(r.Resent) != 0 {
			t.Errorf("surge onto %v: %d failed (%v), resent %v", to, r.Failed, r.Failures, r.Resent)
		}
		if got := served(t, h); fmt.Sprint(got) != fmt.Sprint(to) {
			t.Errorf("surge onto %v: the balancer serves %v", to, got)
		}
		from := home
		if slices.Equal(to, home) {
			from = spare
		}
		runsOn(t, h, to, from, "v2")
		if after != nil {
			after(to, out)
		}
	}
}

// stoppedRefuses stops h's balancer (the unit unit): the next deploy stops
// at its preflight, saying want, and changes no instance.
func stoppedRefuses(t *testing.T, cfg string, h *testbed.Host, unit, want string) {
	t.Helper()
	if out, err := fleet.RunRoot(context.Background(), h, "systemctl stop "+unit+" 2>&1"); err != nil {
		t.Fatalf("stop %s: %v\n%s", unit, err, out)
	}
	states := instanceStates(t, h)
	out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2", "--force", "--hosts", h.Addr)
	if code == 0 || !strings.Contains(out, want) {
		t.Errorf("deploy with %s stopped: exit %d:\n%s", unit, code, out)
	}
	if after := instanceStates(t, h); fmt.Sprint(after) != fmt.Sprint(states) {
		t.Errorf("instances changed: %v, then %v", states, after)
	}
}

// caddyUpstreams are the ports of the reverse_proxy's upstreams in h's
// Caddy, as its admin API says.
func caddyUpstreams(t testing.TB, h *testbed.Host) []int {
	t.Helper()
	out, err := fleet.Run(context.Background(), h, "curl -sf localhost:2019/config/apps/http/servers/srv0/routes/0/handle/0/upstreams")
	if err != nil {
		t.Fatalf("%s: read Caddy's upstreams: %v\n%s", h.Name, err, out)
	}
	var ups []struct{ Dial string }
	if err := json.Unmarshal([]byte(out), &ups); err != nil {
		t.Fatalf("%s: Caddy's upstreams %q: %v", h.Name, out, err)
	}
	var ports []int
	for _, u := range ups {
		var p int
		fmt.Sscanf(u.Dial, "127.0.0.1:%d", &p)
		ports = append(ports, p)
	}
	slices.Sort(ports)
	return ports
}

// caddyConfig is fleetConfig with caddy: in place of nginx:.
func caddyConfig(t testing.TB, minHealthy string) string {
	t.Helper()
	return fleetConfigWith(t, minHealthy, "caddy: {}\n")
}

// With Caddy on each app host (caddy:), rollout takes each instance out of
// the reverse_proxy's upstreams and puts it back through Caddy's admin API
// (no Nginx, no file, no command per change but the wait for the
// instance's requests): not one failed request under 400 req/s. Caddy
// makes each change by loading the changed config, which closes idle
// client connections as an Nginx reload does: the resends are logged, not
// hidden. Caddy restarted mid-deploy (its Caddyfile loaded again) is
// caught by the next change's If-Match; scaling in and out changes the
// upstreams; a Caddy that does not answer stops the deploy at its
// preflight; render shows the Caddyfile site.
func TestAppHostCaddy(t *testing.T) {
	resetFleet(t)
	t.Cleanup(func() { resetFleet(t) }) // Nginx back in front
	useAppHostCaddy(t, fleet.Hosts...)
	stageEverywhere(t, testbed.GoodRelease("v2"))
	cfg := caddyConfig(t, testMinHealthy)

	out, results := deployThrough(t, cfg, fleet.Hosts)
	for _, r := range results {
		t.Logf("through Caddy: %d requests, %d failed, resent on connections Caddy closed at a config change: %v", r.Requests, r.Failed, r.Resent)
	}
	for _, h := range fleet.Hosts {
		for port, v := range versionsServed(t, h) {
			if v != "v2" {
				t.Errorf("%s:%d serves %q", h.Name, port, v)
			}
		}
		if got := caddyUpstreams(t, h); fmt.Sprint(got) != fmt.Sprint(portRange(basePort, instances)) {
			t.Errorf("%s: Caddy's upstreams after the deploy: %v", h.Name, got)
		}
		if n, err := fleet.Run(context.Background(), h, "pgrep -c -x nginx || true"); err != nil || strings.TrimSpace(n) != "0" {
			t.Errorf("%s: nginx runs (%q, %v): the deploy went through it", h.Name, n, err)
		}
	}
	for _, want := range []string{"one admin API change", "wait-drain", "deploy v2: ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if text, code := rollout(t, "status", "-c", cfg); code != 0 || strings.Count(text, "active") < len(fleet.Hosts)*instances {
		t.Errorf("status (exit %d):\n%s", code, text)
	}
	if text, code := rollout(t, "render", "-c", cfg); code != 0 || !strings.Contains(text, "reverse_proxy 127.0.0.1:3000 127.0.0.1:3001 127.0.0.1:3002 127.0.0.1:3003 {") || !strings.Contains(text, "keepalive off") {
		t.Errorf("render (exit %d) does not show the Caddyfile site:\n%s", code, text)
	}

	// Caddy restarted (its Caddyfile loaded again: every instance in the
	// upstreams) while the second instance restarts: the next change is
	// refused by If-Match, rollout reads the upstreams again and goes on;
	// every instance ends in them, on v2. The requests refused while Caddy
	// itself was down are its restart's, and so are the 502s of the
	// instance its Caddyfile put back in service while it restarted (fewer
	// with lb_try_duration, which sends a refused request to another
	// instance; not none: a request the old process took as it stopped is
	// not retried). The deploy must still end well.
	h := fleet.Hosts[0]
	restartedMidDeploy(t, cfg, h, "caddy", caddyUpstreams)
	scaleThrough(t, cfg, h, caddyUpstreams, true)
	stoppedRefuses(t, cfg, h, "caddy", "is Caddy running, with its admin API on?")

	// strategy.max_surge with caddy.resume, Caddy run with --resume by the
	// drop-in rollout render shows: one PATCH swaps the new instances in;
	// Caddy restarted after the surge loads its last config (the spare
	// ports), not the Caddyfile's; the next deploy moves them back.
	surgeCfg := withLines(t, fleetConfigWith(t, testMinHealthy, "caddy: {resume: true}\n"), "strategy:\n  max_surge: 100%\n")
	dropIn := renderedFile(t, surgeCfg, "/etc/systemd/system/caddy.service.d/resume.conf")
	if out, err := fleet.RunRoot(context.Background(), h, "mkdir -p /etc/systemd/system/caddy.service.d && printf %s "+sshexec.Quote(dropIn)+" >/etc/systemd/system/caddy.service.d/resume.conf && systemctl daemon-reload && systemctl restart caddy 2>&1"); err != nil {
		t.Fatalf("run Caddy with --resume: %v\n%s", err, out)
	}
	answers(t, h, "Caddy", 10*time.Second)
	surgeAndBack(t, surgeCfg, h, caddyUpstreams, true, func(to []int, _ string) {
		if to[0] == basePort {
			return // Caddy restarts once, while the spare ports serve
		}
		if out, err := fleet.RunRoot(context.Background(), h, "systemctl restart caddy 2>&1"); err != nil {
			t.Fatalf("restart caddy: %v\n%s", err, out)
		}
		answers(t, h, "Caddy", 10*time.Second)
		if got := caddyUpstreams(t, h); fmt.Sprint(got) != fmt.Sprint(to) {
			t.Errorf("Caddy restarted with --resume sends to %v, want the live ports %v", got, to)
		}
	})

	// sudo: helper: with no sudo but the helper's, the deploy drains and
	// puts back through Caddy's admin API (no root needed) and restarts
	// through the helper, with 0 failed.
	if out, err := fleet.RunRoot(context.Background(), h, "systemctl start caddy 2>&1"); err != nil {
		t.Fatalf("start caddy: %v\n%s", err, out)
	}
	helperCfg := helperConfig(t, cfg)
	installHelpers(t, helperCfg)
	onlyHelper(t, h)
	var code int
	results = underLoad(t, []*testbed.Host{h}, func() {
		out, code = rollout(t, "deploy", "-c", helperCfg, "--version", "v2", "--force", "--hosts", h.Addr)
	})
	if code != 0 || !strings.Contains(out, "deploy v2: ok") {
		t.Fatalf("deploy with the helper exited %d:\n%s", code, out)
	}
	servedThroughout(t, results)
	if got := caddyUpstreams(t, h); fmt.Sprint(got) != fmt.Sprint(portRange(basePort, instances)) {
		t.Errorf("Caddy's upstreams after the helper's deploy: %v", got)
	}

}
