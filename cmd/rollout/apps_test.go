package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rollout-dev/rollout/deployer"
)

// monorepoConfig is two apps of one repository on the same (unreachable)
// host: plan and render never connect.
const monorepoConfig = `hosts: [10.9.9.9]
ssh: {user: deploy}
apps:
  web:
    base_port: 3000
    instances: 2
    nginx: {upstream_file: /etc/nginx/conf.d/web-upstream.conf, upstream: web}
    paths: [apps/web/**, packages/**]
  auth:
    base_port: 4190
    instances: 2
    nginx: {upstream_file: /etc/nginx/conf.d/auth-upstream.conf, upstream: auth}
    paths: [services/auth/**]
`

// gitRepo makes a repository holding rollout.yaml and files, committed,
// changes into it, and returns a function that commits more changes and
// returns the commit's ID.
func gitRepo(t *testing.T, files ...string) (dir string, commit func(msg string, files ...string) string) {
	t.Helper()
	dir = t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	commit = func(msg string, files ...string) string {
		t.Helper()
		for _, f := range files {
			p := filepath.Join(dir, f)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(msg+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		git("add", "-A")
		git("commit", "-q", "-m", msg)
		return git("rev-parse", "HEAD")
	}
	git("init", "-q", "-b", "main")
	if err := os.WriteFile(filepath.Join(dir, "rollout.yaml"), []byte(monorepoConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	commit("base", files...)
	t.Chdir(dir)
	return dir, commit
}

func TestChangedSincePicksTheChangedApps(t *testing.T) {
	_, commit := gitRepo(t, "apps/web/server.js", "services/auth/server.js", "README.md")
	base := commit("docs", "README.md")
	commit("auth fix", "services/auth/server.js")

	out, errOut, code := runCLI(t, "plan", "--changed-since", base, "--version", "v2", "--scripts")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "== app auth ==") || strings.Contains(out, "== app web ==") || !strings.Contains(out, "rollout-preflight '' '' auth@4190 auth@4191") || !strings.Contains(out, "rollout-preflight 'nginx -t' /etc/nginx/conf.d/auth-upstream.conf\n") {
		t.Errorf("plan of auth only:\n%s", out)
	}
	if want := "changed since " + base + ": auth (services/auth/server.js)"; !strings.Contains(errOut, want) {
		t.Errorf("stderr %q, want %q", errOut, want)
	}

	// A renamed file counts for the app it left too.
	renamed := commit("move", "packages/ui/button.js")
	if err := os.Rename("packages/ui/button.js", "services/auth/button.js"); err != nil {
		t.Fatal(err)
	}
	commit("moved")
	out, errOut, code = runCLI(t, "plan", "--changed-since", renamed, "--version", "v2")
	if code != exitOK || !strings.Contains(out, "== app web ==") || !strings.Contains(out, "== app auth ==") {
		t.Errorf("a file moved from web's paths to auth's: exit %d, %s\n%s", code, errOut, out)
	}

	// Nothing of an app changed: exit 0, saying so, planning nothing.
	head := commit("readme again", "README.md")
	commit("readme once more", "README.md")
	out, errOut, code = runCLI(t, "deploy", "--changed-since", head, "--version", "v2")
	if code != exitOK || out != "" || !strings.Contains(errOut, "no app changed since "+head+" (1 file(s) changed, none in an app's paths): nothing to do") {
		t.Errorf("nothing changed: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestChangedSinceRefusesWhatItCannotRead(t *testing.T) {
	dir, _ := gitRepo(t, "apps/web/server.js")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no such commit", []string{"--changed-since", "no-such-branch"}, `--changed-since: "no-such-branch" is no commit in this repository (in CI, fetch the history: actions/checkout with fetch-depth: 0)`},
		{"an option, not a ref", []string{"--changed-since", "--output=/tmp/x"}, `--changed-since: "--output=/tmp/x" is not a git revision`},
		{"the zero commit of a new branch", []string{"--changed-since", "0000000000000000000000000000000000000000"}, "is no commit in this repository"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := runCLI(t, append([]string{"deploy", "--version", "v2"}, tt.args...)...)
			if code != exitUsage || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", code, errOut, tt.want)
			}
		})
	}
	// Outside a work tree.
	t.Chdir(t.TempDir())
	_, errOut, code := runCLI(t, "deploy", "-c", filepath.Join(dir, "rollout.yaml"), "--version", "v2", "--changed-since", "HEAD")
	if code != exitUsage || !strings.Contains(errOut, "--changed-since: needs a git work tree (run rollout in the repository)") {
		t.Errorf("outside git: exit %d, stderr %q", code, errOut)
	}
	// A file of one app has no paths to match.
	one := filepath.Join(t.TempDir(), "one.yaml")
	if err := os.WriteFile(one, []byte("app: my-app\nhosts: [10.9.9.9]\nports: [3000]\nnginx: {upstream_file: /etc/nginx/u.conf, upstream: u}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	_, errOut, code = runCLI(t, "plan", "-c", one, "--version", "v2", "--changed-since", "HEAD")
	if code != exitUsage || !strings.Contains(errOut, "app my-app has no paths:") {
		t.Errorf("one app: exit %d, stderr %q", code, errOut)
	}
}

func TestAppFlag(t *testing.T) {
	gitRepo(t)
	out, errOut, code := runCLI(t, "plan", "--app", "web", "--version", "v2")
	if code != exitOK || !strings.Contains(out, "== app web ==") || strings.Contains(out, "auth") {
		t.Errorf("--app web: exit %d, %s\n%s", code, errOut, out)
	}
	out, errOut, code = runCLI(t, "render", "--app", "auth,web")
	if code != exitOK || strings.Index(out, "== app web ==") > strings.Index(out, "== app auth ==") || !strings.Contains(out, "server 127.0.0.1:4191") {
		t.Errorf("render both, in the file's order: exit %d, %s\n%.300s", code, errOut, out)
	}
	_, errOut, code = runCLI(t, "plan", "--app", "api", "--version", "v2")
	if code != exitUsage || !strings.Contains(errOut, `--app: no app "api" in the config (its apps: web, auth)`) {
		t.Errorf("--app api: exit %d, %s", code, errOut)
	}
	// A command of one app at a time asks which.
	_, errOut, code = runCLI(t, "watch", "--once")
	if code != exitUsage || !strings.Contains(errOut, "rollout.yaml has apps web, auth: pick one with --app") {
		t.Errorf("watch without --app: exit %d, %s", code, errOut)
	}
	// JSON: one document per app, each naming it.
	out, _, code = runCLI(t, "render", "-o", "json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 2 || !strings.Contains(lines[0], `"app":"web"`) || !strings.Contains(lines[1], `"app":"auth"`) {
		t.Errorf("render json: exit %d, %d lines\n%.300s", code, len(lines), out)
	}
}

func TestOneArtifactForSeveralApps(t *testing.T) {
	dir := t.TempDir()
	cfg := strings.ReplaceAll(monorepoConfig, "    paths:", "    release: {}\n    paths:")
	file := filepath.Join(dir, "rollout.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runCLI(t, "deploy", "-c", file, "--version", "v2", "--artifact", "build/")
	if code != exitUsage || !strings.Contains(errOut, "--artifact build/ would ship the same code as apps web, auth: put {app} in it") {
		t.Errorf("exit %d, %s", code, errOut)
	}
	// {app} names each app's: the first missing one is refused before
	// anything connects.
	_, errOut, code = runCLI(t, "deploy", "-c", file, "--version", "v2", "--artifact", filepath.Join(dir, "dist/{app}"))
	if code != exitUsage || !strings.Contains(errOut, "app web: artifact "+filepath.Join(dir, "dist/web")) {
		t.Errorf("exit %d, %s", code, errOut)
	}
}

// appsContext is a CLI context with --output text, writing to stdout and
// stderr.
func appsContext(stdout, stderr *syncBuf) *cli.Context {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.String("output", "text", "")
	c := cli.NewContext(&cli.App{Writer: stdout, ErrWriter: stderr}, fs, nil)
	c.Context = context.Background()
	return c
}

// syncBuf is a buffer safe for apps writing at once.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAppsParallel(t *testing.T) {
	pr, err := deployer.ParseProject("rollout.yaml", []byte(monorepoConfig+"apps_parallel: 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr syncBuf
	// Both run at once: each waits until the other has started.
	var startedBoth sync.WaitGroup
	startedBoth.Add(2)
	both := make(chan struct{})
	go func() { startedBoth.Wait(); close(both) }()
	err = eachApp(appsContext(&stdout, &stderr), pr, pr.Apps, pr.AppsParallel, false, func(cfg *deployer.Config, out appOutput) error {
		startedBoth.Done()
		select {
		case <-both:
		case <-time.After(5 * time.Second):
			return errors.New("the other app did not start meanwhile")
		}
		fmt.Fprintf(out.stdout, "line 1 of %s\n", cfg.App)
		time.Sleep(10 * time.Millisecond)
		fmt.Fprintf(out.stdout, "line 2 of %s\n", cfg.App)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Each app's text comes out whole, under its header.
	for _, app := range []string{"web", "auth"} {
		if want := "== app " + app + " ==\nline 1 of " + app + "\nline 2 of " + app + "\n"; !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q whole:\n%s", want, stdout.String())
		}
	}
}

func TestAppsStopAfterAFailure(t *testing.T) {
	pr, err := deployer.ParseProject("rollout.yaml", []byte(monorepoConfig))
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr syncBuf
	var ran []string
	err = eachApp(appsContext(&stdout, &stderr), pr, pr.Apps, 1, false, func(cfg *deployer.Config, out appOutput) error {
		ran = append(ran, cfg.App)
		return usageError{errors.New("broken")}
	})
	var ue usageError
	if len(ran) != 1 || err == nil || err.Error() != "app web: broken" || !errors.As(err, &ue) || !strings.Contains(stderr.String(), "not run, after a failed app: auth") {
		t.Errorf("ran %v, err %v, stderr %q", ran, err, stderr.String())
	}
	// Read-only commands go on.
	ran = nil
	err = eachApp(appsContext(&stdout, &stderr), pr, pr.Apps, 1, true, func(cfg *deployer.Config, out appOutput) error {
		ran = append(ran, cfg.App)
		return errors.New("unreachable")
	})
	if len(ran) != 2 || err == nil || !strings.Contains(err.Error(), "app web: unreachable\napp auth: unreachable") {
		t.Errorf("keep going: ran %v, err %v", ran, err)
	}
}
