package deployer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
)

// downIn returns the ports marked down in an upstream file.
func downIn(t *testing.T, content string) []int {
	return upstreamPorts(t, content, true)
}

// serversIn returns the ports with a server line in an upstream file.
func serversIn(t *testing.T, content string) []int {
	return upstreamPorts(t, content, false)
}

func upstreamPorts(t *testing.T, content string, downOnly bool) []int {
	t.Helper()
	servers, err := upstreamServers([]byte(content), "my_app", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	var ports []int
	for p, down := range servers {
		if down || !downOnly {
			ports = append(ports, p)
		}
	}
	sort.Ints(ports)
	return ports
}

const fourInstances = "base_port: 3000\ninstances: 4\n"

func TestDeployOneReloadPerInstance(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002, 3003)
	d, _ := fakeDeployer(t, fourInstances, h)
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Hosts[0].Restarted; fmt.Sprint(got) != "[3000 3001 3002 3003]" {
		t.Errorf("restarted %v", got)
	}
	// 4 instances: a drain, 3 undrain+drain writes, the last undrain; each
	// drain waits for the drained instance's requests.
	want := [][]int{{3000}, {3001}, {3002}, {3003}, nil}
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
	if !strings.HasPrefix(h.upstream, "# managed by hand, and by rollout\nupstream my_app {\n    keepalive 8;\n") {
		t.Errorf("the rest of the file was not kept:\n%s", h.upstream)
	}
	if h.locked || len(h.history) != 1 || h.history[0].Outcome != HostOK || h.history[0].Version != "v2" {
		t.Errorf("locked after the deploy: %v; history %+v", h.locked, h.history)
	}
}

func TestDeployFailureKeepsPendingInstanceServing(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002, 3003)
	h.failAfterRestart = 3002
	d, _ := fakeDeployer(t, fourInstances, h)
	rep, err := d.Deploy(testCtx(t))
	var se *StepError
	if !errors.As(err, &se) || se.Port != 3002 || se.Step != StepHealth || !se.LeftOut {
		t.Fatalf("err = %v, want a health failure of 3002, left out", err)
	}
	// 3001 came back healthy and went back in with 3002's drain; 3002
	// stays out; 3003 was never touched.
	if got := downIn(t, h.upstream); fmt.Sprint(got) != "[3002]" {
		t.Errorf("down at the end: %v, want [3002]", got)
	}
	if slices.Contains(h.ops, "restart 3003") {
		t.Errorf("3003 was restarted after 3002 failed: %v", h.ops)
	}
	if !strings.Contains(se.Output, "FATAL: not ready") || !strings.Contains(se.Output, "systemd: my-app@3002 is active/running") {
		t.Errorf("the app's output is missing: %q", se.Output)
	}
	if r := rep.Hosts[0]; r.Outcome != HostFailed || fmt.Sprint(r.LeftOut) != "[3002]" {
		t.Errorf("report %+v", r)
	}
	if h.locked || len(h.history) != 1 || h.history[0].Outcome != HostFailed {
		t.Errorf("locked after the deploy: %v; history %+v", h.locked, h.history)
	}
}

func TestDeployUpstreamChangedByOthers(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002, 3003)
	// Before rollout's third write, someone marks 3003 down by hand: that
	// write must be refused, the file read again, capacity checked again
	// (3003 no longer serves, so 3002 may not be drained with all others
	// required), and the hand edit kept.
	h.onWrite = func(n int) {
		if n == 2 {
			h.upstream = strings.Replace(h.upstream, "127.0.0.1:3003;", "127.0.0.1:3003 down;", 1)
		}
	}
	d, _ := fakeDeployer(t, fourInstances, h)
	_, err := d.Deploy(testCtx(t))
	if !errors.Is(err, ErrCapacity) {
		t.Fatalf("err = %v, want a capacity failure", err)
	}
	if got := downIn(t, h.upstream); fmt.Sprint(got) != "[3003]" {
		t.Errorf("down at the end: %v, want [3003] (the hand edit, and 3001 back in)", got)
	}
}

func TestDeployRefusedWhileLocked(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001)
	h.locked = true
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\n", h)
	_, err := d.Deploy(testCtx(t))
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepLock || !errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v, want a lock failure", err)
	}
	if len(h.writes) != 0 || len(h.ops) != 0 || !h.locked {
		t.Errorf("a locked host was changed (%d writes, %v) or unlocked", len(h.writes), h.ops)
	}
}

// A failure on one host stops the others before their next instance, and
// no host is left locked.
func TestDeployStopsOtherHostsOnFailure(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001)
	web1.failAfterRestart = 3000
	web2 := newFakeRemote(t, 3000, 3001)
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\n", web1, web2)
	rep, err := d.Deploy(testCtx(t))
	if err == nil {
		t.Fatal("the deploy passed")
	}
	if len(web2.ops) != 0 || len(web2.writes) != 0 {
		t.Errorf("web2 was changed after web1 failed: %v", web2.ops)
	}
	if rep.Hosts[0].Outcome != HostFailed || rep.Hosts[1].Outcome != HostNotStarted {
		t.Errorf("outcomes %s, %s", rep.Hosts[0].Outcome, rep.Hosts[1].Outcome)
	}
	if web1.locked || web2.locked {
		t.Error("a host was left locked")
	}
}

// An interrupt between instances puts the instance that came back healthy
// into Nginx again and starts no other.
func TestDeployInterruptedPutsPendingBack(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002)
	ctx, cancel := context.WithCancel(testCtx(t))
	d, _ := fakeDeployer(t, "ports: [3000, 3001, 3002]\n", h)
	events := d.Events
	d.Events = func(e Event) {
		events(e)
		if e.Port == 3000 && e.Step == StepHealth && e.Status == StatusOK {
			cancel()
		}
	}
	rep, err := d.Deploy(ctx)
	if err == nil {
		t.Fatal("an interrupted deploy passed")
	}
	if got := downIn(t, h.upstream); len(got) != 0 {
		t.Errorf("down after the interrupt: %v, want none", got)
	}
	if fmt.Sprint(h.ops) != "[restart 3000]" {
		t.Errorf("ops %v, want only 3000 restarted", h.ops)
	}
	if rep.Hosts[0].Outcome != HostInterrupted {
		t.Errorf("outcome %s", rep.Hosts[0].Outcome)
	}
}

// Instances out of service go first: restarting them takes nothing out.
func TestDeployRestartsInstancesOutOfServiceFirst(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002)
	h.units[3002].healthy = false
	h.failAfterRestart = -1
	d, _ := fakeDeployer(t, "ports: [3000, 3001, 3002]\nmin_serving: 1\n", h)
	// 3002 comes back healthy once restarted.
	d.Events = func(e Event) {
		if e.Step == StepRestart && e.Status == StatusOK {
			h.mu.Lock()
			h.units[e.Port].healthy = true
			h.mu.Unlock()
		}
	}
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if len(h.ops) == 0 || h.ops[0] != "restart 3002" {
		t.Errorf("ops %v, want 3002 first", h.ops)
	}
}

// With instances: auto, hooks get the ports each host resolved to.
func TestHooksGetResolvedPorts(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002)
	h.cores = 3
	dir := t.TempDir()
	d, _ := fakeDeployer(t, "base_port: 3000\ninstances: auto\nhooks:\n  before: ['echo \"$ROLLOUT_PORTS\" > "+dir+"/ports']\n  host_before: ['true']\n", h)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	got := readFile(t, dir+"/ports")
	if got != "3000 3001 3002\n" {
		t.Errorf("local hook's ROLLOUT_PORTS = %q, want \"3000 3001 3002\"", got)
	}
	if len(h.hooks) != 1 || !slices.Contains(h.hooks[0], "ROLLOUT_PORTS=3000 3001 3002") || !slices.Contains(h.hooks[0], "ROLLOUT_HOST=web1") {
		t.Errorf("host hook env %v", h.hooks)
	}
}

// The health check asks for the address Nginx sends requests to.
func TestHealthCheckDialsServerAddress(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001)
	h.upstream = strings.ReplaceAll(h.upstream, "127.0.0.1:", "10.0.0.5:")
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\nnginx: {upstream_file: /etc/nginx/conf.d/my-app.conf, upstream: my_app, server_address: 10.0.0.5}\n", h)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if len(h.dials) == 0 {
		t.Fatal("no health check was made")
	}
	for _, a := range h.dials {
		if a != "10.0.0.5" {
			t.Fatalf("a health check dialled %s, want 10.0.0.5 (nginx.server_address)", a)
		}
	}
}

// An upstream block that is not in the file stops the deploy at the
// preflight: no hook has run, no lock was taken, nothing changed.
func TestPreflightMissingUpstreamBlock(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001)
	h.upstream = strings.Replace(h.upstream, "upstream my_app {", "upstream other_app {", 1)
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\nhooks: {host_before: ['activate']}\n", h)
	_, err := d.Deploy(testCtx(t))
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepPreflight || !strings.Contains(err.Error(), `upstream "my_app" not found`) {
		t.Fatalf("err = %v, want a preflight failure naming the upstream", err)
	}
	if len(h.ops) != 0 || len(h.writes) != 0 || h.locked || len(h.history) != 0 {
		t.Errorf("changed the host: ops %v, %d writes, locked %v", h.ops, len(h.writes), h.locked)
	}
}

// sudo's warnings are not refusals: a script's own failure is its own
// headline; a real refusal says what to do.
func TestSudoRefusalOrWarning(t *testing.T) {
	cfg := &Config{SSH: SSHConfig{User: "deploy"}}
	warn := &sshexec.ExitError{Code: exitNginxBroken, Stderr: "sudo: unable to resolve host web1: Name or service not known\nnginx config test fails before any change:\nnginx: [emerg] unexpected \"}\""}
	if got := explainRemote(warn, cfg).Error(); strings.Contains(got, "refused") {
		t.Errorf("a warning was called a refusal: %s", got)
	}
	if got := scriptMessage(warn); !strings.HasPrefix(got, "nginx config test fails before any change:") || strings.Contains(got, "resolve host") {
		t.Errorf("headline %q", got)
	}
	refusal := &sshexec.ExitError{Code: 1, Stderr: "sudo: a password is required"}
	if got := explainRemote(refusal, cfg).Error(); !strings.Contains(got, `sudo -n refused for user "deploy"`) {
		t.Errorf("a refusal was not explained: %s", got)
	}
}

// A release that crashes until systemd gives up is reported with the state
// it ends in, the start limit named, not with the first one seen.
func TestDeployCrashLoopReportsStartLimit(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001)
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\n", h)
	d.Events = func(e Event) {
		if e.Port == 3000 && e.Step == StepRestart && e.Status == StatusOK {
			loop := unitState{ID: "my-app@3000.service", Active: "activating", Sub: "auto-restart", Restarts: 1}
			failed := unitState{ID: "my-app@3000.service", Active: "failed", Sub: "failed", Restarts: 3,
				Result: "start-limit-hit", StartLimitBurst: 3, StartLimitInterval: time.Minute}
			h.mu.Lock()
			h.units[3000].states = []unitState{loop, loop, loop, failed}
			h.units[3000].healthy = false
			h.mu.Unlock()
		}
	}
	_, err := d.Deploy(testCtx(t))
	var se *StepError
	if !errors.As(err, &se) || se.Port != 3000 || !errors.Is(err, ErrRestarted) {
		t.Fatalf("err = %v, want 3000 restarted by systemd", err)
	}
	want := "hit the start limit (StartLimitBurst=3 in 1m0s)"
	if !strings.Contains(err.Error(), "later systemd reports failed/failed") || !strings.Contains(err.Error(), want) || !strings.Contains(se.Output, want) {
		t.Errorf("error %q, output %q: want the final state and %q", err, se.Output, want)
	}
}

// At the end of a run every host's history and lock release happen at
// once, not one host after another (each with its own deadline): a fleet
// of hundreds ends in a few round trips.
func TestHistoryWrittenOnEveryHostAtOnce(t *testing.T) {
	var hosts []*fakeRemote
	var barrier sync.WaitGroup
	for range 5 {
		h := newFakeRemote(t, 3000, 3001)
		h.historyBarrier = &barrier
		hosts = append(hosts, h)
	}
	barrier.Add(len(hosts))
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\nparallel: 5\n", hosts...)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	for i, h := range hosts {
		if len(h.history) != 1 || h.locked {
			t.Errorf("web%d: history %v, locked %v; stderr %s", i+1, h.history, h.locked, d.Stderr)
		}
	}
}

func TestMustRevert(t *testing.T) {
	revert := &ReleaseConfig{OnFailure: OnFailureRevert}
	halt := &ReleaseConfig{OnFailure: "halt"}
	failed := errors.New("3001 did not come up")
	for _, tc := range []struct {
		name                  string
		op, release           string
		rel                   *ReleaseConfig
		err                   error
		interrupted, lockLost bool
		want                  bool
	}{
		{"a failed deploy", opDeploy, "r2", revert, failed, false, false, true},
		{"a failed promote", opPromote, "r2", revert, failed, false, false, true},
		{"a deploy that went well", opDeploy, "r2", revert, nil, false, false, false},
		{"on_failure: halt", opDeploy, "r2", halt, failed, false, false, false},
		{"no release shipped", opDeploy, "", revert, failed, false, false, false},
		{"a rollback", opRollback, "r1", revert, failed, false, false, false},
		{"a scale", opScale, "", revert, failed, false, false, false},
		{"interrupted", opDeploy, "r2", revert, failed, true, false, false},
		{"its lock taken over", opDeploy, "r2", revert, failed, false, true, false},
		{"no release: section", opDeploy, "r2", nil, failed, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mustRevert(tc.op, tc.release, tc.rel, tc.err, tc.interrupted, tc.lockLost); got != tc.want {
				t.Errorf("mustRevert = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMarkUnfinished(t *testing.T) {
	for _, tc := range []struct {
		name                string
		paused, interrupted bool
		want                Outcome
	}{
		{"paused after the canary", true, false, HostPaused},
		{"interrupted", false, true, HostInterrupted},
		{"stopped by another host", false, false, HostStopped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sessions := []*session{
				{index: 0, run: &hostRun{finished: true}}, // done: stays ok
				{index: 1, run: &hostRun{}},               // begun, not done
				{index: 2},                                // never begun
				{index: 3, run: &hostRun{}},               // failed: stays failed
			}
			rep := &Report{Hosts: []HostReport{{Outcome: HostOK}, {Outcome: HostOK}, {Outcome: HostNotStarted}, {Outcome: HostFailed}}}
			markUnfinished(rep, sessions, tc.paused, tc.interrupted)
			got := []Outcome{rep.Hosts[0].Outcome, rep.Hosts[1].Outcome, rep.Hosts[2].Outcome, rep.Hosts[3].Outcome}
			if want := []Outcome{HostOK, tc.want, HostNotStarted, HostFailed}; !slices.Equal(got, want) {
				t.Errorf("outcomes %v, want %v", got, want)
			}
		})
	}
}
