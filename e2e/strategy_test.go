package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

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
