package deployer

import (
	"fmt"
	"testing"
)

// A restart restarts every instance with the deploy's gates (one reload
// per instance, each drained and waited for), runs no hook, ships and
// switches nothing, and is recorded in the host's history; --port limits
// it to those instances.
func TestRestartRestartsWhatRunsNow(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002).withReleases("20260101000000-v1")
	d, _ := fakeDeployer(t, releaseYAML+"hooks: {host_before: [\"false\"], host_after: [\"false\"]}\n", h)
	d.Version = ""
	pids := map[int]int{}
	for _, p := range []int{3000, 3001, 3002} {
		pids[p] = h.unit(p).pid
	}
	rep, err := d.Restart(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Hosts[0].Restarted; fmt.Sprint(got) != "[3000 3001 3002]" || rep.Release != "" {
		t.Errorf("restarted %v, release %q", got, rep.Release)
	}
	for p, pid := range pids {
		if h.unit(p).pid == pid {
			t.Errorf("%d: the same process", p)
		}
		if h.links[p] != "20260101000000-v1" || h.runs[p] != "20260101000000-v1" {
			t.Errorf("%d: link %s, runs %s: a restart moved it", p, h.links[p], h.runs[p])
		}
	}
	if len(h.hooks) != 0 || len(h.uploads) != 0 || h.current != "20260101000000-v1" {
		t.Errorf("hooks %v, uploads %d, current %s", h.hooks, len(h.uploads), h.current)
	}
	if len(h.writes) != 4 {
		t.Errorf("%d upstream writes, want 4 (a drain per instance, one undrain at the end)", len(h.writes))
	}
	if h.locked || len(h.history) != 1 || h.history[0].Op != "restart" || h.history[0].Outcome != HostOK {
		t.Errorf("locked %v, history %+v", h.locked, h.history)
	}

	// Only 3001.
	pids[3000], pids[3001], pids[3002] = h.unit(3000).pid, h.unit(3001).pid, h.unit(3002).pid
	d.Only = []int{3001}
	rep, err = d.Restart(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Hosts[0].Restarted; fmt.Sprint(got) != "[3001]" {
		t.Errorf("--port 3001 restarted %v", got)
	}
	if h.unit(3000).pid != pids[3000] || h.unit(3002).pid != pids[3002] || h.unit(3001).pid == pids[3001] {
		t.Errorf("--port 3001 restarted the others, or not 3001")
	}
}
