package e2e

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// sudo: helper on the seed's hosts: setup (run while deploy still has
// NOPASSWD: ALL, as teams have it today) installs the helper and its
// sudoers file; the broad rule is then removed, and deploy may run only
// the helper. Every command still works, under load, with no failed
// request; the helper refuses what is not this app's, and changes
// nothing then.
func TestLeastPrivilegeHelper(t *testing.T) {
	hosts := fleet.Hosts
	ctx := context.Background()
	cfg := releaseConfig(t, hosts, "")
	full := cfg + ".full-sudo.yaml"
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, append(b, "sudo: helper\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	moveToReleases(t, cfg, hosts) // setup with the helper
	for _, h := range hosts {
		out, err := fleet.Run(ctx, h, "stat -c '%U:%G %a %n' /usr/local/lib/rollout/my-app /etc/sudoers.d/rollout-my-app && sudo -n visudo -c")
		if err != nil || !strings.Contains(out, "root:root 755 /usr/local/lib/rollout/my-app") || !strings.Contains(out, "root:root 440 /etc/sudoers.d/rollout-my-app") {
			t.Fatalf("%s: the helper and its sudoers file: %v\n%s", h.Name, err, out)
		}
	}

	// The same release with full sudo, then with only the helper: the
	// same gates, the same (no) failed requests, and their times.
	took := regexp.MustCompile(`deploy v\d: ok in (\S+)`)
	out := deployUnderLoad(t, hosts, full, "v2 with full sudo", 0, "deploy", "--version", "v2", "--artifact", artifactDir(t, testbed.GoodRelease("v2")))
	t.Logf("with NOPASSWD: ALL: %s", took.FindString(out))
	onRelease(t, cfg, hosts, "v2", "ok")

	for _, h := range hosts {
		if out, err := fleet.Run(ctx, h, "sudo -n rm -f /etc/sudoers.d/deploy"); err != nil {
			t.Fatalf("%s: %v\n%s", h.Name, err, out)
		}
	}
	h := hosts[0]
	// deploy may run nothing else as root.
	for _, cmd := range []string{"sudo -n true", "sudo -n systemctl restart ssh", "sudo -n sh -c id", "sudo -n cat /etc/shadow"} {
		if out, err := fleet.Run(ctx, h, cmd); err == nil {
			t.Errorf("%s ran:\n%s", cmd, out)
		}
	}
	id, err := fleet.Run(ctx, h, "sudo -n /usr/local/lib/rollout/my-app x version 2>&1 | grep -o 'has helper [0-9a-f]*'")
	if err != nil {
		t.Fatalf("the helper's id: %v", err)
	}
	helper := "sudo -n /usr/local/lib/rollout/my-app " + strings.TrimPrefix(strings.TrimSpace(id), "has helper ") + " "
	sshBefore, _ := fleet.Run(ctx, h, "systemctl show -p MainPID --value ssh")
	for name, args := range map[string]string{
		"another unit":          "stop ssh.service",
		"a port out of range":   "restart my-app@22 x '' '' ''",
		"a file outside":        "tail 5 0 /etc/shadow",
		"a link out of the app": "release-switch /srv/my-app 3000 ../../etc",
		"a shell":               "lock-status '/var/lib/rollout/my-app;id'",
		"exec as root":          "exec /srv/my-app/releases/x x root root /etc/my-app/.env rollout-exec-my-app-1 pipe id",
		"exec-stop of ssh":      "exec-stop ssh.service",
	} {
		out, err := fleet.Run(ctx, h, helper+args+" 2>&1; echo exit=$?")
		if err != nil || !strings.Contains(out, "refused: ") || !strings.Contains(out, "exit=79") {
			t.Errorf("%s: %v\n%s", name, err, out)
		}
	}
	if after, _ := fleet.Run(ctx, h, "systemctl show -p MainPID --value ssh"); after != sshBefore {
		t.Errorf("ssh restarted: %s -> %s", sshBefore, after)
	}
	if out, err := fleet.RunRoot(ctx, h, "test -s /etc/shadow && readlink /srv/my-app/instances/3000"); err != nil || !strings.HasPrefix(out, "../releases/") {
		t.Errorf("a refused call changed something: %v\n%s", err, out)
	}

	// Deploy, a release that cannot start (the app's words, read through
	// the helper), rollback, status, logs, releases, history, lock.
	out = deployUnderLoad(t, hosts, cfg, "v3 with the helper", 0, "deploy", "--version", "v3", "--artifact", artifactDir(t, testbed.GoodRelease("v3")))
	t.Logf("with the helper only: %s", took.FindString(out))
	v3 := onRelease(t, cfg, hosts, "v3", "ok")
	broken := testbed.GoodRelease("v4")
	broken.RequiredEnv = append(broken.RequiredEnv, "PAYMENT_API_KEY")
	out = deployUnderLoad(t, hosts, cfg, "v4 that cannot start", 1, "deploy", "--version", "v4", "--artifact", artifactDir(t, broken))
	if !strings.Contains(out, "reverted to "+v3) || !strings.Contains(out, "FATAL: required environment variable PAYMENT_API_KEY is not set (version v4)") {
		t.Errorf("the failed deploy does not say it reverted to %s, or what the app said:\n%s", v3, out)
	}
	deployUnderLoad(t, hosts, cfg, "rollback", 0, "rollback")
	onRelease(t, cfg, hosts, "v2", "reverted")
	if out, code := rollout(t, "status", "-c", cfg); code != 0 || !strings.Contains(out, "active") {
		t.Errorf("status exited %d:\n%s", code, out)
	}
	if out, code := rollout(t, "logs", "-c", cfg, "--hosts", h.Addr, "--port", "3000", "--lines", "50"); code != 0 || !strings.Contains(out, "listening") {
		t.Errorf("logs exited %d or shows neither the journal nor the log file:\n%s", code, out)
	}
	if out, code := rollout(t, "history", "-c", cfg); code != 0 || !strings.Contains(out, "rollback") {
		t.Errorf("history exited %d:\n%s", code, out)
	}
	if out, code := rollout(t, "lock", "status", "-c", cfg); code != 0 || !strings.Contains(out, "free") {
		t.Errorf("lock exited %d:\n%s", code, out)
	}

	// A config the helper was not written for (another prepare command)
	// stops at the preflight, before anything changes, and says what to
	// do; setup itself needs root, which deploy no longer has.
	stale := cfg + ".stale.yaml"
	if err := os.WriteFile(stale, append(b, "sudo: helper\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	sb, _ := os.ReadFile(stale)
	if err := os.WriteFile(stale, []byte(strings.Replace(string(sb), "  root: /srv/my-app\n", "  root: /srv/my-app\n  prepare: \"true\"\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := rollout(t, "deploy", "-c", stale, "--version", "v5", "--artifact", artifactDir(t, testbed.GoodRelease("v5"))); code != 3 || !strings.Contains(out, "run rollout setup") {
		t.Errorf("a stale helper: exit %d, want 3 and what to do:\n%s", code, out)
	}
	if out, code := rollout(t, "setup", "-c", stale); code == 0 || !strings.Contains(out, "rollout setup --user root") {
		t.Errorf("setup without root: exit %d:\n%s", code, out)
	}
	onRelease(t, cfg, hosts, "v2", "reverted")
}
