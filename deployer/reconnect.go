package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/sethvargo/go-retry"

	"github.com/rollout-dev/rollout/sshexec"
)

// StepSSH events say that a host's connection was lost, and whether
// rollout got it back.
const StepSSH StepName = "ssh"

// ErrUnreachable: a host's connection broke and rollout could not
// reconnect within ssh.reconnect.
var ErrUnreachable = errors.New("host unreachable")

// maxReconnects bounds how often one command reconnects and runs again.
const maxReconnects = 3

// link is a host's connection that outlives a lost SSH connection: the
// one place where rollout reconnects. A command cut by a lost connection
// (sshexec.ErrConnectionLost) makes it reconnect, with backoff for at most
// ssh.reconnect, and run again on the new connection. Running again is
// safe for every command the engine sends, since each is a read, a
// compare-and-swap, or a change that leaves the same state when made twice
// (a write that had landed is found changed and read again; a lock this
// holder took is recognised by its token). Only the user's hooks are not
// run again (RunOnce): whether they ran is unknown, and rollout says so.
// A command whose stdin cannot be sent again from its start is not run
// again either. A host that stays away is given up on: every later command
// fails at once with the ErrUnreachable that said so.
type link struct {
	host    string
	budget  time.Duration // ssh.reconnect
	connect func(ctx context.Context) (Conn, error)
	emit    func(Event)

	mu   sync.Mutex
	gen  int // how many times it reconnected
	conn Conn
	gone error // why the host was given up on
}

var _ Conn = (*link)(nil)

// opKey carries, for the link's messages only, what the command it runs
// is doing ("upload release R"): a lost connection says what it cut.
type opKey struct{}

func withOp(ctx context.Context, what string) context.Context {
	return context.WithValue(ctx, opKey{}, what)
}

func newLink(d *Deployer, host string, cfg *Config, conn Conn) *link {
	return &link{host: host, budget: cfg.SSH.Reconnect, conn: conn, emit: d.emit,
		connect: func(ctx context.Context) (Conn, error) { return d.Connect(ctx, host) }}
}

func (l *link) current() (Conn, int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conn, l.gen, l.gone
}

// givenUp reports whether rollout gave up on the host: it could not
// reconnect within ssh.reconnect.
func (l *link) givenUp() bool {
	_, _, gone := l.current()
	return gone != nil
}

// Close closes the current connection.
func (l *link) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conn.Close()
}

// do runs op on the current connection, and again on a new one when the
// connection was lost and again is true.
func (l *link) do(ctx context.Context, again func() bool, op func(Conn) error) error {
	for i := 0; ; i++ {
		c, gen, gone := l.current()
		if gone != nil {
			return gone
		}
		err := op(c)
		if !errors.Is(err, sshexec.ErrConnectionLost) {
			return err
		}
		if rerr := l.reconnect(ctx, gen, err); rerr != nil {
			return rerr
		}
		if i >= maxReconnects || !again() {
			return err
		}
	}
}

// Run runs cmd, and again on a new connection when the connection was
// lost, provided stdin is nil or can be sent again from its start (an
// io.Seeker, rewound).
func (l *link) Run(ctx context.Context, cmd string, stdin io.Reader) (res sshexec.Result, err error) {
	again := func() bool {
		if stdin == nil {
			return true
		}
		s, ok := stdin.(io.Seeker)
		return ok && rewind(s) == nil
	}
	err = l.do(ctx, again, func(c Conn) error { res, err = c.Run(ctx, cmd, stdin); return err })
	return res, err
}

func rewind(s io.Seeker) error {
	_, err := s.Seek(0, io.SeekStart)
	return err
}

// RunOnce runs cmd once: after a lost connection it reconnects, for what
// comes next, but does not run cmd again, and says so.
func (l *link) RunOnce(ctx context.Context, cmd string, stdin io.Reader) (res sshexec.Result, err error) {
	err = l.do(ctx, func() bool { return false }, func(c Conn) error {
		if res, err = c.Run(ctx, cmd, stdin); errors.Is(err, sshexec.ErrConnectionLost) {
			err = fmt.Errorf("whether it ran to its end is unknown: %w", err)
		}
		return err
	})
	return res, err
}

// StreamOnce runs cmd once as RunOnce does, its output written as it
// comes (in one piece at its end over a connection that cannot stream).
func (l *link) StreamOnce(ctx context.Context, cmd string, stdout, stderr io.Writer) error {
	return l.do(ctx, func() bool { return false }, func(c Conn) error {
		err := stream(ctx, c, cmd, stdout, stderr)
		if errors.Is(err, sshexec.ErrConnectionLost) {
			err = fmt.Errorf("whether it ran to its end is unknown: %w", err)
		}
		return err
	})
}

// streamOnce runs cmd on c once, its output written as it comes: through
// the link when c is one (reconnecting for what follows, never running
// cmd again), on c itself otherwise.
func streamOnce(ctx context.Context, c Conn, cmd string, stdout, stderr io.Writer) error {
	if l, ok := c.(interface {
		StreamOnce(ctx context.Context, cmd string, stdout, stderr io.Writer) error
	}); ok {
		return l.StreamOnce(ctx, cmd, stdout, stderr)
	}
	return stream(ctx, c, cmd, stdout, stderr)
}

// stream runs cmd on c, its output written as it comes, or in one piece at
// its end over a connection that cannot stream.
func stream(ctx context.Context, c Conn, cmd string, stdout, stderr io.Writer) error {
	if s, ok := c.(Streamer); ok {
		return s.Stream(ctx, cmd, stdout, stderr)
	}
	res, err := c.Run(ctx, cmd, nil)
	_, _ = stdout.Write(res.Stdout)
	_, _ = stderr.Write(res.Stderr)
	return err
}

// Attach runs cmd over the current connection, with stdin, and never
// reconnects: it is for a session that lives as long as the connection
// (an HAProxy runtime API session); its owner opens another when it ends.
func (l *link) Attach(ctx context.Context, cmd string, t *sshexec.Terminal, stdin io.Reader, stdout, stderr io.Writer) error {
	c, _, gone := l.current()
	if gone != nil {
		return gone
	}
	a, ok := c.(Attacher)
	if !ok {
		return fmt.Errorf("%s: the connection cannot run a session with stdin", l.host)
	}
	return a.Attach(ctx, cmd, t, stdin, stdout, stderr)
}

// DialContext dials from the host, on a new connection when the
// connection was lost.
func (l *link) DialContext(ctx context.Context, network, addr string) (nc net.Conn, err error) {
	err = l.do(ctx, func() bool { return true }, func(c Conn) error { nc, err = c.DialContext(ctx, network, addr); return err })
	return nc, err
}

// dialCurrent dials over the current connection and never reconnects: the
// probe's requests must not make rollout reconnect (or give up on a host)
// while the engine is busy elsewhere. A lost connection is
// sshexec.ErrConnectionLost, or the reason the host was given up on.
func (l *link) dialCurrent(ctx context.Context, network, addr string) (net.Conn, error) {
	c, _, gone := l.current()
	if gone != nil {
		return nil, gone
	}
	return c.DialContext(ctx, network, addr)
}

// Alive checks that the connection is up (when the connection can tell:
// *sshexec.Client can), reconnecting if it is not; it says whether it
// reconnected, and fails when the host stays unreachable.
func (l *link) Alive(ctx context.Context) (bool, error) {
	_, before, _ := l.current()
	err := l.do(ctx, func() bool { return true }, func(c Conn) error {
		if a, ok := c.(interface{ Alive(context.Context) error }); ok {
			return a.Alive(ctx)
		}
		return nil
	})
	_, after, _ := l.current()
	return after != before, err
}

// reconnect replaces connection number gen, unless another command did
// already. It gives up after ssh.reconnect with an ErrUnreachable.
func (l *link) reconnect(ctx context.Context, gen int, cause error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.gone != nil:
		return l.gone
	case l.gen != gen:
		return nil // reconnected meanwhile
	}
	t0 := time.Now()
	if what, ok := ctx.Value(opKey{}).(string); ok {
		cause = fmt.Errorf("%s: %w", what, cause)
	}
	l.emit(Event{Host: l.host, Step: StepSSH, Status: StatusWarn,
		Message: fmt.Sprintf("lost the connection (%v); reconnecting for at most %s", cause, l.budget)})
	// Not bound by the caller's deadline (one health check's, say): the
	// way out of the instance needs the host back, within the budget,
	// which bounds each try too (a dial to a silent host would take
	// ssh.connect_timeout).
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(l.budget, time.Second))
	defer cancel()
	var conn Conn
	var last error
	if l.budget > 0 {
		backoff := retry.WithMaxDuration(l.budget, retry.WithCappedDuration(2*time.Second, retry.NewExponential(250*time.Millisecond)))
		_ = retry.Do(cctx, backoff, func(ctx context.Context) error {
			var err error
			if conn, err = l.connect(ctx); err != nil {
				last = err
				return retry.RetryableError(err)
			}
			return nil
		})
	}
	if conn == nil {
		err := fmt.Errorf("%w: lost the connection to %s and could not reconnect within %s: %w", ErrUnreachable, l.host, l.budget, cause)
		if last != nil {
			err = fmt.Errorf("%w (last try: %w)", err, last)
		}
		l.emit(Event{Host: l.host, Step: StepSSH, Status: StatusFail, Duration: time.Since(t0), Message: err.Error()})
		l.gone = err
		return err
	}
	l.conn.Close()
	l.conn, l.gen = conn, l.gen+1
	l.emit(Event{Host: l.host, Step: StepSSH, Status: StatusOK, Duration: time.Since(t0), Message: "reconnected"})
	return nil
}
