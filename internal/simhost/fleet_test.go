package simhost

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// fleet is n simulated hosts of instances each, and the files a rollout
// config needs to reach them: a key, known_hosts and an ssh config naming
// each host simNNN.
type fleet struct {
	hosts []*Host
	dir   string
	names []string
}

func startFleet(tb testing.TB, n, instances int, rtt, boot, reload time.Duration) *fleet {
	tb.Helper()
	hostKey, err := newSigner()
	if err != nil {
		tb.Fatal(err)
	}
	_, clientPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	client, err := ssh.NewSignerFromKey(clientPriv)
	if err != nil {
		tb.Fatal(err)
	}
	f := &fleet{dir: tb.TempDir()}
	var ports []int
	for i := range instances {
		ports = append(ports, 3000+i)
	}
	var known, config strings.Builder
	for i := range n {
		h, err := Start(Options{App: "my-app", Upstream: "my_app", Ports: ports, Cores: instances, RTT: rtt, Boot: boot, Reload: reload}, hostKey, client.PublicKey())
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(h.Close)
		name := fmt.Sprintf("sim%03d", i+1)
		f.hosts, f.names = append(f.hosts, h), append(f.names, name)
		known.WriteString(knownhosts.Line([]string{fmt.Sprintf("[127.0.0.1]:%d", h.Port)}, hostKey.PublicKey()) + "\n")
		fmt.Fprintf(&config, "Host %s\n  HostName 127.0.0.1\n  Port %d\n", name, h.Port)
	}
	block, err := ssh.MarshalPrivateKey(clientPriv, "")
	if err != nil {
		tb.Fatal(err)
	}
	for name, data := range map[string][]byte{"id_ed25519": pem.EncodeToMemory(block), "known_hosts": []byte(known.String()), "ssh_config": []byte(config.String())} {
		if err := os.WriteFile(filepath.Join(f.dir, name), data, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return f
}

func newSigner() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// config is a rollout.yaml deploying to the fleet, parallel hosts at once.
func (f *fleet) config(instances, parallel int) string {
	return fmt.Sprintf(`app: my-app
hosts: [%s]
ssh:
  user: root
  key: %s
  known_hosts: %s
  config: %s
sudo: false
base_port: 3000
instances: %d
nginx:
  upstream_file: /etc/nginx/conf.d/my-app-upstream.conf
  upstream: my_app
health: {timeout: 10s, interval: 50ms, min_healthy: 0s}
drain_timeout: 10s
logs: ["/var/log/my-app/stderr-{port}.log"]
probe: false
parallel: %d
`, strings.Join(f.names, ", "), filepath.Join(f.dir, "id_ed25519"), filepath.Join(f.dir, "known_hosts"), filepath.Join(f.dir, "ssh_config"), instances, parallel)
}

func TestSplitWords(t *testing.T) {
	got, err := splitWords(`sudo -n sh -c 'echo '\''hi'\''
exit 0' rollout-x a 'b c' ''`)
	if err != nil || fmt.Sprintf("%q", got) != `["sudo" "-n" "sh" "-c" "echo 'hi'\nexit 0" "rollout-x" "a" "b c" ""]` {
		t.Errorf("%q %v", got, err)
	}
	if _, err := splitWords("'open"); err == nil {
		t.Error("an unterminated quote was accepted")
	}
}

// buildRollout builds the rollout command into a temporary directory.
func buildRollout(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "rollout")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/rollout-dev/rollout/cmd/rollout").CombinedOutput()
	if err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// deployResult is one deploy of the fleet by the rollout command.
type deployResult struct {
	wall           time.Duration
	maxRSS         int64         // KiB
	cpu            time.Duration // user + system
	peakGoroutines int
	out            string
	code           int
}

func (f *fleet) deploy(tb testing.TB, bin string, instances, parallel int) deployResult {
	tb.Helper()
	cfg := filepath.Join(f.dir, "rollout.yaml")
	if err := os.WriteFile(cfg, []byte(f.config(instances, parallel)), 0o600); err != nil {
		tb.Fatal(err)
	}
	stats := filepath.Join(f.dir, "stats.json")
	cmd := exec.Command(bin, "deploy", "-c", cfg, "--version", "v2")
	cmd.Env = append(os.Environ(), "ROLLOUT_STATS_FILE="+stats, "NO_COLOR=1")
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	r := deployResult{wall: time.Since(t0), out: string(out)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		tb.Fatal(err)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSS = ru.Maxrss
		r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	var s struct {
		Peak int `json:"peak_goroutines"`
	}
	if b, err := os.ReadFile(stats); err == nil && json.Unmarshal(b, &s) == nil {
		r.peakGoroutines = s.Peak
	}
	return r
}

// The simulated hosts answer rollout as real ones do: a deploy restarts
// every instance of every host once, writes the history and releases the
// lock.
func TestDeployToSimulatedFleet(t *testing.T) {
	f := startFleet(t, 3, 2, 5*time.Millisecond, 20*time.Millisecond, time.Millisecond)
	r := f.deploy(t, buildRollout(t), 2, 2)
	if r.code != 0 {
		t.Fatalf("deploy exited %d:\n%s", r.code, r.out)
	}
	for i, h := range f.hosts {
		c := h.Commands()
		if c["restart"] != 2 || c["history-append"] != 1 || c["lock-release"] != 1 || c["write-upstream"] != 3 {
			t.Errorf("%s ran %v", f.names[i], c)
		}
		h.mu.Lock()
		if h.locked || strings.Contains(string(h.upstream), "down") {
			t.Errorf("%s: locked %v, upstream:\n%s", f.names[i], h.locked, h.upstream)
		}
		h.mu.Unlock()
	}
	if r.peakGoroutines == 0 || r.maxRSS == 0 {
		t.Errorf("no stats: %+v", r)
	}
}
