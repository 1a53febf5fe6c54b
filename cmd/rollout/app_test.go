package main

import (
	"bytes"
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/internal/testenv"
)

// runCLI runs rollout with args and returns stdout, stderr and exit code.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := newApp(&stdout, &stderr).RunContext(context.Background(), append([]string{"rollout"}, args...))
	code := exitCode(err, false, &stderr)
	return stdout.String(), stderr.String(), code
}

// Every example config plans, in text and JSON.
func TestPlanEveryExample(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs found")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, errOut, code := runCLI(t, "plan", "-c", f, "--version", "v2")
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			for _, want := range []string{"nothing below has been run", "rollout plan --scripts shows every remote command", "undrain"} {
				if !strings.Contains(out, want) {
					t.Errorf("plan lacks %q", want)
				}
			}
			if strings.Contains(out, "systemctl restart --") {
				t.Errorf("the short plan prints commands")
			}
			out, errOut, code = runCLI(t, "plan", "-c", f, "--version", "v2", "--scripts")
			if code != exitOK || !strings.Contains(out, "systemctl restart --") {
				t.Errorf("plan --scripts: exit %d, no restart command: %s", code, errOut)
			}
			out, _, code = runCLI(t, "deploy", "--dry-run", "-c", f, "--version", "v2", "--output", "json")
			if code != exitOK || !strings.HasPrefix(out, "{") || !strings.Contains(out, `"name": "drain"`) {
				t.Errorf("dry-run json: exit %d\n%s", code, out)
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("app: my-app\nhelth: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noRelease := filepath.Join(t.TempDir(), "no-release.yaml")
	if err := os.WriteFile(noRelease, []byte("app: my-app\nhosts: [10.9.9.9]\nports: [3000]\nnginx: {upstream_file: /etc/nginx/u.conf, upstream: u}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noArtifact := filepath.Join(t.TempDir(), "no-artifact.yaml")
	if err := os.WriteFile(noArtifact, []byte("app: my-app\nhosts: [10.9.9.9]\nports: [3000]\nnginx: {upstream_file: /etc/nginx/u.conf, upstream: u}\nrelease: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"plan", "--nope"}, exitUsage, "unknown flag --nope"},
		{"missing config", []string{"plan", "-c", "/nonexistent.yaml", "--version", "v1"}, exitUsage, "read config"},
		{"bad config names file and line", []string{"plan", "-c", bad, "--version", "v1"}, exitUsage, bad + `:2: unknown key "helth"`},
		{"missing version", []string{"plan", "-c", "../../examples/rollout.yaml"}, exitUsage, "--version (or ROLLOUT_VERSION) is required"},
		{"bad output", []string{"plan", "-c", "../../examples/rollout.yaml", "--version", "v1", "-o", "yaml"}, exitUsage, "--output must be text or json"},
		{"bad host override", []string{"plan", "-c", "../../examples/rollout.yaml", "--version", "v1", "--hosts", "a;b"}, exitUsage, `hosts[0]: must be a host name`},
		{"release without artifact", []string{"deploy", "-c", noArtifact, "--version", "v1"}, exitUsage, "--artifact (or ROLLOUT_ARTIFACT, or release.artifact) is required"},
		{"artifact without release", []string{"deploy", "-c", noRelease, "--version", "v1", "--artifact", "."}, exitUsage, "--artifact needs the release: section"},
		{"artifact missing", []string{"deploy", "-c", "../../examples/rollout.yaml", "--version", "v1", "--artifact", "/nonexistent/build"}, exitUsage, "artifact /nonexistent/build"},
		{"rollback to a bad ID", []string{"rollback", "-c", "../../examples/rollout.yaml", "--to", "v1"}, exitUsage, "is not a release id"},
		{"rollback without release", []string{"rollback", "-c", noRelease}, exitUsage, "rollback needs the release: section"},
		{"releases without release", []string{"releases", "-c", noRelease}, exitUsage, "releases needs the release: section"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := runCLI(t, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, errOut, tt.code, tt.want)
			}
		})
	}
}

// Flags override the file.
func TestFlagsOverrideConfig(t *testing.T) {
	out, errOut, code := runCLI(t, "plan", "-c", "../../examples/rollout.yaml", "--version", "v7", "--hosts", "10.9.9.9", "--output", "json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, `"host": "10.9.9.9"`) || strings.Contains(out, "10.213.0.11") || !strings.Contains(out, `"version": "v7"`) || !strings.Contains(out, `-v7",`) {
		t.Errorf("overrides not applied:\n%.400s", out)
	}
}

// Without ssh.user, rollout connects as the current user, as ssh does.
func TestUserDefaultsToCurrentUser(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "rollout.yaml")
	cfg := "app: my-app\nhosts: [10.9.9.9]\nbase_port: 3000\ninstances: 2\nnginx: {upstream_file: /etc/nginx/conf.d/u.conf, upstream: u}\n"
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	me, err := user.Current()
	if err != nil {
		testenv.Skip(t, "no current user: %v", err)
	}
	out, errOut, code := runCLI(t, "plan", "-c", cfgFile, "--version", "v1")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	// root runs commands directly; anyone else through sudo -n.
	wantSudo := me.Username != "root"
	if got := strings.Contains(out, "sudo -n sh -c"); got != wantSudo {
		t.Errorf("user %s: sudo in plan = %v, want %v", me.Username, got, wantSudo)
	}
}
