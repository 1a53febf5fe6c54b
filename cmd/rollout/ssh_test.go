package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/rollout-dev/rollout/deployer"
)

func TestSSHConfigResolution(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "id_web")
	if err := os.WriteFile(key, []byte("unused"), 0o600); err != nil {
		t.Fatal(err)
	}
	sshCfg := filepath.Join(dir, "config")
	if err := os.WriteFile(sshCfg, []byte(`Host web1
  HostName 10.1.2.3
  User ops
  Port 2222
  IdentityFile `+key+`
  UserKnownHostsFile `+dir+`/known
  ProxyJump jumper@bastion:2200

Host *.internal
  ProxyJump none
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := deployer.DefaultConfig()
	cfg.SSH.ConfigFile = sshCfg
	d, err := newSSHDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}

	sc := d.hostConfig("web1", "", 0)
	if sc.Host != "10.1.2.3" || sc.User != "ops" || sc.Port != 2222 || !slices.Equal(sc.KeyFiles, []string{key}) ||
		!slices.Equal(sc.KnownHostsFiles, []string{dir + "/known"}) {
		t.Errorf("from the ssh config: %+v", sc)
	}
	if got := d.jumps("web1"); !slices.Equal(got, []string{"jumper@bastion:2200"}) {
		t.Errorf("jumps %v", got)
	}
	if got := d.jumps("db.internal"); got != nil {
		t.Errorf("ProxyJump none: jumps %v", got)
	}

	// rollout.yaml and flags win where they say something.
	cfg.SSH.User, cfg.SSH.Port, cfg.SSH.Key, cfg.SSH.KnownHosts, cfg.SSH.Jump = "deploy", 22022, "/k", "/kh", "a@b:1,c"
	sc = d.hostConfig("web1", "", 0)
	if sc.Host != "10.1.2.3" || sc.User != "deploy" || sc.Port != 22022 || !slices.Equal(sc.KeyFiles, []string{"/k"}) ||
		!slices.Equal(sc.KnownHostsFiles, []string{"/kh"}) {
		t.Errorf("with config values: %+v", sc)
	}
	if got := d.jumps("web1"); !slices.Equal(got, []string{"a@b:1", "c"}) {
		t.Errorf("jumps %v", got)
	}
	// A bastion's own user and port win.
	if sc := d.hostConfig("web1", "root", 2022); sc.User != "root" || sc.Port != 2022 {
		t.Errorf("bastion spec: %+v", sc)
	}
	// A name the ssh config does not know is dialled as written.
	if sc := d.hostConfig("10.9.9.9", "", 0); sc.Host != "10.9.9.9" {
		t.Errorf("unknown alias: %+v", sc)
	}

	// A missing ssh config file is fine.
	cfg.SSH.ConfigFile = filepath.Join(dir, "nope")
	if _, err := newSSHDialer(cfg); err != nil {
		t.Errorf("missing file: %v", err)
	}
}

func TestSSHSecretsFromEnvironment(t *testing.T) {
	_, key := testKey(t, t.TempDir())
	line := testHostKeyLine(t, "10.0.0.5")
	t.Setenv("ROLLOUT_SSH_KEY", string(key))
	t.Setenv("ROLLOUT_KNOWN_HOSTS", line)
	cfg := deployer.DefaultConfig()
	cfg.SSH.ConfigFile = ""
	d, err := newSSHDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sc := d.hostConfig("10.0.0.5", "", 0)
	if len(sc.KeyPEMs) != 1 || string(sc.KnownHostsData) != line {
		t.Errorf("secrets not used: %d keys, known hosts %q", len(sc.KeyPEMs), sc.KnownHostsData)
	}
}
