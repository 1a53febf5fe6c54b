package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// checkInstances checks that h runs exactly n instances from basePort:
// each one active, enabled and in the upstream (not down); the ports above
// them inactive, disabled and out of the upstream.
func checkInstances(t *testing.T, h *testbed.Host, n int) {
	t.Helper()
	up := upstreamFile(t, h)
	for port := basePort; port < basePort+max(n, instances); port++ {
		unit := fmt.Sprintf("my-app@%d", port)
		out, _ := fleet.Run(context.Background(), h, "systemctl is-active "+unit+"; systemctl is-enabled "+unit+" 2>/dev/null || true")
		state := strings.Fields(out)
		line := fmt.Sprintf("server 127.0.0.1:%d;", port)
		if port < basePort+n {
			if len(state) < 2 || state[0] != "active" || state[1] != "enabled" || !strings.Contains(up, line) {
				t.Errorf("%s should serve: %q, upstream:\n%s", unit, out, up)
			}
		} else if len(state) < 1 || state[0] == "active" || (len(state) > 1 && state[1] == "enabled") || strings.Contains(up, fmt.Sprintf("127.0.0.1:%d", port)) {
			t.Errorf("%s should be gone: %q, upstream:\n%s", unit, out, up)
		}
	}
	if strings.Contains(up, "down") {
		t.Errorf("an instance is left down:\n%s", up)
	}
	nginxTestPasses(t, h)
}

func TestScaleDownAndUpUnderLoad(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	defer resetHost(t, h)
	cfg := oneHostConfig(t, "")
	for _, n := range []int{2, 4} {
		var out string
		var code int
		res := underLoad(t, []*testbed.Host{h}, func() {
			out, code = rollout(t, "scale", "-c", cfg, "--instances", strconv.Itoa(n))
		})
		if code != 0 {
			t.Fatalf("scale to %d exited %d", n, code)
		}
		if res[0].Failed != 0 {
			t.Errorf("scale to %d: %d failed requests (%v)", n, res[0].Failed, res[0].Failures)
		}
		if !strings.Contains(out, "scale") {
			t.Errorf("no scale steps in the output")
		}
		checkInstances(t, h, n)
	}
	// A server line whose unit is neither running nor enabled is not one
	// of the app's instances: it is left alone.
	if out, err := fleet.Run(context.Background(), h, `sudo -n sed -i 's/^}$/    server 127.0.0.1:3999;\n}/' /etc/nginx/conf.d/my-app-upstream.conf && sudo -n nginx -t 2>&1`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, code := rollout(t, "scale", "-c", cfg, "--instances", "4")
	if code != 0 || !strings.Contains(out, "not one of ours, left alone") || !strings.Contains(out, "already 4 instances") {
		t.Errorf("scale with a foreign server line exited %d", code)
	}
	if !strings.Contains(upstreamFile(t, h), "server 127.0.0.1:3999;") {
		t.Errorf("the foreign server line was removed")
	}
}

// instances: auto runs one instance per CPU core of the host, and a deploy
// reconciles the host with it.
func TestInstancesAuto(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	defer resetHost(t, h)
	cores := hostCores(t, h)
	path := oneHostConfig(t, "")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), fmt.Sprintf("instances: %d", instances), "instances: auto", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := rollout(t, "plan", "-c", path, "--version", "v1"); code != 0 || !strings.Contains(out, "one per CPU core") {
		t.Errorf("plan with instances: auto exited %d", code)
	}
	res := underLoad(t, []*testbed.Host{h}, func() {
		if _, code := rollout(t, "deploy", "-c", path, "--version", "v1"); code != 0 {
			t.Errorf("deploy with instances: auto exited %d", code)
		}
	})
	if res[0].Failed != 0 {
		t.Errorf("%d failed requests (%v)", res[0].Failed, res[0].Failures)
	}
	checkInstances(t, h, cores)
	if out, code := rollout(t, "status", "-c", path); code != 0 || strings.Count(out, "active/running") != cores {
		t.Errorf("status with instances: auto exited %d, want %d instances running", code, cores)
	}
	if out, code := rollout(t, "logs", "-c", path, "--port", strconv.Itoa(basePort+cores-1), "--lines", "1"); code != 0 || !strings.Contains(out, fmt.Sprintf("%s:%d ", h.Addr, basePort+cores-1)) {
		t.Errorf("logs with instances: auto exited %d", code)
	}
}

// hostCores is how many CPU cores h has, as instances: auto counts them.
func hostCores(t *testing.T, h *testbed.Host) int {
	t.Helper()
	out, err := fleet.Run(context.Background(), h, "nproc")
	if err != nil {
		t.Fatal(err)
	}
	cores, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	return cores
}
