package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// Ctrl-C mid-instance: nothing new starts, the instance in progress goes
// back into Nginx (it is healthy), the summary prints, and rollout exits
// 130 — under load, without a failed request.
func TestInterruptPutsInstanceBack(t *testing.T) {
	resetFleet(t)
	stageEverywhere(t, testbed.GoodRelease("v2"))
	h := fleet.Hosts[0]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var stdout bytes.Buffer
	var code int
	var progress []string
	results := underLoad(t, fleet.Hosts, func() {
		cmd := exec.CommandContext(ctx, rolloutBin, "deploy", "-c", fleetConfig(t, "1s"), "--version", "v2", "--hosts", h.Addr)
		cmd.Stdout = &stdout
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			progress = append(progress, sc.Text())
			// Interrupt while the second instance is being health-checked.
			if !signalled && strings.Contains(sc.Text(), ":3001") && strings.Contains(sc.Text(), "wait-active ok") {
				_ = cmd.Process.Signal(syscall.SIGINT)
				signalled = true
			}
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		if !signalled {
			t.Fatalf("never reached the second instance:\n%s", strings.Join(progress, "\n"))
		}
	})
	t.Logf("progress:\n%s\nsummary:\n%s", strings.Join(progress, "\n"), stdout.String())
	if code != 130 {
		t.Errorf("exit %d, want 130", code)
	}
	for _, r := range results {
		if r.Failed != 0 {
			t.Errorf("failed requests: %d (%v)", r.Failed, r.Failures)
		}
	}
	if !strings.Contains(stdout.String(), "interrupted") {
		t.Errorf("summary does not say the host was interrupted")
	}
	if up := upstreamFile(t, h); strings.Contains(up, "down") {
		t.Errorf("an instance was left out of nginx after the interrupt:\n%s", up)
	}
	nginxTestPasses(t, h)
	served := versionsServed(t, h)
	if served[basePort] != "v2" || served[basePort+2] != "v1" || served[basePort+3] != "v1" {
		t.Errorf("after the interrupt: %v; want 3000 on v2, 3002-3003 untouched on v1", served)
	}
}
