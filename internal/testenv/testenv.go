// Package testenv is what a test says when the machine lacks what it needs
// (root, a command): it skips on a developer's machine, and fails where a
// skip would make a run green without running what the test guards: under
// CI (CI=true) and `make test` (ROLLOUT_STRICT=1).
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Strict reports whether a test that cannot run must fail instead of
// skipping.
func Strict() bool {
	return os.Getenv("CI") == "true" || os.Getenv("ROLLOUT_STRICT") == "1"
}

// Skip skips the test with the reason, or fails it when Strict.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("cannot run: %s (a skip is a failure under CI=true or ROLLOUT_STRICT=1)", msg)
	}
	t.Skip(msg)
}

// NeedRoot skips (or fails) a test that needs root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root")
	}
}

// NeedCommand returns the path of a command the test needs, or skips (or
// fails) the test.
func NeedCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Skip(t, "%s is not installed", name)
	}
	return p
}
