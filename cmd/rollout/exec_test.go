package main

import (
	"errors"
	"strings"
	"testing"
)

// exec refuses, as local mistakes (exit 2, before anything connects),
// what it cannot run.
func TestExecRefusesLocally(t *testing.T) {
	cfg, _ := plainConfig(t)
	multi := "../../examples/monorepo.yaml"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"exec", "-c", cfg}, "no command: give it after --"},
		{[]string{"exec", "-c", cfg, "--", ""}, "no command"},
		{[]string{"exec", "-c", cfg, "--release", "20240501120000-v1", "--", "true"}, "--release needs the release: section"},
		{[]string{"exec", "-c", cfg, "--host", "10.0.0.9", "--", "true"}, "--host 10.0.0.9 is not one of the hosts (127.0.0.1)"},
		{[]string{"exec", "-c", cfg, "--host", "127.0.0.1", "--all", "--", "true"}, "--host and --all: give one"},
		{[]string{"exec", "-c", cfg, "--hosts", "127.0.0.1,127.0.0.2", "--all", "-t", "--", "node"}, "--tty runs on one host"},
		{[]string{"exec", "-c", cfg, "-t", "--", "node"}, "--tty needs a terminal"},
		{[]string{"exec", "-c", cfg, "--", "sh", "-c", strings.Repeat("x", 70<<10)}, "at most 65536"},
		{[]string{"exec", "-c", multi, "--", "true"}, "exec runs in one app: pick it with --app"},
		{[]string{"exec", "-c", cfg, "-o", "json", "--", "true"}, "unknown flag --o"},
	} {
		out, errOut, code := runCLI(t, c.args...)
		if code != exitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("%q: exit %d (want %d, %q):\n%s%s", c.args, code, exitUsage, c.want, out, errOut)
		}
	}
}

// The command's exit status is rollout's, said by no line of rollout's on
// one host; with --all each failure is a line and the first one decides.
func TestExecExitStatus(t *testing.T) {
	var b strings.Builder
	if code := exitCode(commandExit{"10.0.0.5", 7}, false, &b); code != 7 || b.Len() != 0 {
		t.Errorf("one host: exit %d, said %q", code, b.String())
	}
	b.Reset()
	all := hostFailures{commandExit{"10.0.0.5", 4}, errors.New("10.0.0.6: ssh: connection refused")}
	if code := exitCode(all, false, &b); code != 4 || b.String() != "rollout: 10.0.0.5: the command exited 4\nrollout: 10.0.0.6: ssh: connection refused\n" {
		t.Errorf("--all: exit %d, said %q", code, b.String())
	}
	b.Reset()
	if code := exitCode(commandExit{"10.0.0.5", 7}, true, &b); code != 7 {
		t.Errorf("a command that exited 7 after a Ctrl-C it handled: exit %d", code)
	}
}
