package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// oneHostConfig is fleetConfig for the first host only, with extra lines.
func oneHostConfig(t *testing.T, extra string) string {
	t.Helper()
	path := fleetConfig(t, "0s")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "  - "+fleet.Hosts[1].Addr+"\n", "", 1) + extra
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// activateAndRestart makes release r live on h and restarts one instance.
func activateAndRestart(t *testing.T, h *testbed.Host, r testbed.Release, port string) {
	t.Helper()
	if err := fleet.StageRelease(context.Background(), h, r); err != nil {
		t.Fatal(err)
	}
	if out, err := fleet.Run(context.Background(), h, "sudo -n /usr/local/sbin/my-app-activate "+r.Version+" && sudo -n systemctl restart my-app@"+port); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

type statusJSON struct {
	Hosts []struct {
		Host      string `json:"host"`
		Error     string `json:"error"`
		Instances []struct {
			Port     int    `json:"port"`
			State    string `json:"state"`
			PID      int    `json:"pid"`
			Restarts int    `json:"restarts"`
			InNginx  bool   `json:"in_nginx"`
			Healthy  bool   `json:"healthy"`
			Health   string `json:"health"`
			Uptime   int64  `json:"uptime_ns"`
			Leftover bool   `json:"leftover"`
		} `json:"instances"`
	} `json:"hosts"`
}

func TestStatusShowsACrashLoopingInstance(t *testing.T) {
	resetFleet(t)
	cfg := fleetConfig(t, "0s")
	out, code := rollout(t, "status", "-c", cfg)
	if code != 0 {
		t.Fatalf("status of a healthy fleet exited %d", code)
	}
	if n := strings.Count(out, "active/running"); n != fleetHosts*instances {
		t.Errorf("%d instances active/running in the table, want %d", n, fleetHosts*instances)
	}

	// One instance of the first host crash-loops on a release missing an
	// environment variable.
	bad := testbed.GoodRelease("v6")
	bad.RequiredEnv = []string{"PAYMENT_API_KEY"}
	activateAndRestart(t, fleet.Hosts[0], bad, "3002")
	defer resetHost(t, fleet.Hosts[0])
	time.Sleep(1500 * time.Millisecond) // systemd restarts it (RestartSec) at least once

	out, code = rollout(t, "status", "-c", cfg, "--output", "json")
	if code != 1 {
		t.Errorf("status with a crash-looping instance exited %d, want 1", code)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	if len(st.Hosts) != fleetHosts {
		t.Fatalf("%d hosts in JSON", len(st.Hosts))
	}
	for _, h := range st.Hosts {
		for _, i := range h.Instances {
			broken := h.Host == fleet.Hosts[0].Addr && i.Port == 3002
			switch {
			case broken && (i.Healthy || (i.State == "active" && i.Restarts == 0)):
				t.Errorf("the crash-looping instance looks fine: %+v", i)
			case broken && i.Health == "":
				t.Errorf("no health failure given for %d: %+v", i.Port, i)
			case !broken && (!i.Healthy || !i.InNginx || i.State != "active" || i.PID == 0 || i.Uptime <= 0):
				t.Errorf("%s:%d should be serving: %+v", h.Host, i.Port, i)
			}
		}
	}
	out, _ = rollout(t, "status", "-c", cfg)
	if !strings.Contains(out, "FAIL") {
		t.Errorf("the table does not flag the instance:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer safe for a subprocess and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestLogsFollowSeesNewLines(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	defer resetHost(t, h)
	cfg := oneHostConfig(t, "")
	var out syncBuffer
	cmd := exec.Command(rolloutBin, "logs", "-c", cfg, "--follow", "--port", "3001", "--lines", "1")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, "the first lines", 20*time.Second, func() bool { return strings.Contains(out.String(), h.Addr+":3001 ") })

	// The instance restarts on another release: its new process writes
	// its start line, which must arrive while following.
	activateAndRestart(t, h, testbed.GoodRelease("v5"), "3001")
	want := h.Addr + ":3001 my-app v5 listening on 127.0.0.1:3001"
	waitFor(t, "the new process's line", 20*time.Second, func() bool { return strings.Contains(out.String(), want) })

	// Ctrl-C ends it cleanly.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("logs --follow after Ctrl-C: %v\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Errorf("logs --follow did not stop on Ctrl-C")
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !strings.HasPrefix(line, h.Addr+":3001 ") {
			t.Errorf("line without its host:port prefix: %q", line)
		}
	}
}

func TestDeployLock(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	defer resetHost(t, h)
	cfg := oneHostConfig(t, "lock_stale_after: 3s\n")

	// Two deploys at once: exactly one runs, the other names the holder
	// and changes nothing.
	type result struct {
		out  string
		code int
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			cmd := exec.Command(rolloutBin, "deploy", "-c", cfg, "--version", "v1")
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			results <- result{string(out), code}
		}()
	}
	a, b := <-results, <-results
	if a.code != 0 {
		a, b = b, a
	}
	if a.code != 0 || b.code != 3 {
		t.Fatalf("exit codes %d and %d, want 0 and 3:\n%s\n---\n%s", a.code, b.code, a.out, b.out)
	}
	if !strings.Contains(b.out, "deploy lock held by ") || !strings.Contains(b.out, "(deploy v1, pid ") {
		t.Errorf("the refused deploy does not name the holder:\n%s", b.out)
	}

	// A controller killed mid-deploy on another machine (a crashed laptop)
	// leaves its lock; it shows, turns stale, blocks deploys until released
	// or broken. (One of this machine is stale at once: see
	// TestFaultControllerKilled.)
	killMidDeploy := func() {
		t.Helper()
		cmd := exec.Command(rolloutBin, "deploy", "-c", cfg, "--version", "v1")
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the deploy to restart an instance", 30*time.Second, func() bool { return strings.Contains(out.String(), "restart     ok") })
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if out, err := fleet.Run(context.Background(), fleet.Hosts[0], `sudo -n sed -i 's/"from":"[^"]*"/"from":"another-laptop"/' /var/lib/rollout/my-app/lock/info`); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	killMidDeploy()
	out, code := rollout(t, "lock", "status", "-c", cfg)
	if code != 0 || !strings.Contains(out, "held") || !strings.Contains(out, "(deploy v1, pid ") {
		t.Errorf("lock status after a killed deploy (exit %d):\n%s", code, out)
	}
	if out, code := rollout(t, "lock", "release", "-c", cfg); code == 0 || !strings.Contains(out, "--force") {
		t.Errorf("a fresh lock was released without --force (exit %d):\n%s", code, out)
	}
	waitStale := func() {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second) // lock_stale_after: 3s
		for {
			out, _ := rollout(t, "lock", "status", "-c", cfg)
			if strings.Contains(out, "STALE") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the lock is not reported stale:\n%s", out)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	waitStale()
	if out, code := rollout(t, "deploy", "-c", cfg, "--version", "v1"); code != 3 || !strings.Contains(out, "stale") {
		t.Errorf("deploy over a stale lock exited %d, want 3 naming it stale:\n%s", code, out)
	}
	if out, code := rollout(t, "lock", "release", "-c", cfg); code != 0 || !strings.Contains(out, "released the lock") {
		t.Errorf("lock release of a stale lock exited %d:\n%s", code, out)
	}
	if out, _ := rollout(t, "lock", "status", "-c", cfg); !strings.Contains(out, "free") {
		t.Errorf("the lock is not free after release:\n%s", out)
	}
	if _, code := rollout(t, "deploy", "-c", cfg, "--version", "v1"); code != 0 {
		t.Errorf("deploy after the release exited %d", code)
	}

	killMidDeploy()
	waitStale()
	if out, code := rollout(t, "deploy", "-c", cfg, "--version", "v1", "--break-stale-lock"); code != 0 {
		t.Errorf("deploy --break-stale-lock exited %d:\n%s", code, out)
	}
	if out, _ := rollout(t, "lock", "status", "-c", cfg); !strings.Contains(out, "free") {
		t.Errorf("the lock is not free after the deploy:\n%s", out)
	}

	// Every finished deploy is in the history: the first, the one after
	// the release and the one that broke the stale lock; the refused ones
	// changed nothing and wrote nothing.
	out, _ = rollout(t, "history", "-c", cfg, "--output", "json")
	ok := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var e struct{ Op, Version, Outcome, User string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Op == "deploy" && e.Version == "v1" && e.Outcome == "ok" && e.User != "" {
			ok++
		}
	}
	if ok != 3 {
		t.Errorf("%d successful deploys in the history, want 3:\n%s", ok, out)
	}
}

// A host that drops while following: rollout says so and keeps following
// the others.
func TestLogsFollowSurvivesAHostDropping(t *testing.T) {
	gone, stays := fleet.Hosts[1], fleet.Hosts[0]
	defer resetHost(t, gone)
	cfg := fleetConfig(t, "0s")
	var stdout, stderr syncBuffer
	cmd := exec.Command(rolloutBin, "logs", "-c", cfg, "--follow", "--port", "3001", "--lines", "1")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, "both hosts' lines", 20*time.Second, func() bool {
		return strings.Contains(stdout.String(), gone.Addr+":3001 ") && strings.Contains(stdout.String(), stays.Addr+":3001 ")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := fleet.Reboot(ctx, gone); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the dropped host to be reported", 60*time.Second, func() bool {
		return strings.Contains(stderr.String(), gone.Addr+": stopped following")
	})
	// The other host is still followed.
	activateAndRestart(t, stays, testbed.GoodRelease("v5"), "3001")
	defer resetHost(t, stays)
	waitFor(t, "the remaining host's new line", 20*time.Second, func() bool {
		return strings.Contains(stdout.String(), stays.Addr+":3001 my-app v5 listening")
	})
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
}
