package deployer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// LockInfo says who holds a host's deploy lock.
type LockInfo struct {
	Op      string `json:"op"` // deploy, lock
	Version string `json:"version,omitempty"`
	User    string `json:"user"`
	From    string `json:"from"`              // the controller's host name
	RunURL  string `json:"run_url,omitempty"` // the CI run, when in GitHub Actions
	PID     int    `json:"pid"`
	// BootID tells one boot of the controller's machine from another
	// (Linux): with From and PID it says whether the holder still runs.
	BootID string    `json:"boot_id,omitempty"`
	Since  time.Time `json:"since"`
	Token  string    `json:"token"` // tells this holder from a later one
}

func (i LockInfo) String() string {
	s := fmt.Sprintf("%s@%s (%s", i.User, i.From, i.Op)
	if i.Version != "" {
		s += " " + i.Version
	}
	s += fmt.Sprintf(", pid %d, since %s", i.PID, i.Since.Local().Format("2006-01-02 15:04:05"))
	if i.RunURL != "" {
		s += ", " + i.RunURL
	}
	return s + ")"
}

// NewLockInfo describes this process as a lock holder.
func NewLockInfo(op, version string) LockInfo {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if a := os.Getenv("GITHUB_ACTOR"); a != "" {
		name = a
	}
	from, _ := os.Hostname()
	info := LockInfo{Op: op, Version: version, User: name, From: from, PID: os.Getpid(), BootID: bootID(), Since: time.Now().UTC()}
	if s, r, id := os.Getenv("GITHUB_SERVER_URL"), os.Getenv("GITHUB_REPOSITORY"), os.Getenv("GITHUB_RUN_ID"); s != "" && r != "" && id != "" {
		info.RunURL = s + "/" + r + "/actions/runs/" + id
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	info.Token = hex.EncodeToString(b)
	return info
}

// LockState is what a host's lock looks like from outside.
type LockState struct {
	Host   string        `json:"host"`
	Held   bool          `json:"held"`
	Holder *LockInfo     `json:"holder,omitempty"`
	Age    time.Duration `json:"age_ns,omitempty"` // since the holder last refreshed it
	Stale  bool          `json:"stale,omitempty"`
	// State is free, held, stale, or unknown when the host could not be
	// read (Error says why): never free for a host rollout did not read.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// UnknownLock is the state of a host whose lock could not be read.
func UnknownLock(host string, err error) LockState {
	return LockState{Host: host, State: "unknown", Error: err.Error()}
}

// WithState fills State from Held and Stale.
func (s LockState) WithState() LockState {
	switch {
	case s.State == "unknown":
	case s.Stale:
		s.State = "stale"
	case s.Held:
		s.State = "held"
	default:
		s.State = "free"
	}
	return s
}

// LockedError: the host's lock is held by someone else.
type LockedError struct{ State LockState }

func (e *LockedError) Error() string {
	holder := "an unknown holder"
	if e.State.Holder != nil {
		holder = e.State.Holder.String()
	}
	msg := fmt.Sprintf("deploy lock held by %s, refreshed %s ago", holder, e.State.Age.Round(time.Second))
	if e.State.Stale {
		return msg + "; it is stale (its holder stopped refreshing it): take it over with --break-stale-lock, or run `rollout lock release`"
	}
	return msg + "; another deploy is running"
}

// ErrLocked matches every *LockedError.
var ErrLocked = errors.New("deploy lock held")

func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// bootID is this machine's boot ID, or "" where there is none to read.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// deadHere reports whether the holder is a process of this machine, in
// this boot, that no longer runs: its lock is stale at once.
func (i LockInfo) deadHere() bool {
	from, _ := os.Hostname()
	if i.BootID == "" || i.BootID != bootID() || i.From != from || i.PID <= 0 || i.PID == os.Getpid() {
		return false
	}
	err := syscall.Kill(i.PID, 0)
	return errors.Is(err, syscall.ESRCH)
}

// parseLockState reads the output of lock-acquire.sh or lock-status.sh;
// the caller sets the state's Host. A lock taken over is acquired, with
// the previous holder in the state.
func parseLockState(out string, staleAfter time.Duration) (LockState, bool, error) {
	var st LockState
	first, rest, _ := strings.Cut(strings.TrimSpace(out), "\n")
	switch {
	case first == "acquired":
		return st, true, nil
	case strings.HasPrefix(first, "took-over "):
		prev, last, _ := strings.Cut(rest, "\n")
		if strings.TrimSpace(last) != "acquired" {
			return parseLockState(last, staleAfter) // someone else was quicker
		}
		secs, _ := strconv.Atoi(strings.TrimPrefix(first, "took-over "))
		st.Held, st.Age = true, time.Duration(secs)*time.Second
		st.Stale = st.Age > staleAfter
		var info LockInfo
		if json.Unmarshal([]byte(prev), &info) == nil {
			st.Holder = &info
		}
		return st, true, nil
	case first == "free":
		return st, false, nil
	case strings.HasPrefix(first, "held "):
		secs, err := strconv.Atoi(strings.TrimPrefix(first, "held "))
		if err != nil {
			return st, false, fmt.Errorf("lock: unexpected output %q", first)
		}
		st.Held, st.Age = true, time.Duration(secs)*time.Second
		st.Stale = st.Age > staleAfter
		var info LockInfo
		if json.Unmarshal([]byte(rest), &info) == nil {
			st.Holder = &info
			st.Stale = st.Stale || info.deadHere()
		}
		return st, false, nil
	}
	return st, false, fmt.Errorf("lock: unexpected output %q", out)
}

// HostLock is a lock this process holds on one host; it refreshes it until
// released.
type HostLock struct {
	host   string
	remote remote
	token  string
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	// Lost is closed if a refresh finds the lock taken over.
	Lost chan struct{}
	// TookOver is the lock this one replaced (stale, or its holder gone),
	// nil when the lock was free.
	TookOver *LockState
}

// AcquireLock takes the deploy lock on a host, atomically, or fails with a
// *LockedError naming the holder. With breakStale a stale lock is taken
// over. The lock is refreshed every third of lock_stale_after until
// Release.
func AcquireLock(ctx context.Context, cfg *Config, host string, conn Conn, info LockInfo, breakStale bool) (*HostLock, error) {
	return acquireLock(ctx, cfg, host, newSSHRemote(cfg, conn), info, breakStale)
}

func acquireLock(ctx context.Context, cfg *Config, host string, r remote, info LockInfo, breakStale bool) (*HostLock, error) {
	st, ok, err := r.AcquireLock(ctx, info, breakStale, "")
	if err == nil && !ok && st.Holder != nil && st.Holder.deadHere() {
		// A deploy from this machine that died (killed, or its laptop's
		// terminal closed): no need to wait for its lock to go stale.
		st, ok, err = r.AcquireLock(ctx, info, false, st.Holder.Token)
	}
	if err != nil {
		return nil, err
	}
	st.Host = host
	if !ok {
		return nil, &LockedError{State: st}
	}
	l := &HostLock{host: host, remote: r, token: info.Token,
		stop: make(chan struct{}), done: make(chan struct{}), Lost: make(chan struct{})}
	if st.Held {
		l.TookOver = &st
	}
	go l.refresh(cfg.LockStaleAfter / 3)
	return l, nil
}

func (l *HostLock) refresh(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), every)
			err := l.remote.RefreshLock(ctx, l.token)
			cancel()
			if errors.Is(err, errLockLost) {
				close(l.Lost)
				return
			}
		}
	}
}

// Release stops refreshing the lock and removes it, if it is still ours.
func (l *HostLock) Release(ctx context.Context) error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		if rerr := l.remote.ReleaseLock(ctx, l.token); rerr != nil {
			err = fmt.Errorf("release the deploy lock on %s: %w", l.host, rerr)
		}
	})
	return err
}

// LockStatus reads a host's lock.
func LockStatus(ctx context.Context, cfg *Config, host string, conn Conn) (LockState, error) {
	st, err := newSSHRemote(cfg, conn).LockStatus(ctx)
	st.Host = host
	return st, err
}

// ReleaseLock removes a host's lock whoever holds it: a stale one always,
// a fresh one only with force.
func ReleaseLock(ctx context.Context, cfg *Config, host string, conn Conn, force bool) (LockState, error) {
	return releaseLock(ctx, host, newSSHRemote(cfg, conn), force)
}

func releaseLock(ctx context.Context, host string, r remote, force bool) (LockState, error) {
	st, err := r.LockStatus(ctx)
	st.Host = host
	if err != nil || !st.Held {
		return st, err
	}
	if !st.Stale && !force {
		return st, fmt.Errorf("%w (use --force to release it anyway)", &LockedError{State: st})
	}
	if err := r.ReleaseLock(ctx, ""); err != nil {
		return st, fmt.Errorf("release the deploy lock: %w", err)
	}
	return st, nil
}

// TakeOverMessage says whose lock was taken over, and why.
func (l *HostLock) TakeOverMessage() string {
	st := l.TookOver
	if st == nil {
		return ""
	}
	holder := "an unknown holder"
	why := fmt.Sprintf("stale: not refreshed for %s", st.Age.Round(time.Second))
	if st.Holder != nil {
		holder = st.Holder.String()
		if st.Holder.deadHere() {
			why = fmt.Sprintf("its process %d on this machine is gone", st.Holder.PID)
		}
	}
	return fmt.Sprintf("took over the deploy lock of %s (%s)", holder, why)
}
