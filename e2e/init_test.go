package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// initArgs are `rollout init`'s arguments for hosts, writing cfg.
func initArgs(cfg string, hosts []*testbed.Host, extra ...string) []string {
	args := []string{"init", "-c", cfg, "--user", "deploy", "--key", fleet.KeyFile, "--known-hosts", fleet.KnownHosts}
	for _, h := range hosts {
		args = append(args, "--host", h.Addr)
	}
	return append(args, extra...)
}

// On hosts set up by hand as the seed article (provision.sh, not rollout
// setup), init writes a config that plan and deploy use unchanged, with
// no failed request under load.
func TestInitFromArticleHostsDeploysUnderLoad(t *testing.T) {
	resetFleet(t)
	cfg := filepath.Join(t.TempDir(), "rollout.yaml")
	out, code := rollout(t, initArgs(cfg, fleet.Hosts)...)
	if code != 0 {
		t.Fatalf("init exited %d:\n%s", code, out)
	}
	for _, want := range []string{
		"app my-app: my-app@.service, instances 3000-3003 (4 running, about ",
		"nginx upstream my_app in /etc/nginx/conf.d/my-app-upstream.conf: 3000-3003 at 127.0.0.1",
		"site: 127.0.0.1:80",
		"output: /var/log/my-app/stderr-{port}.log, /var/log/my-app/stdout-{port}.log",
		"health: /healthz 200",
		"deploy (passwordless sudo)",
		"MiB available",
		"wrote " + cfg + " for my-app on 2 host(s)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("init's report lacks %q:\n%s", want, out)
		}
	}
	written, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("init wrote:\n%s", written)
	// What a surge would take, from the hosts' memory and the instances'.
	if !strings.Contains(string(written), "# New instances beside the old ones (strategy.max_surge: 100%) would need\n# about ") ||
		!strings.Contains(string(written), "(4 of about ") {
		t.Errorf("init did not say what max_surge would need:\n%s", written)
	}

	if out, code := rollout(t, initArgs(cfg, fleet.Hosts)...); code != 2 || !strings.Contains(out, "does not overwrite it without --force") {
		t.Errorf("init over an existing file exited %d:\n%s", code, out)
	}
	if again, _ := os.ReadFile(cfg); string(again) != string(written) {
		t.Error("init changed the existing file without --force")
	}

	if out, code := rollout(t, "plan", "-c", cfg, "--version", "v2"); code != 0 {
		t.Fatalf("plan with init's config exited %d:\n%s", code, out)
	}
	// The article's CI puts the code in place; rollout restarts onto it.
	stageEverywhere(t, testbed.GoodRelease("v2"))
	for _, h := range fleet.Hosts {
		if out, err := fleet.Run(context.Background(), h, "sudo -n /usr/local/sbin/my-app-activate v2"); err != nil {
			t.Fatalf("activate v2 on %s: %v\n%s", h.Name, err, out)
		}
	}
	results := underLoad(t, fleet.Hosts, func() { out, code = rollout(t, "deploy", "-c", cfg, "--version", "v2") })
	if code != 0 {
		t.Fatalf("deploy with init's config exited %d:\n%s", code, out)
	}
	for i, r := range results {
		if r.Failed != 0 || r.Requests == 0 {
			t.Errorf("%s: %d of %d requests failed during the deploy (%v)", fleet.Hosts[i].Name, r.Failed, r.Requests, r.Failures)
		}
	}
	for _, h := range fleet.Hosts {
		for port, v := range versionsServed(t, h) {
			if v != "v2" {
				t.Errorf("%s:%d serves %q after the deploy, want v2", h.Name, port, v)
			}
		}
	}

	// One host moved by a surge: init on both writes the first range and
	// max_surge, and status with that config finds every instance.
	one := filepath.Join(t.TempDir(), "one.yaml")
	if out, code := rollout(t, initArgs(one, fleet.Hosts[:1])...); code != 0 {
		t.Fatalf("init of one host exited %d:\n%s", code, out)
	}
	if out, code := rollout(t, "deploy", "-c", one, "--version", "v2", "--max-surge", "100%"); code != 0 {
		t.Fatalf("the surge of one host exited %d:\n%s", code, out)
	}
	if out, code := rollout(t, initArgs(cfg, fleet.Hosts, "--force")...); code != 0 {
		t.Fatalf("init again exited %d:\n%s", code, out)
	}
	written, err = os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	serveFrom := fmt.Sprintf("# The hosts serve from %s 3004-3007, %s 3000-3003", fleet.Hosts[0].Addr, fleet.Hosts[1].Addr)
	if !strings.Contains(string(written), serveFrom) || !strings.Contains(string(written), "base_port: 3000\n") || !strings.Contains(string(written), "\nstrategy:\n  max_surge: 100%\n") {
		t.Fatalf("init on a moved host:\n%s", written)
	}
	st, code := rollout(t, "status", "-c", cfg)
	if code != 0 || !strings.Contains(st, fleet.Hosts[0].Addr+"  3004") || !strings.Contains(st, fleet.Hosts[1].Addr+"  3000") {
		t.Errorf("status with init's config of a moved host exited %d:\n%s", code, st)
	}
}

// A second app set up by hand beside the first (its own template, ports
// and upstream): init lists both and asks which, and --app writes it.
func TestInitTwoAppsOnAHost(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	if out, err := fleet.RunInput(context.Background(), h, "sudo -n bash -s", strings.NewReader(addAuth)); err != nil {
		t.Fatalf("set auth up by hand: %v\n%s", err, out)
	}
	cfg := filepath.Join(t.TempDir(), "rollout.yaml")
	out, code := rollout(t, initArgs(cfg, []*testbed.Host{h})...)
	if code != 2 || !strings.Contains(out, "app auth: auth@.service, instances 4190-4191 (2 running, about ") ||
		!strings.Contains(out, "nginx upstream auth in /etc/nginx/conf.d/auth.conf: 4190-4191 at 127.0.0.1") ||
		!strings.Contains(out, "app my-app: my-app@.service, instances 3000-3003 (4 running, about ") ||
		!strings.Contains(out, "several apps found: pick one with --app (auth, my-app)") {
		t.Fatalf("init on a host with two apps exited %d:\n%s", code, out)
	}
	if _, err := os.Stat(cfg); err == nil {
		t.Fatal("init wrote a config without knowing which app")
	}
	// Two instances on a host of 2 cores: one per core.
	out, code = rollout(t, initArgs(cfg, []*testbed.Host{h}, "--app", "auth")...)
	if code != 0 {
		t.Fatalf("init --app auth exited %d:\n%s", code, out)
	}
	written, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"app: auth\n", "unit: auth@{port}\n", "base_port: 4190\ninstances: auto\n", "path: /healthz\n", "upstream_file: /etc/nginx/conf.d/auth.conf\n  upstream: auth\n", "address: 127.0.0.1:8081\n"} {
		if !strings.Contains(string(written), want) {
			t.Errorf("auth's config lacks %q:\n%s", want, written)
		}
	}
	if out, code := rollout(t, "plan", "-c", cfg, "--version", "v2"); code != 0 || !strings.Contains(out, "auth@4190") || !strings.Contains(out, "/etc/nginx/conf.d/auth.conf") {
		t.Fatalf("plan with auth's config exited %d:\n%s", code, out)
	}
}

// A host with no template instances running or enabled: init says so,
// writes nothing, and exits non-zero.
func TestInitWithoutInstances(t *testing.T) {
	h := fleet.Hosts[1]
	resetHost(t, h)
	if out, err := fleet.Run(context.Background(), h, "sudo -n systemctl disable --now my-app@3000 my-app@3001 my-app@3002 my-app@3003 2>&1"); err != nil {
		t.Fatalf("stop the instances: %v\n%s", err, out)
	}
	cfg := filepath.Join(t.TempDir(), "rollout.yaml")
	out, code := rollout(t, initArgs(cfg, []*testbed.Host{h})...)
	if code != 1 || !strings.Contains(out, "no template instances named by a port (NAME@PORT.service) running or enabled") ||
		!strings.Contains(out, "nothing to write") {
		t.Fatalf("init on a host without instances exited %d:\n%s", code, out)
	}
	if _, err := os.Stat(cfg); err == nil {
		t.Fatal("init wrote a config for a host without instances")
	}
}
