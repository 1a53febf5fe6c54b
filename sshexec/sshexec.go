// Package sshexec is rollout's SSH transport: one connection per host,
// reused for every command and tunnelled dial, with host keys checked
// against known_hosts. It runs commands and opens tunnels; it knows nothing
// about deployments, and callers build commands with Quote.
package sshexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"
)

// Config says how to reach one host.
type Config struct {
	Host            string
	Port            int // 22 when 0
	User            string
	KeyFiles        []string // private keys; "~/" is expanded
	UseAgent        bool     // also offer the keys of the agent at SSH_AUTH_SOCK
	KnownHostsFiles []string // missing files count as empty
	// AcceptNew trusts an unknown host's key and records it in the first
	// known_hosts file. A changed key is refused all the same.
	AcceptNew      bool
	ConnectTimeout time.Duration // TCP and handshake; 10s when 0
	KeepAlive      time.Duration // keepalive interval; 15s when 0
}

// Client is a connection to one host, safe for concurrent use.
type Client struct {
	label string
	conn  *ssh.Client
	done  chan struct{}
	once  sync.Once
}

// HostKeyError is a host key that is unknown or differs from known_hosts.
type HostKeyError struct {
	Host        string
	KeyType     string
	Fingerprint string // SHA256:...
	Changed     bool   // known_hosts has another key for the host
	Files       []string
}

func (e *HostKeyError) Error() string {
	if e.Changed {
		return fmt.Sprintf("HOST KEY CHANGED for %s: it presented %s %s, which differs from %s; possible man-in-the-middle, refusing to connect",
			e.Host, e.KeyType, e.Fingerprint, strings.Join(e.Files, ", "))
	}
	return fmt.Sprintf("unknown host %s: its %s key %s is not in %s; verify the fingerprint and add it, or use --accept-new",
		e.Host, e.KeyType, e.Fingerprint, strings.Join(e.Files, ", "))
}

// ExitError is a remote command that ran and exited non-zero.
type ExitError struct {
	Cmd    string
	Code   int    // -1 when killed by a signal
	Signal string // the signal, when killed by one
	Stderr string // its last 2 KB, trimmed
}

func (e *ExitError) Error() string {
	cmd := e.Cmd
	if len(cmd) > 80 {
		cmd = cmd[:77] + "..."
	}
	msg := fmt.Sprintf("command exited %d", e.Code)
	if e.Signal != "" {
		msg = "command killed by signal " + e.Signal
	}
	msg += ": " + cmd
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// Result is what a command printed.
type Result struct {
	Stdout, Stderr []byte
	ExitCode       int
	Duration       time.Duration
}

// maxOutput caps what Run keeps of a command's stdout and of its stderr.
const maxOutput = 4 << 20

// Dial connects and authenticates to cfg's host.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Port == 0 {
		cfg.Port = 22
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	label := cfg.User + "@" + addr

	auth, closeAgent, err := authMethods(cfg)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", label, err)
	}
	defer closeAgent()
	hostKeys, algos, err := hostKeyCallback(cfg)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", label, err)
	}
	var keyErr error
	clientCfg := &ssh.ClientConfig{
		User: cfg.User,
		Auth: auth,
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			keyErr = hostKeys(host, remote, key)
			return keyErr
		},
		HostKeyAlgorithms: algos(addr),
		Timeout:           cfg.ConnectTimeout,
	}

	dctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", label, err)
	}
	// Bound the handshake by the same deadline, and by ctx.
	deadline, _ := dctx.Deadline()
	_ = raw.SetDeadline(deadline)
	stopWatch := context.AfterFunc(dctx, func() { raw.Close() })
	c, chans, reqs, err := ssh.NewClientConn(raw, addr, clientCfg)
	stopWatch()
	if err != nil {
		raw.Close()
		var hke *HostKeyError
		if errors.As(keyErr, &hke) {
			return nil, hke
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ssh %s: %w", label, ctx.Err())
		}
		return nil, fmt.Errorf("ssh %s: %w", label, err)
	}
	_ = raw.SetDeadline(time.Time{})
	cl := &Client{label: label, conn: ssh.NewClient(c, chans, reqs), done: make(chan struct{})}
	go cl.keepAlive(cfg.KeepAlive)
	return cl, nil
}

func authMethods(cfg Config) ([]ssh.AuthMethod, func(), error) {
	var signers []ssh.Signer
	for _, f := range cfg.KeyFiles {
		path := expandHome(f)
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, func() {}, fmt.Errorf("read key: %w", err)
		}
		s, err := ssh.ParsePrivateKey(pem)
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, func() {}, fmt.Errorf("key %s is passphrase-protected: add it to ssh-agent (ssh-add %s)", path, path)
		}
		if err != nil {
			return nil, func() {}, fmt.Errorf("parse key %s: %w", path, err)
		}
		signers = append(signers, s)
	}
	closeAgent := func() {}
	var methods []ssh.AuthMethod
	if len(signers) > 0 {
		methods = append(methods, ssh.PublicKeys(signers...))
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); cfg.UseAgent && sock != "" {
		if conn, err := net.Dial("unix", sock); err == nil {
			closeAgent = func() { conn.Close() }
			methods = append(methods, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
		}
	}
	if len(methods) == 0 {
		return nil, closeAgent, errors.New("no SSH key: give a key file or run ssh-agent")
	}
	return methods, closeAgent, nil
}

// hostKeyCallback checks keys against the known_hosts files, and returns
// the host key algorithms to offer for an address: only those known_hosts
// has, so a server with several key types presents one we can verify.
func hostKeyCallback(cfg Config) (ssh.HostKeyCallback, func(string) []string, error) {
	var files []string
	for _, f := range cfg.KnownHostsFiles {
		p := expandHome(f)
		if _, err := os.Stat(p); err == nil {
			files = append(files, p)
		}
	}
	display := make([]string, len(cfg.KnownHostsFiles))
	for i, f := range cfg.KnownHostsFiles {
		display[i] = expandHome(f)
	}
	none := func(string) []string { return nil }
	var db *knownhosts.HostKeyDB
	if len(files) > 0 {
		var err error
		if db, err = knownhosts.NewDB(files...); err != nil {
			return nil, none, fmt.Errorf("read known_hosts: %w", err)
		}
	}
	algos := none
	if db != nil {
		algos = db.HostKeyAlgorithms
	}
	cb := func(host string, remote net.Addr, key ssh.PublicKey) error {
		hke := &HostKeyError{Host: host, KeyType: key.Type(), Fingerprint: ssh.FingerprintSHA256(key), Files: display}
		if db != nil {
			err := db.HostKeyCallback()(host, remote, key)
			if err == nil {
				return nil
			}
			var ke *xknownhosts.KeyError
			if !errors.As(err, &ke) {
				return err
			}
			if len(ke.Want) > 0 {
				hke.Changed = true
				return hke
			}
		}
		if !cfg.AcceptNew || len(cfg.KnownHostsFiles) == 0 {
			return hke
		}
		return appendKnownHost(expandHome(cfg.KnownHostsFiles[0]), host, remote, key)
	}
	return cb, algos, nil
}

func appendKnownHost(file, host string, remote net.Addr, key ssh.PublicKey) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("record host key: %w", err)
	}
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("record host key: %w", err)
	}
	defer f.Close()
	line := knownhosts.Line([]string{knownhosts.Normalize(host)}, key)
	if _, err := fmt.Fprintln(f, line); err != nil {
		return fmt.Errorf("record host key: %w", err)
	}
	return nil
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return p
}

// keepAlive closes the connection after three unanswered keepalives.
func (c *Client) keepAlive(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	missed := 0
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		res := make(chan error, 1)
		go func() {
			_, _, err := c.conn.SendRequest("keepalive@openssh.com", true, nil)
			res <- err
		}()
		select {
		case err := <-res:
			if err != nil {
				c.Close()
				return
			}
			missed = 0
		case <-time.After(every):
			if missed++; missed >= 3 {
				c.Close()
				return
			}
		case <-c.done:
			return
		}
	}
}

// Host is the "user@host:port" label used in messages.
func (c *Client) Host() string { return c.label }

// Close closes the connection.
func (c *Client) Close() error {
	var err error
	c.once.Do(func() {
		close(c.done)
		err = c.conn.Close()
	})
	return err
}

// Run runs cmd in a new session, with stdin if not nil. A command that
// exits non-zero returns its Result and an *ExitError. If ctx ends first,
// the command is sent SIGKILL, its session closed, and the error wraps
// ctx.Err(). At most 4 MiB of stdout and of stderr are kept.
func (c *Client) Run(ctx context.Context, cmd string, stdin io.Reader) (Result, error) {
	var stdout, stderr capped
	t0 := time.Now()
	err := c.run(ctx, cmd, stdin, &stdout, &stderr)
	res := Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Duration: time.Since(t0)}
	var ee *ExitError
	if errors.As(err, &ee) {
		res.ExitCode = ee.Code
		ee.Stderr = lastBytes(strings.TrimSpace(string(res.Stderr)), 2048)
	}
	return res, err
}

// Stream runs cmd, copying its output to stdout and stderr as it comes.
func (c *Client) Stream(ctx context.Context, cmd string, stdout, stderr io.Writer) error {
	return c.run(ctx, cmd, nil, stdout, stderr)
}

func (c *Client) run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("run on %s: %w", c.label, err)
	}
	s, err := c.conn.NewSession()
	if err != nil {
		return fmt.Errorf("run on %s: new session: %w", c.label, err)
	}
	defer s.Close()
	s.Stdin, s.Stdout, s.Stderr = stdin, stdout, stderr
	if err := s.Start(cmd); err != nil {
		return fmt.Errorf("run on %s: %w", c.label, err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = s.Signal(ssh.SIGKILL)
		s.Close()
		return fmt.Errorf("run on %s: %w", c.label, ctx.Err())
	}
	var exit *ssh.ExitError
	switch {
	case errors.As(err, &exit):
		ee := &ExitError{Cmd: cmd, Code: exit.ExitStatus()}
		if sig := exit.Signal(); sig != "" {
			ee.Code, ee.Signal = -1, sig
		}
		return ee
	case err != nil:
		return fmt.Errorf("run on %s: %w", c.label, err)
	}
	return nil
}

// DialContext opens a TCP connection from the host to addr (a tunnel
// through the SSH connection), for health checks of the host's loopback.
func (c *Client) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		conn, err := c.conn.Dial(network, addr)
		ch <- result{conn, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("dial %s via %s: %w", addr, c.label, r.err)
		}
		return r.conn, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("dial %s via %s: %w", addr, c.label, ctx.Err())
	}
}

// capped is a buffer that keeps the first maxOutput bytes.
type capped struct{ bytes.Buffer }

func (b *capped) Write(p []byte) (int, error) {
	if room := maxOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// Quote quotes s for a POSIX shell: unchanged when made only of safe
// characters, else in single quotes.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_@%+=:,./-", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// QuoteCommand quotes each argument and joins them with spaces.
func QuoteCommand(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}
