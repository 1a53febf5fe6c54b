package deployer

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A connection lost in the middle of an instance is not the app's fault:
// rollout reconnects, carries on, and the deploy ends as if nothing broke.
func TestDeployReconnectsAfterLostConnection(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002)
	h.lose["UnitState"] = 1   // while waiting for the new process
	h.lose["DialContext"] = 1 // during a health check
	h.lose["WriteUpstream"] = 1
	d, events := fakeDeployer(t, "ports: [3000, 3001, 3002]\nssh: {user: deploy, reconnect: 5s}\n", h)
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Hosts[0]; got.Outcome != HostOK || fmt.Sprint(got.Restarted) != "[3000 3001 3002]" || len(got.LeftOut) != 0 {
		t.Errorf("report %+v", got)
	}
	if h.connects < 2 || !hasEvent(*events, 0, StepSSH, StatusWarn, "lost the connection") || !hasEvent(*events, 0, StepSSH, StatusOK, "reconnected") {
		t.Errorf("%d connections; the loss and the reconnect were not told", h.connects)
	}
	if got := downIn(t, h.upstream); len(got) != 0 || h.locked || len(h.history) != 1 {
		t.Errorf("down %v, locked %v, history %d", got, h.locked, len(h.history))
	}
}

// A host that stays unreachable stops the deploy with its own error, not
// the app's, and the report says what may be left out and what to run.
func TestDeployUnreachableHost(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002)
	d, events := fakeDeployer(t, "ports: [3000, 3001, 3002]\nssh: {user: deploy, reconnect: 300ms}\n", h)
	emit := d.Events
	d.Events = func(e Event) {
		emit(e)
		if e.Port == 3001 && e.Step == StepRestart && e.Status == StatusOK {
			h.mu.Lock()
			h.unreachable = true
			h.mu.Unlock()
		}
	}
	rep, err := d.Deploy(testCtx(t))
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	var se *StepError
	if !errors.As(err, &se) || se.Output != "" || se.Port != 3001 {
		t.Errorf("step error %+v: want 3001's, without app output", se)
	}
	r := rep.Hosts[0]
	if r.Outcome != HostFailed || fmt.Sprint(r.LeftOut) != "[3001]" {
		t.Errorf("report %+v", r)
	}
	for _, want := range []string{"web1 could not be reached again", "instances [3001] may be marked down", "lock is still held", "rollout deploy --version v2"} {
		if !strings.Contains(r.Next, want) {
			t.Errorf("next step %q lacks %q", r.Next, want)
		}
	}
	if !hasEvent(*events, 0, StepSSH, StatusFail, "could not reconnect within 300ms") {
		t.Error("giving up on the host was not told")
	}
	if strings.Contains(err.Error(), "unhealthy") || strings.Contains(err.Error(), "not healthy") {
		t.Errorf("the lost host is blamed on the app: %v", err)
	}
}
