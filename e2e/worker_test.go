package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// Workers (workers:) on a real host: setup writes their template unit,
// links each to the release and starts them; a deploy restarts them after
// the web instances while jobs keep arriving, and no job is lost or done
// twice; a release whose worker cannot start is reverted with the
// worker's own words; status and logs show them.
func TestWorkersConsumeAQueueThroughADeploy(t *testing.T) {
	ctx := context.Background()
	h := fleet.Hosts[0]
	hosts := []*testbed.Host{h}
	cfg := releaseConfig(t, hosts, "workers:\n  - {unit: my-app-worker, count: 2, stop_timeout: 10s, exec_start: /usr/bin/node worker.js}\n")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), "setup:\n", "setup:\n  uploads_dir: /srv/queue\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	resetHost(t, h)
	t.Cleanup(func() { resetHost(t, h) })
	if out, err := fleet.RunRoot(ctx, h, "echo QUEUE_DIR=/srv/queue >> /etc/my-app/.env"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	out, code := rollout(t, "setup", "-c", cfg)
	if code != 0 || !strings.Contains(out, "write /etc/systemd/system/my-app-worker@.service") || !strings.Contains(out, "my-app-worker@1 my-app-worker@2") {
		t.Fatalf("setup exited %d, or did not write and enable the workers:\n%s", code, out)
	}
	if out, err := fleet.RunRoot(ctx, h, "systemctl is-active my-app-worker@1 my-app-worker@2 && readlink /srv/my-app/instances/my-app-worker@1"); err != nil || !strings.Contains(out, "../releases/") {
		t.Fatalf("the workers do not run from their links after setup: %v\n%s", err, out)
	}

	// Jobs arrive throughout the deploy: 3,000 of them, about 200 a second.
	const jobs = 3000
	fill := make(chan error, 1)
	go func() {
		_, err := fleet.RunRoot(ctx, h, fmt.Sprintf(`i=0; while [ $i -lt %d ]; do : > /srv/queue/todo/job-$(printf %%05d $i); i=$((i+1)); [ $((i %% 20)) -ne 0 ] || sleep 0.1; done`, jobs))
		fill <- err
	}()
	out, code = rollout(t, "deploy", "-c", cfg, "--version", "v2", "--artifact", artifactDir(t, testbed.GoodRelease("v2")))
	if code != 0 {
		t.Fatalf("deploy exited %d:\n%s", code, out)
	}
	for _, want := range []string{"my-app-worker@1", "my-app-worker@2"} {
		if !strings.Contains(out, h.Addr+"/"+want) || !strings.Contains(out, "same process for 1s") {
			t.Errorf("the deploy does not show %s restarted and stable:\n%s", want, out)
		}
	}
	if err := <-fill; err != nil {
		t.Fatalf("filling the queue: %v", err)
	}
	done := drainedQueue(t, h, jobs)
	byVersion := map[string]int{}
	seen := map[string]int{}
	for _, line := range done {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("done.log line %q", line)
		}
		seen[f[0]]++
		byVersion[f[2]]++
	}
	var twice []string
	for job, n := range seen {
		if n > 1 {
			twice = append(twice, job)
		}
	}
	sort.Strings(twice)
	if len(seen) != jobs || len(done) != jobs || len(twice) > 0 {
		t.Errorf("%d jobs done (%d lines), want each of %d once; done more than once: %v", len(seen), len(done), jobs, twice)
	}
	if byVersion["v1"] == 0 || byVersion["v2"] == 0 {
		t.Errorf("jobs by version %v: the deploy did not happen while jobs came", byVersion)
	}
	t.Logf("jobs by version: %v", byVersion)
	v2 := releasesOf(t, cfg)[0].Current
	if out, code := rollout(t, "status", "-c", cfg); code != 0 || strings.Count(out, "my-app-worker@") != 2 || strings.Count(out, v2) < instances+2 {
		t.Errorf("status exited %d; want both workers shown running %s:\n%s", code, v2, out)
	}

	// A release whose worker cannot start: reverted, with its words.
	broken := testbed.GoodRelease("v3")
	broken.WorkerCrash = true
	out, code = rollout(t, "deploy", "-c", cfg, "--version", "v3", "--artifact", artifactDir(t, broken))
	if code != 1 || !strings.Contains(out, "FATAL: worker cannot start (version v3)") || !strings.Contains(out, "reverted to "+v2) {
		t.Errorf("the deploy of a worker that cannot start exited %d (want 1, reverted to %s, with the worker's words):\n%s", code, v2, out)
	}
	js, code := rollout(t, "status", "-c", cfg, "-o", "json")
	if code != 0 || strings.Count(js, `"release":"`+v2+`"`) != instances+2 {
		t.Errorf("after the revert, status exited %d; want every instance and worker on %s:\n%s", code, v2, js)
	}
	if out, code := rollout(t, "logs", "-c", cfg, "--lines", "3"); code != 0 || !strings.Contains(out, h.Addr+"/my-app-worker@2 ") {
		t.Errorf("logs exited %d or show no worker line:\n%s", code, out)
	}
	if out, code := rollout(t, "releases", "-c", cfg); code != 0 || !strings.Contains(out, "3000,3001,3002,3003,my-app-worker@1,my-app-worker@2") {
		t.Errorf("releases exited %d, or does not show the workers on %s:\n%s", code, v2, out)
	}
	// rollout init finds them beside the app.
	initCfg := filepath.Join(t.TempDir(), "rollout.yaml")
	if out, code := rollout(t, initArgs(initCfg, hosts)...); code != 0 || !strings.Contains(out, "worker my-app-worker: my-app-worker@.service, instances 1-2 (2 running)") {
		t.Errorf("init exited %d, or did not find the workers:\n%s", code, out)
	} else if b, err := os.ReadFile(initCfg); err != nil || !strings.Contains(string(b), "workers:\n  - unit: my-app-worker\n    count: 2\n") {
		t.Errorf("init wrote no worker (%v):\n%s", err, b)
	}
	// A worker that stops is a problem for watch and status.
	if out, err := fleet.RunRoot(ctx, h, "systemctl stop my-app-worker@2"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, code := rollout(t, "watch", "--once", "-c", cfg); code != 1 || !strings.Contains(out, h.Addr+"/my-app-worker@2 down: inactive/dead") {
		t.Errorf("watch --once with a worker stopped exited %d (want 1, saying it is down):\n%s", code, out)
	}
	if out, code := rollout(t, "status", "-c", cfg); code != 1 || !strings.Contains(out, "FAIL: not running") {
		t.Errorf("status with a worker stopped exited %d (want 1):\n%s", code, out)
	}

	// The count lowered to 1 while my-app-worker@2 runs: the deploy stops
	// at the preflight, naming it (it would go on with its old code), and
	// restarts nothing.
	if out, err := fleet.RunRoot(ctx, h, "systemctl start my-app-worker@2"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	b, err = os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lowered := filepath.Join(t.TempDir(), "rollout.yaml")
	if err := os.WriteFile(lowered, []byte(strings.Replace(string(b), "count: 2,", "count: 1,", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	pids := "systemctl show -p MainPID --value my-app-worker@1 my-app-worker@2 my-app@3000"
	before, _ := fleet.Run(ctx, h, pids)
	out, code = rollout(t, "deploy", "-c", lowered, "--version", "v4", "--artifact", artifactDir(t, testbed.GoodRelease("v4")))
	if code == 0 || !strings.Contains(out, "my-app-worker@2 is running beyond the workers' count (a count lowered?)") {
		t.Errorf("a deploy with a worker beyond the count exited %d (want it refused, naming my-app-worker@2):\n%s", code, out)
	}
	if after, _ := fleet.Run(ctx, h, pids); after != before {
		t.Errorf("the refused deploy restarted something: MainPIDs %q, then %q", before, after)
	}
	// status names it as a problem, not as a worker that is fine.
	if out, code := rollout(t, "status", "-c", lowered, "--hosts", h.Addr); code != 1 || !strings.Contains(out, "my-app-worker@2") || !strings.Contains(out, "FAIL: beyond the workers' count") {
		t.Errorf("status with my-app-worker@2 beyond the count exited %d (want 1, naming it):\n%s", code, out)
	}
	// setup stops and disables it (a dry run first says so and changes
	// nothing); then status has nothing to say.
	if out, code := rollout(t, "setup", "-c", lowered, "--hosts", h.Addr, "--dry-run"); code != 0 || !strings.Contains(out, "stop and disable my-app-worker@2 (beyond the workers' count") {
		t.Errorf("setup --dry-run with my-app-worker@2 beyond the count exited %d:\n%s", code, out)
	}
	if state, _ := fleet.Run(ctx, h, "systemctl is-active my-app-worker@2 || true"); strings.TrimSpace(state) != "active" {
		t.Errorf("the dry run stopped my-app-worker@2: %q", state)
	}
	if out, code := rollout(t, "setup", "-c", lowered, "--hosts", h.Addr); code != 0 || !strings.Contains(out, "stop and disable my-app-worker@2") {
		t.Errorf("setup with my-app-worker@2 beyond the count exited %d:\n%s", code, out)
	}
	if state, _ := fleet.Run(ctx, h, "systemctl is-active my-app-worker@2 || true; systemctl is-enabled my-app-worker@2 || true; systemctl is-active my-app-worker@1"); state != "inactive\ndisabled\nactive\n" {
		t.Errorf("after setup, my-app-worker@2 and @1: %q (want inactive, disabled; active)", state)
	}
	if out, code := rollout(t, "status", "-c", lowered, "--hosts", h.Addr); code != 0 || strings.Contains(out, "my-app-worker@2") {
		t.Errorf("status after setup exited %d:\n%s", code, out)
	}
}

// drainedQueue waits until the host's queue has no job left to do, and
// returns done.log's lines.
func drainedQueue(t *testing.T, h *testbed.Host, jobs int) []string {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for {
		left, err := fleet.RunRoot(ctx, h, "ls /srv/queue/todo /srv/queue/doing | grep -c job- || true")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(left) == "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s jobs still queued after 60s", strings.TrimSpace(left))
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, err := fleet.RunRoot(ctx, h, "cat /srv/queue/done.log")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(out), "\n")
}
