package testbed

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/internal/testenv"
)

// A run killed with SIGKILL after booting leaves containers, namespaces and
// links behind; the next Up must clean them and boot, and Down must leave
// nothing.
func TestUpAfterKilledRun(t *testing.T) {
	testenv.NeedRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	child := exec.CommandContext(ctx, os.Args[0], "-test.timeout=5m")
	child.Env = append(os.Environ(), "TESTBED_HELPER=1")
	child.Stderr = os.Stderr
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	ready := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if sc.Text() == "READY" {
			ready = true
			break
		}
	}
	if !ready {
		_ = child.Wait()
		t.Fatal("helper never reported its testbed up")
	}
	_ = child.Process.Kill()
	_ = child.Wait()

	n := newNetwork(helperSlot)
	if len(nspawnPIDs(n.prefix)) == 0 {
		t.Fatal("killed run left no container: the test would prove nothing")
	}
	if !netnsExists(t, n.hostName(0)) {
		t.Fatal("killed run left no namespace: the test would prove nothing")
	}

	tb, err := Up(ctx, Options{Hosts: 1, Slot: helperSlot})
	if err != nil {
		t.Fatalf("up after a killed run: %v", err)
	}
	out, err := tb.Run(ctx, tb.Hosts[0], "systemctl is-active ssh nginx")
	if err != nil || strings.Count(out, "active") != 2 {
		t.Errorf("host after recovery: %q, %v", out, err)
	}
	if err := tb.Down(ctx); err != nil {
		t.Fatalf("down: %v", err)
	}
	if pids := nspawnPIDs(n.prefix); len(pids) != 0 {
		t.Errorf("containers left after down: %v", pids)
	}
	if netnsExists(t, n.hostName(0)) {
		t.Errorf("namespace %s left after down", n.hostName(0))
	}
	if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(out), n.prefix) {
		t.Errorf("links left after down:\n%s", out)
	}
	// Down is idempotent.
	if err := tb.Down(ctx); err != nil {
		t.Errorf("second down: %v", err)
	}
}

// helperSlot is the slot of this package's testbeds: not the e2e tests'.
const helperSlot = 9

// TestMain is also the process TestUpAfterKilledRun kills: with
// TESTBED_HELPER=1 it boots a testbed, says READY and hangs.
func TestMain(m *testing.M) {
	if os.Getenv("TESTBED_HELPER") == "1" {
		if _, err := Up(context.Background(), Options{Hosts: 1, Slot: helperSlot}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("READY")
		select {}
	}
	os.Exit(m.Run())
}

func netnsExists(t *testing.T, name string) bool {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}
