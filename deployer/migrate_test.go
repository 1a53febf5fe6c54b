package deployer

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

// release.migrate runs once, on migrate_host only, after every host has
// the release and before any instance restarts; a rerun of the same
// release does not run it again; a failure restarts nothing and is the
// migrate step's (exit 3).
func TestMigrateRunsOnceBeforeAnyRestart(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001).withReleases(relV1)
	web2 := newFakeRemote(t, 3000, 3001).withReleases(relV1)
	yaml := "ports: [3000, 3001]\nrelease: {root: /srv/my-app, keep: 2, migrate: ./migrate.sh, migrate_host: web2}\n"
	d, _ := fakeDeployer(t, yaml, web1, web2)
	var out bytes.Buffer
	d.Stdout = &out
	d.Artifact = testArtifact("release v2")
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	id := rep.Release
	if web1.migrations != 0 || web2.migrations != 1 {
		t.Errorf("migrations: web1 %d, web2 %d; want only web2, once", web1.migrations, web2.migrations)
	}
	// web2: upload, then the migration, then the restarts; web1 had its
	// upload before the migration too (every host at once, then migrate).
	if got := opsLike(web2, "upload", "migrate", "restart"); !slices.Equal(got[:2], []string{"upload " + id, "migrate " + id}) {
		t.Errorf("web2 ops %v", got)
	}
	if !strings.Contains(out.String(), "web2 migrate | migrating "+id+"\n") {
		t.Errorf("the migration's output, prefixed, is not shown:\n%s", out.String())
	}

	// The same release again (--force): not migrated twice.
	d.Force = true
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if web2.migrations != 1 {
		t.Errorf("a rerun of release %s migrated again (%d)", id, web2.migrations)
	}

	// A failing migration: nothing restarts, the error is the migrate step's.
	web3 := newFakeRemote(t, 3000, 3001).withReleases(relV1)
	web3.migrateFails = true
	d3, _ := fakeDeployer(t, "ports: [3000, 3001]\nrelease: {root: /srv/my-app, migrate: ./migrate.sh}\n", web3)
	d3.Artifact = testArtifact("release v3")
	pids := []int{web3.unit(3000).pid, web3.unit(3001).pid}
	_, err = d3.Deploy(testCtx(t))
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepMigrate || !strings.Contains(err.Error(), "release.migrate exited 1") {
		t.Fatalf("got %v, want the migrate step's failure", err)
	}
	if web3.unit(3000).pid != pids[0] || web3.unit(3001).pid != pids[1] || len(opsLike(web3, "restart", "switch")) != 0 {
		t.Errorf("a failed migration restarted or switched something: %v", opsLike(web3, "restart", "switch"))
	}
}

// The plan shows the migration once, on its host, with its command.
func TestMigratePlanned(t *testing.T) {
	plan := planScripts(t, minimal+"release: {migrate: npm run migrate, migrate_host: web2.example.com}\n")
	if strings.Count(plan, "migrate: once for the whole fleet, on this host") != 1 || !strings.Contains(plan, "rollout-release-migrate") {
		t.Fatalf("the plan does not show the migration once:\n%s", plan)
	}
	if i, j := strings.Index(plan, "host web2.example.com"), strings.Index(plan, "migrate: once"); i < 0 || j < i {
		t.Errorf("the migration is not on web2.example.com's steps")
	}
}
