package deployer

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/rollout-dev/rollout/internal/secrets"
)

// testSecrets seals env to a new identity and returns the deploy's
// Secrets, opening with that identity, the config's secrets: line and
// the identity.
func testSecrets(t *testing.T, env secrets.Env, required ...string) (*Secrets, string, *age.X25519Identity) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	yaml := "secrets: {file: s.age, recipients: [" + id.Recipient().String() + "]}\n"
	return sealedFor(t, id, env, required...), yaml, id
}

// sealedFor is the deploy's Secrets of env, sealed to id.
func sealedFor(t *testing.T, id *age.X25519Identity, env secrets.Env, required ...string) *Secrets {
	t.Helper()
	plain, err := secrets.Format(env)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := secrets.Seal(plain, []age.Recipient{id.Recipient()})
	if err != nil {
		t.Fatal(err)
	}
	open := func(b []byte) (secrets.Env, error) {
		p, err := secrets.Open(b, []age.Identity{id}, "test")
		if err != nil {
			return nil, err
		}
		return secrets.Parse(p)
	}
	return &Secrets{Env: env, Sealed: sealed, Required: required, Open: open}
}

// A deploy stores the secrets beside the release on every host before
// the first restart, and records the names that changed, never a value.
func TestSecretsShipWithTheRelease(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	web2 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	sec, yaml, key := testSecrets(t, secrets.Env{"API_KEY": "s3cr3t-value", "DB": "postgres://x"}, "API_KEY")
	d, events := fakeDeployer(t, releaseYAML+yaml, web1, web2)
	d.Artifact, d.Secrets = testArtifact("release v2"), sec
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	id := rep.Release
	for _, h := range []*fakeRemote{web1, web2} {
		got := opsLike(h, "upload", "secrets", "switch 3000", "restart 3000")
		want := []string{"upload " + id, "secrets " + id, "switch 3000 " + id, "restart 3000"}
		if !slices.Equal(got, want) {
			t.Errorf("ops %v, want %v", got, want)
		}
		if env := string(h.envs[id]); !strings.Contains(env, `API_KEY="s3cr3t-value"`) || string(h.sealed[id]) != string(sec.Sealed) {
			t.Errorf("stored env %q", env)
		}
		var ok ReleaseEntry
		for _, e := range h.relLog {
			if e.ID == id && e.Outcome == ReleaseOK {
				ok = e
			}
		}
		if !slices.Equal(ok.SecretsChanged, []string{"+API_KEY", "+DB"}) {
			t.Errorf("release log: %+v", ok)
		}
		if n := len(h.history); n == 0 || !slices.Equal(h.history[n-1].Secrets, []string{"+API_KEY", "+DB"}) {
			t.Errorf("history: %+v", h.history)
		}
	}
	for _, e := range *events {
		if strings.Contains(e.Message, "s3cr3t") {
			t.Errorf("an event shows a value: %+v", e)
		}
	}

	// The same artifact with other secrets is another release, and the
	// change is named against the current release's secrets.
	sec2 := sealedFor(t, key, secrets.Env{"API_KEY": "rotated", "NEW": "x"})
	d2, _ := fakeDeployer(t, releaseYAML+yaml, web1, web2)
	d2.Artifact, d2.Secrets = testArtifact("release v2"), sec2
	rep2, err := d2.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if rep2.Release == id {
		t.Fatalf("new secrets reused release %s", id)
	}
	if h := web1.history; !slices.Equal(h[len(h)-1].Secrets, []string{"+NEW", "-DB", "~API_KEY"}) {
		t.Errorf("second deploy's change: %v", h[len(h)-1].Secrets)
	}
	// A rerun with the same artifact and secrets resumes the release.
	d3, _ := fakeDeployer(t, releaseYAML+yaml, web1, web2)
	d3.Artifact, d3.Secrets = testArtifact("release v2"), sec2
	if rep3, err := d3.Deploy(testCtx(t)); err != nil || rep3.Release != rep2.Release {
		t.Errorf("rerun: %v, release %s, want %s", err, rep3.Release, rep2.Release)
	}
}

// A required name the secrets lack stops the deploy before anything
// connects: exit 3's preflight, naming the variable.
func TestSecretsRequiredMissingStopsBeforeConnecting(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	sec, yaml, _ := testSecrets(t, secrets.Env{"DB": "x"}, "DB", "PAYMENT_API_KEY")
	d, _ := fakeDeployer(t, releaseYAML+yaml, web1)
	d.Artifact, d.Secrets = testArtifact("release v2"), sec
	_, err := d.Deploy(testCtx(t))
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepPreflight || !strings.Contains(err.Error(), "PAYMENT_API_KEY") {
		t.Fatalf("got %v", err)
	}
	if web1.connects != 0 || len(web1.ops) != 0 {
		t.Errorf("connected %d times, ops %v", web1.connects, web1.ops)
	}
}

// A host whose units do not read the release's secrets (setup not run
// since secrets:) stops the deploy before anything restarts.
func TestSecretsWithoutTheUnitsEnvFileRestartNothing(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	web2 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	web2.noEnvFile = true
	sec, yaml, _ := testSecrets(t, secrets.Env{"DB": "x"})
	d, _ := fakeDeployer(t, releaseYAML+yaml, web1, web2)
	d.Artifact, d.Secrets = testArtifact("release v2"), sec
	_, err := d.Deploy(testCtx(t))
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepUpload || !strings.Contains(err.Error(), "rollout setup") {
		t.Fatalf("got %v", err)
	}
	for _, h := range []*fakeRemote{web1, web2} {
		if got := opsLike(h, "restart", "switch"); len(got) > 0 {
			t.Errorf("restarted: %v", got)
		}
	}
}
