// Package sshexec is rollout's SSH transport, built on golang.org/x/crypto/ssh.
//
// It owns: dialling a host (directly or through a bastion), client
// authentication with key files and ssh-agent, host key checking against
// known_hosts (with trust-on-first-use when asked), keepalives, running
// remote commands one session each on a shared connection, tunnelled TCP
// dials, and POSIX shell quoting (Quote, QuoteCommand) from which callers
// build every remote command.
//
// It does not own: what commands mean (deployments, systemd, Nginx), retries,
// configuration files, flags, or printing. It never writes to the terminal,
// never logs, and never imports other packages of rollout.
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
	"unicode/utf8"

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"
)

const (
	defaultPort           = 22
	defaultConnectTimeout = 10 * time.Second
	defaultKeepAlive      = 15 * time.Second
	maxMissedKeepAlives   = 3
	// probeTimeout bounds the keepalive that tells a broken connection
	// from a command that failed.
	probeTimeout = 3 * time.Second
	// maxOutput caps what Run keeps of a command's stdout, and separately of
	// its stderr; the rest is read and dropped.
	maxOutput = 4 << 20
	// maxExitStderr is how much of the end of stderr an ExitError keeps.
	maxExitStderr = 2 << 10
)

// Config says how to reach and authenticate to one host.
type Config struct {
	Host string // address or name to dial
	Port int    // 22 when 0
	User string

	// KeyFiles are private key paths; "~/" is expanded. An encrypted key is
	// an error unless Passphrase is set, which is then called with the
	// file's path.
	KeyFiles   []string
	Passphrase func(file string) ([]byte, error)
	// KeyPEMs are private keys given as data (e.g. from a CI secret), never
	// written anywhere.
	KeyPEMs  [][]byte
	UseAgent bool // also offer the keys of the agent at SSH_AUTH_SOCK, if any

	// KnownHostsFiles are checked for the host's key; "~/" is expanded and
	// missing files count as empty.
	KnownHostsFiles []string
	// KnownHostsData is known_hosts content given as data (e.g. from a CI
	// secret), checked like the files; it is kept in memory only.
	KnownHostsData []byte
	// AcceptNew trusts an unknown host's key and appends it to the first
	// KnownHostsFiles entry. A changed key is refused all the same.
	AcceptNew bool
	// InsecureIgnoreHostKey skips host key checking entirely: anyone on
	// the path can impersonate the host. Never the default; callers must
	// warn loudly when they set it.
	InsecureIgnoreHostKey bool

	ConnectTimeout time.Duration // TCP dial and handshake; 10s when 0
	// KeepAlive is how often to send keepalive@openssh.com; the connection
	// is closed when one fails or three go unanswered. 15s when 0, none
	// when negative.
	KeepAlive time.Duration
	// ProxyJump, if set, is a connected bastion to dial the host through.
	ProxyJump *Client
}

// Client is an authenticated connection to one host. It is safe for
// concurrent use; every command gets its own session.
type Client struct {
	host string // "host:port"
	conn *ssh.Client
	done chan struct{}
	once sync.Once
	// broken is closed when the connection ends, for whatever reason.
	broken chan struct{}
}

// ErrConnectionLost: the SSH connection to the host broke (closed by the
// other end, reset, or keepalives unanswered) while a command or a dial was
// under way; whether a command ran to its end is unknown.
var ErrConnectionLost = errors.New("lost the SSH connection")

// HostKeyError is a host key that known_hosts does not vouch for.
type HostKeyError struct {
	Host        string // "host:port"
	Fingerprint string // SHA256:... of the key the host presented
	KeyType     string
	Changed     bool   // true: known_hosts has a different key; false: unknown host
	File        string // changed: file:line of the known key; unknown: the files searched
}

func (e *HostKeyError) Error() string {
	if e.Changed {
		return fmt.Sprintf("HOST KEY CHANGED for %s: it presented %s key %s, which differs from the key in %s; possible man-in-the-middle; refusing to connect",
			e.Host, e.KeyType, e.Fingerprint, e.File)
	}
	files := e.File
	if files == "" {
		files = "none configured"
	}
	return fmt.Sprintf("host %s (%s key %s) not in known_hosts (%s); verify the fingerprint and add it, or use --accept-new",
		e.Host, e.KeyType, e.Fingerprint, files)
}

// ExitError is a remote command that ran and did not exit 0.
type ExitError struct {
	Cmd    string
	Code   int    // -1 when killed by a signal
	Signal string // the signal's name ("KILL"), when killed by one
	Stderr string // the end of its stderr (about 2 KB), trimmed
}

func (e *ExitError) Error() string {
	cmd := e.Cmd
	if len(cmd) > 80 {
		cmd = cmd[:77] + "..."
	}
	msg := fmt.Sprintf("command exited %d: %s", e.Code, cmd)
	if e.Signal != "" {
		msg = fmt.Sprintf("command killed by signal %s: %s", e.Signal, cmd)
	}
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// Result is what a command printed and how it ended.
type Result struct {
	Stdout, Stderr []byte // each capped at 4 MiB
	ExitCode       int    // -1 when there was no exit status (signal, cancel, transport error)
	Duration       time.Duration
}

// Dial connects to cfg's host, checks its host key and authenticates.
// A host key problem is a *HostKeyError.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Port == 0 {
		cfg.Port = defaultPort
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = defaultKeepAlive
	}
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	who := cfg.User + "@" + addr
	if cfg.Host == "" || cfg.User == "" {
		return nil, fmt.Errorf("ssh %s: host and user are required", who)
	}

	auth, closeAgent, err := authMethod(cfg)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", who, err)
	}
	defer closeAgent()
	clientCfg := &ssh.ClientConfig{User: cfg.User, Auth: []ssh.AuthMethod{auth}}
	if cfg.InsecureIgnoreHostKey {
		clientCfg.HostKeyCallback = ssh.InsecureIgnoreHostKey()
	} else if clientCfg.HostKeyCallback, clientCfg.HostKeyAlgorithms, err = hostKeyCheck(cfg, addr); err != nil {
		return nil, fmt.Errorf("ssh %s: %w", who, err)
	}

	dctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	var raw net.Conn
	if cfg.ProxyJump != nil {
		raw, err = cfg.ProxyJump.DialContext(dctx, "tcp", addr)
	} else {
		raw, err = (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", who, err)
	}
	// The handshake can't take a context: closing the conn ends it.
	stop := context.AfterFunc(dctx, func() { raw.Close() })
	c, chans, reqs, err := ssh.NewClientConn(raw, addr, clientCfg)
	if !stop() && err == nil {
		c.Close()
		err = dctx.Err()
	}
	if err != nil {
		raw.Close()
		var hke *HostKeyError
		switch {
		case errors.As(err, &hke):
			return nil, hke
		case ctx.Err() != nil:
			return nil, fmt.Errorf("ssh %s: %w", who, ctx.Err())
		case dctx.Err() != nil:
			return nil, fmt.Errorf("ssh %s: no handshake within %s: %w", who, cfg.ConnectTimeout, dctx.Err())
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, fmt.Errorf("ssh %s: authentication failed (keys: %s; agent: %t): %w",
				who, strings.Join(cfg.KeyFiles, ", "), cfg.UseAgent, err)
		}
		return nil, fmt.Errorf("ssh %s: %w", who, err)
	}
	cl := &Client{host: addr, conn: ssh.NewClient(c, chans, reqs), done: make(chan struct{}), broken: make(chan struct{})}
	go func() {
		_ = cl.conn.Wait()
		close(cl.broken)
	}()
	if cfg.KeepAlive > 0 {
		go cl.keepAlive(cfg.KeepAlive)
	}
	return cl, nil
}

// authMethod offers the key files' signers, then the agent's, in a single
// publickey method (x/crypto tries each method name only once).
func authMethod(cfg Config) (ssh.AuthMethod, func(), error) {
	var signers []ssh.Signer
	for _, f := range cfg.KeyFiles {
		path := expandHome(f)
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("read key: %w", err)
		}
		s, err := ssh.ParsePrivateKey(pem)
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			if cfg.Passphrase == nil {
				return nil, nil, fmt.Errorf("key %s is passphrase-protected: add it to ssh-agent (ssh-add %s)", path, path)
			}
			pass, perr := cfg.Passphrase(path)
			if perr != nil {
				return nil, nil, fmt.Errorf("passphrase for key %s: %w", path, perr)
			}
			s, err = ssh.ParsePrivateKeyWithPassphrase(pem, pass)
			clear(pass)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("parse key %s: %w", path, err)
		}
		signers = append(signers, s)
	}
	for i, pem := range cfg.KeyPEMs {
		s, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			var missing *ssh.PassphraseMissingError
			if errors.As(err, &missing) {
				return nil, nil, fmt.Errorf("key %d given as data is passphrase-protected: give it without a passphrase", i+1)
			}
			return nil, nil, fmt.Errorf("parse key %d given as data: %w", i+1, err)
		}
		signers = append(signers, s)
	}
	var ag agent.ExtendedAgent
	closeAgent := func() {}
	if sock := os.Getenv("SSH_AUTH_SOCK"); cfg.UseAgent && sock != "" {
		if conn, err := net.Dial("unix", sock); err == nil {
			ag, closeAgent = agent.NewClient(conn), func() { conn.Close() }
		}
	}
	if len(signers) == 0 && ag == nil {
		return nil, nil, errors.New("no SSH key: give a key file or run ssh-agent")
	}
	return ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
		if ag == nil {
			return signers, nil
		}
		fromAgent, err := ag.Signers()
		if err != nil {
			return signers, nil // the key files may still do
		}
		return append(append([]ssh.Signer(nil), signers...), fromAgent...), nil
	}), closeAgent, nil
}

// hostKeyCheck returns the callback checking keys against known_hosts, and
// the host key algorithms to ask addr for: those known_hosts has for it, so
// a host with several key types presents one we can check (nil when the
// host is unknown, to accept any).
func hostKeyCheck(cfg Config, addr string) (ssh.HostKeyCallback, []string, error) {
	var all, present []string
	for _, f := range cfg.KnownHostsFiles {
		p := expandHome(f)
		all = append(all, p)
		if _, err := os.Stat(p); err == nil {
			present = append(present, p)
		}
	}
	dataPath := ""
	if len(cfg.KnownHostsData) > 0 {
		path, cleanup, err := memFile("known_hosts", cfg.KnownHostsData)
		if err != nil {
			return nil, nil, fmt.Errorf("known hosts given as data: %w", err)
		}
		defer cleanup() // NewDB has read it by then
		present, dataPath = append(present, path), path
	}
	var db *knownhosts.HostKeyDB
	var algos []string
	if len(present) > 0 {
		var err error
		if db, err = knownhosts.NewDB(present...); err != nil {
			return nil, nil, fmt.Errorf("read known_hosts: %w", err)
		}
		algos = db.HostKeyAlgorithms(addr)
	}
	cb := func(host string, remote net.Addr, key ssh.PublicKey) error {
		hke := &HostKeyError{Host: host, Fingerprint: ssh.FingerprintSHA256(key), KeyType: key.Type(), File: strings.Join(all, ", ")}
		if db != nil {
			err := db.HostKeyCallback()(host, remote, key)
			var ke *xknownhosts.KeyError
			if err == nil || !errors.As(err, &ke) {
				return err // accepted, or revoked or malformed
			}
			if len(ke.Want) > 0 {
				hke.Changed, hke.File = true, fmt.Sprintf("%s:%d", ke.Want[0].Filename, ke.Want[0].Line)
				if ke.Want[0].Filename == dataPath {
					hke.File = fmt.Sprintf("the known hosts given as data (line %d)", ke.Want[0].Line)
				}
				return hke
			}
		}
		if !cfg.AcceptNew || len(all) == 0 {
			return hke
		}
		return appendKnownHost(all[0], host, key)
	}
	return cb, algos, nil
}

func appendKnownHost(file, host string, key ssh.PublicKey) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("record host key of %s: %w", host, err)
	}
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("record host key of %s: %w", host, err)
	}
	_, err = fmt.Fprintln(f, knownhosts.Line([]string{host}, key))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("record host key of %s in %s: %w", host, file, err)
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

// keepAlive closes the connection when a keepalive fails or
// maxMissedKeepAlives in a row go unanswered for a period each.
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
		select {
		case err := <-c.sendKeepAlive():
			if err != nil {
				c.Close()
				return
			}
			missed = 0
		case <-time.After(every):
			if missed++; missed >= maxMissedKeepAlives {
				c.Close()
				return
			}
		case <-c.done:
			return
		}
	}
}

// sendKeepAlive asks the other end for an answer (OpenSSH's
// keepalive@openssh.com); the channel gets nil when it answered.
func (c *Client) sendKeepAlive() <-chan error {
	reply := make(chan error, 1)
	go func() {
		_, _, err := c.conn.SendRequest("keepalive@openssh.com", true, nil)
		reply <- err
	}()
	return reply
}

// lost tells whether err, from a command or a dial, came from a broken
// connection: if so it returns err as an ErrConnectionLost, else nil. When
// the connection still looks up, a keepalive asks the other end (at most
// probeTimeout); one that fails closes the connection for good.
func (c *Client) lost(err error) error {
	select {
	case <-c.broken:
	default:
		select {
		case perr := <-c.sendKeepAlive():
			if perr == nil {
				return nil
			}
		case <-time.After(probeTimeout):
		case <-c.broken:
		}
		c.Close()
	}
	return fmt.Errorf("%w to %s: %w", ErrConnectionLost, c.host, err)
}

// Alive asks the other end whether the connection is up (a keepalive, at
// most probeTimeout): nil if it is, else an ErrConnectionLost, and the
// connection is closed for good. A connection whose packets are silently
// dropped is found out here in seconds, rather than when keepalives time
// out.
func (c *Client) Alive(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.lost(errors.New("no answer to a keepalive"))
}

// Host is the "host:port" label used in messages.
func (c *Client) Host() string { return c.host }

// Close closes the connection; commands still running on it fail. Closing
// again does nothing.
func (c *Client) Close() error {
	var err error
	c.once.Do(func() {
		close(c.done)
		err = c.conn.Close()
	})
	return err
}

// Run runs cmd in a new session, with stdin if not nil, and returns what
// it printed: at most 4 MiB of stdout and 4 MiB of stderr are kept. A
// command that exits non-zero returns its Result and an *ExitError. If ctx
// ends first, the command is sent SIGKILL, its session closed, and the error
// wraps ctx.Err().
func (c *Client) Run(ctx context.Context, cmd string, stdin io.Reader) (Result, error) {
	var stdout, stderr capped
	t0 := time.Now()
	err := c.run(ctx, cmd, stdin, &stdout, &stderr)
	res := Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Duration: time.Since(t0)}
	var ee *ExitError
	switch {
	case errors.As(err, &ee):
		res.ExitCode = ee.Code
	case err != nil:
		res.ExitCode = -1
	}
	return res, err
}

// Stream is Run without stdin, copying the command's output to stdout and
// stderr (nil discards) as it comes; neither is written to after Stream
// returns.
func (c *Client) Stream(ctx context.Context, cmd string, stdout, stderr io.Writer) error {
	return c.run(ctx, cmd, nil, stdout, stderr)
}

func (c *Client) run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("run on %s: %w", c.host, err)
	}
	s, err := c.conn.NewSession()
	if err != nil {
		if lerr := c.lost(err); lerr != nil {
			return lerr
		}
		return fmt.Errorf("run on %s: new session: %w", c.host, err)
	}
	defer s.Close()
	g, errTail := &gate{}, &tailBuffer{}
	defer g.shut()
	s.Stdin, s.Stdout = stdin, g.writer(stdout)
	s.Stderr = g.writer(io.MultiWriter(orDiscard(stderr), errTail))
	if err := s.Start(cmd); err != nil {
		if lerr := c.lost(err); lerr != nil {
			return lerr
		}
		return fmt.Errorf("run on %s: %w", c.host, err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = s.Signal(ssh.SIGKILL) // best effort: servers may ignore it
		_ = s.Close()
		return fmt.Errorf("run on %s: %w", c.host, ctx.Err())
	}
	var exit *ssh.ExitError
	switch {
	case errors.As(err, &exit):
		ee := &ExitError{Cmd: cmd, Code: exit.ExitStatus(), Stderr: errTail.String()}
		if sig := exit.Signal(); sig != "" {
			ee.Code, ee.Signal = -1, sig
		}
		return ee
	case err != nil:
		if lerr := c.lost(err); lerr != nil {
			return lerr
		}
		return fmt.Errorf("run on %s: %w", c.host, err)
	}
	return nil
}

// DialContext opens a TCP connection from the host to addr, tunnelled
// through the SSH connection (direct-tcpip): for instance to reach
// 127.0.0.1:PORT on the host, as an http.Transport's DialContext.
func (c *Client) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	type dialed struct {
		conn net.Conn
		err  error
	}
	ch := make(chan dialed, 1)
	go func() {
		conn, err := c.conn.Dial(network, addr)
		ch <- dialed{conn, err}
	}()
	select {
	case d := <-ch:
		var refused *ssh.OpenChannelError
		if d.err != nil && !errors.As(d.err, &refused) {
			if lerr := c.lost(d.err); lerr != nil {
				return nil, fmt.Errorf("dial %s: %w", addr, lerr)
			}
		}
		if d.err != nil {
			return nil, fmt.Errorf("dial %s via %s: %w", addr, c.host, d.err)
		}
		return d.conn, nil
	case <-ctx.Done():
		go func() {
			if d := <-ch; d.conn != nil {
				d.conn.Close()
			}
		}()
		return nil, fmt.Errorf("dial %s via %s: %w", addr, c.host, ctx.Err())
	}
}

// gate serialises a session's stdout and stderr writes and, once shut,
// drops them, so no write reaches the caller's writers after run returns.
type gate struct {
	mu     sync.Mutex
	closed bool
}

func (g *gate) shut() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

func (g *gate) writer(w io.Writer) io.Writer { return gatedWriter{g, orDiscard(w)} }

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

type gatedWriter struct {
	g *gate
	w io.Writer
}

func (gw gatedWriter) Write(p []byte) (int, error) {
	gw.g.mu.Lock()
	defer gw.g.mu.Unlock()
	if gw.g.closed {
		return len(p), nil
	}
	return gw.w.Write(p)
}

// capped is a buffer that keeps the first maxOutput bytes written to it.
type capped struct{ bytes.Buffer }

func (b *capped) Write(p []byte) (int, error) {
	if room := maxOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// tailBuffer keeps the end of what is written to it, for ExitError.Stderr.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if keep := maxExitStderr + 256; len(t.b) > 2*keep { // slack for trimmed space
		t.b = append([]byte(nil), t.b[len(t.b)-keep:]...)
	}
	return len(p), nil
}

// String is the last maxExitStderr bytes, trimmed, "..." first if cut.
func (t *tailBuffer) String() string {
	s := strings.TrimSpace(string(t.b))
	if len(s) <= maxExitStderr {
		return s
	}
	s = s[len(s)-maxExitStderr:]
	for len(s) > 0 && !utf8.RuneStart(s[0]) {
		s = s[1:]
	}
	return "..." + s
}

// Quote quotes s as one word for a POSIX shell: unchanged when made only of
// [A-Za-z0-9_@%+=:,./-], else in single quotes.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_@%+=:,./-", r)) {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}

// QuoteCommand quotes each argument and joins them with spaces.
func QuoteCommand(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}
