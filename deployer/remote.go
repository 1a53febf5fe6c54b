package deployer

import (
	"context"
	"errors"
	"io"
	"net"
	"time"
)

// remote is everything rollout does on one host, each a typed operation,
// grouped by concern. sshRemote does them over the host's SSH connection
// with the scripts in scripts/; the engine's unit tests use a fake. Ports
// are validated ints and every other value comes from the validated
// config; what a balancer changes (an Nginx upstream file, an HAProxy
// backend) is given to each call, so the remote of an app host and of a
// load balancer host are the same.
type remote interface {
	instanceOps
	workerOps
	nginxOps
	haproxyOps
	lockOps
	historyOps
	releaseOps
	// Cores counts the host's CPU cores (for instances: auto).
	Cores(ctx context.Context) (int, error)
	// Hook runs a user's command on the host with env set; it returns the
	// command's output.
	Hook(ctx context.Context, command string, env []string) (string, error)
	// DialContext opens a TCP connection from the host (health checks).
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	// Alive checks that the connection to the host is up; it says whether
	// it had to reconnect, and fails when the host stays unreachable.
	Alive(ctx context.Context) (reconnected bool, err error)
	// ReadAccessLog reads the Nginx access log file from a position (its
	// end: offset -1), following a rotation, with the instances' restarts
	// and, since the host's clock since (0: not), their journal's errors.
	ReadAccessLog(ctx context.Context, file string, from logPos, since int64, ports []int) (logRead, error)
}

// instanceOps are the app's systemd template instances on a host.
type instanceOps interface {
	// Preflight checks that the host can be deployed to, changing nothing:
	// sudo works without a password and the instances' units are
	// installed.
	Preflight(ctx context.Context, ports []int) error
	// Inspect reads the instances' states and the host's monotonic clock;
	// it needs no root.
	Inspect(ctx context.Context, ports []int) (hostState, error)
	// UnitState reads one instance's state.
	UnitState(ctx context.Context, port int) (unitState, error)
	// Restart restarts an instance and says where its output starts;
	// with a release (not ""), it first points the instance's link at it.
	Restart(ctx context.Context, port int, logs []string, release string) (restartMark, error)
	// LogFiles reads the log files that the instances' unit files name.
	LogFiles(ctx context.Context, ports []int) (map[int][]string, error)
	// AppOutput is what an instance and systemd said since mark: the last
	// lines of its log files and journal.
	AppOutput(ctx context.Context, port int, mark restartMark, lines int) (string, error)
	// IsInstance reports whether the port's unit runs (or tries to) or is
	// enabled: whether it is one of the app's instances.
	IsInstance(ctx context.Context, port int) (bool, error)
	// Start enables and starts instances (enables those running); Stop
	// stops and disables them; each in one systemctl call.
	Start(ctx context.Context, ports ...int) error
	Stop(ctx context.Context, ports ...int) error
	// Enable enables instances, started or not: they start at boot.
	Enable(ctx context.Context, ports ...int) error
	// SurgeCheck reads, before a surge, what listens on the spare ports,
	// the host's available memory and what the live instances use.
	SurgeCheck(ctx context.Context, spare, live []int) (surgeCheck, error)
	// WaitIdle waits until no connection to the ports is established (the
	// drained instances' requests in flight), at most drain_timeout.
	WaitIdle(ctx context.Context, ports []int) (drainWait, error)
}

// workerOps are the app's workers (workers:): template units with no
// port, each named by its unit (my-app-worker@1).
type workerOps interface {
	// WorkerStates reads the units' states.
	WorkerStates(ctx context.Context, units []string) (map[string]unitState, error)
	// RestartWorker restarts a worker's unit and says where its output
	// starts; with a release (not ""), it first points the unit's link
	// (instances/UNIT) at it.
	RestartWorker(ctx context.Context, unit string, logs []string, release string) (restartMark, error)
	// WorkerLogFiles reads the log files that the units' unit files name.
	WorkerLogFiles(ctx context.Context, units []string) (map[string][]string, error)
	// WorkerOutput is what a worker and systemd said since mark.
	WorkerOutput(ctx context.Context, unit string, mark restartMark, lines int) (string, error)
}

// nginxOps are an Nginx upstream file's operations (the nginx balancer
// drivers).
type nginxOps interface {
	// NginxCheck checks, changing nothing, that n's config passes its test
	// and its upstream file is readable, and returns the file.
	NginxCheck(ctx context.Context, n NginxConfig) ([]byte, error)
	// ReadUpstream reads n's upstream file.
	ReadUpstream(ctx context.Context, n NginxConfig) ([]byte, error)
	// WriteUpstream replaces n's upstream file, whose content rollout
	// last saw as have, with next; tests the Nginx config (putting the
	// previous file back if it fails) and reloads Nginx. With drained
	// ports it then waits for the old workers, and, with waitHere, for
	// those ports' requests in flight on this host. A file changed by
	// someone else meanwhile is errUpstreamChanged, and nothing was
	// written.
	WriteUpstream(ctx context.Context, n NginxConfig, have, next []byte, drained []int, waitHere bool) (drainWait, error)
}

// haproxyOps are an HAProxy backend's operations, through its runtime API
// (the haproxy balancer driver).
type haproxyOps interface {
	// HAProxy runs op (check, state, drain or ready) on servers of
	// backend through the API at socket; it returns what the script
	// printed.
	HAProxy(ctx context.Context, api haproxyAPI, op string, servers []string) ([]byte, error)
}

// haproxyAPI is an HAProxy's runtime API and the backend rollout changes.
type haproxyAPI struct{ Socket, Backend string }

// lockOps are the host's deploy lock of the app.
type lockOps interface {
	// AcquireLock takes the deploy lock with info, or returns its state.
	// With breakStale it takes over a stale lock; with takeOver, the lock
	// of the holder with that token (one known to be dead). A lock taken
	// over is acquired with its previous holder in the state.
	AcquireLock(ctx context.Context, info LockInfo, breakStale bool, takeOver string) (LockState, bool, error)
	// RefreshLock touches the lock if it is still held with token, or
	// fails with errLockLost.
	RefreshLock(ctx context.Context, token string) error
	// ReleaseLock removes the lock if held with token; any lock when token
	// is empty.
	ReleaseLock(ctx context.Context, token string) error
	// LockStatus reads the lock.
	LockStatus(ctx context.Context) (LockState, error)
}

// historyOps are the host's deploy history of the app.
type historyOps interface {
	// AppendHistory adds one entry to the host's deploy history.
	AppendHistory(ctx context.Context, e HistoryEntry) error
	// ReadHistory returns the host's last n entries, oldest first.
	ReadHistory(ctx context.Context, n int) ([]HistoryEntry, error)
	// HandDrained reads the instances drained by hand (rollout drain).
	HandDrained(ctx context.Context) ([]HandDrain, error)
	// SetHandDrained replaces that list.
	SetHandDrained(ctx context.Context, list []HandDrain) error
}

// releaseOps are the release layout (release: set).
type releaseOps interface {
	// ReleaseState reads the releases on the host, its release log, and
	// per instance (and worker unit) its link, the release its process
	// runs and the unit's WorkingDirectory.
	ReleaseState(ctx context.Context, ports []int, workers []string) (releaseState, error)
	// Upload puts release e.ID in place from the gzipped tar that open
	// opens (once per try), whose SHA-256 is e.SHA256: unpacked, its
	// shared paths linked, prepared, and logged as e (new); on any failure
	// nothing is left of it.
	Upload(ctx context.Context, e ReleaseEntry, open func() (io.ReadCloser, error)) error
	// SwitchInstance points the instance's link at release id.
	SwitchInstance(ctx context.Context, port int, id string) error
	// RecordRelease appends entries to the release log, points current at
	// current (when not ""), and removes the releases in remove that
	// neither current nor an instance names.
	RecordRelease(ctx context.Context, entries []ReleaseEntry, current string, remove []string) error
	// WriteSecrets stores release id's secrets beside it (root's only):
	// env, as systemd reads it, and sealed, the same encrypted. It returns
	// the sealed secrets of the current release when that is another one
	// (nil if it has none).
	WriteSecrets(ctx context.Context, id string, env, sealed []byte) ([]byte, error)
	// ReadSecrets returns the current release and its sealed secrets (nil
	// if it has none).
	ReadSecrets(ctx context.Context) (current string, sealed []byte, err error)
	// Migrate runs release.migrate for release id once, its output written
	// to out as it comes; it is never run again after a lost connection.
	// already says the release's marker said it had run.
	Migrate(ctx context.Context, id string, out io.Writer) (already bool, err error)
}

// hostState is one inspection of a host.
type hostState struct {
	units  map[int]unitState // by port
	uptime uint64            // µs since boot: systemd's monotonic clock
}

// drainWait is how the wait for drained instances' requests ended.
type drainWait struct {
	waited time.Duration
	open   int // connections still open at drain_timeout; 0 when drained
	// notes are what the change found and set right on its way (HAProxy
	// restarted, forgetting what rollout had drained), for a warning.
	notes []string
}

// restartMark is where an instance's output starts after its restart, and
// its state just before and just after it.
type restartMark struct {
	clock         uint64           // the host's clock, µs since the epoch
	offsets       map[string]int64 // log file -> size before the restart
	before, after unitState
}

var (
	// errUpstreamChanged: the upstream file changed under rollout; nothing
	// was written.
	errUpstreamChanged = errors.New("the upstream file was changed by someone else during the deploy")
	// errLockLost: the deploy lock is no longer this holder's.
	errLockLost = errors.New("the deploy lock is no longer ours")
	// ErrPrepare: release.prepare failed or timed out; nothing restarted.
	ErrPrepare = errors.New("release.prepare failed")
)
