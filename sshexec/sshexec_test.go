package sshexec_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
	"github.com/rollout-dev/rollout/sshexec/internal/sshtest"
	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"
)

// env is a test server, a client key it accepts, and a known_hosts file
// that lists its host key.
type env struct {
	srv        *sshtest.Server
	hostKey    ssh.Signer
	keyFile    string
	knownHosts string
}

func newEnv(t *testing.T) env {
	t.Helper()
	dir := t.TempDir()
	pub, keyFile := writeClientKey(t, dir)
	hostKey := sshtest.NewEd25519Signer(t)
	e := env{srv: sshtest.Start(t, pub, hostKey), hostKey: hostKey, keyFile: keyFile,
		knownHosts: filepath.Join(dir, "known_hosts")}
	writeFile(t, e.knownHosts, knownhosts.Line([]string{e.srv.Addr}, hostKey.PublicKey())+"\n")
	return e
}

func (e env) config() sshexec.Config {
	return sshexec.Config{
		Host: "127.0.0.1", Port: e.srv.Port, User: "deploy",
		KeyFiles: []string{e.keyFile}, KnownHostsFiles: []string{e.knownHosts},
		ConnectTimeout: 5 * time.Second,
	}
}

func dial(t *testing.T, cfg sshexec.Config) *sshexec.Client {
	t.Helper()
	c, err := sshexec.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// writeClientKey writes a fresh ed25519 private key file in dir.
func writeClientKey(t *testing.T, dir string) (ssh.PublicKey, string) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, fmt.Sprintf("id_%d", time.Now().UnixNano()))
	writeFile(t, path, string(pem.EncodeToMemory(block)))
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sshPub, path
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRun(t *testing.T) {
	e := newEnv(t)
	c := dial(t, e.config())
	if got, want := c.Host(), e.srv.Addr; got != want {
		t.Errorf("Host() = %q, want %q", got, want)
	}
	long := strings.Repeat("x", 5000)
	tests := []struct {
		name                   string
		cmd                    string
		stdin                  string
		stdout, stderr         string
		code                   int
		signal                 string
		exitErrStderr          string // the ExitError's Stderr, when code != 0
		wantStdoutLen          int    // checked instead of stdout when set
		wantStderrLen          int
		wantExitErrStderrLen   int
		wantExitErrStderrTail  string
		wantExitErrMsgContains string
	}{
		{name: "stdout and stderr", cmd: "echo out; echo err >&2", stdout: "out\n", stderr: "err\n"},
		{name: "stdin", cmd: "tr a-z A-Z", stdin: "hello\nworld", stdout: "HELLO\nWORLD"},
		{name: "no stdin reads EOF", cmd: "cat; echo done", stdout: "done\n"},
		{name: "non-zero exit", cmd: "echo partial; echo boom >&2; exit 3", stdout: "partial\n", stderr: "boom\n",
			code: 3, exitErrStderr: "boom", wantExitErrMsgContains: "command exited 3"},
		{name: "killed by signal", cmd: "kill -TERM $$", code: -1, signal: "TERM",
			wantExitErrMsgContains: "signal TERM"},
		{name: "exit error keeps stderr tail", cmd: "printf %s " + long + " >&2; echo END >&2; exit 1",
			code: 1, wantStderrLen: 5004, wantExitErrStderrLen: 2048 + 3, wantExitErrStderrTail: "END"},
		{name: "stdout capped at 4 MiB", cmd: "head -c 5000000 /dev/zero", wantStdoutLen: 4 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdin io.Reader
			if tt.stdin != "" {
				stdin = strings.NewReader(tt.stdin)
			}
			res, err := c.Run(context.Background(), tt.cmd, stdin)
			if tt.wantStdoutLen > 0 {
				if len(res.Stdout) != tt.wantStdoutLen {
					t.Errorf("len(Stdout) = %d, want %d", len(res.Stdout), tt.wantStdoutLen)
				}
			} else if string(res.Stdout) != tt.stdout {
				t.Errorf("Stdout = %q, want %q", res.Stdout, tt.stdout)
			}
			if tt.wantStderrLen > 0 {
				if len(res.Stderr) != tt.wantStderrLen {
					t.Errorf("len(Stderr) = %d, want %d", len(res.Stderr), tt.wantStderrLen)
				}
			} else if string(res.Stderr) != tt.stderr {
				t.Errorf("Stderr = %q, want %q", res.Stderr, tt.stderr)
			}
			if res.ExitCode != tt.code {
				t.Errorf("ExitCode = %d, want %d", res.ExitCode, tt.code)
			}
			if res.Duration <= 0 {
				t.Errorf("Duration = %v, want > 0", res.Duration)
			}
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				return
			}
			var ee *sshexec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("err = %v (%T), want *ExitError", err, err)
			}
			if ee.Code != tt.code || ee.Signal != tt.signal || ee.Cmd != tt.cmd {
				t.Errorf("ExitError = {Code:%d Signal:%q Cmd:%q}, want {%d %q %q}", ee.Code, ee.Signal, ee.Cmd, tt.code, tt.signal, tt.cmd)
			}
			if tt.wantExitErrStderrLen > 0 {
				if len(ee.Stderr) != tt.wantExitErrStderrLen || !strings.HasSuffix(ee.Stderr, tt.wantExitErrStderrTail) {
					t.Errorf("ExitError.Stderr: len %d ending %q, want len %d ending %q",
						len(ee.Stderr), ee.Stderr[max(0, len(ee.Stderr)-10):], tt.wantExitErrStderrLen, tt.wantExitErrStderrTail)
				}
			} else if ee.Stderr != tt.exitErrStderr {
				t.Errorf("ExitError.Stderr = %q, want %q", ee.Stderr, tt.exitErrStderr)
			}
			if !strings.Contains(err.Error(), tt.wantExitErrMsgContains) {
				t.Errorf("error %q does not contain %q", err, tt.wantExitErrMsgContains)
			}
		})
	}
}

func TestRunConcurrent(t *testing.T) {
	c := dial(t, newEnv(t).config())
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			res, err := c.Run(context.Background(), "echo "+strconv.Itoa(i), nil)
			if err != nil || string(res.Stdout) != strconv.Itoa(i)+"\n" {
				t.Errorf("Run %d: %q, %v", i, res.Stdout, err)
			}
		})
	}
	wg.Wait()
}

func TestRunContextEnds(t *testing.T) {
	c := dial(t, newEnv(t).config())
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(300*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 300*time.Millisecond)
		}, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			ctx, cancel := tt.ctx()
			defer cancel()
			t0 := time.Now()
			_, err := c.Run(ctx, "echo $$ > "+sshexec.Quote(pidFile)+"; exec sleep 30", nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if d := time.Since(t0); d > 5*time.Second {
				t.Errorf("Run took %v after the context ended", d)
			}
			if !strings.Contains(err.Error(), c.Host()) {
				t.Errorf("error %q does not name the host", err)
			}
			pid := readPID(t, pidFile)
			// The remote sleep must die: signal KILL or the session's close.
			for deadline := time.Now().Add(5 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("remote process %d still running", pid)
				}
			}
		})
	}
}

func readPID(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// signalWriter is a bytes.Buffer that reports its first write.
type signalWriter struct {
	bytes.Buffer
	first chan struct{}
	once  sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.first) })
	return w.Buffer.Write(p)
}

func TestStream(t *testing.T) {
	c := dial(t, newEnv(t).config())
	t.Run("output and exit code", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		err := c.Stream(context.Background(), "echo a; echo b >&2; echo c; exit 2", &stdout, &stderr)
		var ee *sshexec.ExitError
		if !errors.As(err, &ee) || ee.Code != 2 || ee.Stderr != "b" {
			t.Fatalf("err = %#v, want ExitError code 2, stderr %q", err, "b")
		}
		if stdout.String() != "a\nc\n" || stderr.String() != "b\n" {
			t.Errorf("stdout %q stderr %q, want %q %q", stdout.String(), stderr.String(), "a\nc\n", "b\n")
		}
	})
	t.Run("cancel while following", func(t *testing.T) {
		out := &signalWriter{first: make(chan struct{})}
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-out.first; cancel() }()
		err := c.Stream(ctx, "while :; do echo tick; sleep 0.01; done", out, nil)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		// Stream may not write once it returned (the race detector checks too).
		n := out.Len()
		time.Sleep(100 * time.Millisecond)
		if out.Len() != n || !strings.HasPrefix(out.String(), "tick\n") {
			t.Errorf("output %q grew from %d bytes after Stream returned", out.String(), n)
		}
	})
}

func TestHostKeys(t *testing.T) {
	tests := []struct {
		name string
		// knownHosts returns known_hosts content for the server; hostKeys are
		// the server's keys, the first being the one the line should name.
		knownHosts   func(addr string, key ssh.PublicKey) string
		hostKeys     func(t *testing.T) []ssh.Signer
		acceptNew    bool
		insecure     bool
		wantErr      bool
		wantChanged  bool
		wantContains string
	}{
		{name: "port entry [127.0.0.1]:PORT", knownHosts: func(addr string, key ssh.PublicKey) string {
			return knownhosts.Line([]string{addr}, key) // "[127.0.0.1]:PORT ssh-ed25519 ..."
		}},
		{name: "hashed entry", knownHosts: func(addr string, key ssh.PublicKey) string {
			return knownhosts.Line([]string{xknownhosts.HashHostname(knownhosts.Normalize(addr))}, key)
		}},
		{name: "unknown host", knownHosts: func(string, ssh.PublicKey) string { return "" },
			wantErr: true, wantContains: "verify the fingerprint and add it, or use --accept-new"},
		{name: "port 22 entry does not vouch for another port", knownHosts: func(_ string, key ssh.PublicKey) string {
			return knownhosts.Line([]string{"127.0.0.1"}, key)
		}, wantErr: true, wantContains: "not in known_hosts"},
		{name: "changed key", knownHosts: otherKey, wantErr: true, wantChanged: true,
			wantContains: "HOST KEY CHANGED"},
		{name: "changed key with accept-new", knownHosts: otherKey, acceptNew: true, wantErr: true, wantChanged: true,
			wantContains: "possible man-in-the-middle; refusing to connect"},
		{name: "two host key types, ed25519 known", knownHosts: knownLine,
			hostKeys: func(t *testing.T) []ssh.Signer {
				return []ssh.Signer{sshtest.NewEd25519Signer(t), sshtest.NewECDSASigner(t)}
			}},
		{name: "two host key types, ecdsa known", knownHosts: knownLine,
			hostKeys: func(t *testing.T) []ssh.Signer {
				return []ssh.Signer{sshtest.NewECDSASigner(t), sshtest.NewEd25519Signer(t)}
			}},
		{name: "insecure ignore host key", knownHosts: otherKey, insecure: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			pub, keyFile := writeClientKey(t, dir)
			hostKeys := []ssh.Signer{sshtest.NewEd25519Signer(t)}
			if tt.hostKeys != nil {
				hostKeys = tt.hostKeys(t)
			}
			srv := sshtest.Start(t, pub, hostKeys...)
			kh := filepath.Join(dir, "known_hosts")
			content := tt.knownHosts(srv.Addr, hostKeys[0].PublicKey())
			writeFile(t, kh, content)
			c, err := sshexec.Dial(context.Background(), sshexec.Config{
				Host: "127.0.0.1", Port: srv.Port, User: "deploy", KeyFiles: []string{keyFile},
				KnownHostsFiles: []string{kh}, AcceptNew: tt.acceptNew, InsecureIgnoreHostKey: tt.insecure,
			})
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				defer c.Close()
				if res, err := c.Run(context.Background(), "echo ok", nil); err != nil || string(res.Stdout) != "ok\n" {
					t.Errorf("Run after Dial: %q, %v", res.Stdout, err)
				}
				return
			}
			var hke *sshexec.HostKeyError
			if !errors.As(err, &hke) {
				t.Fatalf("err = %v (%T), want *HostKeyError", err, err)
			}
			want := sshexec.HostKeyError{Host: srv.Addr, Fingerprint: ssh.FingerprintSHA256(hostKeys[0].PublicKey()),
				KeyType: ssh.KeyAlgoED25519, Changed: tt.wantChanged, File: kh}
			if tt.wantChanged {
				want.File = kh + ":1"
			}
			if *hke != want {
				t.Errorf("HostKeyError = %+v, want %+v", *hke, want)
			}
			for _, s := range []string{tt.wantContains, srv.Addr, want.Fingerprint, kh} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if b, _ := os.ReadFile(kh); string(b) != content {
				t.Errorf("known_hosts changed to %q", b)
			}
		})
	}
}

func knownLine(addr string, key ssh.PublicKey) string {
	return knownhosts.Line([]string{addr}, key) + "\n"
}

func otherKey(addr string, _ ssh.PublicKey) string {
	return knownhosts.Line([]string{addr}, sshtestKey()) + "\n"
}

func sshtestKey() ssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return k
}

func TestAcceptNew(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	kh := filepath.Join(t.TempDir(), "new", "known_hosts")
	cfg.KnownHostsFiles, cfg.AcceptNew = []string{kh}, true
	dial(t, cfg).Close()

	b, err := os.ReadFile(kh)
	if err != nil {
		t.Fatal(err)
	}
	wantLine := knownhosts.Line([]string{e.srv.Addr}, e.hostKey.PublicKey()) + "\n"
	if string(b) != wantLine || !strings.HasPrefix(string(b), "[127.0.0.1]:"+strconv.Itoa(e.srv.Port)+" ") {
		t.Errorf("known_hosts = %q, want %q", b, wantLine)
	}
	for path, mode := range map[string]os.FileMode{kh: 0o600, filepath.Dir(kh): 0o700 | os.ModeDir} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != mode {
			t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode(), err, mode)
		}
	}

	cfg.AcceptNew = false
	c := dial(t, cfg)
	if _, err := c.Run(context.Background(), "true", nil); err != nil {
		t.Errorf("Run after second Dial: %v", err)
	}
	if b2, _ := os.ReadFile(kh); !bytes.Equal(b, b2) {
		t.Errorf("second Dial changed known_hosts to %q", b2)
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	_, wrongKey := writeClientKey(t, dir)
	// Made by ssh-keygen -a 1 (few KDF rounds, so the test stays fast).
	passphrase := []byte("correct horse")
	encKey, err := filepath.Abs("testdata/encrypted_ed25519")
	if err != nil {
		t.Fatal(err)
	}
	encPubText, err := os.ReadFile(encKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	encPub, _, _, _, err := ssh.ParseAuthorizedKey(encPubText)
	if err != nil {
		t.Fatal(err)
	}
	encSrv := sshtest.Start(t, encPub, e.hostKey)
	writeFile(t, e.knownHosts, knownLine(e.srv.Addr, e.hostKey.PublicKey())+knownLine(encSrv.Addr, e.hostKey.PublicKey()))

	var asked []string
	tests := []struct {
		name         string
		cfg          func(sshexec.Config) sshexec.Config
		wantContains []string // empty: Dial must succeed
	}{
		{"wrong key", func(c sshexec.Config) sshexec.Config {
			c.KeyFiles = []string{wrongKey}
			return c
		}, []string{"deploy@" + e.srv.Addr, "authentication failed"}},
		{"encrypted key without passphrase hook", func(c sshexec.Config) sshexec.Config {
			c.Port, c.KeyFiles = encSrv.Port, []string{encKey}
			return c
		}, []string{encKey, "passphrase-protected", "ssh-agent"}},
		{"encrypted key, hook gives wrong passphrase", func(c sshexec.Config) sshexec.Config {
			c.Port, c.KeyFiles = encSrv.Port, []string{encKey}
			c.Passphrase = func(string) ([]byte, error) { return []byte("nope"), nil }
			return c
		}, []string{encKey, "deploy@" + encSrv.Addr}},
		{"encrypted key with passphrase hook", func(c sshexec.Config) sshexec.Config {
			c.Port, c.KeyFiles = encSrv.Port, []string{encKey}
			c.Passphrase = func(file string) ([]byte, error) {
				asked = append(asked, file)
				return bytes.Clone(passphrase), nil
			}
			return c
		}, nil},
		{"missing key file", func(c sshexec.Config) sshexec.Config {
			c.KeyFiles = []string{filepath.Join(dir, "nope")}
			return c
		}, []string{"nope", "deploy@" + e.srv.Addr}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := sshexec.Dial(context.Background(), tt.cfg(e.config()))
			if len(tt.wantContains) == 0 {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded, want an error")
			}
			for _, s := range tt.wantContains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), string(passphrase)) {
				t.Errorf("error %q shows secrets", err)
			}
		})
	}
	if len(asked) != 1 || asked[0] != encKey {
		t.Errorf("Passphrase called with %q, want [%q]", asked, encKey)
	}
}

func TestAgent(t *testing.T) {
	e := newEnv(t)
	raw, err := ssh.ParseRawPrivateKey(must(os.ReadFile(e.keyFile)))
	if err != nil {
		t.Fatal(err)
	}
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: raw}); err != nil {
		t.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("", "agent") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	ln, err := net.Listen("unix", filepath.Join(sockDir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = agent.ServeAgent(keyring, conn)
			}()
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", ln.Addr().String())
	_, wrongKey := writeClientKey(t, t.TempDir())

	tests := []struct {
		name     string
		keyFiles []string
		useAgent bool
		wantOK   bool
	}{
		{"agent only", nil, true, true},
		// The agent's key must still be offered after the file's key fails.
		{"wrong key file, then agent", []string{wrongKey}, true, true},
		{"agent not asked", []string{wrongKey}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.config()
			cfg.KeyFiles, cfg.UseAgent = tt.keyFiles, tt.useAgent
			c, err := sshexec.Dial(context.Background(), cfg)
			if err == nil {
				c.Close()
			}
			if (err == nil) != tt.wantOK {
				t.Errorf("Dial: err = %v, want success %t", err, tt.wantOK)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestDialContext(t *testing.T) {
	c := dial(t, newEnv(t).config())
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "healthy "+r.URL.Path)
	}))
	defer web.Close()
	hc := &http.Client{Transport: &http.Transport{DialContext: c.DialContext}}
	defer hc.CloseIdleConnections()

	t.Run("http through the tunnel", func(t *testing.T) {
		resp, err := hc.Get(web.URL + "/up")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "healthy /up" {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "healthy /up")
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		conn, err := c.DialContext(ctx, "tcp", web.Listener.Addr().String())
		if !errors.Is(err, context.Canceled) {
			if conn != nil {
				conn.Close()
			}
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
	t.Run("non-loopback refused by the server", func(t *testing.T) {
		_, err := c.DialContext(context.Background(), "tcp", "10.255.255.1:80")
		if err == nil || !strings.Contains(err.Error(), c.Host()) {
			t.Errorf("err = %v, want a refusal naming %s", err, c.Host())
		}
	})
}

func TestProxyJump(t *testing.T) {
	bastionEnv := newEnv(t)
	bastion := dial(t, bastionEnv.config())
	target := newEnv(t)
	cfg := target.config()
	cfg.ProxyJump = bastion
	c := dial(t, cfg)
	if res, err := c.Run(context.Background(), "echo via bastion", nil); err != nil || string(res.Stdout) != "via bastion\n" {
		t.Fatalf("Run through bastion: %q, %v", res.Stdout, err)
	}
	bastion.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Run(ctx, "true", nil); err == nil {
		t.Error("Run succeeded after the bastion closed: the connection did not go through it")
	}
}

func TestKeepAliveClosesDeadConnection(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.KeepAlive = 20 * time.Millisecond
	c := dial(t, cfg)
	if _, err := c.Run(context.Background(), "true", nil); err != nil {
		t.Fatalf("Run before silence: %v", err)
	}
	e.srv.SilenceKeepAlives()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := c.Run(context.Background(), "true", nil); err != nil {
			return // closed after the missed keepalives
		}
		if time.Now().After(deadline) {
			t.Fatal("connection still open 5s after the server stopped answering keepalives")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestQuote(t *testing.T) {
	tests := []struct {
		in, want string // want "" means: only check the shell round trip
	}{
		{"", "''"},
		{"plain", "plain"},
		{"a/b-c_d.e:f,g=h+i@j%k", "a/b-c_d.e:f,g=h+i@j%k"},
		{"it's", `'it'\''s'`},
		{"two words", "'two words'"},
		{`"double"`, ""},
		{"$(echo pwned)", "'$(echo pwned)'"},
		{"`echo pwned`", ""},
		{"line1\nline2\n", ""},
		{"$HOME ${PATH} $1", ""},
		{"* ? [a] ~ ~/x", ""},
		{"a;b|c&d>e<f", ""},
		{`back\slash \n`, ""},
		{"''''", ""},
		{"-n", "-n"},
		{"tab\there", ""},
		{"ünïcode ✓", ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.in), func(t *testing.T) {
			q := sshexec.Quote(tt.in)
			if tt.want != "" && q != tt.want {
				t.Errorf("Quote(%q) = %q, want %q", tt.in, q, tt.want)
			}
			if got := shell(t, "printf %s "+q); got != tt.in {
				t.Errorf("sh -c 'printf %%s %s' printed %q, want %q", q, got, tt.in)
			}
		})
	}
	t.Run("QuoteCommand", func(t *testing.T) {
		args := []string{"[%s]"}
		var want strings.Builder
		for _, tt := range tests {
			args = append(args, tt.in)
			fmt.Fprintf(&want, "[%s]", tt.in)
		}
		if got := shell(t, "printf "+sshexec.QuoteCommand(args...)); got != want.String() {
			t.Errorf("got %q, want %q", got, want.String())
		}
	})
	t.Run("QuoteCommand over ssh", func(t *testing.T) {
		c := dial(t, newEnv(t).config())
		args := []string{"it's", "$(id)", "a\nb", ""}
		res, err := c.Run(context.Background(), "printf '<%s>' "+sshexec.QuoteCommand(args...), nil)
		if want := "<it's><$(id)><a\nb><>"; err != nil || string(res.Stdout) != want {
			t.Errorf("got %q, %v; want %q", res.Stdout, err, want)
		}
	})
}

func shell(t *testing.T, script string) string {
	t.Helper()
	out, err := exec.Command("/bin/sh", "-c", script).Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", script, err)
	}
	return string(out)
}

// A CI secret: the key and known_hosts given as data, no files.
func TestKeyAndKnownHostsAsData(t *testing.T) {
	e := newEnv(t)
	keyPEM, err := os.ReadFile(e.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	known, err := os.ReadFile(e.knownHosts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config()
	cfg.KeyFiles, cfg.KnownHostsFiles = nil, nil
	cfg.KeyPEMs, cfg.KnownHostsData = [][]byte{keyPEM}, known
	c := dial(t, cfg)
	if res, err := c.Run(context.Background(), "echo hi", nil); err != nil || strings.TrimSpace(string(res.Stdout)) != "hi" {
		t.Fatalf("run: %v %q", err, res.Stdout)
	}

	// Data naming another key for the host is a changed key.
	other := sshtest.NewEd25519Signer(t)
	cfg.KnownHostsData = []byte(knownhosts.Line([]string{e.srv.Addr}, other.PublicKey()) + "\n")
	_, err = sshexec.Dial(context.Background(), cfg)
	var hke *sshexec.HostKeyError
	if !errors.As(err, &hke) || !hke.Changed || !strings.Contains(err.Error(), "known hosts given as data (line 1)") {
		t.Fatalf("err = %v, want a changed host key", err)
	}

	cfg.KnownHostsData = known
	cfg.KeyPEMs = [][]byte{[]byte("not a key")}
	if _, err := sshexec.Dial(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "key 1 given as data") {
		t.Fatalf("err = %v, want a parse error naming the key given as data", err)
	}
}

// A connection dropped under a running command, a new command or a dial is
// ErrConnectionLost; a command that fails, or a dial the host refuses, on a
// live connection is not.
func TestConnectionLost(t *testing.T) {
	e := newEnv(t)
	c := dial(t, e.config())
	ctx := context.Background()
	if _, err := c.Run(ctx, "exit 3", nil); errors.Is(err, sshexec.ErrConnectionLost) {
		t.Fatalf("a failing command on a live connection: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	if _, err := c.DialContext(ctx, "tcp", closed); err == nil || errors.Is(err, sshexec.ErrConnectionLost) {
		t.Fatalf("a refused dial on a live connection: %v", err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := c.Run(ctx, "sleep 10", nil)
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	e.srv.DropConnections()
	select {
	case err := <-done:
		if !errors.Is(err, sshexec.ErrConnectionLost) || !strings.Contains(err.Error(), "lost the SSH connection to 127.0.0.1:") {
			t.Fatalf("a command under a dropped connection: %v", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("the command did not end when its connection dropped")
	}
	if _, err := c.Run(ctx, "true", nil); !errors.Is(err, sshexec.ErrConnectionLost) {
		t.Errorf("a command on the dropped connection: %v", err)
	}
	if _, err := c.DialContext(ctx, "tcp", closed); !errors.Is(err, sshexec.ErrConnectionLost) {
		t.Errorf("a dial on the dropped connection: %v", err)
	}
	// A new connection works: the server is still there.
	if _, err := dial(t, e.config()).Run(ctx, "true", nil); err != nil {
		t.Errorf("a new connection: %v", err)
	}
}

// Attach gives the command its stdin, and returns when the command ends,
// also while stdin has not ended (a terminal's never does).
func TestAttach(t *testing.T) {
	c := dial(t, newEnv(t).config())
	var stdout, stderr bytes.Buffer
	err := c.Attach(context.Background(), "head -n 1; exit 3", nil, strings.NewReader("first\nsecond\n"), &stdout, &stderr)
	var ee *sshexec.ExitError
	if !errors.As(err, &ee) || ee.Code != 3 || stdout.String() != "first\n" {
		t.Fatalf("err = %v, stdout %q; want exit 3 and the first line", err, stdout.String())
	}
	pr, pw := io.Pipe() // written to, never closed
	defer pw.Close()
	go func() { _, _ = io.WriteString(pw, "typed\n") }()
	done := make(chan error, 1)
	stdout.Reset()
	go func() { done <- c.Attach(context.Background(), "read line; echo got $line", nil, pr, &stdout, nil) }()
	select {
	case err := <-done:
		if err != nil || stdout.String() != "got typed\n" {
			t.Errorf("err = %v, stdout %q", err, stdout.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Attach waits for stdin to end after the command ended")
	}
}
