package deployer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const workersYAML = releaseYAML + "workers:\n  - {unit: my-app-worker, count: 2}\n"

// withWorkers gives the fake host the workers' units, running id.
func (r *fakeRemote) withWorkers(id string, units ...string) *fakeRemote {
	for _, u := range units {
		w := r.worker(u)
		w.link, w.runs = id, id
	}
	return r
}

// backOn checks that the fake host's instances 3000-3002 and its workers
// (units, or all of them) are back on release id after a revert.
func backOn(t *testing.T, h *fakeRemote, id string, units ...string) {
	t.Helper()
	if len(units) == 0 {
		for u := range h.workers {
			units = append(units, u)
		}
		slices.Sort(units)
	}
	for _, u := range units {
		if w := h.workers[u]; w.link != id || w.runs != id {
			t.Errorf("%s: link %s runs %s after the revert, want %s", u, w.link, w.runs, id)
		}
	}
	for _, p := range []int{3000, 3001, 3002} {
		if h.links[p] != id {
			t.Errorf("%d: link %s after the revert", p, h.links[p])
		}
	}
}

// A deploy restarts the workers after every web instance of the host, each
// switched to the release in the same command, and each must keep its new
// process; a rerun leaves them alone.
func TestWorkersRestartAfterTheWebInstances(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1).withWorkers(relV1, "my-app-worker@1", "my-app-worker@2")
	d, events := fakeDeployer(t, workersYAML, h)
	d.Artifact = testArtifact("release v2")
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	id := rep.Release
	ops := opsLike(h, "restart ")
	want := []string{"restart 3000", "restart 3001", "restart 3002", "restart my-app-worker@1", "restart my-app-worker@2"}
	if !slices.Equal(ops, want) {
		t.Errorf("restarts %v, want %v", ops, want)
	}
	for _, u := range []string{"my-app-worker@1", "my-app-worker@2"} {
		if w := h.workers[u]; w.link != id || w.runs != id {
			t.Errorf("%s: link %s runs %s, want %s", u, w.link, w.runs, id)
		}
	}
	stable := 0
	for _, e := range *events {
		if e.Worker != "" && e.Step == StepStable && e.Status == StatusOK {
			stable++
		}
		if e.Worker != "" && e.Port != 0 {
			t.Errorf("an event with a port and a worker: %+v", e)
		}
	}
	if stable != 2 {
		t.Errorf("%d workers said stable, want 2", stable)
	}

	// Again: nothing to do for them either.
	*events = nil
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if ops := opsLike(h, "restart "); len(ops) != len(want) {
		t.Errorf("the rerun restarted %v", ops[len(want):])
	}
	skipped := 0
	for _, e := range *events {
		if e.Worker != "" && e.Step == StepRestart && e.Status == StatusSkip && strings.Contains(e.Message, "already runs release "+id) {
			skipped++
		}
	}
	if skipped != 2 {
		t.Errorf("%d workers said they already run %s, want 2", skipped, id)
	}
}

// A worker that systemd restarts after the switch (a crash loop) fails
// the deploy with what it said, and the revert puts every worker and web
// instance back on the release it ran.
func TestWorkerCrashLoopIsReverted(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1).withWorkers(relV1, "my-app-worker@1", "my-app-worker@2")
	d, _ := fakeDeployer(t, workersYAML+"strategy: {max_unavailable: 2}\n", h)
	d.Artifact = testArtifact("release v2")
	// Both start together (max_unavailable 2); the second crash-loops.
	h.worker("my-app-worker@2").crashOn = "-v2"
	rep, err := d.Deploy(testCtx(t))
	if err == nil {
		t.Fatal("the deploy passed")
	}
	var se *StepError
	if !errors.As(err, &se) || se.Worker != "my-app-worker@2" || se.Step != StepStable || !strings.Contains(se.Output, "worker: cannot reach the queue") {
		t.Fatalf("error %v (%+v)", err, se)
	}
	if !strings.Contains(err.Error(), "stable web1/my-app-worker@2: ") {
		t.Errorf("the error does not name the worker: %v", err)
	}
	if rep.Reverted != "reverted to "+relV1 {
		t.Errorf("reverted %q", rep.Reverted)
	}
	backOn(t, h, relV1)
	if h.outcome(rep.Release) != ReleaseBad {
		t.Errorf("%s is %q, want BAD", rep.Release, h.outcome(rep.Release))
	}
}

// rollout restart restarts the workers too (no release: no switch), but
// not when it names ports.
func TestRestartRestartsWorkersUnlessPortsAreNamed(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001)
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\nworkers: [{unit: w, count: 1}]\n", h)
	if _, err := d.Restart(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if ops := fmt.Sprint(opsLike(h, "restart ", "switch ")); ops != "[restart 3000 restart 3001 restart w@1]" {
		t.Errorf("restart: %s", ops)
	}
	d.Only = []int{3001}
	if _, err := d.Restart(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if ops := fmt.Sprint(opsLike(h, "restart ")); ops != "[restart 3000 restart 3001 restart w@1 restart 3001]" {
		t.Errorf("restart --port 3001: %s", ops)
	}
}

// Status shows each worker's unit: its state, process and release; one
// that is not running is a problem.
func TestStatusShowsWorkers(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1).withWorkers(relV1, "my-app-worker@1", "my-app-worker@2")
	d, _ := fakeDeployer(t, workersYAML, h)
	hs := hostStatus(testCtx(t), d.Config, "web1", h, Balancers{})
	if len(hs.Workers) != 2 || hs.Workers[0].Unit != "my-app-worker@1" || hs.Workers[1].Release != relV1 || !hs.Workers[0].OK() || !hs.OK() {
		t.Fatalf("status: %+v", hs)
	}
	h.worker("my-app-worker@2").crashOn = "-v1"
	h.worker("my-app-worker@2").restarts = 3
	if hs = hostStatus(testCtx(t), d.Config, "web1", h, Balancers{}); hs.OK() || hs.Workers[1].State != "failed" {
		t.Errorf("a failed worker: %+v", hs.Workers)
	}
}

// An instance running beyond a worker's count is a row of its own in
// status, a problem (it keeps its code while deploys move on), named as
// such; one stopped is not shown.
func TestStatusShowsWorkersBeyondTheCount(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1).withWorkers(relV1, "my-app-worker@1", "my-app-worker@2", "my-app-worker@3", "my-app-worker@4")
	h.worker("my-app-worker@4").disabled = true // stopped
	d, _ := fakeDeployer(t, workersYAML, h)
	hs := hostStatus(testCtx(t), d.Config, "web1", h, Balancers{})
	if hs.OK() || len(hs.Workers) != 3 {
		t.Fatalf("status: %+v", hs)
	}
	extra := hs.Workers[2]
	if extra.Unit != "my-app-worker@3" || !extra.BeyondCount || extra.OK() || extra.State != "active" {
		t.Errorf("the instance beyond the count: %+v", extra)
	}
	if !hs.Workers[0].OK() || hs.Workers[0].BeyondCount || !hs.Workers[1].OK() {
		t.Errorf("the worker's own instances: %+v", hs.Workers[:2])
	}
	if n := (Snapshot{Hosts: []HostStatus{hs}}).Problems(); n != 1 {
		t.Errorf("%d problems, want 1", n)
	}
	ts := Transitions(nil, Snapshot{Hosts: []HostStatus{hs}})
	if len(ts) != 1 || ts[0].Kind != "beyond-count" || !ts[0].Problem || !strings.Contains(ts[0].Detail, "sudo systemctl disable --now my-app-worker@3") {
		t.Errorf("transitions: %v", ts)
	}
	if ts := Transitions(&Snapshot{Hosts: []HostStatus{hs}}, Snapshot{Hosts: []HostStatus{hs}}); len(ts) != 0 {
		t.Errorf("still beyond the count at the next poll: %v", ts)
	}
}

// Setup writes a worker's template unit (its link under the release root,
// its stop timeout), enables its instances, and on a host already on
// releases first links the new ones where current points.
func TestSetupWorkers(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(validConfig+"release: {}\nworkers:\n  - {unit: my-app-worker, count: 2, stop_timeout: 20s, exec_start: /usr/bin/node worker.js}\n  - {unit: mailer, count: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var unit string
	for _, f := range Render(cfg, cfg.Ports()) {
		if f.Path == "/etc/systemd/system/my-app-worker@.service" {
			unit = f.Content
		}
		if strings.Contains(f.Path, "mailer") {
			t.Errorf("a unit for a worker without exec_start: %s", f.Path)
		}
	}
	for _, want := range []string{"WorkingDirectory=/srv/my-app/instances/%p@%i\n", "ExecStart=/usr/bin/node worker.js\n", "TimeoutStopSec=20s\n", "StandardOutput=append:/var/log/my-app/%p-%i.log\n"} {
		if !strings.Contains(unit, want) {
			t.Errorf("the worker's unit lacks %q:\n%s", want, unit)
		}
	}
	found := inspection(cfg, true)
	found.Code = "current"
	h := &fakeSetupHost{found: found} // the web units enabled, the workers' not yet
	res, err := setupHost(testCtx(t), cfg, "web1", h, false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(res.Changes, "\n"); !strings.Contains(got, "enable my-app-worker@1 my-app-worker@2 (started if a release is in place)") {
		t.Fatalf("changes:\n%s", got)
	}
	at := verbs(h.applied[0])
	links := h.applied[0][at["links"]]
	if !slices.Equal(links, setupAction{"links", "/srv/my-app", "3", "my-app-worker@1", "my-app-worker@2", "mailer@1"}) || at["links"] > at["start"] {
		t.Errorf("the workers are not linked before they start: %q", h.applied[0])
	}
}

// After a count is lowered, setup stops and disables the instances beyond
// it that run or are enabled (they would start at boot), and leaves one
// stopped and disabled, and the instances within the count, alone; a dry
// run says so and changes nothing.
func TestSetupStopsWorkersBeyondTheCount(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(validConfig+"workers:\n  - {unit: my-app-worker, count: 2, exec_start: /usr/bin/node worker.js}\n"))
	if err != nil {
		t.Fatal(err)
	}
	up := unitState{Load: "loaded", Active: "active", FileState: "enabled", MainPID: 7}
	h := &fakeSetupHost{found: inspection(cfg, true), workers: map[string]unitState{
		"my-app-worker@1":  up,
		"my-app-worker@2":  up,
		"my-app-worker@12": up,
		"my-app-worker@3":  {Load: "loaded", Active: "inactive", FileState: "enabled"},
		"my-app-worker@4":  {Load: "loaded", Active: "failed", FileState: "disabled"},
	}}
	h.found.Enabled = append(h.found.Enabled, "enabled", "enabled") // the workers within the count
	res, err := setupHost(testCtx(t), cfg, "web1", h, true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := "stop and disable my-app-worker@3 my-app-worker@12 (beyond the workers' count; each gets its stop_timeout to finish the job in hand)"
	if got := strings.Join(res.Changes, "\n"); got != want || len(h.applied) != 0 {
		t.Fatalf("dry run: changes %q, applied %q", got, h.applied)
	}
	if _, err := setupHost(testCtx(t), cfg, "web1", h, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	if len(h.applied) != 1 || fmt.Sprint(h.applied[0]) != "[[disable-now 2 my-app-worker@3 my-app-worker@12]]" {
		t.Errorf("applied %q", h.applied)
	}
}

// A worker whose unit the host does not have stops the deploy at the
// preflight, before any change.
func TestWorkerUnitMissingIsRefusedAtPreflight(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001)
	h.worker("w@1").missing = true
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\nworkers: [{unit: w, count: 1}]\n", h)
	if _, err := d.Deploy(testCtx(t)); err == nil || !strings.Contains(err.Error(), "the workers' units w@1 are not installed (w@.service)") {
		t.Fatalf("deploy: %v", err)
	}
	if ops := opsLike(h, "restart "); len(ops) != 0 {
		t.Errorf("restarted %v", ops)
	}
	h.worker("w@1").missing, h.worker("w@1").disabled = false, true
	if _, err := d.Deploy(testCtx(t)); err == nil || !strings.Contains(err.Error(), "the workers' units w@1 are not enabled (a count raised?)") {
		t.Fatalf("deploy with a worker not enabled: %v", err)
	}
	if ops := opsLike(h, "restart "); len(ops) != 0 {
		t.Errorf("restarted %v", ops)
	}
	// A drain does not need the workers.
	d.Targets = map[string][]int{"web1": {3001}}
	if _, err := d.Drain(testCtx(t)); err != nil {
		t.Errorf("drain with a worker not enabled: %v", err)
	}
}

// An instance running beyond a worker's count (the count lowered, the
// extra ones never stopped) stops the deploy at the preflight, naming it:
// it would go on with its old code. Once it is stopped, the deploy runs.
func TestWorkerBeyondTheCountIsRefusedAtPreflight(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001)
	for _, u := range []string{"w@1", "w@2", "w@3", "w@12", "w@02", "other@7"} {
		h.worker(u)
	}
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\nworkers: [{unit: w, count: 2}]\n", h)
	_, err := d.Deploy(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "w@3, w@02, w@12 are running beyond the workers' count (a count lowered?)") ||
		!strings.Contains(err.Error(), "sudo systemctl disable --now w@3 w@02 w@12") || strings.Contains(err.Error(), "other@7") {
		t.Fatalf("deploy: %v", err)
	}
	if ops := opsLike(h, "restart "); len(ops) != 0 {
		t.Errorf("restarted %v", ops)
	}
	for _, u := range []string{"w@3", "w@02", "w@12"} {
		h.worker(u).disabled = true // stopped and disabled
	}
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatalf("deploy once the extra instances are stopped: %v", err)
	}
	if ops := opsLike(h, "restart w@"); len(ops) != 2 {
		t.Errorf("worker restarts %v, want w@1 and w@2", ops)
	}
}

// workers: is checked: a unit and a count, not the web template's name,
// not twice.
func TestWorkersConfigErrors(t *testing.T) {
	for yaml, want := range map[string]string{
		"workers: [{count: 2}]":                               "workers[0].unit: required",
		"workers: [{unit: w}]":                                "workers[0].count: required",
		"workers: [{unit: w, count: 0}]":                      "workers[0].count: required",
		"workers: [{unit: w, count: 300}]":                    "workers[0].count: must be 1..256 or auto",
		"workers: [{unit: w, count: many}]":                   "workers[0].count: must be a number of instances or auto",
		"workers: [{unit: 'w x', count: 1}]":                  "workers[0].unit: must be a template's name",
		"workers: [{unit: my-app, count: 1}]":                 "the web instances' template",
		"workers: [{unit: w, count: 1}, {unit: w, count: 1}]": "workers[1].unit: \"w\" is given twice",
		"workers: [{unit: w, count: 1, stop_timeout: 0s}]":    "workers[0].stop_timeout: must be 1s..1h",
		"workers: [{unit: w, count: 1, exec_start: node}]":    "workers[0].exec_start: must be an absolute program path",
		"workers: [{unit: w, count: 1, restart: always}]":     "unknown key \"restart\"",
	} {
		_, err := ParseConfig("rollout.yaml", []byte(validConfig+yaml+"\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want %q", yaml, err, want)
		}
	}
	cfg, err := ParseConfig("rollout.yaml", []byte(validConfig+"workers: [{unit: w, count: auto}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(cfg.workersForCores(3).WorkerUnits()); got != "[w@1 w@2 w@3]" {
		t.Errorf("count: auto on 3 cores: %s", got)
	}
}

// rollout init finds a template numbered 1, 2, … beside the app's as its
// worker (not a second app), and writes it into the config.
func TestInitFindsWorkers(t *testing.T) {
	out := strings.Replace(discoverOut, "@@rollout@@ wants\n", "my-app-worker@1.service loaded active running worker 1\nmy-app-worker@2.service loaded active running worker 2\n@@rollout@@ wants\n", 1)
	d, _ := parseDiscovery("web1", []byte(out))
	if got := AppNames([]*Discovery{d}); !slices.Equal(got, []string{"auth", "my-app"}) {
		t.Fatalf("apps %v: the worker is not an app", got)
	}
	if len(d.Workers) != 1 || d.Workers[0] != (FoundWorker{Unit: "my-app-worker", Count: 2, Running: 2}) {
		t.Fatalf("workers %+v", d.Workers)
	}
	web1, web2 := discovered("web1", 4, 3000, 3001, 3002, 3003), discovered("web2", 4, 3000, 3001, 3002, 3003)
	web1.Workers = d.Workers
	web2.Workers = []FoundWorker{{Unit: "my-app-worker", Count: 1, Running: 1}, {Unit: "auth-worker", Count: 1}}
	r, err := InitConfig([]*Discovery{web1, web2}, InitOptions{Hosts: []string{"web1", "web2"}, App: "my-app", Now: time.Unix(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig("rollout.yaml", r.YAML)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Workers) != 1 || cfg.Workers[0].Unit != "my-app-worker" || cfg.Workers[0].Count != 2 {
		t.Errorf("workers %+v in:\n%s", cfg.Workers, r.YAML)
	}
	if !slices.ContainsFunc(r.Undecided, func(s string) bool {
		return strings.Contains(s, "web2: worker my-app-worker runs 1 instance(s), another host 2: count is 2")
	}) {
		t.Errorf("undecided %q", r.Undecided)
	}
}

// A resumed deploy that fails puts back the workers an earlier, cut-off
// run had already switched (and this one skipped), not only its own.
func TestResumedDeployRevertsTheWorkersItSkipped(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1).withWorkers(relV1, "my-app-worker@1", "my-app-worker@2")
	h.releases[relV2] = true
	h.relLog = append(h.relLog, ReleaseEntry{ID: relV2, SHA256: testArtifact("release v2").SHA256, Outcome: ReleaseNew})
	for _, p := range []int{3000, 3001, 3002} {
		h.links[p], h.runs[p] = relV2, relV2 // every instance done before the controller died
	}
	w1 := h.worker("my-app-worker@1")
	w1.link, w1.runs = relV2, relV2 // and the first worker
	h.worker("my-app-worker@2").crashOn = "-v2"
	d, _ := fakeDeployer(t, workersYAML, h)
	d.Artifact = testArtifact("release v2")
	rep, err := d.Deploy(testCtx(t))
	if err == nil || rep.Release != relV2 {
		t.Fatalf("deploy: %v, release %s", err, rep.Release)
	}
	backOn(t, h, relV1)
}

// A worker with no release to go back to (a count raised since) does not
// keep the others, or the instances, from going back.
func TestRevertGoesOnPastAWorkerWithNothingToGoBackTo(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1).withWorkers(relV1, "my-app-worker@1", "my-app-worker@2")
	h.worker("my-app-worker@3").crashOn = "-v2" // new: it ran nothing before
	d, _ := fakeDeployer(t, strings.Replace(workersYAML, "count: 2", "count: 3", 1), h)
	d.Artifact = testArtifact("release v2")
	_, err := d.Deploy(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "my-app-worker@3: ran no release before this run") {
		t.Fatalf("deploy: %v", err)
	}
	backOn(t, h, relV1, "my-app-worker@1", "my-app-worker@2")
}

// A worker whose old process never stops holds its restart no longer than
// stop_timeout + health.timeout, and the deploy says so.
func TestWorkerThatNeverStopsIsBounded(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001)
	h.worker("w@1").hang = true
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\nhealth: {timeout: 1s, attempt_timeout: 500ms}\nworkers: [{unit: w, count: 1, stop_timeout: 1s}]\n", h)
	t0 := time.Now()
	_, err := d.Deploy(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "restart web1/w@1: its restart did not end within stop_timeout 1s + health.timeout 1s") {
		t.Fatalf("deploy: %v", err)
	}
	if took := time.Since(t0); took > 30*time.Second {
		t.Errorf("the deploy took %s", took)
	}
}
