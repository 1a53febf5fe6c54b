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
	"time"

	"github.com/rollout-dev/rollout/sshexec"
)

// LockInfo says who holds a host's deploy lock.
type LockInfo struct {
	Op      string    `json:"op"` // deploy, lock
	Version string    `json:"version,omitempty"`
	User    string    `json:"user"`
	From    string    `json:"from"`              // the controller's host name
	RunURL  string    `json:"run_url,omitempty"` // the CI run, when in GitHub Actions
	PID     int       `json:"pid"`
	Since   time.Time `json:"since"`
	Token   string    `json:"token"` // tells this holder from a later one
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
	info := LockInfo{Op: op, Version: version, User: name, From: from, PID: os.Getpid(), Since: time.Now().UTC()}
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

// lockCommands build the lock's remote scripts. The lock is a directory
// (mkdir is atomic) holding the holder's info; its modification time is
// the holder's last refresh.
type lockCommands struct{ c commands }

func (l lockCommands) dir() string {
	return strings.TrimRight(l.c.cfg.StateDir, "/") + "/" + l.c.cfg.App
}

// acquire takes the lock with the info on stdin, or prints the current
// holder. With breakStale, a lock older than staleSec is moved aside and
// taken.
func (l lockCommands) acquire(breakStale bool) string {
	stale := int(l.c.cfg.LockStaleAfter / time.Second)
	brk := "false"
	if breakStale {
		brk = "true"
	}
	return l.c.priv(fmt.Sprintf(`set -eu
d=%s
mkdir -p -- "$d"
take() { mkdir -- "$d/lock" 2>/dev/null || return 1; cat >"$d/lock/info"; echo acquired; exit 0; }
take || true
age=$(( $(date +%%s) - $(stat -c %%Y -- "$d/lock" 2>/dev/null || date +%%s) ))
if %s && [ "$age" -gt %d ]; then
  mv -- "$d/lock" "$d/lock.broken.$$" 2>/dev/null && rm -rf -- "$d/lock.broken.$$"
  take || true
fi
echo "held $age"
cat -- "$d/lock/info" 2>/dev/null || true`, sshexec.Quote(l.dir()), brk, stale))
}

// refresh touches the lock if it is still this holder's.
func (l lockCommands) refresh(token string) string {
	return l.c.priv(fmt.Sprintf(`d=%s
grep -qF -- %s "$d/lock/info" 2>/dev/null || { echo "the deploy lock is no longer ours" >&2; exit 1; }
touch -- "$d/lock"`, sshexec.Quote(l.dir()), sshexec.Quote(token)))
}

// release removes the lock: only this holder's, or any with an empty
// token (rollout lock release).
func (l lockCommands) release(token string) string {
	check := ""
	if token != "" {
		check = fmt.Sprintf(`grep -qF -- %s "$d/lock/info" 2>/dev/null || exit 0
`, sshexec.Quote(token))
	}
	return l.c.priv(fmt.Sprintf(`d=%s
[ -d "$d/lock" ] || exit 0
%smv -- "$d/lock" "$d/lock.released.$$" && rm -rf -- "$d/lock.released.$$"`, sshexec.Quote(l.dir()), check))
}

// status prints "free", or "held AGE" and the holder's info.
func (l lockCommands) status() string {
	return fmt.Sprintf(`d=%s
[ -d "$d/lock" ] || { echo free; exit 0; }
echo "held $(( $(date +%%s) - $(stat -c %%Y -- "$d/lock" 2>/dev/null || date +%%s) ))"
cat -- "$d/lock/info" 2>/dev/null || true`, sshexec.Quote(l.dir()))
}

// parseLockState reads the output of acquire or status.
func parseLockState(host, out string, staleAfter time.Duration) (LockState, bool, error) {
	st := LockState{Host: host}
	first, rest, _ := strings.Cut(strings.TrimSpace(out), "\n")
	switch {
	case first == "acquired":
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
		}
		return st, false, nil
	}
	return st, false, fmt.Errorf("lock: unexpected output %q", out)
}

// HostLock is a lock this process holds on one host; it refreshes it until
// released.
type HostLock struct {
	host  string
	conn  Conn
	cmds  lockCommands
	token string
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	// Lost is closed if a refresh finds the lock taken over.
	Lost chan struct{}
}

// AcquireLock takes the deploy lock on a host, atomically, or fails with a
// *LockedError naming the holder. With breakStale a stale lock is taken
// over. The lock is refreshed every third of lock_stale_after until
// Release.
func AcquireLock(ctx context.Context, cfg *Config, host string, conn Conn, info LockInfo, breakStale bool) (*HostLock, error) {
	lc := lockCommands{newCommands(cfg)}
	b, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	res, err := conn.Run(ctx, lc.acquire(breakStale), strings.NewReader(string(b)+"\n"))
	if err != nil {
		return nil, explainRemote(fmt.Errorf("take the deploy lock in %s: %w", lc.dir(), err), cfg)
	}
	st, ok, err := parseLockState(host, string(res.Stdout), cfg.LockStaleAfter)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &LockedError{State: st}
	}
	l := &HostLock{host: host, conn: conn, cmds: lc, token: info.Token,
		stop: make(chan struct{}), done: make(chan struct{}), Lost: make(chan struct{})}
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
			_, err := l.conn.Run(ctx, l.cmds.refresh(l.token), nil)
			cancel()
			var ee *sshexec.ExitError
			if errors.As(err, &ee) {
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
		if _, rerr := l.conn.Run(ctx, l.cmds.release(l.token), nil); rerr != nil {
			err = fmt.Errorf("release the deploy lock on %s: %w", l.host, rerr)
		}
	})
	return err
}

// LockStatus reads a host's lock.
func LockStatus(ctx context.Context, cfg *Config, host string, conn Conn) (LockState, error) {
	lc := lockCommands{newCommands(cfg)}
	res, err := conn.Run(ctx, lc.c.priv(lc.status()), nil)
	if err != nil {
		return LockState{Host: host}, explainRemote(fmt.Errorf("read the deploy lock: %w", err), cfg)
	}
	st, _, err := parseLockState(host, string(res.Stdout), cfg.LockStaleAfter)
	return st, err
}

// ReleaseLock removes a host's lock whoever holds it: a stale one always,
// a fresh one only with force.
func ReleaseLock(ctx context.Context, cfg *Config, host string, conn Conn, force bool) (LockState, error) {
	st, err := LockStatus(ctx, cfg, host, conn)
	if err != nil || !st.Held {
		return st, err
	}
	if !st.Stale && !force {
		return st, fmt.Errorf("%w (use --force to release it anyway)", &LockedError{State: st})
	}
	lc := lockCommands{newCommands(cfg)}
	if _, err := conn.Run(ctx, lc.release(""), nil); err != nil {
		return st, explainRemote(fmt.Errorf("release the deploy lock: %w", err), cfg)
	}
	return st, nil
}
