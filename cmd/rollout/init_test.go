package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInitUsage(t *testing.T) {
	dir := t.TempDir()
	_, errOut, code := runCLI(t, "init", "-c", filepath.Join(dir, "rollout.yaml"))
	if code != exitUsage || !strings.Contains(errOut, "--host is required") {
		t.Fatalf("init without --host: exit %d: %s", code, errOut)
	}
	existing := filepath.Join(dir, "existing.yaml")
	if err := os.WriteFile(existing, []byte("mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Refused before connecting: the host does not resolve.
	_, errOut, code = runCLI(t, "init", "-c", existing, "--host", "host.invalid")
	if code != exitUsage || !strings.Contains(errOut, "does not overwrite it without --force") {
		t.Fatalf("init over an existing file: exit %d: %s", code, errOut)
	}
	if b, _ := os.ReadFile(existing); string(b) != "mine\n" {
		t.Fatalf("the existing file changed: %q", b)
	}
}

func TestRanges(t *testing.T) {
	for want, ports := range map[string][]int{"none": nil, "3000": {3000}, "3000-3003": {3000, 3001, 3002, 3003}, "3000-3001, 3005, 3007-3008": {3000, 3001, 3005, 3007, 3008}} {
		if got := ranges(ports); got != want {
			t.Errorf("ranges(%v) = %q, want %q", ports, got, want)
		}
	}
}
