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
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
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

// Terminal is the pseudo-terminal a command run by Attach gets: its type
// ($TERM) and size, and the sizes the local window takes later.
type Terminal struct {
	Term          string
	Width, Height int
	// Resize, if not nil, gives each new size: [width, height].
	Resize <-chan [2]int
}

// Attach is Stream with stdin (nil: none) and, with t, a pseudo-terminal
// on the host: the command's stdout and stderr are then both the
// terminal's output, written to stdout, and stdin goes to the terminal
// as it is, Ctrl-C included (the caller puts the local terminal in raw
// mode). Attach returns when the command ends, without waiting for stdin
// to end (a terminal's never does): a read of stdin may then still be
// under way, and what it reads is dropped.
func (c *Client) Attach(ctx context.Context, cmd string, t *Terminal, stdin io.Reader, stdout, stderr io.Writer) error {
	return c.session(ctx, cmd, stdin, stdout, stderr, t, true)
}

func (c *Client) run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) error {
	return c.session(ctx, cmd, stdin, stdout, stderr, nil, false)
}

func (c *Client) session(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer, t *Terminal, detachStdin bool) error {
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
	s.Stdout = g.writer(stdout)
	s.Stderr = g.writer(io.MultiWriter(orDiscard(stderr), errTail))
	switch {
	case stdin != nil && detachStdin:
		w, err := s.StdinPipe()
		if err != nil {
			return fmt.Errorf("run on %s: stdin: %w", c.host, err)
		}
		go func() {
			_, _ = io.Copy(w, stdin) // ends with stdin, or at the first write after the session
			_ = w.Close()
		}()
	default:
		s.Stdin = stdin
	}
	if t != nil {
		if err := s.RequestPty(t.Term, t.Height, t.Width, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
			return fmt.Errorf("run on %s: a terminal: %w", c.host, err)
		}
		if t.Resize != nil {
			go func() { // until the caller closes Resize
				for size := range t.Resize {
					_ = s.WindowChange(size[1], size[0]) // the session may have ended
				}
			}()
		}
	}
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
