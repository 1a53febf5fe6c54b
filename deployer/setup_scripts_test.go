package deployer

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/internal/testenv"
)

// setup-inspect.sh and setup-apply.sh, run here as the current user on a
// directory of the test's: what the inspection reads is what setup
// decides on, an Nginx test that fails puts the files back, one that
// passes keeps them.
func TestSetupScripts(t *testing.T) {
	user, group := id(t, "-un"), id(t, "-gn")
	dir := filepath.Join(t.TempDir(), "app")
	file := filepath.Join(dir, "site.conf")
	want := setupWant{User: user, AppDir: dir, Dirs: []managedDir{{dir, user + ":" + group, "750"}},
		Files: []ManagedFile{{Path: file}}, Units: []string{"rollout-test-no-such@1.service"}, Timer: "rollout-test-no-such.timer"}
	r := sshRemote{cfg: &Config{}} // no sudo: run as the current user
	inspect := func() setupFound {
		t.Helper()
		out, code := runCommand(t, r.cmdSetupInspect(want), "")
		if code != 0 {
			t.Fatalf("setup-inspect: exit %d\n%s", code, out)
		}
		f, err := parseSetupFound([]byte(out), want)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := inspect()
	if !f.UserExists || len(f.Dirs) != 0 || len(f.Files) != 0 || f.Code != "empty" || len(f.Enabled) != 1 {
		t.Fatalf("bare: %+v", f)
	}
	// A timer that is not there still gives its three lines: enabled,
	// active, and whether curl is.
	if len(f.Watch) != 3 || (f.Watch[2] != "curl" && f.Watch[2] != "no-curl") {
		t.Errorf("watch: %q", f.Watch)
	}

	apply := func(test string) (string, int) {
		actions := []setupAction{{"dir", dir, user, group, "750"}, {"file", file, user, group, "640", "11", "1"}, {"nginx", test, filepath.Join(dir, "no.pid"), ""}}
		return runCommand(t, r.cmdSetupApply(actions), "listen 80;\nx")
	}
	if out, code := apply("echo broken >&2; false"); code != exitNginxTest || !strings.Contains(out, "restored the previous files") || !strings.Contains(out, "broken") {
		t.Fatalf("a failing nginx -t: exit %d\n%s", code, out)
	}
	if f := inspect(); f.Dirs[dir] != user+":"+group+" 750" || len(f.Files) != 0 {
		t.Fatalf("after a failed test: dirs %v, files %v (the new file must be gone)", f.Dirs, f.Files)
	}
	if out, code := apply("true"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	f = inspect()
	if got := f.Files[file]; got.Meta != user+":"+group+" 640" || string(got.Content) != "listen 80;\n" {
		t.Errorf("the file: %+v", got)
	}
	if f.Code != "code" {
		t.Errorf("code %q in a directory with a file", f.Code)
	}
	if _, err := os.Stat(file + ".rollout-prev"); err == nil {
		t.Error("the previous copy was left behind")
	}
	if out, code := runScript(t, "setup-apply", "", "frobnicate"); code != 2 || !strings.Contains(out, "unknown action frobnicate") {
		t.Errorf("an unknown action: exit %d %s", code, out)
	}
	// The workers beyond a lowered count: one systemctl for all, each
	// unit an argument of its own.
	bin := t.TempDir()
	log := filepath.Join(bin, "log")
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte("#!/bin/sh\nprintf '%s|' \"$@\" >>"+log+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	if out, code := runScript(t, "setup-apply", "", "disable-now", "2", "w@3", "w@12", "enable-now", "x.timer"); code != 0 {
		t.Errorf("disable-now: exit %d %s", code, out)
	}
	if got, _ := os.ReadFile(log); string(got) != "disable|--now|--|w@3|w@12|enable|--now|--|x.timer|" {
		t.Errorf("systemctl ran with %q", got)
	}
}

// runCommand runs a command built for a host here, with stdin.
// id is what id FLAG says of the current user.
func id(t *testing.T, flag string) string {
	t.Helper()
	b, err := exec.Command("id", flag).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func runCommand(t *testing.T, cmd, stdin string) (string, int) {
	t.Helper()
	c := exec.Command("sh", "-c", cmd)
	c.Stdin = strings.NewReader(stdin)
	out, err := c.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// A sudoers file that visudo refuses is never installed; the old one
// stays. One it accepts takes its place.
func TestSetupAppliesSudoersOnlyIfValid(t *testing.T) {
	testenv.NeedCommand(t, "visudo")
	dir := t.TempDir()
	file := filepath.Join(dir, "rollout-my-app")
	r := sshRemote{cfg: &Config{}}
	apply := func(content string) (string, int) {
		a := setupAction{"file", file, id(t, "-un"), id(t, "-gn"), "440", strconv.Itoa(len(content)), checkSudoers}
		return runCommand(t, r.cmdSetupApply([]setupAction{a}), content)
	}
	good := "deploy ALL=(root) NOPASSWD: /usr/local/lib/rollout/my-app\n"
	if out, code := apply(good); code != 0 {
		t.Fatalf("a good file: exit %d\n%s", code, out)
	}
	out, code := apply("deploy ALL=(root) NOPASSWD ALL ALL\n")
	if code != exitSudoers || !strings.Contains(out, "visudo refuses") {
		t.Fatalf("a broken file: exit %d\n%s", code, out)
	}
	if b, _ := os.ReadFile(file); string(b) != good {
		t.Errorf("the broken file took the good one's place: %q", b)
	}
	if m, _ := filepath.Glob(file + ".rollout.*"); len(m) > 0 {
		t.Errorf("left behind %v", m)
	}
}

// app-output.sh reads a log file past the offset of the restart, and all
// of a file a rotation truncated below that offset (copytruncate) since.
func TestAppOutputReadsAcrossARotation(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "stdout-3000.log")
	if err := os.WriteFile(log, []byte("before the restart\nafter the restart\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newSSHRemote(&Config{App: "my-app", UnitTemplate: "my-app@{port}"}, nil)
	r.priv = privilege{}
	mark := restartMark{offsets: map[string]int64{log: int64(len("before the restart\n"))}}
	out, _ := runCommand(t, r.cmdAppOutput("my-app@3000", mark, 20), "")
	if !strings.Contains(out, "after the restart") || strings.Contains(out, "before the restart") {
		t.Errorf("before the rotation:\n%s", out)
	}
	// Rotated: the copy is elsewhere, the file starts again, shorter.
	if err := os.WriteFile(log, []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ = runCommand(t, r.cmdAppOutput("my-app@3000", mark, 20), ""); !strings.Contains(out, "==> "+log+" <==\nnew\n") {
		t.Errorf("after the rotation, the file's lines are not shown:\n%s", out)
	}
}
