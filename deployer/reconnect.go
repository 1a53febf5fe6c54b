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

// maxReconnects bounds how often one operation reconnects and runs again.
const maxReconnects = 3

// reconnecting is a session's remote that outlives a lost SSH connection:
// an operation that fails with sshexec.ErrConnectionLost reconnects (with
// backoff, for at most ssh.reconnect) and runs again on the new
// connection. Running again is safe for every operation the engine does:
// reads, compare-and-swap writes of the upstream file (a write that had
// landed is found changed and read again), restarts of an instance that is
// out of Nginx, enable and disable, and the lock (a lock this holder took
// is recognised by its token). Only the user's hooks are not run again:
// whether they ran is unknown, and rollout says so.
type reconnecting struct {
	d    *Deployer
	host string
	cfg  *Config

	mu   sync.Mutex
	gen  int // how many times it reconnected
	conn Conn
	r    remote
	// gone is why the host was given up on: once it is, every operation
	// fails with it at once, instead of trying to reconnect again.
	gone error
}

var _ remote = (*reconnecting)(nil)

func (d *Deployer) newReconnecting(s *session) *reconnecting {
	return &reconnecting{d: d, host: s.host, cfg: s.cfg, conn: s.conn, r: d.newRemote(s.cfg, s.conn)}
}

func (rc *reconnecting) current() (remote, int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.r, rc.gen
}

// givenUp reports whether rollout gave up on the host: it could not
// reconnect within ssh.reconnect.
func (rc *reconnecting) givenUp() bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.gone != nil
}

// close closes the current connection.
func (rc *reconnecting) close() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.conn.Close()
}

// do runs op, and again on a new connection when the connection was lost.
func (rc *reconnecting) do(ctx context.Context, op func(remote) error) error {
	for i := 0; ; i++ {
		r, gen := rc.current()
		err := op(r)
		if !errors.Is(err, sshexec.ErrConnectionLost) || i >= maxReconnects {
			return err
		}
		if rerr := rc.reconnect(ctx, gen, err); rerr != nil {
			return rerr
		}
	}
}

// reconnect replaces connection number gen, unless another operation did
// already. It gives up after ssh.reconnect with an ErrUnreachable.
func (rc *reconnecting) reconnect(ctx context.Context, gen int, cause error) error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	switch {
	case rc.gone != nil:
		return rc.gone
	case rc.gen != gen:
		return nil // reconnected meanwhile
	}
	budget := rc.cfg.SSH.Reconnect
	t0 := time.Now()
	rc.d.emit(Event{Host: rc.host, Step: StepSSH, Status: StatusWarn,
		Message: fmt.Sprintf("lost the connection (%v); reconnecting for at most %s", cause, budget)})
	// Not bound by the caller's deadline (one health check's, say): the
	// way out of the instance needs the host back, within the budget,
	// which bounds each try too (a dial to a silent host would take
	// ssh.connect_timeout).
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(budget, time.Second))
	defer cancel()
	var conn Conn
	var last error
	if budget > 0 {
		backoff := retry.WithMaxDuration(budget, retry.WithCappedDuration(2*time.Second, retry.NewExponential(250*time.Millisecond)))
		_ = retry.Do(cctx, backoff, func(ctx context.Context) error {
			var err error
			if conn, err = rc.d.Connect(ctx, rc.host); err != nil {
				last = err
				return retry.RetryableError(err)
			}
			return nil
		})
	}
	if conn == nil {
		err := fmt.Errorf("%w: lost the connection to %s and could not reconnect within %s: %w", ErrUnreachable, rc.host, budget, cause)
		if last != nil {
			err = fmt.Errorf("%w (last try: %v)", err, last)
		}
		rc.d.emit(Event{Host: rc.host, Step: StepSSH, Status: StatusFail, Duration: time.Since(t0), Message: err.Error()})
		rc.gone = err
		return err
	}
	rc.conn.Close()
	rc.conn, rc.r, rc.gen = conn, rc.d.newRemote(rc.cfg, conn), rc.gen+1
	rc.d.emit(Event{Host: rc.host, Step: StepSSH, Status: StatusOK, Duration: time.Since(t0), Message: "reconnected"})
	return nil
}

func (rc *reconnecting) Cores(ctx context.Context) (n int, err error) {
	err = rc.do(ctx, func(r remote) error { n, err = r.Cores(ctx); return err })
	return n, err
}

func (rc *reconnecting) Preflight(ctx context.Context, ports []int) (b []byte, err error) {
	err = rc.do(ctx, func(r remote) error { b, err = r.Preflight(ctx, ports); return err })
	return b, err
}

func (rc *reconnecting) Inspect(ctx context.Context, ports []int) (st hostState, err error) {
	err = rc.do(ctx, func(r remote) error { st, err = r.Inspect(ctx, ports); return err })
	return st, err
}

// HAProxy runs again on a new connection: setting a server's state is
// safe to repeat.
func (rc *reconnecting) HAProxy(ctx context.Context, op string, servers []string) (b []byte, err error) {
	err = rc.do(ctx, func(r remote) error { b, err = r.HAProxy(ctx, op, servers); return err })
	return b, err
}

func (rc *reconnecting) ReadUpstream(ctx context.Context) (b []byte, err error) {
	err = rc.do(ctx, func(r remote) error { b, err = r.ReadUpstream(ctx); return err })
	return b, err
}

func (rc *reconnecting) WriteUpstream(ctx context.Context, have, next []byte, drained []int) (w drainWait, err error) {
	err = rc.do(ctx, func(r remote) error { w, err = r.WriteUpstream(ctx, have, next, drained); return err })
	return w, err
}

func (rc *reconnecting) UnitState(ctx context.Context, port int) (u unitState, err error) {
	err = rc.do(ctx, func(r remote) error { u, err = r.UnitState(ctx, port); return err })
	return u, err
}

func (rc *reconnecting) Restart(ctx context.Context, port int, logs []string, release string) (m restartMark, err error) {
	err = rc.do(ctx, func(r remote) error { m, err = r.Restart(ctx, port, logs, release); return err })
	return m, err
}

func (rc *reconnecting) LogFiles(ctx context.Context, ports []int) (m map[int][]string, err error) {
	err = rc.do(ctx, func(r remote) error { m, err = r.LogFiles(ctx, ports); return err })
	return m, err
}

func (rc *reconnecting) AppOutput(ctx context.Context, port int, mark restartMark, lines int) (s string, err error) {
	err = rc.do(ctx, func(r remote) error { s, err = r.AppOutput(ctx, port, mark, lines); return err })
	return s, err
}

func (rc *reconnecting) IsInstance(ctx context.Context, port int) (ok bool, err error) {
	err = rc.do(ctx, func(r remote) error { ok, err = r.IsInstance(ctx, port); return err })
	return ok, err
}

func (rc *reconnecting) Start(ctx context.Context, port int) error {
	return rc.do(ctx, func(r remote) error { return r.Start(ctx, port) })
}

func (rc *reconnecting) Stop(ctx context.Context, port int) error {
	return rc.do(ctx, func(r remote) error { return r.Stop(ctx, port) })
}

// Hook runs the user's command once: after a lost connection rollout
// reconnects, for what comes next, but does not run it again.
func (rc *reconnecting) Hook(ctx context.Context, command string, env []string) (string, error) {
	r, gen := rc.current()
	out, err := r.Hook(ctx, command, env)
	if errors.Is(err, sshexec.ErrConnectionLost) {
		err = fmt.Errorf("whether it ran to its end is unknown: %w", err)
		if rerr := rc.reconnect(ctx, gen, err); rerr != nil {
			return out, rerr
		}
	}
	return out, err
}

func (rc *reconnecting) Alive(ctx context.Context) (bool, error) {
	_, gen := rc.current()
	err := rc.do(ctx, func(r remote) error { _, err := r.Alive(ctx); return err })
	_, now := rc.current()
	return now != gen, err
}

func (rc *reconnecting) DialContext(ctx context.Context, network, addr string) (c net.Conn, err error) {
	err = rc.do(ctx, func(r remote) error { c, err = r.DialContext(ctx, network, addr); return err })
	return c, err
}

// dialCurrent dials over the current connection and never reconnects: the
// probe's requests must not make rollout reconnect (or give up on a host)
// while the engine is busy elsewhere. A lost connection is
// sshexec.ErrConnectionLost, or the reason the host was given up on.
func (rc *reconnecting) dialCurrent(ctx context.Context, network, addr string) (net.Conn, error) {
	rc.mu.Lock()
	r, gone := rc.r, rc.gone
	rc.mu.Unlock()
	if gone != nil {
		return nil, gone
	}
	return r.DialContext(ctx, network, addr)
}

func (rc *reconnecting) ReadAccessLog(ctx context.Context, file string, from logPos, since int64, ports []int) (r logRead, err error) {
	err = rc.do(ctx, func(rm remote) error { r, err = rm.ReadAccessLog(ctx, file, from, since, ports); return err })
	return r, err
}

// AcquireLock takes the lock; if a lost connection hid that it did, the
// lock found held with this holder's token is this holder's.
func (rc *reconnecting) AcquireLock(ctx context.Context, info LockInfo, breakStale bool, takeOver string) (st LockState, ok bool, err error) {
	err = rc.do(ctx, func(r remote) error { st, ok, err = r.AcquireLock(ctx, info, breakStale, takeOver); return err })
	if err == nil && !ok && st.Holder != nil && st.Holder.Token == info.Token {
		return LockState{}, true, nil
	}
	return st, ok, err
}

func (rc *reconnecting) RefreshLock(ctx context.Context, token string) error {
	return rc.do(ctx, func(r remote) error { return r.RefreshLock(ctx, token) })
}

func (rc *reconnecting) ReleaseLock(ctx context.Context, token string) error {
	return rc.do(ctx, func(r remote) error { return r.ReleaseLock(ctx, token) })
}

func (rc *reconnecting) LockStatus(ctx context.Context) (st LockState, err error) {
	err = rc.do(ctx, func(r remote) error { st, err = r.LockStatus(ctx); return err })
	return st, err
}

func (rc *reconnecting) AppendHistory(ctx context.Context, e HistoryEntry) error {
	return rc.do(ctx, func(r remote) error { return r.AppendHistory(ctx, e) })
}

func (rc *reconnecting) ReadHistory(ctx context.Context, n int) (es []HistoryEntry, err error) {
	err = rc.do(ctx, func(r remote) error { es, err = r.ReadHistory(ctx, n); return err })
	return es, err
}

func (rc *reconnecting) ReleaseState(ctx context.Context, ports []int) (st releaseState, err error) {
	err = rc.do(ctx, func(r remote) error { st, err = r.ReleaseState(ctx, ports); return err })
	return st, err
}

// Upload sends the release again from its start on a new connection: the
// upload script removes what an interrupted one left.
func (rc *reconnecting) Upload(ctx context.Context, e ReleaseEntry, open func() (io.ReadCloser, error)) error {
	return rc.do(ctx, func(r remote) error { return r.Upload(ctx, e, open) })
}

func (rc *reconnecting) SwitchInstance(ctx context.Context, port int, id string) error {
	return rc.do(ctx, func(r remote) error { return r.SwitchInstance(ctx, port, id) })
}

func (rc *reconnecting) RecordRelease(ctx context.Context, entries []ReleaseEntry, current string, remove []string) error {
	return rc.do(ctx, func(r remote) error { return r.RecordRelease(ctx, entries, current, remove) })
}
