package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// --env staging (or ROLLOUT_ENV) deploys to the hosts rollout.staging.yaml
// names, with its keys over rollout.yaml's; the config's other hosts are
// not touched.
func TestEnvDeploysToItsOwnHosts(t *testing.T) {
	prod, staging := fleet.Hosts[0], fleet.Hosts[1]
	t.Cleanup(func() { resetHost(t, staging) })
	if err := fleet.StageRelease(t.Context(), staging, testbed.GoodRelease("v7")); err != nil {
		t.Fatal(err)
	}
	cfg := fleetConfig(t, "1s")
	env := filepath.Join(filepath.Dir(cfg), "rollout.staging.yaml")
	if err := os.WriteFile(env, []byte("# staging: one host\nhosts:\n  - "+staging.Addr+"\nssh:\n  connect_timeout: 5s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := instanceStates(t, prod)
	out, code := rollout(t, "deploy", "-c", cfg, "--env", "staging", "--version", "v7")
	if code != 0 || !strings.Contains(out, "environment staging: "+env+" over "+cfg) || strings.Contains(out, prod.Addr) {
		t.Fatalf("deploy --env staging exited %d, or did not say its environment, or names %s:\n%s", code, prod.Addr, out)
	}
	for port, v := range versionsServed(t, staging) {
		if v != "v7" {
			t.Errorf("staging %s:%d serves %s", staging.Addr, port, v)
		}
	}
	after := instanceStates(t, prod)
	for port, b := range before {
		if after[port].MainPID != b.MainPID {
			t.Errorf("production %s:%d was restarted by the staging deploy", prod.Addr, port)
		}
	}
	out, code = rolloutEnv(t, []string{"ROLLOUT_ENV=staging"}, "history", "-c", cfg, "--lines", "1")
	if code != 0 || !strings.Contains(out, staging.Addr) || !strings.Contains(out, "v7") || strings.Contains(out, prod.Addr) {
		t.Errorf("history with ROLLOUT_ENV=staging exited %d:\n%s", code, out)
	}
	if out, _ := rollout(t, "history", "-c", cfg, "--hosts", prod.Addr, "--lines", "1"); strings.Contains(out, "v7") {
		t.Errorf("production's history shows the staging deploy:\n%s", out)
	}
}
