package deployer

import (
	"embed"
	"fmt"
	"strings"

	"github.com/rollout-dev/rollout/sshexec"
)

// The remote scripts: each one does one thing on a host, takes its values
// as positional parameters (validated, then quoted for the shell), and says
// what went wrong with a named exit code. shellcheck reads them in make lint.
//
//go:embed scripts/*.sh
var scriptFiles embed.FS

// Exit codes the scripts share with the Go side; each script declares the
// ones it uses as "readonly EX_NAME=CODE" (a test checks they agree).
const (
	exitNginxTest  = 65 // EX_NGINX_TEST: nginx -t failed; the previous file is back
	exitOldWorkers = 66 // EX_OLD_WORKERS: Nginx's old workers still take requests
	exitChanged    = 67 // EX_CHANGED: the upstream file changed under rollout; nothing written
	exitLockLost   = 68 // EX_LOCK_LOST: the deploy lock is no longer ours

	exitUnitMissing        = 69 // EX_UNIT_MISSING: an instance's unit is not installed
	exitNginxBroken        = 70 // EX_NGINX_BROKEN: nginx -t fails before any change
	exitUpstreamUnreadable = 71 // EX_UPSTREAM_UNREADABLE: the upstream file cannot be read

	exitChecksum      = 72 // EX_CHECKSUM: an uploaded release arrived damaged or cut short
	exitPrepare       = 73 // EX_PREPARE: release.prepare failed or timed out
	exitShared        = 74 // EX_SHARED: a release.shared path is nowhere
	exitNoRelease     = 75 // EX_NO_RELEASE: the release to switch to is not on the host
	exitLogUnreadable = 76 // EX_LOG_UNREADABLE: the access log cannot be read
	exitHAProxy       = 77 // EX_HAPROXY: HAProxy's runtime API cannot be reached or refused
)

// sectionMark starts each part of a script's output: "@@rollout@@ NAME".
const sectionMark = "@@rollout@@ "

// script returns the shell command that runs the named script (scripts/NAME.sh)
// with args as its positional parameters: `sh -c SCRIPT rollout-NAME ARGS...`,
// through `sudo -n` (never a password prompt) when priv and the SSH user is
// not root. Comment lines are left out of what is sent.
func script(name string, priv, sudo bool, args ...string) string {
	b, err := scriptFiles.ReadFile("scripts/" + name + ".sh")
	if err != nil {
		panic(fmt.Sprintf("rollout: no script %q: %v", name, err)) // a programming error
	}
	var body []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			body = append(body, line)
		}
	}
	cmd := "sh -c " + sshexec.Quote(strings.Join(body, "\n")) + " " + sshexec.Quote("rollout-"+name)
	if len(args) > 0 {
		cmd += " " + sshexec.QuoteCommand(args...)
	}
	if priv && sudo {
		return "sudo -n " + cmd
	}
	return cmd
}

// privileged runs a one-line command as root, like script.
func privileged(sudo bool, args ...string) string {
	cmd := sshexec.QuoteCommand(args...)
	if sudo {
		return "sudo -n " + cmd
	}
	return cmd
}

// sections splits a script's output at its section lines.
func sections(out []byte) map[string]string {
	parts := map[string]string{}
	name, ok := "", false
	var b strings.Builder
	flush := func() {
		if ok {
			parts[name] = b.String()
		}
		b.Reset()
	}
	for _, line := range strings.SplitAfter(string(out), "\n") {
		if rest, found := strings.CutPrefix(line, sectionMark); found {
			flush()
			name, ok = strings.TrimSpace(rest), true
			continue
		}
		b.WriteString(line)
	}
	flush()
	return parts
}
