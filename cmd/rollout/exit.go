package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/rollout-dev/rollout/deployer"
	"github.com/rollout-dev/rollout/sshexec"
)

// Exit codes, mapped from errors in one place (exitCode), the same for
// every command.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitPreflight   = 3
	exitInterrupted = 130
)

// exitCodes is the table --help, the man page and docs/troubleshooting.md
// show (a test holds the docs to it).
var exitCodes = []struct {
	code    int
	meaning string
}{
	{exitOK, "done: every host deployed, every instance serving, every host read"},
	{exitFailed, "failed on a host after the checks (see the summary), or an instance is not serving (status, watch --once)"},
	{exitUsage, "a local mistake, before anything connects: bad flags, arguments, config, secrets, an artifact refused, or an SSH key or known_hosts on this machine that cannot be used (the flag, variable or file is named)"},
	{exitPreflight, "nothing changed where it failed: a host could not be reached or read, or a check before any change failed (host key, sudo, units, nginx -t, the upstream, the release layout, a lock held by someone else, a local before-hook, the release's upload or prepare, no release to roll back to, no paused rollout, the probe's target)"},
	{exitInterrupted, "interrupted (Ctrl-C, SIGTERM): the instance in progress went back into the balancer if healthy, stayed out if not"},
}

// exitCodesText is the table as --help and the man page print it.
func exitCodesText() string {
	var b strings.Builder
	b.WriteString("Exit codes (every command):\n")
	for _, e := range exitCodes {
		fmt.Fprintf(&b, "   %-4d %s\n", e.code, e.meaning)
	}
	return b.String()
}

// usageError marks errors in flags or config.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error, interrupted bool, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	if ce, ok := err.(commandExit); ok {
		return ce.code // rollout exec: the command's own status; it said what it had to
	}
	// One line per failure, each saying it is rollout's.
	for _, line := range strings.Split(strings.TrimRight(err.Error(), "\n"), "\n") {
		fmt.Fprintln(stderr, "rollout:", line)
	}
	var ue usageError
	var le *sshexec.LocalError
	var se *deployer.StepError
	var unreachable *deployer.UnreachableError
	var ce commandExit
	switch {
	case interrupted:
		return exitInterrupted
	case errors.As(err, &ce):
		return ce.code
	case errors.As(err, &ue), errors.As(err, &le), strings.HasPrefix(err.Error(), "Required flag"):
		return exitUsage
	case errors.As(err, &se) && (se.Step == deployer.StepPreflight || se.Step == deployer.StepLock || se.Step == deployer.StepUpload || se.Step == deployer.StepMigrate || (se.Step == deployer.StepHook && se.Host == "local")):
		return exitPreflight
	case errors.As(err, &unreachable):
		return exitPreflight
	default:
		return exitFailed
	}
}
