package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
	"github.com/rollout-dev/rollout/internal/testenv"
)

// traefikStatic is Traefik's static configuration on a test host, as
// rollout render shows it: the web entrypoint on port 80 in Nginx's place,
// the API on loopback, the file provider watching /etc/traefik/dynamic,
// each change served at once.
const traefikStatic = `entryPoints:
  web:
    address: ":80"
  traefik:
    address: "127.0.0.1:8080"
api:
  insecure: true
providers:
  providersThrottleDuration: 0s
  file:
    directory: /etc/traefik/dynamic
    watch: true
`

// traefikRouter is the user's router for the service rollout's file holds.
const traefikRouter = "http:\n  routers:\n    my-app:\n      rule: \"PathPrefix(`/`)\"\n      service: my-app\n      entryPoints: [web]\n"

// useAppHostTraefik puts Traefik (built from its module, bound into the
// hosts) in front of each host's instances, in place of its Nginx, with
// rollout's file as rollout render gives it for cfg.
func useAppHostTraefik(t testing.TB, cfg string, hosts ...*testbed.Host) {
	t.Helper()
	if os.Getenv("ROLLOUT_TRAEFIK") == "" {
		testenv.Skip(t, "no Traefik for the test hosts: make e2e builds it (tools/traefik.sh) and sets ROLLOUT_TRAEFIK")
	}
	file := renderedFile(t, cfg, "/etc/traefik/dynamic/my-app.yml")
	ctx := context.Background()
	for _, h := range hosts {
		for path, content := range map[string]string{"/etc/traefik/traefik.yml": traefikStatic, "/etc/traefik/dynamic/router.yml": traefikRouter, "/etc/traefik/dynamic/my-app.yml": file} {
			if _, err := fleet.RunInput(ctx, h, "sudo -n mkdir -p /etc/traefik/dynamic && sudo -n tee "+path+" >/dev/null", strings.NewReader(content)); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := fleet.Run(ctx, h, "sudo -n systemctl stop nginx"); err != nil {
			t.Fatalf("%s: %v\n%s", h.Name, err, out)
		}
		startTraefik(t, h)
	}
}

// renderedFile is the content of the file at path that rollout render
// shows for cfg.
func renderedFile(t testing.TB, cfg, path string) string {
	t.Helper()
	out, code := rollout(t, "render", "-c", cfg, "--output", "json")
	var doc struct {
		Files []struct{ Path, Content string }
	}
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil {
		t.Fatalf("render exited %d:\n%s", code, out)
	}
	for _, f := range doc.Files {
		if f.Path == path {
			return f.Content
		}
	}
	t.Fatalf("render gives no %s:\n%s", path, out)
	return ""
}

// startTraefik starts Traefik on h (a transient unit, started again while
// systemd still has it) and waits until it answers.
func startTraefik(t testing.TB, h *testbed.Host) {
	t.Helper()
	if out, err := fleet.RunRoot(context.Background(), h, "systemctl start traefik 2>/dev/null || systemd-run --quiet --unit traefik -p Restart=on-failure /usr/local/bin/traefik --configFile=/etc/traefik/traefik.yml 2>&1"); err != nil {
		t.Fatalf("%s: start Traefik: %v\n%s", h.Name, err, out)
	}
	answers(t, h, "Traefik", 20*time.Second)
}

// traefikServed are the ports Traefik's service my-app sends requests to,
// as its API says.
func traefikServed(t testing.TB, h *testbed.Host) []int {
	t.Helper()
	out, err := fleet.Run(context.Background(), h, "curl -sf localhost:8080/api/http/services/my-app@file")
	if err != nil {
		t.Fatalf("%s: Traefik's API: %v\n%s", h.Name, err, out)
	}
	var svc struct {
		LoadBalancer struct{ Servers []struct{ URL string } }
	}
	if err := json.Unmarshal([]byte(out), &svc); err != nil {
		t.Fatalf("%s: %q: %v", h.Name, out, err)
	}
	var ports []int
	for _, s := range svc.LoadBalancer.Servers {
		var p int
		fmt.Sscanf(s.URL, "http://127.0.0.1:%d", &p)
		ports = append(ports, p)
	}
	slices.Sort(ports)
	return ports
}

// With Traefik on each app host (traefik:), rollout takes each instance
// out of the service by rewriting the file Traefik's file provider
// watches, and waits on Traefik's API until it serves the change. Traefik
// applies it without a reload: under 400 req/s, not one failed request and
// not one resend. Traefik restarted mid-deploy reads the same file (the
// drained instance stays out); scaling in and out changes the file; a
// Traefik that does not answer stops the deploy at its preflight.
func TestAppHostTraefik(t *testing.T) {
	resetFleet(t)
	t.Cleanup(func() { resetFleet(t) }) // Nginx back in front
	cfg := fleetConfigWith(t, testMinHealthy, "traefik: {}\n")
	useAppHostTraefik(t, cfg, fleet.Hosts...)
	stageEverywhere(t, testbed.GoodRelease("v2"))

	out, results := deployThrough(t, cfg, fleet.Hosts)
	for _, r := range results {
		if len(r.Resent) != 0 {
			t.Errorf("through Traefik (no reload), requests were resent on closed connections: %v", r.Resent)
		}
	}
	for _, h := range fleet.Hosts {
		for port, v := range versionsServed(t, h) {
			if v != "v2" {
				t.Errorf("%s:%d serves %q", h.Name, port, v)
			}
		}
		if got := traefikServed(t, h); fmt.Sprint(got) != fmt.Sprint(portRange(basePort, instances)) {
			t.Errorf("%s: Traefik serves %v after the deploy", h.Name, got)
		}
	}
	for _, want := range []string{"one write of the file Traefik watches", "wait-drain", "deploy v2: ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if text, code := rollout(t, "status", "-c", cfg); code != 0 || strings.Count(text, "active") < len(fleet.Hosts)*instances {
		t.Errorf("status (exit %d):\n%s", code, text)
	}

	// Traefik restarted while the second instance restarts: it reads the
	// same file (that instance drained in it), and the deploy goes on;
	// only the requests refused while Traefik itself was down fail, none
	// with a 502 (none sent to the drained instance).
	h := fleet.Hosts[0]
	if r := restartedMidDeploy(t, cfg, h, "traefik", traefikServed); r.Failures["http 502"] != 0 {
		t.Errorf("%d requests failed with 502 after Traefik's restart: it sent requests to the drained instance", r.Failures["http 502"])
	}
	scaleThrough(t, cfg, h, traefikServed, false)
	stoppedRefuses(t, cfg, h, "traefik", "is Traefik running, with api.insecure on?")
	// status says Traefik does not answer, not what its file says.
	if text, code := rollout(t, "status", "-c", cfg, "--hosts", h.Addr); code == 0 || !strings.Contains(text, "is Traefik running") {
		t.Errorf("status with Traefik stopped exited %d:\n%s", code, text)
	}
	startTraefik(t, h)

	// strategy.max_surge: 100% with sudo: helper and no other sudo: the new
	// instances start on the spare ports, one write of the file swaps them
	// in and the old ones out (the helper writes only that file), and a
	// strict client sees nothing; the next deploy moves them back.
	surgeCfg := withLines(t, helperConfig(t, cfg), "strategy:\n  max_surge: 100%\n")
	installHelpers(t, surgeCfg)
	onlyHelper(t, h)
	surgeAndBack(t, surgeCfg, h, traefikServed, false, nil)
}
