package deployer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rollout-dev/rollout/internal/secrets"
)

// Secrets are the env a deploy ships with its release (secrets: set),
// decrypted on the controller before anything connects.
type Secrets struct {
	// Env are the values; never printed.
	Env secrets.Env
	// Sealed is the encrypted file they came from, stored beside the
	// release on each host (for secrets diff and the next deploy's list
	// of changed names).
	Sealed []byte
	// Required are the names that must be set: secrets.required and the
	// artifact's .env.example.
	Required []string
	// Open decrypts a host's sealed secrets, to name what changed; nil:
	// changes are not named.
	Open func(sealed []byte) (secrets.Env, error)
}

// Digest names the sealed secrets in the release log: a release with
// other secrets is another release.
func (s *Secrets) Digest() string {
	if s == nil {
		return ""
	}
	return SecretsDigest(s.Sealed)
}

// SecretsDigest is the digest of a sealed secrets file (see Digest): of
// its ciphertext, which says nothing of the values.
func SecretsDigest(sealed []byte) string {
	sum := sha256.Sum256(sealed)
	return hex.EncodeToString(sum[:8])
}

// checkSecrets refuses a deploy whose secrets lack a required name, before
// anything connects.
func (d *Deployer) checkSecrets(op string) error {
	if (op != opDeploy && op != opCheck) || d.Config.Secrets == nil {
		return nil
	}
	if d.Secrets == nil {
		return &StepError{Step: StepPreflight, Err: errors.New("secrets: is set but the deploy has no secrets (a bug in the caller)")}
	}
	if missing := d.Secrets.Env.Missing(d.Secrets.Required); len(missing) > 0 {
		err := fmt.Errorf("the secrets lack %s, which the release requires (secrets.required or the release's .env.example): set them with `rollout secrets set NAME` and deploy again; nothing was changed",
			strings.Join(missing, ", "))
		d.emit(Event{Step: StepPreflight, Status: StatusFail, Message: err.Error()})
		return &StepError{Step: StepPreflight, Err: err}
	}
	return nil
}

// storeSecrets stores the release's secrets beside release id on every
// host, all at once, before anything restarts; each host's change of
// names (from its current release's) is kept for the release log and the
// history.
func (d *Deployer) storeSecrets(ctx context.Context, id string, sessions []*session) error {
	if d.Secrets == nil || d.Config.Secrets == nil {
		return nil
	}
	env := secrets.SystemdFile(d.Secrets.Env)
	return d.eachHost(ctx, sessions, func(_ int, s *session) error {
		t0 := time.Now()
		prev, err := s.r.WriteSecrets(ctx, id, env, d.Secrets.Sealed)
		if err != nil {
			d.emit(Event{Host: s.host, Step: StepUpload, Status: StatusFail, Duration: time.Since(t0), Message: "secrets: " + err.Error()})
			return &StepError{Host: s.host, Step: StepUpload, Err: fmt.Errorf("store the secrets: %w", err)}
		}
		change, said := d.secretsChange(prev)
		s.secrets = change
		d.emit(Event{Host: s.host, Step: StepUpload, Status: StatusOK, Duration: time.Since(t0),
			Message: fmt.Sprintf("secrets: %d variables beside release %s (root's, 0600); %s", len(d.Secrets.Env), id, said)})
		return nil
	})
}

// secretsChange is how the release's secrets differ from prev (the
// current release's, sealed), by name, and what to say of it.
func (d *Deployer) secretsChange(prev []byte) (*secrets.Change, string) {
	switch {
	case prev == nil:
		c := secrets.Diff(nil, d.Secrets.Env)
		return &c, "the current release has none: " + c.String()
	case d.Secrets.Open == nil:
		return nil, "changes not read"
	}
	old, err := d.Secrets.Open(prev)
	if err != nil {
		return nil, "the current release's secrets could not be opened to compare (" + err.Error() + ")"
	}
	c := secrets.Diff(old, d.Secrets.Env)
	return &c, "from the current release: " + c.String()
}

// HostSecrets reads a host's current release and its sealed secrets (nil
// if it has none), for secrets diff.
func HostSecrets(ctx context.Context, cfg *Config, conn Conn) (string, []byte, error) {
	return newSSHRemote(cfg, conn).ReadSecrets(ctx)
}
