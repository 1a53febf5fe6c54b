package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// portRange is n ports from base.
func portRange(base, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = base + i
	}
	return out
}

// servedOn asks each of ports of h directly (through SSH) for its version.
func servedOn(t *testing.T, h *testbed.Host, ports []int) map[int]string {
	t.Helper()
	c, err := fleet.Dial(context.Background(), h, "deploy")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := &http.Client{Transport: &http.Transport{DialContext: c.DialContext, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	got := map[int]string{}
	for _, port := range ports {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			got[port] = "down: " + err.Error()
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got[port] = resp.Header.Get("X-App-Version")
	}
	return got
}

// servesFrom checks that h serves version from ports (in its upstream,
// each answering it, enabled) and that the other range is stopped,
// disabled and out of the upstream.
func servesFrom(t *testing.T, h *testbed.Host, ports, others []int, version string) {
	t.Helper()
	up := upstreamFile(t, h)
	for _, port := range ports {
		if !strings.Contains(up, fmt.Sprintf("127.0.0.1:%d;", port)) {
			t.Errorf("%s: %d is not in service in the upstream:\n%s", h.Name, port, up)
		}
	}
	for _, port := range others {
		if strings.Contains(up, fmt.Sprintf(":%d", port)) {
			t.Errorf("%s: the upstream still lists %d:\n%s", h.Name, port, up)
		}
	}
	runsOn(t, h, ports, others, version)
}

// runsOn checks that h's instances on ports answer version and that those
// on others are stopped and disabled.
func runsOn(t *testing.T, h *testbed.Host, ports, others []int, version string) {
	t.Helper()
	for port, v := range servedOn(t, h, ports) {
		if v != version {
			t.Errorf("%s:%d serves %q, want %s", h.Name, port, v, version)
		}
	}
	for _, port := range others {
		out, _ := fleet.Run(context.Background(), h, fmt.Sprintf("systemctl is-active my-app@%d; systemctl is-enabled my-app@%d", port, port))
		if f := strings.Fields(out); len(f) != 2 || f[0] != "inactive" || f[1] != "disabled" {
			t.Errorf("%s: my-app@%d is %q, want inactive and disabled", h.Name, port, out)
		}
	}
}

// max_surge: 100% on two hosts under 400 req/s, with releases: each deploy
// starts the new instances on the spare ports beside the old ones and
// swaps them in one change, not one failed request; a release that cannot
// start on one host leaves it untouched and moves the other back; a deploy
// killed with its new instances up converges on the rerun; a spare port
// taken by another process is refused, naming it.
func TestSurgeUnderLoad(t *testing.T) {
	hosts := fleet.Hosts
	cfg := withLines(t, releaseConfig(t, hosts, "  keep: 5\n"), "strategy:\n  max_surge: 100%\n")
	moveToReleases(t, cfg, hosts)
	home, spare := portRange(basePort, instances), portRange(basePort+instances, instances)

	out := deployUnderLoad(t, hosts, cfg, "v2", 0, "deploy", "--version", "v2", "--artifact", artifactDir(t, testbed.GoodRelease("v2")))
	for _, h := range hosts {
		servesFrom(t, h, spare, home, "v2")
	}
	if n := strings.Count(out, "serves in its place"); n != 2*instances {
		t.Errorf("%d old instances stopped, want %d:\n%s", n, 2*instances, out)
	}
	status, code := rollout(t, "status", "-c", cfg)
	if code != 0 || !strings.Contains(status, fmt.Sprint(spare[0])) || !strings.Contains(status, fmt.Sprint(spare[3])) {
		t.Errorf("status exited %d; want the spare ports shown:\n%s", code, status)
	}

	// v3 cannot start on the second host's slot 3 (port 3002 now): the
	// first host, moved back to 3000-3003 on v3, returns to 3004-3007 on
	// v2; the second never stopped serving v2 from 3004-3007.
	crash := "sudo -n sh -c 'mkdir -p /etc/systemd/system/my-app@3002.service.d && printf \"[Service]\\nEnvironment=CRASH_VERSION=v3\\n\" > /etc/systemd/system/my-app@3002.service.d/crash.conf && systemctl daemon-reload'"
	if out, err := fleet.Run(context.Background(), hosts[1], crash); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out = deployUnderLoad(t, hosts, cfg, "broken v3", 1, "deploy", "--version", "v3", "--artifact", artifactDir(t, testbed.GoodRelease("v3")))
	if !strings.Contains(out, "FATAL: version v3 cannot start on this instance") || !strings.Contains(out, "reverted to ") {
		t.Errorf("the failed deploy does not show the app's words or the revert:\n%s", out)
	}
	for _, h := range hosts {
		servesFrom(t, h, spare, home, "v2")
	}
	if o := outcomeOf(t, cfg, "v3"); o[0] != "BAD" || o[1] != "BAD" {
		t.Errorf("v3 is %v on the hosts, want BAD", o)
	}
	if out, err := fleet.Run(context.Background(), hosts[1], "sudo -n rm -rf /etc/systemd/system/my-app@3002.service.d && sudo -n systemctl daemon-reload"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	// v4, the controller killed once the first host's new instance on
	// 3001 is healthy (not yet in service); the same command converges.
	v4 := artifactDir(t, testbed.GoodRelease("v4"))
	var rerun string
	res := underLoad(t, hosts, func() {
		killedAt(t, `"port":3001,"step":"health","status":"ok"`, "deploy", "-c", cfg, "--version", "v4", "--artifact", v4)
		// status shows the new instance the run left, not in service.
		st, stCode := rollout(t, "status", "-c", cfg)
		if stCode == 0 || !slices.ContainsFunc(strings.Split(st, "\n"), func(l string) bool {
			return strings.Contains(l, " 3001 ") && strings.Contains(l, "FAIL: leftover, not in service (not checked: its slot serves from 3005)")
		}) {
			t.Errorf("status after the kill exited %d; want 3001 shown as a leftover:\n%s", stCode, st)
		}
		rerun, code = rollout(t, "deploy", "-c", cfg, "--version", "v4", "--artifact", v4)
		if code != 0 {
			t.Errorf("the rerun exited %d:\n%s", code, rerun)
		}
	})
	noFailedRequests(t, res)
	if !strings.Contains(rerun, "took over the deploy lock") || !strings.Contains(rerun, "left by an interrupted surge") {
		t.Errorf("the rerun did not take the lock over and stop the interrupted surge's instances:\n%s", rerun)
	}
	for _, h := range hosts {
		servesFrom(t, h, home, spare, "v4")
	}

	// Another process on a spare port: refused before anything changes.
	h := hosts[0]
	squat := fmt.Sprintf(`sudo -n systemd-run --unit squatter node -e "require('net').createServer().listen(%d)"`, spare[1])
	if out, err := fleet.Run(context.Background(), h, squat); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	defer fleet.Run(context.Background(), h, "sudo -n systemctl stop squatter")
	time.Sleep(300 * time.Millisecond)
	out, code = rollout(t, "deploy", "-c", cfg, "--version", "v5", "--artifact", artifactDir(t, testbed.GoodRelease("v5")))
	if code != 3 || !strings.Contains(out, fmt.Sprintf("spare port %d (for max_surge) is taken by node (pid ", spare[1])) || !strings.Contains(out, "squatter.service") {
		t.Errorf("a deploy onto a taken spare port exited %d:\n%s", code, out)
	}
	servesFrom(t, h, home, nil, "v4")
}
