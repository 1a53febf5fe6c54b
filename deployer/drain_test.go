package deployer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// handPorts are the ports of a host's list of instances drained by hand.
func handPorts(r *fakeRemote) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ports []int
	for _, m := range r.handDrained {
		ports = append(ports, m.Port)
	}
	return fmt.Sprint(ports)
}

// A drain takes an instance out and records who did it; a deploy restarts
// it and keeps it out (and says so); another drain that would break
// min_serving is refused and changes nothing; an undrain of an instance
// that fails its health check is refused; a healthy one goes back.
func TestDrainKeptThroughADeployUntilUndrain(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002, 3003)
	d, events := fakeDeployer(t, fourInstances, h)
	d.Holder = NewLockInfo(opDrain, "")
	d.Targets = map[string][]int{"web1": {3001}}
	rep, err := d.Drain(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(downIn(t, h.upstream)); got != "[3001]" {
		t.Fatalf("down after the drain: %s", got)
	}
	if fmt.Sprint(rep.Hosts[0].Ports) != "[3001]" || len(rep.Hosts[0].Restarted) != 0 {
		t.Errorf("report: %+v", rep.Hosts[0])
	}
	if m := h.handDrained; len(m) != 1 || m[0].Port != 3001 || m[0].User != d.Holder.User || m[0].Time.IsZero() {
		t.Errorf("record: %+v", m)
	}
	if n := len(h.history); n != 1 || h.history[0].Op != "drain" || fmt.Sprint(h.history[0].Ports) != "[3001]" || h.locked {
		t.Errorf("history %+v, locked %v", h.history, h.locked)
	}

	// A second one would leave 2 serving, below min_serving 3.
	writes := len(h.writes)
	d.Targets = map[string][]int{"web1": {3002}}
	if _, err := d.Drain(testCtx(t)); !errors.Is(err, ErrCapacity) || !strings.Contains(err.Error(), "3001 drained by hand") {
		t.Fatalf("second drain: %v", err)
	}
	if len(h.writes) != writes || handPorts(h) != "[3001]" {
		t.Errorf("a refused drain changed something: %d writes, record %s", len(h.writes)-writes, handPorts(h))
	}

	// With min_serving set to 3, a deploy cannot drain any of the 3 left
	// serving: refused, naming the drained one.
	d.Config.SetMinServing(3)
	d.Holder = NewLockInfo(opDeploy, "")
	if _, err := d.Deploy(testCtx(t)); !errors.Is(err, ErrCapacity) || !strings.Contains(err.Error(), "3001 drained by hand: `rollout undrain web1` puts them back") {
		t.Fatalf("deploy below a set min_serving: %v", err)
	}

	// At its default (all but max_unavailable), the drained one does not
	// count: the deploy restarts it and keeps it out, and rolls the others
	// one at a time.
	d.Config.minServing = nil
	pid := h.unit(3001).pid
	*events = nil
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if h.unit(3001).pid == pid {
		t.Error("the drained instance was not restarted")
	}
	if got := fmt.Sprint(downIn(t, h.upstream)); got != "[3001]" {
		t.Errorf("down after the deploy: %s", got)
	}
	said := false
	for _, e := range *events {
		said = said || e.Port == 3001 && e.Step == StepUndrain && e.Status == StatusSkip && strings.Contains(e.Message, "kept out: drained by hand by ")
	}
	if !said {
		t.Errorf("the deploy did not say it kept 3001 out: %v", *events)
	}

	// Undrain: refused while it fails its check, then put back.
	d.Targets = map[string][]int{"web1": {3001}}
	h.mu.Lock()
	h.unit(3001).healthy = false
	h.mu.Unlock()
	writes = len(h.writes)
	if _, err := d.Undrain(testCtx(t)); err == nil || !strings.Contains(err.Error(), "fails its health check") || !strings.Contains(err.Error(), "rollout restart --hosts web1 --port 3001") {
		t.Fatalf("undrain of an unhealthy instance: %v", err)
	}
	if len(h.writes) != writes || handPorts(h) != "[3001]" {
		t.Errorf("a refused undrain changed something: %d writes, record %s", len(h.writes)-writes, handPorts(h))
	}
	h.mu.Lock()
	h.unit(3001).healthy = true
	h.mu.Unlock()
	if _, err := d.Undrain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := downIn(t, h.upstream); len(got) != 0 || handPorts(h) != "[]" {
		t.Errorf("after the undrain: down %v, record %s", got, handPorts(h))
	}
}

// The last serving instance is never drained, and a host whose own Nginx
// serves it is never drained whole; names that are not the app's are
// refused before anything changes.
func TestDrainRefusals(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001)
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\nmin_serving: 0\n", h)
	for _, tc := range []struct {
		targets map[string][]int
		want    string
	}{
		{map[string][]int{"web1": {3000, 3001}}, "would leave 0 serving"},
		{map[string][]int{"web1": nil}, "serves its instances through its own Nginx"},
		{map[string][]int{"web9": nil}, "web9 is not one of my-app's hosts (web1)"},
		{map[string][]int{"web1": {3005}}, "web1:3005 is not one of my-app's instances there (ports 3000, 3001)"},
		{nil, "name the instances"},
	} {
		d.Targets = tc.targets
		if _, err := d.Drain(testCtx(t)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("drain %v: %v, want %q", tc.targets, err, tc.want)
		}
		if len(h.writes) != 0 || handPorts(h) != "[]" || h.locked {
			t.Fatalf("drain %v changed something: %d writes, record %s, locked %v", tc.targets, len(h.writes), handPorts(h), h.locked)
		}
	}
}

// Behind load balancers of their own, a whole host is drained on every
// balancer at once when the other hosts keep enough instances in service,
// and refused when they do not.
func TestDrainWholeHostBehindBalancers(t *testing.T) {
	app := newFakeRemote(t, 3000, 3001, 3002, 3003)
	lb1, lb2 := fakeBalancer(t, app), fakeBalancer(t, app)
	d, _ := lbDeployer(t, lbConfig, app, lb1, lb2)
	d.Config.Hosts = append(d.Config.Hosts, "web2") // 10.0.0.6, never connected to
	d.Config.LB.Addresses["web2"] = "10.0.0.6"

	// web2 has 1 instance in service on both: below min_serving 3.
	for _, lb := range []*fakeRemote{lb1, lb2} {
		lb.upstream = strings.NewReplacer("10.0.0.6:3000;", "10.0.0.6:3000 down;", "10.0.0.6:3001;", "10.0.0.6:3001 down;").Replace(lbUpstream)
	}
	lb2.upstream = strings.Replace(lb2.upstream, "10.0.0.6:3002;", "10.0.0.6:3002 down;", 1)
	d.Targets = map[string][]int{"web1": nil}
	if _, err := d.Drain(testCtx(t)); !errors.Is(err, ErrCapacity) || !strings.Contains(err.Error(), "would leave 1 instance(s) of the other hosts in service on lb1 and lb2; it must leave at least 3") {
		t.Fatalf("drain with too few elsewhere: %v", err)
	}
	if len(lb1.writes)+len(lb2.writes) != 0 || handPorts(app) != "[]" {
		t.Fatalf("a refused drain changed something")
	}

	for _, lb := range []*fakeRemote{lb1, lb2} {
		lb.upstream = lbUpstream
	}
	if _, err := d.Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	for i, lb := range []*fakeRemote{lb1, lb2} {
		if got := fmt.Sprint(lbDown(t, lb.upstream, "10.0.0.5")); got != "[3000 3001 3002 3003]" || len(lb.writes) != 1 {
			t.Errorf("lb%d: down %s in %d writes", i+1, got, len(lb.writes))
		}
		if got := lbDown(t, lb.upstream, "10.0.0.6"); len(got) != 0 {
			t.Errorf("lb%d: web2's lines changed: %v", i+1, got)
		}
	}
	if handPorts(app) != "[3000 3001 3002 3003]" {
		t.Errorf("record: %s", handPorts(app))
	}
	if _, err := d.Undrain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	for i, lb := range []*fakeRemote{lb1, lb2} {
		if lb.upstream != lbUpstream {
			t.Errorf("lb%d: not as before the drain:\n%s", i+1, lb.upstream)
		}
	}
}

// A drain interrupted after the balancers took the instance out (during
// the wait for its requests in flight) keeps it on the record, so that no
// deploy puts it back unasked; a refused one leaves the record as it was.
func TestDrainInterruptedKeepsWhatIsOut(t *testing.T) {
	app := newFakeRemote(t, 3000, 3001, 3002, 3003)
	lb1 := fakeBalancer(t, app)
	d, _ := lbDeployer(t, fourInstances+"lb:\n  hosts: [lb1]\n  server_addresses: {web1: 10.0.0.5}\n", app, lb1)
	d.Targets = map[string][]int{"web1": {3001}}
	// The balancer's write lands; the wait after it is cut.
	app.waitIdleErr = context.Canceled
	_, err := d.Drain(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "3001 out of service already, recorded as drained by hand") {
		t.Fatalf("interrupted drain: %v", err)
	}
	if got := fmt.Sprint(lbDown(t, lb1.upstream, "10.0.0.5")); got != "[3001]" {
		t.Fatalf("down on lb1: %s", got)
	}
	if handPorts(app) != "[3001]" {
		t.Errorf("record after an interrupted drain: %s, want [3001]", handPorts(app))
	}

	// Refused by capacity before any change: the record is as it was.
	app.waitIdleErr = nil
	d.Targets = map[string][]int{"web1": {3000}}
	d.Config.SetMinServing(3)
	if _, err := d.Drain(testCtx(t)); !errors.Is(err, ErrCapacity) {
		t.Fatalf("drain below min_serving: %v", err)
	}
	if handPorts(app) != "[3001]" {
		t.Errorf("record after a refused drain: %s, want [3001]", handPorts(app))
	}
}

// An instance drained by hand that a scale-in removes leaves the record
// with it: a later scale-out does not find it there and keep it out.
func TestDrainForgottenWhenScaledIn(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002, 3003)
	d, _ := fakeDeployer(t, fourInstances, h)
	d.Targets = map[string][]int{"web1": {3003}}
	if _, err := d.Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	d.Targets = nil
	d.Config.SetPorts([]int{3000, 3001, 3002})
	if _, err := d.Scale(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if handPorts(h) != "[]" {
		t.Errorf("record after 3003 was removed: %s", handPorts(h))
	}
}
