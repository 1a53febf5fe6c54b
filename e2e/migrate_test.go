package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// release.migrate runs once per release on migrate_host, in the new
// release as the app's user with the app's env, after every host has the
// release and before any instance restarts; a rerun of the release does
// not run it again; a failing one stops the deploy with exit 3 and the old
// release still serving everywhere.
func TestMigrateOnceBeforeRestarts(t *testing.T) {
	hosts := fleet.Hosts
	migrateHost := hosts[1]
	const log = "/var/tmp/rollout-migrations"
	for _, h := range hosts {
		if _, err := fleet.Run(context.Background(), h, "rm -f "+log); err != nil {
			t.Fatal(err)
		}
	}
	cfg := releaseConfig(t, hosts, `  migrate: 'echo "migrating $ROLLOUT_RELEASE as $(id -un) in $PWD with ${DATABASE_URL%%:*}" && echo "$ROLLOUT_RELEASE" >>`+log+`'
  migrate_host: `+migrateHost.Addr+"\n")
	moveToReleases(t, cfg, hosts)

	art := artifactDir(t, testbed.GoodRelease("v2"))
	out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2", "--artifact", art)
	if code != 0 {
		t.Fatalf("deploy exited %d:\n%s", code, out)
	}
	id := onRelease(t, cfg, hosts, "v2", "ok")
	want := migrateHost.Addr + " migrate | migrating " + id + " as nodeuser in /srv/my-app/releases/" + id + " with postgres"
	if !strings.Contains(out, want) {
		t.Errorf("the migration's output is not shown as %q:\n%s", want, out)
	}
	ran := func(h *testbed.Host) string {
		got, _ := fleet.Run(context.Background(), h, "cat "+log+" 2>/dev/null || true")
		return strings.TrimSpace(got)
	}
	if ran(migrateHost) != id || ran(hosts[0]) != "" {
		t.Errorf("migrations: %s ran %q, %s ran %q; want %s once on %s", migrateHost.Addr, ran(migrateHost), hosts[0].Addr, ran(hosts[0]), id, migrateHost.Addr)
	}

	// The same release again: not migrated twice.
	out, code = rollout(t, "deploy", "-c", cfg, "--version", "v2", "--artifact", art, "--force")
	if code != 0 || !strings.Contains(out, "was migrated by an earlier run") || ran(migrateHost) != id {
		t.Errorf("the rerun exited %d, migrations %q:\n%s", code, ran(migrateHost), out)
	}

	// A migration that fails: exit 3, its words shown, nothing restarted.
	bad := releaseConfig(t, hosts, "  migrate: 'echo relation users does not exist >&2; exit 3'\n")
	out, code = rollout(t, "deploy", "-c", bad, "--version", "v3", "--artifact", artifactDir(t, testbed.GoodRelease("v3")))
	if code != 3 || !strings.Contains(out, "relation users does not exist") || !strings.Contains(out, "release.migrate exited 3") {
		t.Errorf("a failing migration exited %d:\n%s", code, out)
	}
	for _, h := range hosts {
		for port, v := range versionsServed(t, h) {
			if v != "v2" {
				t.Errorf("%s:%d serves %s after a failed migration", h.Addr, port, v)
			}
		}
	}
}
