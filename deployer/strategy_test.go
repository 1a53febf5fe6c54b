package deployer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestAmountOf(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want int
	}{
		{"1", 4, 1}, {"2", 4, 2}, {"9", 4, 4}, {"50%", 4, 2}, {"25%", 4, 1},
		{"25%", 3, 1}, {"10%", 16, 1}, {"30%", 16, 4}, {"100%", 16, 16}, {"1%", 1, 1},
	}
	for _, tt := range tests {
		a, err := ParseAmount(tt.in)
		if err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		if got := a.Of(tt.n); got != tt.want {
			t.Errorf("%s of %d = %d, want %d", tt.in, tt.n, got, tt.want)
		}
		if a.String() != tt.in {
			t.Errorf("%s reads back as %s", tt.in, a)
		}
	}
	for _, bad := range []string{"0", "-1", "0%", "101%", "1.5", "x", "%", "65536"} {
		if _, err := ParseAmount(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// min_serving follows max_unavailable unless given; probe: false turns
// the probe off, and its address follows setup.listen.
func TestStrategyDefaults(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(minimal+"strategy: {max_unavailable: 2}\nprobe: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinServing() != 1 || cfg.Probe.Enabled {
		t.Errorf("min_serving %d, probe %v", cfg.MinServing(), cfg.Probe.Enabled)
	}
	cfg, err = ParseConfig("rollout.yaml", []byte(minimal+"setup: {listen: 8080}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinServing() != 2 || !cfg.Probe.Enabled || cfg.ProbeAddress() != "127.0.0.1:8080" || cfg.Probe.Path != "/" {
		t.Errorf("min_serving %d, probe %+v at %s", cfg.MinServing(), cfg.Probe, cfg.ProbeAddress())
	}
}

// With max_unavailable 2, four instances go in two groups: each group is
// drained in one write and reload, and put back with the next group's
// drain.
func TestDeployMaxUnavailable(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002, 3003)
	d, events := fakeDeployer(t, fourInstances+"strategy: {max_unavailable: 2}\n", h)
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(slices.Values(rep.Hosts[0].Restarted)); fmt.Sprint(got) != "[3000 3001 3002 3003]" {
		t.Errorf("restarted %v", got)
	}
	want := [][]int{{3000, 3001}, {3002, 3003}, nil}
	if len(h.writes) != len(want) {
		t.Fatalf("%d upstream writes, want %d", len(h.writes), len(want))
	}
	for i, w := range h.writes {
		if got := downIn(t, w); fmt.Sprint(got) != fmt.Sprint(want[i]) {
			t.Errorf("after write %d, down %v, want %v", i+1, got, want[i])
		}
		if got := h.drained[i]; fmt.Sprint(got) != fmt.Sprint(want[i]) {
			t.Errorf("write %d waited for %v, want %v", i+1, got, want[i])
		}
	}
	if !hasEvent(*events, 3000, StepCapacity, StatusOK, "4 serving") || !hasEvent(*events, 3002, StepCapacity, StatusOK, "4 serving") {
		t.Errorf("no capacity check per group: %v", *events)
	}
}

// A group member that fails is left out; the one restarted beside it
// that came up goes back in, and no later group starts.
func TestDeployMaxUnavailableFailure(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002, 3003, 3004, 3005)
	h.failAfterRestart = 3002
	d, _ := fakeDeployer(t, "base_port: 3000\ninstances: 6\nstrategy: {max_unavailable: 50%}\n", h)
	rep, err := d.Deploy(testCtx(t))
	var se *StepError
	if !errors.As(err, &se) || se.Port != 3002 || se.Step != StepHealth || !se.LeftOut {
		t.Fatalf("err = %v, want a health failure of 3002, left out", err)
	}
	if got := downIn(t, h.upstream); fmt.Sprint(got) != "[3002]" {
		t.Errorf("down at the end: %v, want [3002]", got)
	}
	if fmt.Sprint(rep.Hosts[0].LeftOut) != "[3002]" {
		t.Errorf("left out %v", rep.Hosts[0].LeftOut)
	}
}

// Capacity is checked for the whole group: with one instance already out
// of service, draining two would leave fewer than min_serving.
func TestDrainGroupCapacity(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002, 3003)
	h.units[3003].healthy = false
	d, _ := fakeDeployer(t, fourInstances+"min_serving: 2\nstrategy: {max_unavailable: 2}\n", h)
	bal := &nginxBalancer{r: h, n: d.Config.Nginx}
	srv, err := bal.read(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	hr := &hostRun{d: d, cfg: d.Config, host: "web1", remote: h, bal: bal, servers: srv, health: newHealthCheck(d.Config, h.DialContext, h)}
	err = hr.drain(testCtx(t), []int{3000, 3001})
	if !errors.Is(err, ErrCapacity) || !strings.Contains(err.Error(), "draining 3000, 3001 would leave 1 serving; it must leave at least 2 others serving (min_serving)") {
		t.Fatalf("err = %v, want a capacity failure", err)
	}
	if len(h.writes) != 0 {
		t.Errorf("wrote the upstream: %v", h.writes)
	}
	// 3003 serves nothing: with it, only 3000 counts against capacity.
	if err := hr.drain(testCtx(t), []int{3003, 3000}); err != nil {
		t.Fatal(err)
	}
	if got := downIn(t, h.upstream); fmt.Sprint(got) != "[3000 3003]" {
		t.Errorf("down %v", got)
	}
}
