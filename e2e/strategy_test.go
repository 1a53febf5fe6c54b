package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/deployer"
	"github.com/rollout-dev/rollout/e2e/testbed"
)

// withLines appends lines to the config at path.
func withLines(t *testing.T, path, lines string) string {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(lines); err != nil {
		t.Fatal(err)
	}
	return path
}

// jsonRun is what rollout --output json printed: its step events and its
// summary report.
type jsonRun struct {
	events []stepEvent
	report deployer.Report
	err    string
}

func parseJSONRun(t *testing.T, out string) jsonRun {
	t.Helper()
	var run jsonRun
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	seen := false
	for sc.Scan() {
		var line struct {
			Type   string          `json:"type"`
			Event  stepEvent       `json:"event"`
			Report deployer.Report `json:"report"`
			Error  string          `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		switch line.Type {
		case "step":
			run.events = append(run.events, line.Event)
		case "summary":
			run.report, run.err, seen = line.Report, line.Error, true
		}
	}
	if !seen {
		t.Fatalf("no summary line in:\n%s", out)
	}
	return run
}

// max_unavailable 2 under load: each host's four instances go two at a
// time, one write and reload per pair, with 0 failed requests; the probe
// saw what the load generator saw (0 failed), answered by v1 then v2.
func TestDeployMaxUnavailableUnderLoad(t *testing.T) {
	resetFleet(t)
	stageEverywhere(t, testbed.GoodRelease("v2"))
	cfg := withLines(t, fleetConfig(t, "1s"), "strategy:\n  max_unavailable: 2\nprobe:\n  version_header: X-App-Version\n")

	var out string
	var code int
	results := underLoad(t, fleet.Hosts, func() {
		out, code = rollout(t, "deploy", "-c", cfg, "--version", "v2", "--output", "json")
	})
	if code != 0 {
		t.Fatalf("deploy exited %d:\n%s", code, out)
	}
	noFailedRequests(t, results)
	run := parseJSONRun(t, out)
	for _, h := range fleet.Hosts {
		// The pairs: 3000 with 3001, then 3002 with 3003 (and 3000, 3001
		// back), each in one write.
		for _, pair := range [][2]int{{basePort, basePort + 1}, {basePort + 2, basePort + 3}} {
			if !hasHostEvent(run.events, h.Addr, pair[0], "drain", "ok", fmt.Sprintf("drain of %d", pair[1])) {
				t.Errorf("%s: %d and %d were not drained in one write", h.Name, pair[0], pair[1])
			}
		}
		for port, v := range versionsServed(t, h) {
			if v != "v2" {
				t.Errorf("%s:%d serves %q after the deploy", h.Name, port, v)
			}
		}
		if up := upstreamFile(t, h); strings.Contains(up, "down") {
			t.Errorf("%s: upstream not back to all up:\n%s", h.Name, up)
		}
	}
	if len(run.report.Probe) != len(fleet.Hosts) {
		t.Fatalf("probe results %+v", run.report.Probe)
	}
	for i, p := range run.report.Probe {
		t.Logf("probe %s: %s", p.Host, p)
		// Both 0 failed, as the load generator: the probe agrees.
		if p.Host != fleet.Hosts[i].Addr || p.Sent < 20 || p.Failed != results[i].Failed || p.Failed != 0 {
			t.Errorf("probe %+v; the load generator on %s: %d failed", p, fleet.Hosts[i].Name, results[i].Failed)
		}
		if p.Versions["v2"] == 0 || p.Versions["v1"]+p.Versions["v2"] != p.Sent || p.P50 <= 0 || p.P99 < p.P50 {
			t.Errorf("probe %+v: want v1 then v2 answering every request", p)
		}
	}
}

// hasHostEvent: a step event of host and port with status whose message
// holds msg.
func hasHostEvent(events []stepEvent, host string, port int, step, status, msg string) bool {
	for _, e := range events {
		if e.Host == host && e.Port == port && e.Step == step && e.Status == status && strings.Contains(e.Message, msg) {
			return true
		}
	}
	return false
}

// A probe target where nothing answers is refused in the preflight (exit
// 3), before any lock or change: not blamed on the release.
func TestProbeTargetDeadRefused(t *testing.T) {
	resetFleet(t)
	stageEverywhere(t, testbed.GoodRelease("v2"))
	h := fleet.Hosts[0]
	before := instanceStates(t, h)
	cfg := withLines(t, oneHostConfig(t, ""), "probe:\n  address: 127.0.0.1:9\n")
	out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2")
	if code != 3 || !strings.Contains(out, "probe: GET http://127.0.0.1:9/ through the SSH connection got no answer in 3 tries (connection refused)") {
		t.Fatalf("exit %d, want 3 with the probe's refusal:\n%s", code, out)
	}
	for port, a := range instanceStates(t, h) {
		if a != before[port] {
			t.Errorf("%s:%d changed: %+v, was %+v", h.Name, port, a, before[port])
		}
	}
	if out, _ := rollout(t, "lock", "status", "-c", cfg); !strings.Contains(out, "free") {
		t.Errorf("the lock is not free:\n%s", out)
	}
}

// bakeConfig is a release config for the fleet (rollout setup's site, whose
// access log has rollout's fields, serves both hosts' addresses) with
// batches [1, 50%, 100%] and a bake.
func bakeConfig(t *testing.T, bake string) string {
	t.Helper()
	cfg := releaseConfig(t, fleet.Hosts, "")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "server_name: "+fleet.Hosts[0].Addr, "server_name: "+fleet.Hosts[0].Addr+" "+fleet.Hosts[1].Addr, 1)
	s += "strategy:\n  batches: [1, 50%, 100%]\n  bake: " + bake + "\n  min_requests: 50\nprobe:\n  version_header: X-App-Version\n"
	if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Batches with a bake under load: a good release goes through the canary,
// half the fleet and the rest with 0 failed; a release that answers
// /healthz but fails 10% of real requests is caught by the bake on the
// canary and reverted: the only failed requests are the canary's own 500s,
// the second host is never touched, and the whole fleet serves the
// previous release.
func TestBatchesAndBakeUnderLoad(t *testing.T) {
	cfg := bakeConfig(t, "6s")
	moveToReleases(t, cfg, fleet.Hosts)

	// A good release, batch by batch.
	var out string
	var code int
	results := underLoad(t, fleet.Hosts, func() {
		out, code = rollout(t, "deploy", "-c", cfg, "--version", "v2", "--artifact", artifactDir(t, testbed.GoodRelease("v2")), "--output", "json")
	})
	if code != 0 {
		t.Fatalf("deploy v2 exited %d:\n%s", code, out)
	}
	noFailedRequests(t, results)
	run := parseJSONRun(t, out)
	var batches []string
	for _, e := range run.events {
		if e.Step == "batch" && e.Status == "ok" {
			batches = append(batches, e.Message)
		}
	}
	if len(batches) != 3 || !strings.HasPrefix(batches[0], "batch 1 of 3: 1 of 8 instances on the release ("+fleet.Hosts[0].Addr+" 1)") ||
		!strings.HasPrefix(batches[1], "batch 2 of 3: 4 of 8 instances") {
		t.Errorf("batches: %q", batches)
	}
	if len(run.report.Bakes) != 2 {
		t.Fatalf("bakes %+v", run.report.Bakes)
	}
	for _, b := range run.report.Bakes {
		t.Logf("%s", b)
		if b.Verdict != "ok" || b.New.Requests < 50 || b.New.Errors != 0 || b.Old.Requests == 0 {
			t.Errorf("bake %+v", b)
		}
	}
	for i, p := range run.report.Probe {
		if p.Failed != 0 || p.Failed != results[i].Failed || p.Versions["v2"] == 0 {
			t.Errorf("probe %s", p)
		}
	}
	onRelease(t, cfg, fleet.Hosts, "v2", "ok")

	// A release that fails 10% of real requests.
	h2 := fleet.Hosts[1]
	before := instanceStates(t, h2)
	bad := testbed.GoodRelease("v3")
	bad.FailPercent = 10
	results = underLoad(t, fleet.Hosts, func() {
		out, code = rollout(t, "deploy", "-c", cfg, "--version", "v3", "--artifact", artifactDir(t, bad), "--output", "json")
	})
	if code != 1 {
		t.Fatalf("deploy v3 exited %d, want 1:\n%s", code, out)
	}
	run = parseJSONRun(t, out)
	if len(run.report.Bakes) != 1 || run.report.Bakes[0].Verdict != "breach" || run.report.Bakes[0].New.Errors == 0 || !strings.Contains(run.err, "over max_error_ratio 0.01") {
		t.Fatalf("bakes %+v, error %s", run.report.Bakes, run.err)
	}
	t.Logf("%s", run.report.Bakes[0])
	if !strings.HasPrefix(run.report.Reverted, "reverted to ") {
		t.Errorf("not reverted: %q", run.report.Reverted)
	}
	// Outside the canary's share nothing failed: every failure is one of
	// its 500s, and none on the second host.
	for i, r := range results {
		for kind, n := range r.Failures {
			if kind != "http 500" {
				t.Errorf("%s: %d failed requests of kind %q", fleet.Hosts[i].Name, n, kind)
			}
		}
	}
	if results[1].Failed != 0 {
		t.Errorf("%s: %d failed requests", h2.Name, results[1].Failed)
	}
	for port, a := range instanceStates(t, h2) {
		if a != before[port] {
			t.Errorf("%s:%d was touched: %+v, was %+v", h2.Name, port, a, before[port])
		}
	}
	onRelease(t, cfg, fleet.Hosts, "v2", "reverted")
}

// deploy --pause stops after the canary with the fleet stable and mixed
// and the lock free; status says so; promote continues batch by batch;
// and a paused rollout taken back by rollback leaves the previous release
// everywhere. All under load, with 0 failed requests.
func TestPauseThenPromoteOrRollback(t *testing.T) {
	cfg := bakeConfig(t, "3s")
	moveToReleases(t, cfg, fleet.Hosts)

	var out string
	var code int
	deployPaused := func(r testbed.Release) jsonRun {
		t.Helper()
		noFailedRequests(t, underLoad(t, fleet.Hosts, func() {
			out, code = rollout(t, "deploy", "-c", cfg, "--version", r.Version, "--artifact", artifactDir(t, r), "--pause", "--output", "json")
		}))
		if code != 0 {
			t.Fatalf("deploy --pause exited %d:\n%s", code, out)
		}
		run := parseJSONRun(t, out)
		if !strings.HasPrefix(run.report.Paused, "paused after batch 1 of 3: 1 of 8 instances") || run.report.Hosts[0].Outcome != "paused" || run.report.Hosts[1].Outcome != "not started" {
			t.Fatalf("paused %q, hosts %+v", run.report.Paused, run.report.Hosts)
		}
		status, _ := rollout(t, "status", "-c", cfg)
		if !strings.Contains(status, fleet.Hosts[0].Addr+": mid-rollout, paused after the canary: release "+run.report.Release+" on 3000, the others on ") {
			t.Errorf("status does not say the rollout is paused:\n%s", status)
		}
		if lock, _ := rollout(t, "lock", "status", "-c", cfg); !strings.Contains(lock, "free") {
			t.Errorf("the lock is held while paused:\n%s", lock)
		}
		if plan, _ := rollout(t, "plan", "-c", cfg, "--version", "v9", "--artifact", artifactDir(t, r), "--live"); strings.Count(plan, "now: mid-rollout, paused after the canary on release "+run.report.Release) != len(fleet.Hosts) {
			t.Errorf("plan --live does not say the rollout is paused:\n%s", plan)
		}
		return run
	}

	paused := deployPaused(testbed.GoodRelease("v2"))
	if v := versionsServed(t, fleet.Hosts[0]); v[basePort] != "v2" || v[basePort+1] != "v1" {
		t.Errorf("%s serves %v while paused", fleet.Hosts[0].Name, v)
	}
	noFailedRequests(t, underLoad(t, fleet.Hosts, func() { out, code = rollout(t, "promote", "-c", cfg, "--output", "json") }))
	if code != 0 {
		t.Fatalf("promote exited %d:\n%s", code, out)
	}
	run := parseJSONRun(t, out)
	if run.report.Release != paused.report.Release || run.report.Version != "v2" || len(run.report.Bakes) != 1 {
		t.Errorf("promoted %s (%s), bakes %+v", run.report.Release, run.report.Version, run.report.Bakes)
	}
	if hasHostEvent(run.events, fleet.Hosts[0].Addr, basePort, "restart", "ok", "") {
		t.Errorf("promote restarted the canary again")
	}
	onRelease(t, cfg, fleet.Hosts, "v2", "ok")

	// Paused again, then taken back.
	paused = deployPaused(testbed.GoodRelease("v3"))
	noFailedRequests(t, underLoad(t, fleet.Hosts, func() { out, code = rollout(t, "rollback", "-c", cfg) }))
	if code != 0 {
		t.Fatalf("rollback exited %d:\n%s", code, out)
	}
	onRelease(t, cfg, fleet.Hosts, "v2", "reverted")
	for _, hr := range releasesOf(t, cfg) {
		for _, r := range hr.Releases {
			if r.ID == paused.report.Release && r.Outcome != "BAD" {
				t.Errorf("%s: the paused release is %s after the rollback, want BAD", hr.Host, r.Outcome)
			}
		}
	}
}

// The access log rotated during a bake (logrotate's way: moved to .1, then
// Nginx reopens it) is followed: the bake still counts the canary's
// requests and says it saw the rotation. Ctrl-C during the next bake stops
// at once: exit 130, every instance healthy and in Nginx on the release it
// runs (half the fleet on v2), the lock free. Under load, 0 failed.
func TestBakeFollowsRotationAndStopsOnCtrlC(t *testing.T) {
	cfg := bakeConfig(t, "8s")
	moveToReleases(t, cfg, fleet.Hosts)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var stdout bytes.Buffer
	var progress []string
	code := 0
	results := underLoad(t, fleet.Hosts, func() {
		cmd := exec.CommandContext(ctx, rolloutBin, "deploy", "-c", cfg, "--version", "v2", "--artifact", artifactDir(t, testbed.GoodRelease("v2")))
		cmd.Stdout = &stdout
		cmd.Env = append(os.Environ(), "NO_COLOR=1")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		bakes := 0
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			progress = append(progress, line)
			if !strings.Contains(line, " bake ") || !strings.Contains(line, " start ") {
				continue
			}
			bakes++
			switch bakes {
			case 1:
				for _, h := range fleet.Hosts {
					rotate := "sudo -n sh -c 'mv /var/log/nginx/my-app-access.log /var/log/nginx/my-app-access.log.1 && sleep 1 && kill -USR1 \"$(cat /run/nginx.pid)\"'"
					if out, err := fleet.Run(ctx, h, rotate); err != nil {
						t.Errorf("rotate on %s: %v\n%s", h.Name, err, out)
					}
				}
			case 2:
				_ = cmd.Process.Signal(syscall.SIGINT)
			}
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
	})
	t.Logf("progress:\n%s\nsummary:\n%s", strings.Join(progress, "\n"), stdout.String())
	noFailedRequests(t, results)
	if code != 130 {
		t.Errorf("exit %d, want 130", code)
	}
	all := strings.Join(progress, "\n")
	if !strings.Contains(all, "the access log was rotated during the bake") {
		t.Errorf("the bake did not see the rotation")
	}
	m := regexp.MustCompile(`bake after batch 1 \([0-9]+s\): ok: new instances ([0-9]+) requests, 0 5xx`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("no good first bake in the summary")
	}
	if n, _ := strconv.Atoi(m[1]); n < 50 {
		t.Errorf("the first bake counted %d requests of the canary", n)
	}
	if !strings.Contains(stdout.String(), "bake after batch 2") || !strings.Contains(stdout.String(), ": interrupted: ") {
		t.Errorf("the summary does not say the second bake was interrupted")
	}
	for _, h := range fleet.Hosts {
		if up := upstreamFile(t, h); strings.Contains(up, "down") {
			t.Errorf("%s: an instance is out of nginx after the interrupt:\n%s", h.Name, up)
		}
		v2 := 0
		for _, v := range versionsServed(t, h) {
			if v == "v2" {
				v2++
			}
		}
		if v2 != 2 {
			t.Errorf("%s: %d instances on v2 after batch 2, want 2", h.Name, v2)
		}
	}
	if lock, _ := rollout(t, "lock", "status", "-c", cfg); !strings.Contains(lock, "free") {
		t.Errorf("the lock is held after the interrupt:\n%s", lock)
	}
}
