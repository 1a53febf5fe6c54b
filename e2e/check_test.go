package e2e

import (
	"context"
	"crypto/sha256"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// rollout check --live runs the deploy's preflight on a real host and
// changes nothing (no lock taken, no history line, the upstream file
// untouched); a check that fails there, or a lock held by a running
// deploy, exits 3 as the deploy would.
func TestCheckLiveChangesNothing(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	if err := fleet.StageRelease(context.Background(), h, testbed.GoodRelease("v2")); err != nil {
		t.Fatal(err)
	}
	cfg := fleetConfig(t, "3s")
	only := []string{"-c", cfg, "--hosts", h.Addr}
	history := func() string {
		out, _ := rollout(t, append([]string{"history", "--output", "json"}, only...)...)
		return out
	}
	histBefore, upBefore := history(), sha256.Sum256([]byte(upstreamFile(t, h)))

	out, code := rollout(t, append([]string{"check", "--live"}, only...)...)
	if code != 0 || !strings.Contains(out, "free (read, not taken)") || !strings.Contains(out, h.Addr+"  ok") {
		t.Fatalf("check --live exited %d:\n%s", code, out)
	}
	if lock, _ := rollout(t, append([]string{"lock", "status"}, only...)...); !strings.Contains(lock, "free") {
		t.Errorf("the lock is not free after the check:\n%s", lock)
	}
	if history() != histBefore || sha256.Sum256([]byte(upstreamFile(t, h))) != upBefore {
		t.Error("the check changed the history or the upstream file")
	}

	// The upstream block the config names is not in the file: the
	// preflight refuses, as the deploy's would, with exit 3.
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(b), "upstream: my_app", "upstream: not_my_app", 1)
	badCfg := cfg + ".bad.yaml"
	if err := os.WriteFile(badCfg, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := rollout(t, "check", "--live", "-c", badCfg, "--hosts", h.Addr); code != 3 || !strings.Contains(out, "not_my_app") {
		t.Errorf("check of a missing upstream block exited %d:\n%s", code, out)
	}

	// A deploy running: the check says who holds the lock, exit 3, and the
	// deploy goes on unharmed.
	done := make(chan struct{})
	var deployOut string
	var deployCode int
	go func() {
		defer close(done)
		deployOut, deployCode = rollout(t, append([]string{"deploy", "--version", "v2"}, only...)...)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		lock, _ := rollout(t, append([]string{"lock", "status"}, only...)...)
		if strings.Contains(lock, "held") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deploy never took the lock:\n%s", lock)
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, code = rollout(t, append([]string{"check", "--live"}, only...)...)
	if code != 3 || !strings.Contains(out, "deploy lock held by") {
		t.Errorf("check during a deploy exited %d:\n%s", code, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the deploy did not finish")
	}
	if deployCode != 0 {
		t.Errorf("the deploy beside the check exited %d:\n%s", deployCode, deployOut)
	}
}
