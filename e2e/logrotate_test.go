package e2e

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// rollout setup installs a logrotate rule for the instances' output files
// and a timer that runs it: a log past setup.log_rotate_size is rotated
// (copytruncate), the instance writes on into the same file from its
// start, rollout logs reads it, and log_rotate_keep copies are kept.
func TestLogRotation(t *testing.T) {
	ctx := context.Background()
	h := fleet.Hosts[0]
	cfg := releaseConfig(t, []*testbed.Host{h}, "")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(b), "  memory_max: 256M\n", "  memory_max: 256M\n  log_rotate_size: 1M\n  log_rotate_keep: 2\n", 1)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	moveToReleases(t, cfg, []*testbed.Host{h})
	if out, err := fleet.RunRoot(ctx, h, "systemctl is-enabled rollout-logrotate-my-app.timer && systemctl is-active rollout-logrotate-my-app.timer"); err != nil {
		t.Fatalf("the rotation's timer: %v\n%s", err, out)
	}
	const log = "/var/log/my-app/stdout-3000.log"
	size := func(file string) int {
		out, err := fleet.RunRoot(ctx, h, "stat -c %s "+file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return n
	}
	// A busy instance's output: 1.2 MB more than 1M, then what the timer runs.
	rotate := func() {
		t.Helper()
		if out, err := fleet.RunRoot(ctx, h, "head -c 1200000 /dev/zero | tr '\\0' x >>"+log+" && echo >>"+log+" && systemctl start rollout-logrotate-my-app.service"); err != nil {
			t.Fatalf("rotate: %v\n%s", err, out)
		}
	}
	rotate()
	if n := size(log); n > 100_000 {
		t.Errorf("%s is %d bytes after the rotation", log, n)
	}
	if n := size(log + ".1"); n < 1_200_000 {
		t.Errorf("the rotated copy %s.1 is %d bytes", log, n)
	}
	// The instance writes on into the same file.
	if out, code := rollout(t, "restart", "-c", cfg, "--port", "3000"); code != 0 {
		t.Fatalf("restart exited %d:\n%s", code, out)
	}
	if out, err := fleet.RunRoot(ctx, h, "grep -c 'listening on' "+log); err != nil || strings.TrimSpace(out) != "1" {
		t.Errorf("the restarted instance's start line is not in %s after the rotation: %v %q", log, err, out)
	}
	if out, code := rollout(t, "logs", "-c", cfg, "--port", "3000", "--lines", "5"); code != 0 || !strings.Contains(out, "listening on") {
		t.Errorf("logs exited %d, or does not show the line written after the rotation:\n%s", code, out)
	}
	// Two more: two copies kept, the older compressed.
	rotate()
	rotate()
	out, err := fleet.RunRoot(ctx, h, "ls /var/log/my-app/")
	if err != nil || !strings.Contains(out, "stdout-3000.log.1\n") || !strings.Contains(out, "stdout-3000.log.2.gz\n") || strings.Contains(out, "stdout-3000.log.3") {
		t.Errorf("after three rotations (keep 2): %v\n%s", err, out)
	}
}
