package e2e

import (
	"strings"
	"testing"
)

// rollout restart restarts every instance of every host under load with
// no failed request, each on a new process, recorded in the history as a
// restart; --port restarts that one instance and leaves the rest alone.
func TestRestartUnderLoad(t *testing.T) {
	resetFleet(t)
	cfg := fleetConfig(t, "1s")
	before := map[string]map[int]instanceState{}
	for _, h := range fleet.Hosts {
		before[h.Name] = instanceStates(t, h)
	}
	var out string
	var code int
	res := underLoad(t, fleet.Hosts, func() { out, code = rollout(t, "restart", "-c", cfg) })
	if code != 0 || !strings.Contains(out, "restart: ok") {
		t.Fatalf("restart exited %d:\n%s", code, out)
	}
	noFailedRequests(t, res)
	for _, h := range fleet.Hosts {
		after := instanceStates(t, h)
		for port, b := range before[h.Name] {
			if after[port].MainPID == b.MainPID {
				t.Errorf("%s:%d still runs process %s", h.Addr, port, b.MainPID)
			}
		}
	}
	if hist, _ := rollout(t, "history", "-c", cfg); strings.Count(hist, " restart ") != len(fleet.Hosts) {
		t.Errorf("the history does not record the restart on each host:\n%s", hist)
	}

	h := fleet.Hosts[0]
	mid := instanceStates(t, h)
	out, code = rollout(t, "restart", "-c", cfg, "--hosts", h.Addr, "--port", "3001")
	if code != 0 {
		t.Fatalf("restart --port 3001 exited %d:\n%s", code, out)
	}
	after := instanceStates(t, h)
	for port, b := range mid {
		if changed := after[port].MainPID != b.MainPID; changed != (port == 3001) {
			t.Errorf("restart --port 3001: %d changed: %v", port, changed)
		}
	}
}
