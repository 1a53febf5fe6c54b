package deployer

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/rollout-dev/rollout/internal/secrets"
)

func TestSecretsConfig(t *testing.T) {
	_, pub, err := secrets.Keygen()
	if err != nil {
		t.Fatal(err)
	}
	rel := "release: {}\n" // line 7
	tests := []struct {
		name, yaml string
		want       *SecretsConfig
		err        string
	}{
		{"absent", rel, nil, ""},
		{"every key", rel + "secrets:\n  file: deploy/prod.env.age\n  recipients: [" + pub + "]\n  identity: ~/.config/k\n  required: [DATABASE_URL, API_KEY]\n",
			&SecretsConfig{File: "deploy/prod.env.age", Recipients: []string{pub}, Identity: "~/.config/k", Required: []string{"DATABASE_URL", "API_KEY"}}, ""},

		{"without release", "secrets:\n  file: s.age\n  recipients: [" + pub + "]\n", nil,
			"c.yaml:7: secrets: needs the release: section (secrets are stored beside each release, so that a rollback brings back the env its code ran with)"},
		{"no file", rel + "secrets:\n  recipients: [" + pub + "]\n", nil,
			"c.yaml:8: secrets.file: is required: the encrypted env file, e.g. deploy/production.env.age (create it with `rollout secrets set NAME`)"},
		{"no recipients", rel + "secrets:\n  file: s.age\n", nil,
			"c.yaml:8: secrets.recipients: list at least one age public key (age1…, as `rollout secrets keygen` prints)"},
		{"a private key as recipient", rel + "secrets:\n  file: s.age\n  recipients: [AGE-SECRET-KEY-1XYZ]\n", nil,
			`c.yaml:10: secrets.recipients[0]: is not an age public key (age1…, as ` + "`rollout secrets keygen`" + ` prints), got "AGE-SECRET-KEY-1XYZ"`},
		{"a bad required name", rel + "secrets:\n  file: s.age\n  recipients: [" + pub + "]\n  required: [API-KEY]\n", nil,
			`c.yaml:11: secrets.required[0]: "API-KEY" is not a variable name (letters, digits and _, not starting with a digit, at most 128)`},
		{"PORT required", rel + "secrets:\n  file: s.age\n  recipients: [" + pub + "]\n  required: [PORT]\n", nil,
			`c.yaml:11: secrets.required[0]: PORT is the instance's port, set by the unit; it cannot be a secret`},
		{"required twice", rel + "secrets:\n  file: s.age\n  recipients: [" + pub + "]\n  required:\n    - A\n    - A\n", nil,
			`c.yaml:13: secrets.required[1]: A is listed twice (also secrets.required[0])`},
		{"unknown key", rel + "secrets:\n  file: s.age\n  recipient: [" + pub + "]\n", nil,
			"c.yaml:8: secrets.recipients: list at least one age public key (age1…, as `rollout secrets keygen` prints)\n" +
				`c.yaml:10: unknown key "recipient" (in secrets); did you mean "recipients"?`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("c.yaml", []byte(minimal+tt.yaml))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("got error\n%v\nwant\n%s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Secrets, tt.want) {
				t.Errorf("got %+v, want %+v", c.Secrets, tt.want)
			}
		})
	}
}

func TestSecretsPaths(t *testing.T) {
	s := &SecretsConfig{File: "deploy/p.age", Identity: "keys/age.key"}
	if got := s.SecretsFile("/repo/rollout.yaml"); got != "/repo/deploy/p.age" {
		t.Errorf("file: %s", got)
	}
	if got := s.IdentityFile("/repo/rollout.yaml"); got != "/repo/keys/age.key" {
		t.Errorf("identity: %s", got)
	}
	t.Setenv("HOME", "/home/u")
	t.Setenv("XDG_CONFIG_HOME", "")
	s.Identity = "~/k"
	if got := s.IdentityFile("x.yaml"); got != "/home/u/k" {
		t.Errorf("~: %s", got)
	}
	s.Identity = ""
	if got := s.IdentityFile("x.yaml"); got != filepath.Join("/home/u/.config", "rollout", "age.key") {
		t.Errorf("default: %s", got)
	}
}
