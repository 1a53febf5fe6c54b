package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// addAuth sets a second app up by hand beside my-app, as the article's
// monorepo runs it: auth@4190 and auth@4191, its own upstream, a site on
// 8081.
const addAuth = `set -e
sed -e 's/my-app instance/auth instance/' /etc/systemd/system/my-app@.service >/etc/systemd/system/auth@.service
printf 'upstream auth {\n    server 127.0.0.1:4190;\n    server 127.0.0.1:4191;\n}\nserver {\n    listen 8081;\n    location / {\n        proxy_pass http://auth;\n    }\n}\n' >/etc/nginx/conf.d/auth.conf
systemctl daemon-reload
systemctl enable --now auth@4190 auth@4191 2>/dev/null
nginx -t -q
systemctl reload nginx
for p in 4190 4191; do
  for i in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done`

// appsConfig is a config of two apps on host h: my-app and auth, each
// with its paths in a monorepo; web and auth are the lines of each app's
// instances.
func appsConfig(h *testbed.Host, web, auth string) string {
	return fmt.Sprintf(`hosts: [%s]
ssh:
  user: deploy
  key: %s
  known_hosts: %s
health:
  path: /healthz
  timeout: 10s
  min_healthy: 0s
drain_timeout: 10s
apps:
  my-app:
    %s
    nginx: {upstream_file: /etc/nginx/conf.d/my-app-upstream.conf, upstream: my_app}
    hooks:
      host_before: ['sudo -n /usr/local/sbin/my-app-activate "$ROLLOUT_VERSION"']
    paths: [apps/web/**, packages/**]
  auth:
    %s
    nginx: {upstream_file: /etc/nginx/conf.d/auth.conf, upstream: auth}
    probe: {address: 127.0.0.1:8081}
    paths: [services/auth/**]
`, h.Addr, fleet.KeyFile, fleet.KnownHosts, web, auth)
}

// A monorepo of two apps on one host: --changed-since deploys the app whose
// files changed and leaves the other one running untouched; status groups
// by app.
func TestMonorepoDeploysOnlyTheChangedApp(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	if out, err := fleet.RunInput(context.Background(), h, "sudo -n bash -s", strings.NewReader(addAuth)); err != nil {
		t.Fatalf("set auth up by hand: %v\n%s", err, out)
	}
	if err := fleet.StageRelease(context.Background(), h, testbed.GoodRelease("v2")); err != nil {
		t.Fatal(err)
	}

	repo := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(repo, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git("init", "-q", "-b", "main")
	write("rollout.yaml", appsConfig(h, "base_port: 3000\n    instances: 4", "base_port: 4190\n    instances: auto"))
	write("apps/web/server.js", "web v1\n")
	write("services/auth/server.js", "auth v1\n")
	git("add", "-A")
	git("commit", "-q", "-m", "v1")
	base := git("rev-parse", "HEAD")
	write("services/auth/server.js", "auth v2\n")
	git("commit", "-q", "-am", "auth v2")

	before := instanceStates(t, h)
	out, code := rolloutIn(t, repo, nil, "deploy", "--changed-since", base, "--version", "v2")
	if code != 0 || !strings.Contains(out, "changed since "+base+": auth (services/auth/server.js)") || !strings.Contains(out, "app auth deploy v2: ok") {
		t.Fatalf("deploy --changed-since exited %d", code)
	}
	if strings.Contains(out, "my-app@") || strings.Contains(out, "== app my-app ==") {
		t.Errorf("the deploy touched my-app, whose files did not change")
	}
	after := instanceStates(t, h)
	for port, st := range before {
		if after[port] != st {
			t.Errorf("my-app@%d restarted: %+v -> %+v", port, st, after[port])
		}
	}
	// auth's instances were restarted, one at a time, and are served.
	for _, port := range []int{4190, 4191} {
		out, err := fleet.Run(context.Background(), h, fmt.Sprintf("systemctl show -p NRestarts,ExecMainStartTimestampMonotonic,ActiveState --value auth@%d; curl -sS -o /dev/null -w '%%{http_code}' http://127.0.0.1:8081/healthz", port))
		if err != nil || !strings.Contains(out, "active") || !strings.HasSuffix(strings.TrimSpace(out), "200") {
			t.Errorf("auth@%d after the deploy: %v\n%s", port, err, out)
		}
	}
	// Each app's history is its own.
	out, code = rolloutIn(t, repo, nil, "history", "--output", "json")
	if code != 0 || !strings.Contains(out, `"app":"auth"`) || !strings.Contains(out, `"version":"v2"`) {
		t.Errorf("history exited %d", code)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Contains(line, `"app":"my-app"`) && strings.Contains(line, `"version":"v2"`) {
			t.Errorf("my-app's history has the deploy of auth: %s", line)
		}
	}
	// Nothing of an app changed since HEAD: exit 0, nothing run.
	if out, code := rolloutIn(t, repo, nil, "deploy", "--changed-since", "HEAD", "--version", "v3"); code != 0 || !strings.Contains(out, "no app changed since HEAD") || strings.Contains(out, "preflight") {
		t.Errorf("deploy with nothing changed exited %d", code)
	}
	// status: every app, grouped.
	out, code = rolloutIn(t, repo, nil, "status")
	if code != 0 || !strings.Contains(out, "== app my-app ==") || !strings.Contains(out, "== app auth ==") || strings.Count(out, "active/running") != 6 {
		t.Errorf("status exited %d", code)
	}
	// --app picks one.
	out, code = rolloutIn(t, repo, nil, "status", "--app", "auth")
	if code != 0 || strings.Contains(out, "my-app") || strings.Count(out, "active/running") != 2 {
		t.Errorf("status --app auth exited %d", code)
	}
}

// Two apps whose instances: auto ranges meet only on a host with enough
// cores: the config is valid, and the deploy's preflight refuses it on the
// host, naming both, before any change.
func TestAppsWithOverlappingAutoPortsRefused(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	cfg := filepath.Join(t.TempDir(), "rollout.yaml")
	if err := os.WriteFile(cfg, []byte(appsConfig(h, "base_port: 3000\n    instances: auto", "base_port: 3001\n    instances: auto")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := rollout(t, "plan", "-c", cfg, "--version", "v2"); code != 0 {
		t.Fatalf("plan (which reads no host) exited %d:\n%s", code, out)
	}
	before := instanceStates(t, h)
	out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2")
	if code != 3 || !strings.Contains(out, "ports 3001 of app my-app are also app auth's here (auth: 3001-3002) (instances: auto, 2 cores here)") ||
		!strings.Contains(out, "not run, after a failed app: auth") {
		t.Fatalf("deploy exited %d, want 3 naming both apps", code)
	}
	if after := instanceStates(t, h); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("instances changed: %v -> %v", before, after)
	}
	if out, err := fleet.Run(context.Background(), h, "ls /var/lib/rollout/my-app/lock 2>&1 || true"); !strings.Contains(out, "No such file") {
		t.Errorf("a lock was left: %v %s", err, out)
	}
}

// getVersion GETs url and returns the status and the app's version header.
func getVersion(t testing.TB, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-App-Version")
}

// rollout setup prepares a second app beside the first on the same host
// (its user, unit, upstream, site, release root), and one deploy ships
// each app its own release (release.artifact), each under its own root.
func TestMonorepoSetupAndReleases(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	t.Cleanup(func() { resetHost(t, h) })
	repo := t.TempDir()
	web := strings.Replace(appsConfig(h, "base_port: 3000\n    instances: 4", "base_port: 4190\n    instances: auto"),
		"    hooks:\n      host_before: ['sudo -n /usr/local/sbin/my-app-activate \"$ROLLOUT_VERSION\"']\n",
		"    setup: {user: nodeuser, env_file: /etc/my-app/.env, log_dir: /var/log/my-app, server_name: "+h.Addr+"}\n    release: {root: /srv/my-app, artifact: build/web}\n", 1)
	cfgText := strings.Replace(web, "    probe: {address: 127.0.0.1:8081}\n",
		"    setup: {listen: 8081}\n    release: {artifact: build/auth}\n", 1)
	cfg := filepath.Join(repo, "rollout.yaml")
	if err := os.WriteFile(cfg, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := testbed.GoodRelease("w2").WriteDir(filepath.Join(repo, "build/web")); err != nil {
		t.Fatal(err)
	}
	if err := testbed.GoodRelease("a2").WriteDir(filepath.Join(repo, "build/auth")); err != nil {
		t.Fatal(err)
	}

	out, code := rollout(t, "setup", "-c", cfg)
	if code != 0 || !strings.Contains(out, "== app my-app ==") || !strings.Contains(out, "move the code in /var/www/my-app into release ") ||
		!strings.Contains(out, "== app auth ==") || !strings.Contains(out, "create system user auth") || !strings.Contains(out, "write /etc/systemd/system/auth@.service") {
		t.Fatalf("setup of both apps exited %d", code)
	}
	nginxTestPasses(t, h)
	// auth's secrets arrive the way teams ship them.
	if out, err := fleet.Run(context.Background(), h, `sudo -n sh -c 'echo DATABASE_URL=postgres://x@127.0.0.1/x > /etc/auth/.env'`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2"); code != 0 || !strings.Contains(out, "app my-app deploy v2: ok") || !strings.Contains(out, "app auth deploy v2: ok") {
		t.Fatalf("deploy of both apps exited %d", code)
	}
	for _, site := range []struct{ url, version string }{{"http://" + h.Addr + "/", "w2"}, {"http://127.0.0.1:8081/", "a2"}} {
		if strings.Contains(site.url, "127.0.0.1") {
			out, err := fleet.Run(context.Background(), h, "curl -sS -D - -o /dev/null "+site.url)
			if err != nil || !strings.Contains(out, " 200") || !strings.Contains(strings.ToLower(out), "x-app-version: "+site.version) {
				t.Errorf("auth's site on the host: %v\n%s", err, out)
			}
			continue
		}
		if status, v := getVersion(t, site.url); status != 200 || v != site.version {
			t.Errorf("%s: %d, version %q, want 200 %s", site.url, status, v, site.version)
		}
	}
	// Each app's releases under its own root, run by its own user.
	if out, err := fleet.Run(context.Background(), h, "sudo -n readlink -f /srv/my-app/current /srv/auth/current; systemctl show -p User --value auth@4190; systemctl show -p User --value my-app@3000"); err != nil ||
		!strings.Contains(out, "/srv/my-app/releases/") || !strings.Contains(out, "/srv/auth/releases/") || !strings.Contains(out, "auth\nnodeuser") {
		t.Errorf("releases and users: %v\n%s", err, out)
	}
	if out, code := rollout(t, "releases", "-c", cfg, "--app", "auth"); code != 0 || !strings.Contains(out, "-v2") || strings.Contains(out, "my-app") {
		t.Errorf("releases --app auth exited %d", code)
	}
	if out, code := rollout(t, "setup", "-c", cfg); code != 0 || strings.Count(out, h.Addr+": no changes") != 2 {
		t.Errorf("a second setup exited %d or changed something", code)
	}
}
