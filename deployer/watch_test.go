package deployer

import (
	"fmt"
	"slices"
	"testing"
)

func okInstance(port int) InstanceStatus {
	return InstanceStatus{Port: port, State: "active", Sub: "running", PID: port, InNginx: true, Healthy: true}
}

func snap(hosts ...HostStatus) Snapshot {
	return Snapshot{Hosts: hosts, Locked: make([]string, len(hosts))}
}

func kinds(ts []Transition) []string {
	var out []string
	for _, t := range ts {
		out = append(out, fmt.Sprintf("%s:%d %s %v", t.Host, t.Port, t.Kind, t.Problem))
	}
	return out
}

func TestTransitions(t *testing.T) {
	good := snap(HostStatus{Host: "a", Instances: []InstanceStatus{okInstance(3000), okInstance(3001)}})
	if ts := Transitions(nil, good); len(ts) != 0 || good.Problems() != 0 {
		t.Fatalf("a healthy fleet: %v", kinds(ts))
	}

	crashed := snap(HostStatus{Host: "a", Instances: []InstanceStatus{okInstance(3000), okInstance(3001)}})
	crashed.Hosts[0].Instances[1] = InstanceStatus{Port: 3001, State: "activating", Sub: "auto-restart", Restarts: 3, InNginx: true, Health: "connection refused"}
	want := []string{"a:3001 down true", "a:3001 restarted true"}
	if got := kinds(Transitions(&good, crashed)); !slices.Equal(got, want) {
		t.Fatalf("a crash loop: %v, want %v", got, want)
	}
	if got := kinds(Transitions(&crashed, crashed)); len(got) != 0 {
		t.Fatalf("the same state again: %v, want nothing", got)
	}
	more := crashed
	more.Hosts = []HostStatus{{Host: "a", Instances: slices.Clone(crashed.Hosts[0].Instances)}}
	more.Hosts[0].Instances[1].Restarts = 5
	if got := kinds(Transitions(&crashed, more)); !slices.Equal(got, []string{"a:3001 restarted true"}) {
		t.Fatalf("restarts still increasing: %v", got)
	}
	if got := kinds(Transitions(&more, good)); !slices.Equal(got, []string{"a:3001 up false"}) {
		t.Fatalf("recovered: %v", got)
	}

	// On the first poll, every problem is one.
	if got := kinds(Transitions(nil, crashed)); !slices.Equal(got, []string{"a:3001 down true"}) || crashed.Problems() != 1 {
		t.Fatalf("first poll: %v, %d problems", got, crashed.Problems())
	}

	sick := snap(HostStatus{Host: "a", Instances: []InstanceStatus{okInstance(3000), okInstance(3001)}})
	sick.Hosts[0].Instances[0].Healthy, sick.Hosts[0].Instances[0].Health = false, "status 500"
	sick.Hosts[0].Instances[1].InNginx = false
	if got := kinds(Transitions(&good, sick)); !slices.Equal(got, []string{"a:3000 unhealthy true", "a:3001 out-of-nginx true"}) {
		t.Fatalf("unhealthy and out: %v", got)
	}
	if got := kinds(Transitions(&sick, good)); !slices.Equal(got, []string{"a:3000 healthy false", "a:3001 in-nginx false"}) {
		t.Fatalf("healthy and in again: %v", got)
	}

	gone := snap(HostStatus{Host: "a", Error: "unreachable: dial tcp: connection refused"})
	if got := kinds(Transitions(&good, gone)); !slices.Equal(got, []string{"a:0 unreachable true"}) {
		t.Fatalf("unreachable: %v", got)
	}
	if got := kinds(Transitions(&gone, gone)); len(got) != 0 {
		t.Fatalf("still unreachable is said once: %v", got)
	}
	if got := kinds(Transitions(&gone, good)); !slices.Equal(got, []string{"a:0 reachable false"}) {
		t.Fatalf("back: %v", got)
	}
	if got := kinds(Transitions(&gone, crashed)); !slices.Equal(got, []string{"a:0 reachable false", "a:3001 down true"}) {
		t.Fatalf("back with an instance down: %v", got)
	}

	deploying := sick
	deploying.Locked = []string{"ci@runner"}
	ts := Transitions(&good, deploying)
	if len(ts) != 2 || ts[0].During != "ci@runner" || ts[0].String() != "a:3000 unhealthy: status 500 (during a deploy by ci@runner)" {
		t.Fatalf("during a deploy: %+v", ts)
	}
	// The deploy's end, seen after its lock is gone, is still its own.
	ts = Transitions(&deploying, good)
	if len(ts) != 2 || ts[0].During != "ci@runner" || ts[1].During != "ci@runner" {
		t.Fatalf("after a deploy: %+v", ts)
	}
	if ts := Transitions(&good, sick); ts[0].During != "" {
		t.Fatalf("no deploy: %+v", ts)
	}
}

// A worker that stops running, or that systemd restarts, is a problem;
// its recovery is said too.
func TestTransitionsOfWorkers(t *testing.T) {
	w := WorkerStatus{Unit: "my-app-worker@1", State: "active", Sub: "running", PID: 10}
	good := snap(HostStatus{Host: "a", Instances: []InstanceStatus{okInstance(3000)}, Workers: []WorkerStatus{w}})
	down := snap(HostStatus{Host: "a", Instances: []InstanceStatus{okInstance(3000)}, Workers: []WorkerStatus{{Unit: w.Unit, State: "activating", Sub: "auto-restart", Restarts: 2}}})
	ts := Transitions(&good, down)
	var got []string
	for _, tr := range ts {
		got = append(got, tr.String())
	}
	want := []string{"a/my-app-worker@1 down: activating/auto-restart", "a/my-app-worker@1 restarted: systemd restarted it 2 time(s) since the last poll (2 in all)"}
	if !slices.Equal(got, want) || down.Problems() != 1 || !ts[0].Problem {
		t.Fatalf("a worker down: %v (%d problems), want %v", got, down.Problems(), want)
	}
	if ts := Transitions(&down, good); len(ts) != 1 || ts[0].String() != "a/my-app-worker@1 up: pid 10" || ts[0].Problem {
		t.Errorf("recovered: %v", ts)
	}
}
