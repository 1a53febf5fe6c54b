package main

import (
	"strings"
	"testing"
)

func TestLoopbackOnly(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:8080": true, "[::1]:8080": true, "localhost:80": true, "0.0.0.0:8080": false, "10.0.0.5:80": false, "[::]:80": false} {
		if got, err := loopbackOnly(addr); err != nil || got != want {
			t.Errorf("%s: %v %v, want %v", addr, got, err, want)
		}
	}
	if _, err := loopbackOnly("example.com:80"); err == nil {
		t.Error("a host name accepted")
	}
}

func TestDashboardNeedsATokenBeyondLoopback(t *testing.T) {
	_, errOut, code := runCLI(t, "dashboard", "-c", "../../examples/rollout.yaml", "--listen", "0.0.0.0:0")
	if code != exitUsage || !strings.Contains(errOut, "beyond loopback: give a token of at least 16 characters") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}
