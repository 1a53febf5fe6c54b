package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
	"github.com/rollout-dev/rollout/internal/loadgen"
	"github.com/rollout-dev/rollout/sshexec"
)

// Faults mid-deploy, each under load on one host: what rollout says, the
// requests failed, the host afterwards (upstream, units, lock, history),
// and that a plain rerun converges.

// stepEvent is one of rollout's JSON progress events.
type stepEvent struct {
	Host, Step, Status, Message string
	Port                        int
}

// faultConfig is a one-host config for fleet.Hosts[0] with more ssh keys.
func faultConfig(t *testing.T, ssh string) string {
	t.Helper()
	path := oneHostConfig(t, "")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "  known_hosts: "+fleet.KnownHosts+"\n", "  known_hosts: "+fleet.KnownHosts+"\n"+ssh, 1)
	cfg = strings.Replace(cfg, "  min_healthy: 0s\n", "  min_healthy: 2s\n", 1)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// deployWithFault runs `rollout deploy --output json` and starts fault
// (once, in the background) at the first event that at matches. It
// returns rollout's exit code, its events and every line it printed.
func deployWithFault(t *testing.T, cfg, version string, at func(stepEvent) bool, fault func()) (int, []stepEvent, string) {
	t.Helper()
	return runWithFault(t, []string{"deploy", "-c", cfg, "--version", version}, at, fault)
}

// runWithFault is deployWithFault for any rollout command line.
func runWithFault(t *testing.T, args []string, at func(stepEvent) bool, fault func()) (int, []stepEvent, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, rolloutBin, append(args, "--output", "json")...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var events []stepEvent
	var lines []string
	var wg sync.WaitGroup
	fired := false
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		var line struct {
			Type  string    `json:"type"`
			Event stepEvent `json:"event"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Type != "step" {
			continue
		}
		events = append(events, line.Event)
		if !fired && at(line.Event) {
			fired = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				fault()
			}()
		}
	}
	err = cmd.Wait()
	wg.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run rollout: %v", err)
	}
	out := strings.Join(lines, "\n") + "\n" + stderr.String()
	t.Logf("rollout deploy (exit %d):\n%s", code, out)
	if !fired {
		t.Fatal("the fault's moment never came")
	}
	return code, events, out
}

func at(port int, step, status string) func(stepEvent) bool {
	return func(e stepEvent) bool { return e.Port == port && e.Step == step && e.Status == status }
}

func hasStepEvent(events []stepEvent, step, status, msg string) bool {
	for _, e := range events {
		if e.Step == step && e.Status == status && strings.Contains(e.Message, msg) {
			return true
		}
	}
	return false
}

// killSSHSessions kills every sshd process serving the deploy user on h,
// rollout's included, as an admin or the OOM killer might.
func killSSHSessions(t *testing.T, h *testbed.Host) {
	// Detached, so that the command that asks for it has returned first.
	_, _ = fleet.Run(context.Background(), h, `sudo -n setsid -f sh -c 'sleep 0.2; pkill -KILL -f "^sshd: deploy"' >/dev/null 2>&1 </dev/null`)
}

// blockSSH drops every packet to h's port 22 (the connection goes silent:
// no reset, no close) for d, then lets them through again; port 80 keeps
// serving.
func blockSSH(t *testing.T, h *testbed.Host, d time.Duration) {
	done := make(chan struct{})
	time.AfterFunc(d, func() { close(done) })
	blockSSHUntil(t, h, done)
	<-done
}

// freshHostWithV2 is fleet.Hosts[0] freshly booted and provisioned, with
// release v2 staged.
func freshHostWithV2(t *testing.T) *testbed.Host {
	t.Helper()
	h := fleet.Hosts[0]
	resetHost(t, h)
	if err := fleet.StageRelease(context.Background(), h, testbed.GoodRelease("v2")); err != nil {
		t.Fatal(err)
	}
	return h
}

// converged checks h after a deploy of version: every instance serves it,
// none is marked down, the lock is free and the history's last line is
// the deploy's, with outcome.
func converged(t *testing.T, h *testbed.Host, cfg, version, outcome string) {
	t.Helper()
	if up := upstreamFile(t, h); strings.Contains(up, "down") {
		t.Errorf("instances left out of nginx:\n%s", up)
	}
	for port, v := range versionsServed(t, h) {
		if v != version {
			t.Errorf("%d serves %q, want %s", port, v, version)
		}
	}
	if out, _ := rollout(t, "lock", "status", "-c", cfg); !strings.Contains(out, "free") {
		t.Errorf("the lock is not free:\n%s", out)
	}
	last, err := fleet.Run(context.Background(), h, "sudo -n tail -n 1 /var/lib/rollout/my-app/history.jsonl")
	if err != nil || !strings.Contains(last, `"outcome":"`+outcome+`"`) || !strings.Contains(last, `"version":"`+version+`"`) {
		t.Errorf("history's last line %q (%v), want %s %s", last, err, version, outcome)
	}
	nginxTestPasses(t, h)
}

func noFailedRequests(t *testing.T, res []loadgen.Result) {
	t.Helper()
	for _, r := range res {
		if r.Failed != 0 {
			t.Errorf("%d failed requests (%v)", r.Failed, r.Failures)
		}
	}
}

// An SSH connection killed on the host while rollout works on an instance
// is not the app's failure: rollout says it lost the connection,
// reconnects, and the deploy finishes as if nothing broke.
func TestFaultSSHKilled(t *testing.T) {
	h := fleet.Hosts[0]
	for _, tt := range []struct {
		name         string
		port         int
		step, status string
	}{
		{"during the stable wait", basePort + 1, "stable", "start"},
		{"during the drain", basePort + 2, "drain", "start"},
		{"during the restart", basePort + 1, "restart", "start"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			freshHostWithV2(t)
			cfg := faultConfig(t, "")
			var code int
			var events []stepEvent
			res := underLoad(t, []*testbed.Host{h}, func() {
				code, events, _ = deployWithFault(t, cfg, "v2", at(tt.port, tt.step, tt.status), func() { killSSHSessions(t, h) })
			})
			if code != 0 {
				t.Errorf("exit %d, want 0: rollout should have reconnected", code)
			}
			if !hasStepEvent(events, "ssh", "warn", "lost the connection") || !hasStepEvent(events, "ssh", "ok", "reconnected") {
				t.Error("the lost connection and the reconnect were not told")
			}
			noFailedRequests(t, res)
			converged(t, h, cfg, "v2", "ok")
		})
	}
}

// The host's network goes silent for 5s (packets dropped, no reset):
// keepalives notice it in seconds, rollout reconnects once it is back.
func TestFaultNetworkDropShort(t *testing.T) {
	h := freshHostWithV2(t)
	cfg := faultConfig(t, "  keepalive: 1s\n  reconnect: 30s\n")
	var code int
	var events []stepEvent
	res := underLoad(t, []*testbed.Host{h}, func() {
		code, events, _ = deployWithFault(t, cfg, "v2", at(basePort+1, "stable", "start"), func() { blockSSH(t, h, 5*time.Second) })
	})
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	if !hasStepEvent(events, "ssh", "ok", "reconnected") {
		t.Error("no reconnect was told")
	}
	noFailedRequests(t, res)
	converged(t, h, cfg, "v2", "ok")
}

// The network stays down longer than ssh.reconnect: rollout stops, says
// it lost the host (not the app), what may be left out of Nginx and what
// to run; the rerun from this machine takes the dead run's lock over at
// once and converges.
func TestFaultNetworkDropLong(t *testing.T) {
	h := freshHostWithV2(t)
	cfg := faultConfig(t, "  keepalive: 1s\n  reconnect: 3s\n")
	unblock := make(chan struct{})
	var code int
	var out string
	res := underLoad(t, []*testbed.Host{h}, func() {
		code, _, out = deployWithFault(t, cfg, "v2", at(basePort+1, "stable", "start"), func() {
			// Down until rollout has given up (the test lets it back).
			blockSSHUntil(t, h, unblock)
		})
	})
	for _, want := range []string{"could not reconnect within 3s", "may be marked down", "its deploy lock is still held", "rollout deploy --version v2"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if code != 1 || strings.Contains(out, "did not come up") {
		t.Errorf("exit %d, want 1 and no blame on the app", code)
	}
	noFailedRequests(t, res)

	close(unblock)
	time.Sleep(500 * time.Millisecond) // the rule removed
	out, code = rollout(t, "deploy", "-c", cfg, "--version", "v2")
	if code != 0 || !strings.Contains(out, "took over the deploy lock") || !strings.Contains(out, "on this machine is gone") {
		t.Errorf("rerun exited %d; want 0, taking the dead run's lock over at once", code)
	}
	converged(t, h, cfg, "v2", "ok")
}

// blockSSHUntil drops packets to h's port 22 until done is closed.
func blockSSHUntil(t *testing.T, h *testbed.Host, done <-chan struct{}) {
	nft := func(args ...string) {
		if out, err := exec.Command("ip", append([]string{"netns", "exec", h.Name, "nft"}, args...)...).CombinedOutput(); err != nil {
			t.Errorf("nft %v: %v\n%s", args, err, out)
		}
	}
	nft("add", "table", "inet", "rtbfault")
	nft("add", "chain", "inet", "rtbfault", "in", "{ type filter hook input priority 0; }")
	nft("add", "rule", "inet", "rtbfault", "in", "tcp", "dport", "22", "drop")
	go func() {
		<-done
		nft("delete", "table", "inet", "rtbfault")
	}()
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "exec", h.Name, "nft", "delete", "table", "inet", "rtbfault").Run()
	})
}

// killedAt runs rollout with args and --output json, and kills it
// (SIGKILL: no way out runs) at the first line of its output holding mark.
func killedAt(t *testing.T, mark string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, rolloutBin, append(args, "--output", "json")...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), mark) {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	_ = cmd.Wait()
}

// The controller is killed (SIGKILL: no way out runs) with an instance out
// of Nginx; a rerun from the same machine does not wait a minute for the
// lock to go stale, says whose lock it took over, and converges.
func TestFaultControllerKilled(t *testing.T) {
	h := freshHostWithV2(t)
	cfg := faultConfig(t, "")
	res := underLoad(t, []*testbed.Host{h}, func() {
		killedAt(t, `"port":3001,"step":"restart","status":"ok"`, "deploy", "-c", cfg, "--version", "v2")
		t0 := time.Now()
		out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2")
		if code != 0 || !strings.Contains(out, "took over the deploy lock") || strings.Contains(out, "another deploy is running") {
			t.Errorf("rerun exited %d; want 0, taking the lock over at once", code)
		}
		if time.Since(t0) > 45*time.Second {
			t.Errorf("the rerun took %s: it waited for the lock", time.Since(t0))
		}
	})
	noFailedRequests(t, res)
	converged(t, h, cfg, "v2", "ok")
}

// Checks before any change: each failure exits 3 with its own headline,
// before any hook or lock; a missing server line is added.
func TestFaultPreflight(t *testing.T) {
	h := fleet.Hosts[0]
	up := "/etc/nginx/conf.d/my-app-upstream.conf"
	for _, tt := range []struct {
		name, breakIt, want string
		code                int
	}{
		{"nginx -t fails", "echo 'this is not nginx;' >/etc/nginx/conf.d/broken.conf", "nginx config test fails before any change", 3},
		{"upstream block missing", "sed -i 's/upstream my_app/upstream other_app/' " + up + " && sed -i 's/my_app/other_app/' /etc/nginx/sites-enabled/* /etc/nginx/conf.d/*.conf 2>/dev/null; true", `upstream "my_app" not found`, 3},
		{"server line missing", "sed -i '/127.0.0.1:3003/d' " + up + " && systemctl stop my-app@3003 && nginx -s reload", "has no server line for [3003]", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resetHost(t, h)
			if out, err := fleet.Run(context.Background(), h, "sudo -n sh -c "+sshexec.Quote(tt.breakIt)); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			cfg := faultConfig(t, "")
			before := upstreamFile(t, h)
			out, code := rollout(t, "deploy", "-c", cfg, "--version", "v1")
			if code != tt.code || !strings.Contains(out, tt.want) || strings.Contains(out, "sudo -n refused") {
				t.Errorf("exit %d, want %d with %q", code, tt.code, tt.want)
			}
			if code == 3 {
				if strings.Contains(out, "my-app-activate") || upstreamFile(t, h) != before {
					t.Error("a hook ran or the upstream changed before the preflight passed")
				}
				if out, _ := rollout(t, "lock", "status", "-c", cfg); !strings.Contains(out, "free") {
					t.Errorf("the lock was taken:\n%s", out)
				}
				return
			}
			converged(t, h, cfg, "v1", "ok")
		})
	}
}

// A release that crashes at start until systemd gives up is reported in
// its final state, with the start limit named.
func TestFaultStartLimit(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	defer resetHost(t, h)
	r := testbed.GoodRelease("v5")
	r.RequiredEnv = []string{"PAYMENT_API_KEY"}
	if err := fleet.StageRelease(context.Background(), h, r); err != nil {
		t.Fatal(err)
	}
	cfg := faultConfig(t, "")
	var out string
	var code int
	res := underLoad(t, []*testbed.Host{h}, func() {
		out, code = rollout(t, "deploy", "-c", cfg, "--version", "v5")
	})
	if code != 1 || !strings.Contains(out, "hit the start limit (StartLimitBurst=3 in 1m0s)") || !strings.Contains(out, "FATAL: required environment variable PAYMENT_API_KEY") {
		t.Errorf("exit %d; want 1, the start limit and the app's words", code)
		st, _ := fleet.Run(context.Background(), h, "systemctl show -p Result,NRestarts,ActiveState,SubState,StartLimitBurst,StartLimitIntervalUSec my-app@3000; journalctl -u my-app@3000 --no-pager | tail -n 8")
		t.Logf("the unit now:\n%s", st)
	}
	noFailedRequests(t, res)
	if up := upstreamFile(t, h); !strings.Contains(up, "127.0.0.1:3000 down;") || strings.Count(up, "down") != 1 {
		t.Errorf("want only the failed instance out of nginx:\n%s", up)
	}
	// Back to the good release: the failed instance goes first and all
	// serve it again.
	if out, code := rollout(t, "deploy", "-c", cfg, "--version", "v1"); code != 0 {
		t.Fatalf("the deploy back to v1 exited %d:\n%s", code, out)
	}
	converged(t, h, cfg, "v1", "ok")
}

// nginx -t failing on one host of two: the deploy stops at the preflight
// (exit 3) naming that host, and the other host is not touched either: no
// hook, no restart, no lock.
func TestFaultPreflightOneHostOfTwo(t *testing.T) {
	resetFleet(t)
	good, bad := fleet.Hosts[0], fleet.Hosts[1]
	if out, err := fleet.Run(context.Background(), bad, `sudo -n sh -c "echo 'this is not nginx;' >/etc/nginx/conf.d/broken.conf"`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	defer resetHost(t, bad)
	cfg := fleetConfig(t, "1s")
	before, upBefore := instanceStates(t, good), upstreamFile(t, good)
	out, code := rollout(t, "deploy", "-c", cfg, "--version", "v1")
	if code != 3 || !strings.Contains(out, "preflight "+bad.Addr+": nginx config test fails before any change") {
		t.Errorf("exit %d, want 3 naming %s's nginx config", code, bad.Addr)
	}
	if strings.Contains(out, "my-app-activate") {
		t.Error("a host hook ran before every host passed its preflight")
	}
	if after := instanceStates(t, good); fmt.Sprint(after) != fmt.Sprint(before) || upstreamFile(t, good) != upBefore {
		t.Errorf("%s changed although %s failed its preflight", good.Addr, bad.Addr)
	}
	if out, _ := rollout(t, "lock", "status", "-c", cfg); strings.Count(out, "free") != 2 {
		t.Errorf("a lock was kept:\n%s", out)
	}
}
