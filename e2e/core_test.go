package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// deployUnderLoad runs a rollout command on hosts (its config cfg) under
// 400 requests per second, checks that no request failed and that it
// exited wantCode, and returns its output.
func deployUnderLoad(t *testing.T, hosts []*testbed.Host, cfg, name string, wantCode int, args ...string) string {
	t.Helper()
	var out string
	var code int
	res := underLoad(t, hosts, func() { out, code = rollout(t, append([]string{args[0], "-c", cfg}, args[1:]...)...) })
	noFailedRequests(t, res)
	if code != wantCode {
		t.Fatalf("%s exited %d, want %d:\n%s", name, code, wantCode, out)
	}
	return out
}

// The core of rollout, on the Debian release the hosts run (make e2e runs
// it on bullseye, bookworm and trixie: systemd 247/252/257, Nginx
// 1.18/1.22/1.26, OpenSSH 8.4/9.2/10): setup moves the seed's hosts to
// releases, a release ships under 400 req/s with no failed request, a
// release that cannot start is reverted by itself with the app's own words,
// a rollback goes back, and status sees every instance.
func TestCore(t *testing.T) {
	hosts := fleet.Hosts
	ctx := context.Background()
	versions, err := fleet.Run(ctx, hosts[0], `systemctl --version | head -1; /usr/sbin/nginx -v 2>&1; ssh -V 2>&1; node --version`)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s hosts run:\n%s", suite, versions)

	cfg := releaseConfig(t, hosts, "")
	moveToReleases(t, cfg, hosts)
	initial := releasesOf(t, cfg)[0].Current

	deployUnderLoad(t, hosts, cfg, "v2", 0, "deploy", "--version", "v2", "--artifact", artifactDir(t, testbed.GoodRelease("v2")))
	v2 := onRelease(t, cfg, hosts, "v2", "ok")

	broken := testbed.GoodRelease("v3")
	broken.RequiredEnv = append(broken.RequiredEnv, "PAYMENT_API_KEY")
	out := deployUnderLoad(t, hosts, cfg, "v3 that cannot start", 1, "deploy", "--version", "v3", "--artifact", artifactDir(t, broken))
	if !strings.Contains(out, "reverted to "+v2) || !strings.Contains(out, "FATAL: required environment variable PAYMENT_API_KEY is not set (version v3)") {
		t.Errorf("the failed deploy does not say it reverted to %s, or what the app said:\n%s", v2, out)
	}
	onRelease(t, cfg, hosts, "v2", "reverted")

	deployUnderLoad(t, hosts, cfg, "rollback", 0, "rollback")
	if got := onRelease(t, cfg, hosts, "v1", "reverted", "initial"); got != initial {
		t.Errorf("the rollback went to %s, want %s", got, initial)
	}
	if out, code := rollout(t, "status", "-c", cfg); code != 0 || strings.Count(out, " "+initial+" ") != len(hosts)*instances {
		t.Errorf("status exited %d; want every instance shown running %s:\n%s", code, initial, out)
	}
}
