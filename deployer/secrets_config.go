package deployer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rollout-dev/rollout/internal/secrets"
)

// SecretsConfig is the secrets: section: an age-encrypted env file kept in
// the repository, decrypted on the controller at deploy and stored on each
// host beside the release, so that every instance runs with the env of
// the release it runs.
type SecretsConfig struct {
	// File is the encrypted file (relative: to the config file's
	// directory), e.g. deploy/production.env.age.
	File string
	// Recipients are the age public keys (age1…) the file is encrypted to.
	Recipients []string
	// Identity is the file holding the age identity that opens File when
	// $ROLLOUT_AGE_KEY is not set; default: the user's config
	// dir/rollout/age.key. Never the key itself.
	Identity string
	// Required are names that must be set: a deploy without one stops at
	// the preflight.
	Required []string
}

// DefaultIdentity is secrets.identity when the file does not give it: the
// user's config directory/rollout/age.key ("" if there is none).
func DefaultIdentity() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "rollout", "age.key")
}

// secretsSection is the secrets: section; without one c.Secrets stays nil.
func secretsSection(c *Config) field {
	s := &SecretsConfig{}
	fields := []field{
		str("file", &s.File),
		strs("recipients", &s.Recipients),
		str("identity", &s.Identity),
		strs("required", &s.Required),
	}
	return one("secrets", func(p *parser, key string) {
		if p.fields(key, fields) {
			c.Secrets = s
		}
	})
}

// secretsProblems checks the secrets: section, if any.
func (c *Config) secretsProblems(cs *checks) {
	s := c.Secrets
	if s == nil {
		return
	}
	if c.Release == nil {
		cs.add("secrets", errors.New("needs the release: section (secrets are stored beside each release, so that a rollback brings back the env its code ran with)"))
	}
	if s.File == "" {
		cs.add("secrets.file", errors.New("is required: the encrypted env file, e.g. deploy/production.env.age (create it with `rollout secrets set NAME`)"))
	}
	if len(s.Recipients) == 0 {
		cs.add("secrets.recipients", errors.New("list at least one age public key (age1…, as `rollout secrets keygen` prints)"))
	}
	for i, r := range s.Recipients {
		if _, err := secrets.ParseRecipients([]string{r}); err != nil {
			cs.add(fmt.Sprintf("secrets.recipients[%d]", i), fmt.Errorf("is not an age public key (age1…, as `rollout secrets keygen` prints), got %s", quoteValue(r)))
		}
	}
	seen := map[string]int{}
	for i, n := range s.Required {
		key := fmt.Sprintf("secrets.required[%d]", i)
		if err := secrets.ValidName(n); err != nil {
			cs.add(key, err)
			continue
		}
		if j, ok := seen[n]; ok {
			cs.add(key, fmt.Errorf("%s is listed twice (also secrets.required[%d])", n, j))
		}
		seen[n] = i
	}
}

// SecretsFile is secrets.file as a path to open: relative to the
// directory of the config file at configPath.
func (s *SecretsConfig) SecretsFile(configPath string) string {
	if filepath.IsAbs(s.File) {
		return s.File
	}
	return filepath.Join(filepath.Dir(configPath), s.File)
}

// IdentityFile is the identity file to read when $ROLLOUT_AGE_KEY is not
// set: secrets.identity (~ expanded, relative to the config's directory)
// or DefaultIdentity.
func (s *SecretsConfig) IdentityFile(configPath string) string {
	switch {
	case s.Identity == "":
		return DefaultIdentity()
	case s.Identity == "~" || len(s.Identity) > 1 && s.Identity[:2] == "~/":
		home, err := os.UserHomeDir()
		if err != nil {
			return s.Identity
		}
		return filepath.Join(home, s.Identity[1:])
	case filepath.IsAbs(s.Identity):
		return s.Identity
	}
	return filepath.Join(filepath.Dir(configPath), s.Identity)
}

// secretsEnvFile is the env file each instance reads its release's secrets
// from (after setup.env_file, so the release's values win): the release
// it runs, through its instance link. "" without secrets:.
func (c *Config) secretsEnvFile() string {
	if c.Secrets == nil || c.Release == nil {
		return ""
	}
	return c.Release.Root + "/instances/%i/" + secretsDir + "/env"
}

// secretsDir is the directory in each release, root's, that holds its
// secrets (an artifact may not hold one: internal/artifact.Reserved).
const secretsDir = ".rollout"
