package deployer

import (
	"embed"
	"fmt"
	"slices"
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

	exitHelperStale = 78 // EX_STALE: the host's helper is from another config or rollout version
	exitRefused     = 79 // EX_REFUSED: the helper refused an argument; nothing ran
	exitSudoers     = 80 // EX_SUDOERS: visudo refused a new sudoers file; it was not installed
	exitSpecial     = 81 // EX_SPECIAL: a release holds a device, fifo or socket file
	exitNoEnvFile   = 82 // EX_NO_ENVFILE: the unit does not read the release's secrets
	exitMigrate     = 83 // EX_MIGRATE: release.migrate failed or timed out
	exitHAProxyDown = 84 // EX_HAPROXY_DOWN: nothing answers at HAProxy's socket (stopped, restarting)
)

// sectionMark starts each part of a script's output: "@@rollout@@ NAME".
const sectionMark = "@@rollout@@ "

// scriptText is the named script (scripts/NAME.sh) as it is.
func scriptText(name string) string {
	b, err := scriptFiles.ReadFile("scripts/" + name + ".sh")
	if err != nil {
		panic(fmt.Sprintf("rollout: no script %q: %v", name, err)) // a programming error
	}
	return string(b)
}

// scriptBody is the named script without its comment lines.
func scriptBody(name string) string {
	var body []string
	for _, line := range strings.Split(strings.TrimSpace(scriptText(name)), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			body = append(body, line)
		}
	}
	return strings.Join(body, "\n")
}

// script returns the shell command that runs the named script with args
// as its positional parameters: `sh -c SCRIPT rollout-NAME ARGS...`. With
// priv it runs as root: through `sudo -n` (never a password prompt) when
// the SSH user is not root, and with sudo: helper as the helper's verb of
// the same name, which holds the script.
func script(name string, priv bool, p privilege, args ...string) string {
	if priv && p.helper != "" && slices.Contains(helperVerbs, name) {
		return p.command(name, args, nil)
	}
	cmd := "sh -c " + sshexec.Quote(scriptBody(name)) + " " + sshexec.Quote("rollout-"+name)
	if len(args) > 0 {
		cmd += " " + sshexec.QuoteCommand(args...)
	}
	if priv && p.sudo {
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
