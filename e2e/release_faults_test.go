package e2e

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// withRelease is cfg with lines added under its release: section.
func withRelease(t *testing.T, cfg, lines string) string {
	t.Helper()
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "rollout.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), "release:\n  root: /srv/my-app\n", "release:\n  root: /srv/my-app\n"+lines, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// unchanged checks that no instance of h was restarted since before, and
// that no partial release is left.
func unchanged(t *testing.T, h *testbed.Host, before map[int]instanceState) {
	t.Helper()
	after := instanceStates(t, h)
	for port, st := range before {
		if after[port].MainPID != st.MainPID {
			t.Errorf("%d was restarted (pid %s -> %s)", port, st.MainPID, after[port].MainPID)
		}
	}
	noPartial(t, h)
}

// noPartial checks that no partial release is left on h.
func noPartial(t *testing.T, h *testbed.Host) {
	t.Helper()
	out, err := fleet.Run(context.Background(), h, "sudo -n ls -a /srv/my-app/releases")
	if err != nil || strings.Contains(out, ".partial") || !strings.Contains(out, "-initial") {
		t.Errorf("releases (%v):\n%s", err, out)
	}
}

// Faults of the release steps, on a host whose releases live on a 4 MB
// filesystem: bad artifacts are refused before anything connects; a full
// disk, a failing or hanging prepare change nothing that runs (exit 3) and
// leave nothing behind; a connection lost during the upload is made again
// and the deploy finishes.
func TestReleaseFaults(t *testing.T) {
	h := fleet.Hosts[0]
	hosts := []*testbed.Host{h}
	cfg := releaseConfig(t, hosts, "")
	resetHost(t, h)
	t.Cleanup(func() { resetHost(t, h) })
	if out, err := fleet.Run(context.Background(), h, "sudo -n sh -c 'mkdir -p /srv/my-app && mount -t tmpfs -o size=4m tmpfs /srv/my-app'"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, code := rollout(t, "setup", "-c", cfg); code != 0 {
		t.Fatalf("setup exited %d:\n%s", code, out)
	}
	before := instanceStates(t, h)

	t.Run("bad artifacts", func(t *testing.T) {
		dir := t.TempDir()
		escaping := filepath.Join(dir, "escape.tar.gz")
		f, _ := os.Create(escaping)
		zw := gzip.NewWriter(f)
		tw := tar.NewWriter(zw)
		tw.WriteHeader(&tar.Header{Name: "../../etc/cron.d/x", Mode: 0o644, Size: 2})
		tw.Write([]byte("x\n"))
		tw.Close()
		zw.Close()
		f.Close()
		linked := filepath.Join(dir, "linked")
		os.MkdirAll(linked, 0o755)
		os.WriteFile(filepath.Join(linked, "server.js"), []byte("x"), 0o644)
		os.Symlink("/etc/passwd", filepath.Join(linked, "passwd"))
		notTar := filepath.Join(dir, "notes.txt")
		os.WriteFile(notTar, []byte("hello"), 0o644)
		for _, tt := range []struct{ path, want string }{
			{escaping, "escapes the release directory"},
			{linked, "passwd"},
			{notTar, "not a directory or a readable .tar.gz"},
			{filepath.Join(dir, "missing"), "no such file"},
		} {
			out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2", "--artifact", tt.path)
			if code != 2 || !strings.Contains(out, tt.want) || strings.Contains(out, "preflight") {
				t.Errorf("%s: exit %d, want 2 with %q before connecting", filepath.Base(tt.path), code, tt.want)
			}
		}
		unchanged(t, h, before)
	})

	t.Run("full disk", func(t *testing.T) {
		build := artifactDir(t, testbed.GoodRelease("v2"))
		blob := make([]byte, 6<<20)
		rand.Read(blob)
		os.WriteFile(filepath.Join(build, "blob.bin"), blob, 0o644)
		out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2", "--artifact", build)
		if code != 3 || !strings.Contains(out, "No space left on device") {
			t.Errorf("exit %d, want 3 saying the disk is full", code)
		}
		unchanged(t, h, before)
	})

	t.Run("prepare fails", func(t *testing.T) {
		bad := withRelease(t, cfg, "  prepare: \"echo building; echo 'npm ERR! missing script: build' >&2; exit 1\"\n")
		out, code := rollout(t, "deploy", "-c", bad, "--version", "v2", "--artifact", artifactDir(t, testbed.GoodRelease("v2")))
		if code != 3 || !strings.Contains(out, "release.prepare exited 1") || !strings.Contains(out, "npm ERR! missing script: build") {
			t.Errorf("exit %d, want 3 with the prepare's output", code)
		}
		unchanged(t, h, before)
	})

	t.Run("prepare hangs", func(t *testing.T) {
		slow := withRelease(t, cfg, "  prepare: sleep 60\n  prepare_timeout: 2s\n")
		t0 := time.Now()
		out, code := rollout(t, "deploy", "-c", slow, "--version", "v2", "--artifact", artifactDir(t, testbed.GoodRelease("v2")))
		if code != 3 || !strings.Contains(out, "timed out after 2s") || time.Since(t0) > 30*time.Second {
			t.Errorf("exit %d after %s, want 3 soon after the 2s timeout", code, time.Since(t0))
		}
		unchanged(t, h, before)
	})

	t.Run("connection lost during the upload", func(t *testing.T) {
		// The prepare takes 3s: the connection is killed meanwhile, and the
		// upload is sent again on a new one (it waits for the first, which
		// may still be running, and finds the release in place).
		slow := withRelease(t, cfg, "  prepare: sleep 3; touch prepared\n")
		b, _ := os.ReadFile(slow)
		os.WriteFile(slow, []byte(strings.Replace(string(b), "  known_hosts: "+fleet.KnownHosts+"\n", "  known_hosts: "+fleet.KnownHosts+"\n  keepalive: 1s\n  reconnect: 30s\n", 1)), 0o600)
		var code int
		var events []stepEvent
		res := underLoad(t, hosts, func() {
			code, events, _ = runWithFault(t, []string{"deploy", "-c", slow, "--version", "v2", "--artifact", artifactDir(t, testbed.GoodRelease("v2"))},
				func(e stepEvent) bool { return e.Step == "upload" && e.Status == "progress" }, // during the prepare
				func() { killSSHSessions(t, h) })
		})
		if code != 0 || !hasStepEvent(events, "ssh", "warn", "upload release") || !hasStepEvent(events, "ssh", "ok", "reconnected") {
			t.Errorf("exit %d, want 0 after losing the connection during the upload and reconnecting", code)
		}
		noFailedRequests(t, res)
		id := onRelease(t, slow, hosts, "v2", "ok")
		if out, err := fleet.Run(context.Background(), h, "sudo -n ls /srv/my-app/releases/"+id+"/prepared"); err != nil {
			t.Errorf("the release was not prepared: %v %s", err, out)
		}
		noPartial(t, h)
	})
}

// mainPID is the instance's MainPID on h ("0" when none).
func mainPID(t *testing.T, h *testbed.Host, port int) string {
	t.Helper()
	out, _ := fleet.Run(context.Background(), h, fmt.Sprintf("systemctl show -p MainPID --value my-app@%d", port))
	return strings.TrimSpace(out)
}

// cwdOf is the directory the instance's process runs in.
func cwdOf(t *testing.T, h *testbed.Host, port int) string {
	t.Helper()
	out, _ := fleet.Run(context.Background(), h, fmt.Sprintf("sudo -n readlink /proc/%s/cwd", mainPID(t, h, port)))
	return strings.TrimSpace(out)
}

// crashOn makes version crash on h's instance port (a drop-in), or stops
// making it crash (version "").
func crashOn(t *testing.T, h *testbed.Host, port int, version string) {
	t.Helper()
	dir := fmt.Sprintf("/etc/systemd/system/my-app@%d.service.d", port)
	cmd := "rm -rf " + dir
	if version != "" {
		cmd = fmt.Sprintf(`mkdir -p %s && printf '[Service]\nEnvironment=CRASH_VERSION=%s\n' > %s/crash.conf`, dir, version, dir)
	}
	if out, err := fleet.Run(context.Background(), h, "sudo -n sh -c '"+strings.ReplaceAll(cmd, "'", `'\''`)+" && systemctl daemon-reload'"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// With on_failure: halt, a release that cannot start on the 3rd instance
// stops the deploy with the first two on it and the last still on the old
// one; that last one, killed, is restarted by systemd on the release its
// own link names (the old one), never a half-rolled one. A rerun resumes.
func TestReleaseHaltThenResume(t *testing.T) {
	h := fleet.Hosts[0]
	hosts := []*testbed.Host{h}
	cfg := releaseConfig(t, hosts, "  on_failure: halt\n")
	moveToReleases(t, cfg, hosts)
	v2 := artifactDir(t, testbed.GoodRelease("v2"))
	if out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2", "--artifact", v2); code != 0 {
		t.Fatalf("v2 exited %d:\n%s", code, out)
	}
	old := onRelease(t, cfg, hosts, "v2", "ok")

	crashOn(t, h, basePort+2, "v3")
	v3 := artifactDir(t, testbed.GoodRelease("v3"))
	var out string
	var code int
	res := underLoad(t, hosts, func() { out, code = rollout(t, "deploy", "-c", cfg, "--version", "v3", "--artifact", v3) })
	noFailedRequests(t, res)
	if code != 1 || strings.Contains(out, "reverted to") || !strings.Contains(out, "FATAL: version v3 cannot start on this instance") {
		t.Fatalf("exit %d, want 1, halted (no revert) with the app's words", code)
	}
	id := ""
	for _, r := range releasesOf(t, cfg)[0].Releases {
		if r.Version == "v3" {
			id = r.ID
			if r.Outcome != "failed" {
				t.Errorf("v3 is %s, want failed", r.Outcome)
			}
		}
	}
	if got := cwdOf(t, h, basePort); got != "/srv/my-app/releases/"+id {
		t.Errorf("3000 runs in %s, want v3's %s", got, id)
	}
	pid := mainPID(t, h, basePort+3)
	if got := cwdOf(t, h, basePort+3); got != "/srv/my-app/releases/"+old {
		t.Fatalf("3003 runs in %s, want the old release %s", got, old)
	}
	if out, err := fleet.Run(context.Background(), h, "sudo -n kill -KILL "+pid); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	waitFor(t, "systemd to restart 3003", 30*time.Second, func() bool {
		p := mainPID(t, h, basePort+3)
		return p != pid && p != "0" && p != ""
	})
	if got := cwdOf(t, h, basePort+3); got != "/srv/my-app/releases/"+old {
		t.Errorf("3003, restarted by systemd mid-rollout, runs in %s; want the release its link names, %s", got, old)
	}

	crashOn(t, h, basePort+2, "")
	res = underLoad(t, hosts, func() { out, code = rollout(t, "deploy", "-c", cfg, "--version", "v3", "--artifact", v3) })
	noFailedRequests(t, res)
	if code != 0 || strings.Count(out, "already runs release "+id) != 2 {
		t.Errorf("the rerun exited %d; want 0, skipping 3000 and 3001", code)
	}
	onRelease(t, cfg, hosts, "v3", "ok")
}
