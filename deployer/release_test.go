package deployer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const (
	relV1 = "20260101000000-v1"
	relV2 = "20260102000000-v2"
	relV3 = "20260103000000-v3"
)

// testArtifact is an artifact holding data.
func testArtifact(data string) *Artifact {
	sum := sha256.Sum256([]byte(data))
	return &Artifact{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(data)), nil }}
}

const releaseYAML = "ports: [3000, 3001, 3002]\nrelease: {root: /srv/my-app, keep: 2}\n"

// opsLike are the host's operations that start with one of prefixes.
func opsLike(r *fakeRemote, prefixes ...string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, op := range r.ops {
		for _, p := range prefixes {
			if strings.HasPrefix(op, p) {
				out = append(out, op)
			}
		}
	}
	return out
}

func TestReleaseDeployShipsAndSwitchesEachInstanceBeforeItsRestart(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	web2 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	d, _ := fakeDeployer(t, releaseYAML, web1, web2)
	d.Artifact = testArtifact("release v2")
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	id := rep.Release
	if !strings.HasSuffix(id, "-v2") || ValidReleaseID(id) != nil {
		t.Fatalf("release %q, want a new ID ending in -v2", id)
	}
	for _, h := range []*fakeRemote{web1, web2} {
		if !slices.Equal(h.uploads, []string{id}) {
			t.Errorf("uploads %v, want just %s", h.uploads, id)
		}
		got := opsLike(h, "upload", "switch", "restart")
		want := []string{"upload " + id}
		for _, p := range []int{3000, 3001, 3002} {
			want = append(want, "switch "+itoa(p)+" "+id, "restart "+itoa(p))
		}
		if !slices.Equal(got, want) {
			t.Errorf("ops %v, want %v", got, want)
		}
		for _, p := range []int{3000, 3001, 3002} {
			if h.links[p] != id || h.runs[p] != id {
				t.Errorf("%d: link %s, runs %s; want %s", p, h.links[p], h.runs[p], id)
			}
		}
		if h.current != id || h.outcome(id) != ReleaseOK {
			t.Errorf("current %s, outcome %s; want %s ok", h.current, h.outcome(id), id)
		}
	}
}

func TestReleaseRerunSkipsWhatAlreadyRunsIt(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	d, _ := fakeDeployer(t, releaseYAML, web1)
	d.Artifact = testArtifact("release v2")
	first, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	web1.ops = nil
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Release != first.Release {
		t.Errorf("rerun chose %s, want the release already there, %s", rep.Release, first.Release)
	}
	if got := opsLike(web1, "upload", "switch", "restart"); len(got) != 0 {
		t.Errorf("a rerun did %v; want nothing (every instance runs the release)", got)
	}
	if !slices.Equal(rep.Hosts[0].Skipped, []int{3000, 3001, 3002}) {
		t.Errorf("skipped %v", rep.Hosts[0].Skipped)
	}

	d.Force = true
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := opsLike(web1, "restart"); len(got) != 3 {
		t.Errorf("--force restarted %v, want all three", got)
	}
}

func TestReleaseRerunResumesAHalfRolledHost(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	web1.releases[relV2] = true
	web1.relLog = append(web1.relLog, ReleaseEntry{ID: relV2, SHA256: testArtifact("release v2").SHA256, Outcome: ReleaseNew})
	web1.links[3000], web1.runs[3000] = relV2, relV2 // done before the controller died
	web1.links[3001] = relV2                         // switched, not restarted
	d, _ := fakeDeployer(t, releaseYAML, web1)
	d.Artifact = testArtifact("release v2")
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Release != relV2 || len(web1.uploads) != 0 {
		t.Errorf("release %s, uploads %v; want %s reused", rep.Release, web1.uploads, relV2)
	}
	if got := opsLike(web1, "restart"); !slices.Equal(got, []string{"restart 3001", "restart 3002"}) {
		t.Errorf("restarted %v, want 3001 and 3002", got)
	}
}

func TestReleaseFailureRevertsEveryHost(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	web2 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	d, events := fakeDeployer(t, releaseYAML, web1, web2)
	d.Artifact = testArtifact("release v2")
	// The new release cannot start on web2's second instance.
	web2.bad, web2.badPort = "-v2", 3001
	rep, err := d.Deploy(testCtx(t))
	if err == nil {
		t.Fatal("deploy passed")
	}
	id := rep.Release
	if rep.Reverted != "reverted to "+relV1 {
		t.Errorf("reverted %q", rep.Reverted)
	}
	for _, h := range []*fakeRemote{web1, web2} {
		for _, p := range []int{3000, 3001, 3002} {
			if h.links[p] != relV1 || h.runs[p] != relV1 {
				t.Errorf("%d: link %s runs %s, want %s", p, h.links[p], h.runs[p], relV1)
			}
		}
		if h.current != relV1 || h.outcome(id) != ReleaseBad {
			t.Errorf("current %s, %s is %q; want current %s, BAD", h.current, id, h.outcome(id), relV1)
		}
	}
	// web2 goes back first, then web1, its instances in reverse order.
	var order []string
	for _, e := range *events {
		if e.Step == StepSwitch && e.Status == StatusOK && strings.Contains(e.Message, relV1) {
			order = append(order, e.Host+":"+itoa(e.Port))
		}
	}
	want := []string{"web2:3001", "web2:3000", "web1:3002", "web1:3001", "web1:3000"}
	if !slices.Equal(order, want) {
		t.Errorf("reverted %v, want %v", order, want)
	}
	// Every instance ends in Nginx.
	for _, h := range []*fakeRemote{web1, web2} {
		if strings.Contains(h.upstream, "down") {
			t.Errorf("upstream still marks instances down:\n%s", h.upstream)
		}
	}
}

func TestReleaseFailureWithHaltKeepsItsInstances(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	d, _ := fakeDeployer(t, "ports: [3000, 3001, 3002]\nrelease: {root: /srv/my-app, on_failure: halt}\n", web1)
	d.Artifact = testArtifact("release v2")
	web1.failAfterRestart = 3001
	rep, err := d.Deploy(testCtx(t))
	if err == nil || rep.Reverted != "" {
		t.Fatalf("err %v, reverted %q; want a failure and no revert", err, rep.Reverted)
	}
	if web1.runs[3000] != rep.Release || web1.runs[3002] != relV1 || web1.outcome(rep.Release) != ReleaseFailed || web1.current != relV1 {
		t.Errorf("runs %v, outcome %s, current %s", web1.runs, web1.outcome(rep.Release), web1.current)
	}
}

func TestReleasePrepareFailureRestartsNothing(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	web2 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	d, _ := fakeDeployer(t, releaseYAML, web1, web2)
	d.Artifact = testArtifact("prepare fails")
	_, err := d.Deploy(testCtx(t))
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepUpload || !errors.Is(err, ErrPrepare) || !strings.Contains(err.Error(), "npm ERR!") {
		t.Fatalf("err %v, want the prepare's failure at the upload step with its output", err)
	}
	for _, h := range []*fakeRemote{web1, web2} {
		if got := opsLike(h, "switch", "restart"); len(got) != 0 {
			t.Errorf("did %v after a failed prepare", got)
		}
	}
}

func TestReleaseLayoutOfTheSeedIsRefused(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	web1.workDir = "/var/www/my-app"
	d, _ := fakeDeployer(t, releaseYAML, web1)
	d.Artifact = testArtifact("release v2")
	_, err := d.Deploy(testCtx(t))
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepPreflight || !strings.Contains(err.Error(), "my-app@3000 runs from /var/www/my-app, not /srv/my-app/instances/3000") ||
		!strings.Contains(err.Error(), "rollout setup") {
		t.Fatalf("err %v", err)
	}
	if len(web1.uploads) != 0 || len(opsLike(web1, "restart")) != 0 {
		t.Error("changed a host in the seed's layout")
	}
}

func TestRollbackGoesBackOneGoodReleaseAtATime(t *testing.T) {
	hosts := []*fakeRemote{newFakeRemote(t, 3000, 3001), newFakeRemote(t, 3000, 3001)}
	for _, h := range hosts {
		h.withReleases(relV3)
		h.releases[relV1], h.releases[relV2] = true, true
		h.relLog = append([]ReleaseEntry{{ID: relV1, Version: "v1", Outcome: ReleaseOK}, {ID: relV2, Version: "v2", Outcome: ReleaseOK}}, h.relLog...)
	}
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\nrelease: {}\n", hosts...)
	d.Version = "" // as the CLI's rollback: the version is the release's
	for _, want := range []string{relV2, relV1} {
		rep, err := d.Rollback(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Release != want || rep.Version != "v"+want[len(want)-1:] {
			t.Fatalf("rolled back to %s (version %q), want %s", rep.Release, rep.Version, want)
		}
		for _, h := range hosts {
			if h.current != want || h.runs[3000] != want || h.runs[3001] != want || h.outcome(want) != ReleaseReverted {
				t.Errorf("current %s, runs %v, outcome %s", h.current, h.runs, h.outcome(want))
			}
		}
	}
	for _, h := range hosts {
		if h.outcome(relV3) != ReleaseBad || h.outcome(relV2) != ReleaseBad {
			t.Errorf("v3 %s, v2 %s; both abandoned releases must be BAD", h.outcome(relV3), h.outcome(relV2))
		}
	}
	_, err := d.Rollback(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "nothing to roll back to") {
		t.Fatalf("third rollback: %v", err)
	}
}

func TestRollbackToABadReleaseIsRefused(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001).withReleases(relV2)
	h.releases[relV1] = true
	h.relLog = append(h.relLog, ReleaseEntry{ID: relV1, Outcome: ReleaseBad})
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\nrelease: {}\n", h)
	d.RollbackTo = relV1
	if _, err := d.Rollback(testCtx(t)); err == nil || !strings.Contains(err.Error(), "BAD") {
		t.Fatalf("err %v", err)
	}
	if len(opsLike(h, "restart")) != 0 {
		t.Error("restarted instances")
	}
}

func TestCleanupKeepsGoodReleasesAndWhatIsInUse(t *testing.T) {
	st := releaseState{present: map[string]bool{}, current: "20260102000000-b"}
	for _, e := range []ReleaseEntry{
		{ID: "20260101000000-a", Outcome: ReleaseOK},
		{ID: "20260102000000-b", Outcome: ReleaseOK},
		{ID: "20260103000000-c", Outcome: ReleaseBad},
		{ID: "20260104000000-d", Outcome: ReleaseOK},
		{ID: "20260105000000-e", Outcome: ReleaseNew},
	} {
		st.present[e.ID] = true
		st.log = append(st.log, e)
	}
	got := st.cleanup(2, "20260105000000-e", map[int]string{3000: "20260105000000-e", 3001: "20260101000000-a"})
	slices.Sort(got)
	// e (new) and d are the two kept; b is current, a is in use; c is BAD.
	if want := []string{"20260103000000-c"}; !slices.Equal(got, want) {
		t.Errorf("removes %v, want %v", got, want)
	}
}

func TestParseReleaseState(t *testing.T) {
	out := "@@rollout@@ releases\n20260101000000-v1\n20260102000000-v2\nnot-a-release\n" +
		"@@rollout@@ log\n{\"id\":\"20260101000000-v1\",\"version\":\"v1\",\"sha256\":\"aa\",\"outcome\":\"ok\"}\ngarbage\n" +
		"@@rollout@@ current\nreleases/20260101000000-v1\n" +
		"@@rollout@@ instances\n" +
		"3000 ../releases/20260102000000-v2 /srv/my-app/releases/20260101000000-v1 /srv/my-app/instances/3000\n" +
		"3001 - - /var/www/my app\n"
	st, err := parseReleaseState([]byte(out), "/srv/my-app")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.present) != 2 || len(st.log) != 1 || st.current != relV1 {
		t.Errorf("present %v, log %v, current %q", st.present, st.log, st.current)
	}
	if st.links[3000] != relV2 || st.running[3000] != relV1 || st.workDir[3000] != "/srv/my-app/instances/3000" {
		t.Errorf("3000: %q %q %q", st.links[3000], st.running[3000], st.workDir[3000])
	}
	if st.links[3001] != "" || st.running[3001] != "" || st.workDir[3001] != "/var/www/my app" {
		t.Errorf("3001: %q %q %q", st.links[3001], st.running[3001], st.workDir[3001])
	}
	if st.withSum("aa", "") != relV1 || st.withSum("bb", "") != "" || st.withSum("aa", "d1") != "" {
		t.Error("withSum")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// rollout scale on a host with releases starts a new instance on the
// host's current release.
func TestReleaseScaleStartsNewInstancesOnCurrent(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001).withReleases(relV1)
	d, _ := fakeDeployer(t, "ports: [3000, 3001, 3002]\nrelease: {}\n", web1)
	if _, err := d.Scale(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := opsLike(web1, "switch", "start"); !slices.Equal(got, []string{"switch 3002 " + relV1, "start 3002"}) {
		t.Errorf("ops %v, want 3002 switched to %s before it starts", got, relV1)
	}
}

// A revert that fails stops, leaves what is unhealthy out of Nginx, and
// says which release every instance runs.
func TestReleaseRevertThatFailsSaysWhatRunsWhere(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	d, _ := fakeDeployer(t, releaseYAML, web1)
	d.Artifact = testArtifact("release v2")
	// 3001 cannot start, on the new release or the old one.
	web1.failAfterRestart = 3001
	rep, err := d.Deploy(testCtx(t))
	if err == nil {
		t.Fatal("deploy passed")
	}
	want := "revert FAILED (unhealthy instances are left out of service): web1: 3000 runs " + rep.Release + ", 3001 runs " + relV1 + ", 3002 runs " + relV1
	if rep.Reverted != want {
		t.Errorf("reverted %q\nwant %q", rep.Reverted, want)
	}
	if !strings.Contains(web1.upstream, "server 127.0.0.1:3001 down;") || web1.outcome(rep.Release) != ReleaseBad {
		t.Errorf("3001 back in nginx, or the release not BAD (%s):\n%s", web1.outcome(rep.Release), web1.upstream)
	}
}
