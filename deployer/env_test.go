package deployer

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const envBase = `app: my-app
hosts: [web1, web2]
ssh:
  user: deploy
  port: 22
base_port: 3000
instances: 2
nginx:
  upstream_file: /etc/nginx/conf.d/my-app.conf
  upstream: my_app
hooks:
  before: [make build, make test]
`

func writeEnv(t *testing.T, base, env string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "rollout.yaml")
	if err := os.WriteFile(path, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	if env != "" {
		if err := os.WriteFile(filepath.Join(dir, "rollout.staging.yaml"), []byte(env), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// An environment's keys replace the config's key by key: a mapping is
// merged, a list or a value replaced whole, a new key added.
func TestEnvOverlay(t *testing.T) {
	path := writeEnv(t, envBase, "hosts: [staging1]\nssh:\n  port: 2222\nhooks:\n  before: [make build]\ndrain_timeout: 5s\n")
	pr, err := LoadProjectEnv(path, "staging")
	if err != nil {
		t.Fatal(err)
	}
	c := pr.Apps[0]
	if !slices.Equal(c.Hosts, []string{"staging1"}) || c.SSH.Port != 2222 || c.SSH.User != "deploy" ||
		!slices.Equal(c.Hooks.Before, []string{"make build"}) || c.DrainTimeout.String() != "5s" || c.Nginx.Upstream != "my_app" {
		t.Errorf("merged: hosts %v, ssh %d %s, before %v, drain %s, upstream %s", c.Hosts, c.SSH.Port, c.SSH.User, c.Hooks.Before, c.DrainTimeout, c.Nginx.Upstream)
	}
	// Without --env, the config alone.
	pr, err = LoadProjectEnv(path, "")
	if err != nil || !slices.Equal(pr.Apps[0].Hosts, []string{"web1", "web2"}) {
		t.Errorf("no environment: %v %v", err, pr)
	}
}

// The problems are located in the file and on the line that set the key.
func TestEnvErrorsNameTheirFile(t *testing.T) {
	dir := filepath.Dir(writeEnv(t, envBase, ""))
	base := filepath.Join(dir, "rollout.yaml")
	env := filepath.Join(dir, "rollout.staging.yaml")
	for _, c := range []struct{ env, want string }{
		{"ssh:\n  port: 0\n", env + ":2: ssh.port: "},
		{"# a comment\nnginx:\n  upstreams: x\n", env + `:3: unknown key "upstreams" (in nginx)`},
		{"app: other\n", env + ":1: app: cannot be set by an environment"},
		{"- a list\n", env + ":1: must be a mapping of the keys environment staging changes"},
		{"hosts: [\n", env + ":"},
		{"instances: 2000\n", env + ":1: instances: "},
		{"hosts: [a]\nhosts: [b]\n", env + ":2: hosts: given twice (first on line 1)"},
		{"ssh:\n  port: 2222\n  port: 2223\n", env + ":3: ssh.port: given twice (first on line 2)"},
		{"# nothing yet\n", env + ": has no keys: give it those environment staging changes"},
		{"", env + ": has no keys"},
	} {
		if err := os.WriteFile(env, []byte(c.env), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadProjectEnv(base, "staging")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v; want %q", c.env, err, c.want)
		}
	}
	// A problem of the config itself stays the config's.
	if err := os.WriteFile(base, []byte(strings.Replace(envBase, "port: 22", "port: -1", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(env, []byte("hosts: [s1]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadProjectEnv(base, "staging"); err == nil || !strings.Contains(err.Error(), base+":5: ssh.port") {
		t.Errorf("a problem of the config: %v", err)
	}
	for env, want := range map[string]string{"prod": "rollout.prod.yaml: no such file", "../etc": "must be 1..32 lower-case letters", "": ""} {
		_, err := LoadProjectEnv(base, env)
		if env == "" {
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--env %q: %v; want %q", env, err, want)
		}
	}
}

// With apps:, an environment merges into an app's keys as into shared ones.
func TestEnvOverlayApps(t *testing.T) {
	base := "hosts: [web1]\nssh: {user: deploy}\napps:\n  web:\n    base_port: 3000\n    instances: 2\n    nginx: {upstream_file: /etc/nginx/conf.d/web.conf, upstream: web}\n  api:\n    base_port: 4000\n    instances: 1\n    nginx: {upstream_file: /etc/nginx/conf.d/api.conf, upstream: api}\n"
	path := writeEnv(t, base, "hosts: [staging1]\napps:\n  api:\n    hosts: [staging2]\n")
	pr, err := LoadProjectEnv(path, "staging")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range pr.Apps {
		want := map[string]string{"web": "staging1", "api": "staging2"}[c.App]
		if !slices.Equal(c.Hosts, []string{want}) {
			t.Errorf("%s: hosts %v, want [%s]", c.App, c.Hosts, want)
		}
	}
}

// rollout config --env prints the merged config, each value with the file
// and line it came from.
func TestMergedConfigSaysWhereEachValueCameFrom(t *testing.T) {
	path := writeEnv(t, envBase, "hosts: [staging1]\nssh:\n  port: 2222\n")
	out, err := MergedConfig(path, "staging")
	if err != nil {
		t.Fatal(err)
	}
	env := filepath.Join(filepath.Dir(path), "rollout.staging.yaml")
	for _, want := range []string{
		"app: my-app # " + path + ":1\n",
		"hosts: [staging1] # " + env + ":1\n",
		"  user: deploy # " + path + ":4\n",
		"  port: 2222 # " + env + ":3\n",
		"  upstream: my_app # " + path + ":10\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}
