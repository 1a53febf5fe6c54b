package deployer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// Scaling up starts the new instances and adds them only once healthy;
// nothing else is restarted.
func TestScaleAddsHealthyInstances(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001)
	d, events := fakeDeployer(t, "base_port: 3000\ninstances: 4\n", h)
	rep, err := d.Scale(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := serversIn(t, h.upstream); fmt.Sprint(got) != "[3000 3001 3002 3003]" {
		t.Errorf("servers %v", got)
	}
	if fmt.Sprint(h.ops) != "[start 3002 start 3003]" {
		t.Errorf("ops %v, want only the new instances started", h.ops)
	}
	if rep.Op != "scale" || rep.Hosts[0].Outcome != HostOK || len(h.history) != 1 || h.history[0].Op != "scale" {
		t.Errorf("report %+v, history %+v", rep, h.history)
	}
	if !hasEvent(*events, 3003, StepScale, StatusOK, "added") {
		t.Errorf("no scale event for 3003: %v", *events)
	}
}

// A new instance that does not come up is stopped and disabled again and
// never added to the upstream.
func TestScaleFailedInstanceIsNotAdded(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001)
	h.failAfterRestart = 3002
	d, _ := fakeDeployer(t, "base_port: 3000\ninstances: 3\n", h)
	_, err := d.Scale(testCtx(t))
	var se *StepError
	if !errors.As(err, &se) || se.Port != 3002 || se.Step != StepScale || !strings.Contains(se.Output, "FATAL") {
		t.Fatalf("err = %v, want a scale failure of 3002 with its output", err)
	}
	if got := serversIn(t, h.upstream); fmt.Sprint(got) != "[3000 3001]" {
		t.Errorf("servers %v, want the upstream as it was", got)
	}
	if fmt.Sprint(h.ops) != "[start 3002 stop 3002]" || h.units[3002].enabled {
		t.Errorf("ops %v: the failed instance was not stopped and disabled", h.ops)
	}
}

// Scaling down drains, stops and removes the surplus instances, highest
// port first; a server line whose unit is not ours is left alone.
func TestScaleRemovesSurplusLeavesOthersAlone(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002, 3003, 3009)
	h.units[3009].active, h.units[3009].enabled = false, false // someone else's line
	d, events := fakeDeployer(t, "base_port: 3000\ninstances: 2\n", h)
	if _, err := d.Scale(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := serversIn(t, h.upstream); fmt.Sprint(got) != "[3000 3001 3009]" {
		t.Errorf("servers %v, want [3000 3001 3009]", got)
	}
	if fmt.Sprint(h.ops) != "[stop 3003 stop 3002]" {
		t.Errorf("ops %v", h.ops)
	}
	// Each one was drained (and its requests waited for) before it stopped.
	if !slices.ContainsFunc(h.drained, func(p []int) bool { return fmt.Sprint(p) == "[3003]" }) {
		t.Errorf("3003 was not drained before it stopped: %v", h.drained)
	}
	if !hasEvent(*events, 3009, StepScale, StatusWarn, "not one of ours") {
		t.Errorf("no warning for 3009")
	}
}

// Never remove the last instance if none of those to keep is healthy.
func TestScaleKeepsCapacity(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001)
	h.units[3000].healthy = false
	d, _ := fakeDeployer(t, "base_port: 3000\ninstances: 1\n", h)
	_, err := d.Scale(testCtx(t))
	if !errors.Is(err, ErrCapacity) {
		t.Fatalf("err = %v, want a capacity failure", err)
	}
	if len(h.ops) != 0 || len(h.writes) != 0 {
		t.Errorf("changed the host: %v, %d writes", h.ops, len(h.writes))
	}
}

// A deploy reconciles first, and skips the restart of the instances it
// just started.
func TestDeployReconcilesFirst(t *testing.T) {
	h := newFakeRemote(t, 3000)
	d, _ := fakeDeployer(t, "base_port: 3000\ninstances: 2\n", h)
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(h.ops) != "[start 3001 restart 3000]" {
		t.Errorf("ops %v", h.ops)
	}
	// 3001 was started by the reconcile, before 3000's restart.
	if fmt.Sprint(rep.Hosts[0].Restarted) != "[3001 3000]" {
		t.Errorf("restarted %v", rep.Hosts[0].Restarted)
	}
}

func hasEvent(events []Event, port int, step StepName, status StepStatus, msg string) bool {
	for _, e := range events {
		if e.Port == port && e.Step == step && e.Status == status && strings.Contains(e.Message, msg) {
			return true
		}
	}
	return false
}
