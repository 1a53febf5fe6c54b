package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/crypto/ssh"
)

// bareConfig is a rollout.yaml for one host named as given, with only the
// ssh lines given: how to reach it is up to the test.
func bareConfig(t *testing.T, host, sshLines string) string {
	t.Helper()
	cfg := fmt.Sprintf(`app: my-app
hosts: [%s]
ssh:
%s
base_port: %d
instances: %d
nginx: {upstream_file: /etc/nginx/conf.d/my-app-upstream.conf, upstream: my_app}
health: {timeout: 10s, min_healthy: 0s}
drain_timeout: 10s
hooks:
  host_before: ['sudo -n /usr/local/sbin/my-app-activate "$ROLLOUT_VERSION"']
`, host, sshLines, basePort, instances)
	path := filepath.Join(t.TempDir(), "rollout.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rolloutEnv is rollout() with extra environment variables.
func rolloutEnv(t testing.TB, env []string, args ...string) (string, int) {
	t.Helper()
	return rolloutIn(t, "", env, args...)
}

// rolloutIn runs rollout in dir ("": this one) with env added.
func rolloutIn(t testing.TB, dir string, env []string, args ...string) (string, int) {
	t.Helper()
	return rolloutWith(t, dir, env, nil, args...)
}

// rolloutWith is rolloutIn with stdin (nil: none).
func rolloutWith(t testing.TB, dir string, env []string, stdin io.Reader, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, rolloutBin, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "NO_COLOR=1"), env...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run rollout: %v", err)
	}
	t.Logf("rollout %s (exit %d):\n%s", strings.Join(args, " "), code, out)
	return string(out), code
}

// A host named only by an alias of an ssh config file: HostName, User and
// IdentityFile come from it.
func TestDeployToSSHConfigAlias(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	sshCfg := writeTemp(t, "ssh_config", fmt.Sprintf("Host web-a\n  HostName %s\n  User deploy\n  IdentityFile %s\n", h.Addr, fleet.KeyFile))
	cfg := bareConfig(t, "web-a", "  known_hosts: "+fleet.KnownHosts+"\n  config: "+sshCfg)
	before := instanceStates(t, h)
	if out, code := rollout(t, "deploy", "-c", cfg, "--version", "v1"); code != 0 || !strings.Contains(out, "web-a") {
		t.Fatalf("deploy to the alias exited %d", code)
	}
	after := instanceStates(t, h)
	for port, st := range after {
		if st.MainPID == before[port].MainPID {
			t.Errorf("instance %d was not restarted", port)
		}
	}
}

// A host that accepts SSH only from another host is deployed through it.
func TestDeployThroughBastion(t *testing.T) {
	bastion, target := fleet.Hosts[0], fleet.Hosts[1]
	resetHost(t, target)
	defer resetHost(t, target)
	// The target's sshd now admits only connections coming from the bastion.
	if out, err := fleet.Run(context.Background(), target, fmt.Sprintf(
		"echo 'AllowUsers deploy@%s' | sudo -n tee /etc/ssh/sshd_config.d/only-bastion.conf && sudo -n systemctl reload ssh", bastion.Addr)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	cfg := bareConfig(t, target.Addr, "  user: deploy\n  key: "+fleet.KeyFile+"\n  known_hosts: "+fleet.KnownHosts)
	var out string
	var code int
	for range 20 { // sshd re-executes on reload: refused for a moment
		if out, code = rollout(t, "deploy", "-c", cfg, "--version", "v1"); !strings.Contains(out, "connection refused") {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if code != 3 || !strings.Contains(out, "authentication failed") {
		t.Fatalf("a direct deploy exited %d, want 3 (refused by the target)", code)
	}
	if _, code := rollout(t, "deploy", "-c", cfg, "--version", "v1", "--jump", "deploy@"+bastion.Addr); code != 0 {
		t.Fatalf("the deploy through the bastion exited %d", code)
	}
	// The same bastion named as ProxyJump in an ssh config file.
	sshCfg := writeTemp(t, "ssh_config", fmt.Sprintf("Host %s\n  ProxyJump deploy@%s\n", target.Addr, bastion.Addr))
	out, code = rollout(t, "status", "-c", cfg, "--ssh-config", sshCfg)
	if code != 0 || strings.Count(out, "active/running") != instances {
		t.Errorf("status through the ssh config's ProxyJump exited %d", code)
	}
}

// A host whose key changed is refused before any command runs; an unknown
// one is recorded with --accept-new.
func TestHostKeyChecking(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	wrong := writeTemp(t, "known_hosts", h.Addr+" "+string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	before := instanceStates(t, h)
	cfg := bareConfig(t, h.Addr, "  user: deploy\n  key: "+fleet.KeyFile+"\n  known_hosts: "+wrong)
	out, code := rollout(t, "deploy", "-c", cfg, "--version", "v1", "--accept-new")
	if code != 3 || !strings.Contains(out, "HOST KEY CHANGED for "+h.Addr+":22") || !strings.Contains(out, "SHA256:") {
		t.Errorf("a changed host key: exit %d, want 3 naming the host and the fingerprint", code)
	}
	if after := instanceStates(t, h); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("instances changed although the host key was refused: %v -> %v", before, after)
	}

	empty := filepath.Join(t.TempDir(), "known_hosts")
	cfg = bareConfig(t, h.Addr, "  user: deploy\n  key: "+fleet.KeyFile+"\n  known_hosts: "+empty)
	if out, code := rollout(t, "status", "-c", cfg); code != 3 && code != 1 || !strings.Contains(out, "not in known_hosts") {
		t.Errorf("an unknown host without --accept-new: exit %d", code)
	}
	if _, code := rollout(t, "deploy", "-c", cfg, "--version", "v1", "--accept-new"); code != 0 {
		t.Fatalf("deploy --accept-new exited %d", code)
	}
	recorded, err := os.ReadFile(empty)
	if err != nil || !strings.HasPrefix(string(recorded), h.Addr+" ") {
		t.Fatalf("the host key was not recorded: %v %q", err, recorded)
	}
	// Recorded, it is now checked without --accept-new.
	if _, code := rollout(t, "status", "-c", cfg); code != 0 {
		t.Errorf("status with the recorded key exited %d", code)
	}
}

// GitHub Actions secrets: the key and known hosts as data, no files.
func TestSSHSecretsFromEnvironment(t *testing.T) {
	h := fleet.Hosts[0]
	resetHost(t, h)
	key, err := os.ReadFile(fleet.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	known, err := os.ReadFile(fleet.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := bareConfig(t, h.Addr, "  user: deploy\n  known_hosts: "+filepath.Join(t.TempDir(), "none"))
	env := []string{"ROLLOUT_SSH_KEY=" + string(key), "ROLLOUT_KNOWN_HOSTS=" + string(known)}
	out, code := rolloutEnv(t, env, "deploy", "-c", cfg, "--version", "v1")
	if code != 0 {
		t.Fatalf("deploy with the key and known hosts from the environment exited %d", code)
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("the key was printed")
	}
}

// An encrypted key: rollout asks for its passphrase on the terminal.
func TestPassphraseAskedOnTheTerminal(t *testing.T) {
	h := fleet.Hosts[0]
	pemBytes, err := os.ReadFile(fleet.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ssh.ParseRawPrivateKey(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(raw, "", []byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	encrypted := writeTemp(t, "id_encrypted", string(pem.EncodeToMemory(block)))
	cfg := bareConfig(t, h.Addr, "  user: deploy\n  key: "+encrypted+"\n  known_hosts: "+fleet.KnownHosts)

	// Without a terminal (a new session has none) it says what to do.
	plain := exec.Command(rolloutBin, "status", "-c", cfg)
	plain.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if b, err := plain.CombinedOutput(); err == nil || !strings.Contains(string(b), "no terminal to ask for the passphrase") {
		t.Errorf("without a terminal: %v\n%s", err, b)
	}

	cmd := exec.Command(rolloutBin, "status", "-c", cfg)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	tty, err := pty.Start(cmd) // the pty is the command's controlling terminal
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var out syncBuffer
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(&out, tty); close(copied) }()
	waitFor(t, "the passphrase prompt", 20*time.Second, func() bool {
		return strings.Contains(out.String(), "Enter passphrase for key "+encrypted)
	})
	if _, err := tty.Write([]byte("correct horse\n")); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("status with the passphrase typed: %v\n%s", err, out.String())
	}
	// All it printed: the copy ends when the pty reports the end.
	select {
	case <-copied:
	case <-time.After(5 * time.Second):
	}
	if strings.Count(out.String(), "active/running") != instances || strings.Contains(out.String(), "correct horse") {
		t.Errorf("status output (the passphrase must not echo):\n%s", out.String())
	}
}
