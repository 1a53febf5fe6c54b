package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
	"github.com/rollout-dev/rollout/sshexec"
)

// The health check goes where Nginx sends requests: with the instances
// listening on the host's own address only (not on loopback) and the
// upstream naming that address, a deploy passes, under load and without a
// failed request, only because rollout checks nginx.server_address.
func TestHealthCheckOnServerAddress(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	defer resetHost(t, h)
	script := fmt.Sprintf(`set -e
mkdir -p /etc/systemd/system/my-app@.service.d
printf '[Service]\nEnvironment=BIND_ADDRESS=%[1]s\n' >/etc/systemd/system/my-app@.service.d/bind.conf
systemctl daemon-reload
systemctl restart 'my-app@*.service'
sed -i 's/server 127.0.0.1:/server %[1]s:/' /etc/nginx/conf.d/my-app-upstream.conf
nginx -t 2>/dev/null
nginx -s reload`, h.Addr)
	if out, err := fleet.Run(context.Background(), h, "sudo -n sh -c "+sshexec.Quote(script)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	path := oneHostConfig(t, "")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "  upstream: my_app\n", "  upstream: my_app\n  server_address: "+h.Addr+"\n", 1)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// The restarted instances boot; status checks them where Nginx does.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, code := rollout(t, "status", "-c", path)
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the instances are not serving on %s after 30s:\n%s", h.Addr, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	var out string
	var code int
	res := underLoad(t, []*testbed.Host{h}, func() {
		out, code = rollout(t, "deploy", "-c", path, "--version", "v1")
	})
	if code != 0 {
		t.Fatalf("deploy with server_address %s exited %d:\n%s", h.Addr, code, out)
	}
	if res[0].Failed != 0 {
		t.Errorf("%d failed requests (%v)", res[0].Failed, res[0].Failures)
	}
	if out, code := rollout(t, "status", "-c", path); code != 0 || strings.Count(out, "active/running") != instances {
		t.Errorf("status exited %d:\n%s", code, out)
	}
	if up := upstreamFile(t, h); strings.Contains(up, "down") || strings.Count(up, "server "+h.Addr+":") != instances {
		t.Errorf("upstream after the deploy:\n%s", up)
	}
}

// With instances: auto, local hooks get the ports the host resolved to
// (one per core), not an empty ROLLOUT_PORTS.
func TestLocalHooksGetResolvedPorts(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	defer resetHost(t, h)
	cores := hostCores(t, h)
	got := filepath.Join(t.TempDir(), "ports")
	path := oneHostConfig(t, "")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), fmt.Sprintf("instances: %d", instances), "instances: auto", 1)
	cfg = strings.Replace(cfg, "hooks:\n", "hooks:\n  before: ['echo \"$ROLLOUT_PORTS\" >"+got+"']\n  after: ['echo \"$ROLLOUT_PORTS\" >>"+got+"']\n", 1)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := rollout(t, "deploy", "-c", path, "--version", "v1"); code != 0 {
		t.Fatalf("deploy exited %d:\n%s", code, out)
	}
	var ports []string
	for i := range cores {
		ports = append(ports, strconv.Itoa(basePort+i))
	}
	want := strings.Join(ports, " ") + "\n"
	if b, err := os.ReadFile(got); err != nil || string(b) != want+want {
		t.Errorf("ROLLOUT_PORTS before and after: %q, want %q twice (%v)", b, want, err)
	}
}
