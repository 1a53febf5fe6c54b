package deployer

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

const pauseYAML = releaseYAML + "strategy: {batches: [1, 100%], pause_after_canary: true}\n"

// pausedFleet deploys v2 with pause_after_canary onto two hosts on v1.
func pausedFleet(t *testing.T) (web1, web2 *fakeRemote, id string) {
	web1 = newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	web2 = newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	d, _ := fakeDeployer(t, pauseYAML, web1, web2)
	d.Artifact = testArtifact("release v2")
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	id = rep.Release
	if fmt.Sprint(opsLike(web1, "restart")) != "[restart 3000]" || len(opsLike(web2, "restart")) != 0 {
		t.Fatalf("restarted %v %v, want the canary alone", opsLike(web1, "restart"), opsLike(web2, "restart"))
	}
	if !strings.HasPrefix(rep.Paused, "paused after batch 1 of 2: 1 of 6 instances on the release (web1 1)") ||
		rep.Hosts[0].Outcome != HostPaused || rep.Hosts[1].Outcome != HostNotStarted {
		t.Fatalf("paused %q, hosts %+v", rep.Paused, rep.Hosts)
	}
	for _, h := range []*fakeRemote{web1, web2} {
		// Both hosts' logs say the rollout is paused; current stays.
		if h.outcome(id) != ReleaseCanary || h.current != relV1 || h.locked || strings.Contains(h.upstream, "down") {
			t.Fatalf("outcome %s, current %s, locked %v, upstream:\n%s", h.outcome(id), h.current, h.locked, h.upstream)
		}
		h.ops = nil
	}
	return web1, web2, id
}

func TestPauseThenPromote(t *testing.T) {
	web1, web2, id := pausedFleet(t)
	d, _ := fakeDeployer(t, releaseYAML+"strategy: {batches: [1, 100%]}\n", web1, web2)
	rep, err := d.Promote(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Release != id || rep.Version != "v2" || len(web1.uploads)+len(web2.uploads) != 2 {
		t.Errorf("promoted %s (%s), uploads %v %v", rep.Release, rep.Version, web1.uploads, web2.uploads)
	}
	// The canary is left as it is; everything else goes.
	if fmt.Sprint(opsLike(web1, "restart")) != "[restart 3001 restart 3002]" || len(opsLike(web2, "restart")) != 3 {
		t.Errorf("restarted %v %v", opsLike(web1, "restart"), opsLike(web2, "restart"))
	}
	for _, h := range []*fakeRemote{web1, web2} {
		if h.outcome(id) != ReleaseOK || h.current != id {
			t.Errorf("outcome %s, current %s", h.outcome(id), h.current)
		}
	}
	// Nothing is paused any more.
	if _, err := d.Promote(testCtx(t)); err == nil || !strings.Contains(err.Error(), "nothing to promote") {
		t.Errorf("a second promote: %v", err)
	}
}

// A promote whose release fails reverts every instance on it, the canary
// included.
func TestPromoteFailureRevertsTheCanaryToo(t *testing.T) {
	web1, web2, id := pausedFleet(t)
	web2.bad, web2.badPort = "-v2", 3001
	d, _ := fakeDeployer(t, releaseYAML+"strategy: {batches: [1, 100%]}\n", web1, web2)
	rep, err := d.Promote(testCtx(t))
	if err == nil || !strings.HasPrefix(rep.Reverted, "reverted to "+relV1) {
		t.Fatalf("err %v, reverted %q", err, rep.Reverted)
	}
	for _, h := range []*fakeRemote{web1, web2} {
		for p, r := range h.runs {
			if r != relV1 {
				t.Errorf("%d runs %s after the revert", p, r)
			}
		}
		if h.outcome(id) != ReleaseBad || h.current != relV1 {
			t.Errorf("outcome %s, current %s", h.outcome(id), h.current)
		}
	}
}

// A rollback of a paused rollout takes the canary back to current and
// marks the canary's release BAD.
func TestPauseThenRollback(t *testing.T) {
	web1, web2, id := pausedFleet(t)
	d, _ := fakeDeployer(t, releaseYAML, web1, web2)
	rep, err := d.Rollback(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Release != relV1 || fmt.Sprint(opsLike(web1, "restart")) != "[restart 3000]" || len(opsLike(web2, "restart")) != 0 {
		t.Errorf("rolled back to %s; restarted %v %v", rep.Release, opsLike(web1, "restart"), opsLike(web2, "restart"))
	}
	for _, h := range []*fakeRemote{web1, web2} {
		if h.outcome(id) != ReleaseBad || h.current != relV1 || h.runs[3000] != relV1 {
			t.Errorf("outcome %s, current %s, 3000 runs %s", h.outcome(id), h.current, h.runs[3000])
		}
	}
}

func TestPromoteNothingPaused(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	d, _ := fakeDeployer(t, releaseYAML+"strategy: {batches: [1, 100%]}\n", web1)
	_, err := d.Promote(testCtx(t))
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepPreflight || len(web1.ops) != 0 {
		t.Errorf("err %v, ops %v", err, web1.ops)
	}
}
