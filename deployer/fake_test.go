package deployer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
)

// fakeRemote is a host in memory: units, the upstream file, the lock and
// the history, and one HTTP server per instance on loopback for the health
// checks. It implements remote with no shell at all, and records what the
// engine did to it.
type fakeRemote struct {
	t        *testing.T
	mu       sync.Mutex
	units    map[int]*fakeUnit
	upstream string
	cores    int
	// writes is the upstream file after each write; drained the ports
	// each write waited for.
	writes  []string
	drained [][]int
	ops     []string // "restart 3000", "start 3004", "stop 3003", ...
	locked  bool
	history []HistoryEntry
	// handDrained is the host's list of instances drained by hand.
	handDrained []HandDrain
	// workers are its workers' units (workers:), by unit.
	workers map[string]*fakeWorker
	hooks   [][]string // the env of each hook run
	dials   []string   // the addresses health checks dialled
	// conn is the connection the engine made the fake with.
	conn Conn
	// forward, on a load balancer, is the app host its dials reach.
	forward *fakeRemote
	// haproxy, on a load balancer running HAProxy, is its backend.
	haproxy *fakeHAProxy
	// caddy, on a host running Caddy, is its admin API (at port 2019).
	caddy *fakeCaddy
	// traefik, on a host running Traefik, is its API (at port 8080).
	traefik *fakeTraefik

	// failAfterRestart: the instance answers 503 once restarted (or
	// started).
	failAfterRestart int
	// onWrite runs before a write is checked (to change the file under
	// rollout); onRestart when an instance restarts (r.mu held).
	onWrite   func(n int)
	onRestart func(port int)
	// waitIdleErr: the wait for requests in flight fails so (interrupted).
	waitIdleErr error
	// lose makes the next calls of the named operations fail as if the
	// connection broke; unreachable makes every call fail so, and every
	// connect too. connects counts the connections made.
	lose        map[string]int
	unreachable bool
	connects    int

	// The release layout: releases on the host, its log, current, each
	// instance's link and the release its process runs. Instances that
	// run bad do not become healthy.
	releases map[string]bool
	relLog   []ReleaseEntry
	current  string
	links    map[int]string
	runs     map[int]string
	bad      string   // a suffix of the release ID that fails
	badPort  int      // the only instance it fails on; 0: all
	uploads  []string // the IDs uploaded
	// migrated: the releases release.migrate ran for; migrations how many
	// times it ran; migrateFails makes it fail.
	migrated     map[string]bool
	migrations   int
	migrateFails bool
	workDir      string // every unit's WorkingDirectory root; "" the release layout's
	// envs and sealed are each release's stored secrets; noEnvFile: the
	// units do not read them (setup not run since secrets:).
	envs, sealed map[string][]byte
	noEnvFile    bool

	// site is the host's Nginx site, which the probe reaches at port 80;
	// nil: nothing listens there.
	site *httptest.Server

	// The access log a bake reads: each read adds traffic lines per
	// instance, every fifth a 502 where fails5xx says so; plain lines
	// lack rollout's fields; noLog: the log cannot be read.
	accessLog string
	traffic   int
	fails5xx  func(port int) bool
	plain     bool
	noLog     bool
	restarts  map[int]int // NRestarts
	// writeErr fails every upstream write: before the write (the file
	// as it was), or with writeErrAfter after it took effect.
	writeErr      error
	writeErrAfter bool
	// surge is what a surge's preflight reads.
	surge surgeCheck

	// historyBarrier, shared by hosts, holds each one's history write
	// until every host's has begun.
	historyBarrier *sync.WaitGroup
}

// withReleases puts the host in the release layout, every instance
// running release id (logged ok).
func (r *fakeRemote) withReleases(id string) *fakeRemote {
	r.releases, r.links, r.runs = map[string]bool{id: true}, map[int]string{}, map[int]string{}
	r.relLog = []ReleaseEntry{{ID: id, Version: "v1", SHA256: "sum-" + id, Outcome: ReleaseOK}}
	r.current = id
	for p := range r.units {
		r.links[p], r.runs[p] = id, id
	}
	return r
}

// wire sends op over the connection the engine made the fake with (its
// link, which reconnects as it does over SSH): the operation happens only
// if that got through. r.mu not held.
func (r *fakeRemote) wire(ctx context.Context, op string) error {
	r.mu.Lock()
	c := r.conn
	r.mu.Unlock()
	if c == nil {
		return nil
	}
	_, err := c.Run(ctx, op, nil)
	return err
}

// fault is the lost connection an operation sent over the wire fails
// with, if any.
func (r *fakeRemote) fault(op string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unreachable || r.lose[op] > 0 {
		r.lose[op]--
		return fmt.Errorf("%s on web: %w", op, sshexec.ErrConnectionLost)
	}
	return nil
}

type fakeUnit struct {
	pid     int
	active  bool
	enabled bool
	healthy bool
	srv     *httptest.Server
	// states, when set, are what systemd reports next, one per reading
	// (the last one stays): a crash loop, say.
	states []unitState
}

// newFakeRemote is a host running ports, each in the upstream.
func newFakeRemote(t *testing.T, ports ...int) *fakeRemote {
	r := &fakeRemote{t: t, units: map[int]*fakeUnit{}, cores: 2, lose: map[string]int{}}
	var b strings.Builder
	b.WriteString("# managed by hand, and by rollout\nupstream my_app {\n    keepalive 8;\n")
	for _, p := range ports {
		fmt.Fprintf(&b, "    server 127.0.0.1:%d;\n", p)
		r.unit(p).active, r.unit(p).enabled, r.unit(p).healthy = true, true, true
	}
	b.WriteString("}\n")
	r.upstream = b.String()
	return r
}

// unit returns the port's unit, making an inactive one with its server.
func (r *fakeRemote) unit(port int) *fakeUnit {
	if u, ok := r.units[port]; ok {
		return u
	}
	u := &fakeUnit{pid: 100 + len(r.units)}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		r.mu.Lock()
		ok := u.active && u.healthy
		r.mu.Unlock()
		if !ok {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	}))
	r.t.Cleanup(u.srv.Close)
	r.units[port] = u
	return u
}

func (r *fakeRemote) state(port int) unitState {
	if u, ok := r.units[port]; ok && len(u.states) > 0 {
		s := u.states[0]
		if len(u.states) > 1 {
			u.states = u.states[1:]
		}
		return s
	}
	u, ok := r.units[port]
	if !ok || !u.active {
		return unitState{ID: fmt.Sprintf("my-app@%d.service", port), Load: "loaded", Active: "inactive", Sub: "dead"}
	}
	return unitState{ID: fmt.Sprintf("my-app@%d.service", port), Load: "loaded", Active: "active", Sub: "running",
		MainPID: u.pid, StartedAt: uint64(u.pid)}
}

func (r *fakeRemote) log(format string, args ...any) {
	r.ops = append(r.ops, fmt.Sprintf(format, args...))
}

func (r *fakeRemote) Cores(context.Context) (int, error) { return r.cores, nil }

func (r *fakeRemote) Preflight(context.Context, []int) error { return nil }

func (r *fakeRemote) NginxCheck(context.Context, NginxConfig) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return []byte(r.upstream), nil
}

func (r *fakeRemote) Inspect(_ context.Context, ports []int) (hostState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := hostState{units: map[int]unitState{}, uptime: 1e9}
	for _, p := range ports {
		st.units[p] = r.state(p)
	}
	return st, nil
}

func (r *fakeRemote) ReadUpstream(context.Context, NginxConfig) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return []byte(r.upstream), nil
}

func (r *fakeRemote) WriteUpstream(ctx context.Context, _ NginxConfig, have, next []byte, drained []int, _ bool) (drainWait, error) {
	if err := r.wire(ctx, "WriteUpstream"); err != nil {
		return drainWait{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.onWrite != nil {
		r.onWrite(len(r.writes))
	}
	if string(have) != r.upstream {
		return drainWait{}, errUpstreamChanged
	}
	if r.writeErr != nil && !r.writeErrAfter {
		return drainWait{}, r.writeErr
	}
	r.upstream = string(next)
	r.writes = append(r.writes, r.upstream)
	r.drained = append(r.drained, slices.Clone(drained))
	return drainWait{}, r.writeErr
}

// WaitIdle records the ports whose requests in flight it waited for.
func (r *fakeRemote) WaitIdle(ctx context.Context, ports []int) (drainWait, error) {
	if err := r.wire(ctx, "WaitIdle"); err != nil {
		return drainWait{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waitIdleErr != nil {
		return drainWait{}, r.waitIdleErr
	}
	r.drained = append(r.drained, slices.Clone(ports))
	return drainWait{}, nil
}

// HAProxy answers as haproxy.sh does, from the fake's backend state.
func (r *fakeRemote) HAProxy(ctx context.Context, _ haproxyAPI, op string, servers []string) ([]byte, error) {
	if err := r.wire(ctx, "HAProxy"); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.haproxy == nil {
		return nil, fmt.Errorf("haproxy %s: not a balancer running HAProxy", op)
	}
	return r.haproxy.run(op, servers)
}

func (r *fakeRemote) UnitState(ctx context.Context, port int) (unitState, error) {
	if err := r.wire(ctx, "UnitState"); err != nil {
		return unitState{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state(port), nil
}

func (r *fakeRemote) Restart(ctx context.Context, port int, _ []string, release string) (restartMark, error) {
	if err := r.wire(ctx, "Restart"); err != nil {
		return restartMark{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if release != "" {
		if !r.releases[release] {
			return restartMark{}, fmt.Errorf("release %s is not in /srv/my-app/releases", release)
		}
		r.log("switch %d %s", port, release)
		r.links[port] = release
	}
	r.log("restart %d", port)
	if r.onRestart != nil {
		r.onRestart(port)
	}
	before := r.state(port)
	u := r.unit(port)
	u.pid += 1000
	if !u.active { // a start: it comes up healthy unless told
		u.healthy = true
	}
	u.active = true
	if port == r.failAfterRestart {
		u.healthy = false
	}
	if r.links != nil {
		r.runs[port] = r.links[port]
		u.healthy = port != r.failAfterRestart && !(r.bad != "" && strings.HasSuffix(r.links[port], r.bad) && (r.badPort == 0 || r.badPort == port))
	}
	return restartMark{clock: 1, before: before, after: r.state(port)}, nil
}

func (r *fakeRemote) LogFiles(_ context.Context, ports []int) (map[int][]string, error) {
	logs := map[int][]string{}
	for _, p := range ports {
		logs[p] = []string{fmt.Sprintf("/var/log/my-app/stderr-%d.log", p)}
	}
	return logs, nil
}

func (r *fakeRemote) AppOutput(_ context.Context, port int, _ restartMark, _ int) (string, error) {
	return fmt.Sprintf("==> /var/log/my-app/stderr-%d.log <==\nFATAL: not ready\n", port), nil
}

func (r *fakeRemote) SurgeCheck(ctx context.Context, spare, live []int) (surgeCheck, error) {
	if err := r.wire(ctx, "SurgeCheck"); err != nil {
		return surgeCheck{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log("surge-check %v %v", spare, live)
	return r.surge, nil
}

func (r *fakeRemote) IsInstance(_ context.Context, port int) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u, ok := r.units[port]
	return ok && (u.active || u.enabled), nil
}

func (r *fakeRemote) Start(_ context.Context, ports ...int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, port := range ports {
		r.log("start %d", port)
		u := r.unit(port)
		if !u.active {
			u.healthy = port != r.failAfterRestart
		}
		u.active, u.enabled = true, true
	}
	return nil
}

func (r *fakeRemote) Enable(_ context.Context, ports ...int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, port := range ports {
		r.log("enable %d", port)
		r.unit(port).enabled = true
	}
	return nil
}

func (r *fakeRemote) Stop(_ context.Context, ports ...int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, port := range ports {
		r.log("stop %d", port)
		u := r.unit(port)
		u.active, u.enabled = false, false
	}
	return nil
}

func (r *fakeRemote) Hook(_ context.Context, command string, env []string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log("hook %s", command)
	r.hooks = append(r.hooks, env)
	return "", nil
}

// DialContext reaches the instance's test server, whatever address the
// health check asked for; it notes the address.
// DialContext dials over the connection the engine made the fake with, as
// the SSH remote does.
func (r *fakeRemote) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	r.mu.Lock()
	c := r.conn
	r.mu.Unlock()
	if c != nil {
		return c.DialContext(ctx, network, addr)
	}
	return r.dial(ctx, network, addr)
}

// dial is a dial from the host: to its site at port 80 and its instances.
func (r *fakeRemote) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, p, _ := net.SplitHostPort(addr)
	var port int
	fmt.Sscan(p, &port)
	r.mu.Lock()
	if port == 2019 && r.caddy != nil {
		r.mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, r.caddy.srv.Listener.Addr().String())
	}
	if port == 8080 && r.traefik != nil {
		r.mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, r.traefik.srv.Listener.Addr().String())
	}
	if port == 80 {
		site := r.site
		r.mu.Unlock()
		if site == nil {
			return nil, fmt.Errorf("dial %s: connection refused", addr)
		}
		var d net.Dialer
		return d.DialContext(ctx, network, site.Listener.Addr().String())
	}
	r.dials = append(r.dials, host)
	if fw := r.forward; fw != nil {
		r.mu.Unlock()
		return fw.dial(ctx, network, addr)
	}
	u, ok := r.units[port]
	r.mu.Unlock()
	if err := r.fault("DialContext"); err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("connection refused: %s", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, u.srv.Listener.Addr().String())
}

// ReadAccessLog answers as access-read.sh does, through parseLogRead.
func (r *fakeRemote) ReadAccessLog(ctx context.Context, file string, from logPos, since int64, ports []int) (logRead, error) {
	if err := r.wire(ctx, "ReadAccessLog"); err != nil {
		return logRead{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.noLog {
		return logRead{}, fmt.Errorf("cannot read the access log %s (missing, or not readable by this user)", file)
	}
	if from.offset >= 0 {
		var b strings.Builder
		for i := range r.traffic {
			for _, p := range slices.Sorted(maps.Keys(r.units)) {
				status := 200
				if r.fails5xx != nil && r.fails5xx(p) && i%5 == 0 {
					status = 502
				}
				if r.plain {
					fmt.Fprintf(&b, "10.0.0.9 - - [28/Nov/2026:01:00:00 +0000] \"GET / HTTP/1.1\" %d 2 \"-\" \"curl\"\n", status)
					continue
				}
				fmt.Fprintf(&b, "10.0.0.9 [28/Nov/2026:01:00:00 +0000] \"GET / HTTP/1.1\" %d 2 upstream=\"127.0.0.1:%d\" upstream_status=\"%d\" rt=0.003\n", status, p, status)
			}
		}
		r.accessLog += b.String()
	}
	start := from.offset
	if start < 0 {
		start = int64(len(r.accessLog))
	}
	var out strings.Builder
	fmt.Fprintf(&out, "@@rollout@@ pos\n1 %d %d 1700000000\n@@rollout@@ restarts\n", len(r.accessLog), start)
	for _, p := range ports {
		fmt.Fprintf(&out, "Id=my-app@%d.service\nNRestarts=%d\n\n", p, r.restarts[p])
	}
	out.WriteString("@@rollout@@ errors\n@@rollout@@ log\n" + r.accessLog[start:])
	return parseLogRead([]byte(out.String()), from)
}

// Alive asks the connection the engine gave the fake: a link says whether
// it reconnected.
func (r *fakeRemote) Alive(ctx context.Context) (bool, error) {
	r.mu.Lock()
	c := r.conn
	r.mu.Unlock()
	if l, ok := c.(interface {
		Alive(context.Context) (bool, error)
	}); ok {
		return l.Alive(ctx)
	}
	return false, nil
}

func (r *fakeRemote) AcquireLock(context.Context, LockInfo, bool, string) (LockState, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.locked {
		return LockState{Held: true, Age: time.Second}, false, nil
	}
	r.locked = true
	return LockState{}, true, nil
}

func (r *fakeRemote) RefreshLock(context.Context, string) error { return nil }

func (r *fakeRemote) ReleaseLock(ctx context.Context, _ string) error {
	if err := r.wire(ctx, "ReleaseLock"); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.locked = false
	return nil
}

func (r *fakeRemote) LockStatus(context.Context) (LockState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return LockState{Held: r.locked}, nil
}

func (r *fakeRemote) AppendHistory(ctx context.Context, e HistoryEntry) error {
	if r.historyBarrier != nil {
		// Every host's history is written at once, or this one never is.
		r.historyBarrier.Done()
		done := make(chan struct{})
		go func() { r.historyBarrier.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			return fmt.Errorf("the other hosts' histories were not written meanwhile")
		}
	}
	if err := r.wire(ctx, "AppendHistory"); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.history = append(r.history, e)
	return nil
}

func (r *fakeRemote) ReadHistory(context.Context, int) ([]HistoryEntry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.history), nil
}

func (r *fakeRemote) HandDrained(ctx context.Context) ([]HandDrain, error) {
	if err := r.wire(ctx, "HandDrained"); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.handDrained), nil
}

func (r *fakeRemote) SetHandDrained(ctx context.Context, list []HandDrain) error {
	if err := r.wire(ctx, "SetHandDrained"); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handDrained = slices.Clone(list)
	return nil
}

func (r *fakeRemote) ReleaseState(_ context.Context, ports []int, workers []string) (releaseState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := releaseState{present: map[string]bool{}, log: slices.Clone(r.relLog), current: r.current,
		links: map[int]string{}, running: map[int]string{}, runDir: map[int]string{}, workDir: map[int]string{},
		workers: map[string]workerRelease{}}
	for _, u := range workers {
		if w, ok := r.workers[u]; ok {
			st.workers[u] = workerRelease{link: w.link, running: w.runs, workDir: "/srv/my-app/instances/" + u}
		}
	}
	for id := range r.releases {
		st.present[id] = true
	}
	for _, p := range ports {
		st.links[p], st.running[p] = r.links[p], r.runs[p]
		st.workDir[p] = fmt.Sprintf("/srv/my-app/instances/%d", p)
		if r.workDir != "" {
			st.workDir[p] = r.workDir
		}
	}
	return st, nil
}

func (r *fakeRemote) Upload(ctx context.Context, e ReleaseEntry, open func() (io.ReadCloser, error)) error {
	if err := r.wire(ctx, "Upload"); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	body, err := open()
	if err != nil {
		return err
	}
	defer body.Close()
	data, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != e.SHA256 {
		return fmt.Errorf("upload release %s: the release arrived damaged", e.ID)
	}
	if strings.Contains(string(data), "prepare fails") {
		return fmt.Errorf("%w in release %s:\nnpm ERR! missing script: build", ErrPrepare, e.ID)
	}
	r.log("upload %s", e.ID)
	r.uploads = append(r.uploads, e.ID)
	r.releases[e.ID] = true
	r.relLog = append(r.relLog, e)
	return nil
}

func (r *fakeRemote) WriteSecrets(ctx context.Context, id string, env, sealed []byte) ([]byte, error) {
	if err := r.wire(ctx, "WriteSecrets"); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !r.releases[id]:
		return nil, fmt.Errorf("release %s is not in /srv/my-app/releases", id)
	case r.noEnvFile:
		return nil, errors.New("my-app@3000.service does not read the release's secrets: run rollout setup")
	}
	if r.envs == nil {
		r.envs, r.sealed = map[string][]byte{}, map[string][]byte{}
	}
	r.log("secrets %s", id)
	r.envs[id], r.sealed[id] = env, sealed
	if r.current == id {
		return nil, nil
	}
	return r.sealed[r.current], nil
}

func (r *fakeRemote) ReadSecrets(ctx context.Context) (string, []byte, error) {
	if err := r.wire(ctx, "ReadSecrets"); err != nil {
		return "", nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current, r.sealed[r.current], nil
}

func (r *fakeRemote) Migrate(ctx context.Context, id string, out io.Writer) (bool, error) {
	if err := r.wire(ctx, "Migrate"); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.migrated == nil {
		r.migrated = map[string]bool{}
	}
	if r.migrated[id] {
		return true, nil
	}
	r.log("migrate %s", id)
	r.migrations++
	fmt.Fprintf(out, "migrating %s\n", id)
	if r.migrateFails {
		return false, errors.New("release.migrate exited 1")
	}
	r.migrated[id] = true
	return false, nil
}

func (r *fakeRemote) SwitchInstance(_ context.Context, port int, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.releases[id] {
		return fmt.Errorf("release %s is not in /srv/my-app/releases", id)
	}
	r.log("switch %d %s", port, id)
	r.links[port] = id
	return nil
}

func (r *fakeRemote) RecordRelease(_ context.Context, entries []ReleaseEntry, current string, remove []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.relLog = append(r.relLog, entries...)
	if current != "" {
		r.current = current
	}
	for _, id := range remove {
		used := id == r.current
		for _, l := range r.links {
			used = used || l == id
		}
		if !used {
			r.log("remove %s", id)
			delete(r.releases, id)
		}
	}
	return nil
}

// outcome is release id's latest outcome in the host's log.
func (r *fakeRemote) outcome(id string) ReleaseOutcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	var o ReleaseOutcome
	for _, e := range r.relLog {
		if e.ID == id {
			o = e.Outcome
		}
	}
	return o
}

// fakeDeployer deploys (or scales) to the fake hosts, named web1, web2, ...
// with the config given in YAML after the test's defaults.
func fakeDeployer(t *testing.T, yaml string, hosts ...*fakeRemote) (*Deployer, *[]Event) {
	t.Helper()
	var names []string
	for i := range hosts {
		names = append(names, fmt.Sprintf("web%d", i+1))
	}
	head := "app: my-app\nhosts: [" + strings.Join(names, ", ") + "]\ndrain_timeout: 1s\n"
	if !strings.Contains(yaml, "ssh:") {
		head += "ssh: {user: deploy}\n"
	}
	if !strings.Contains(yaml, "nginx:") && !strings.Contains(yaml, "haproxy") && !strings.Contains(yaml, "caddy:") && !strings.Contains(yaml, "traefik:") {
		head += "nginx: {upstream_file: /etc/nginx/conf.d/my-app.conf, upstream: my_app}\n"
	}
	if !strings.Contains(yaml, "probe:") {
		head += "probe: false\n" // probe_test.go gives its own
	}
	if !strings.Contains(yaml, "health:") {
		head += "health: {timeout: 1s, attempt_timeout: 200ms, interval: 10ms, min_healthy: 0s}\n"
	}
	cfg, err := ParseConfig("rollout.yaml", []byte(head+yaml))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*fakeRemote{}
	for i, h := range hosts {
		byName[names[i]] = h
	}
	var mu sync.Mutex
	events := &[]Event{}
	d := &Deployer{Config: cfg, Version: "v2",
		Connect: func(_ context.Context, host string) (Conn, error) {
			h := byName[host]
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.unreachable {
				return nil, fmt.Errorf("dial %s: connection timed out", host)
			}
			h.connects++
			return fakeHostConn{host: host, r: h}, nil
		},
		Events: func(e Event) {
			mu.Lock()
			*events = append(*events, e)
			mu.Unlock()
		},
		Stdout: new(strings.Builder), Stderr: new(strings.Builder)}
	d.remote = func(_ *Config, c Conn) remote { return byName[connHost(c)].over(c) }
	return d, events
}

// connHost is the host a connection the engine made reaches: a fake
// host's, or a link over one.
func connHost(c Conn) string {
	switch c := c.(type) {
	case fakeHostConn:
		return c.host
	case *link:
		return c.host
	}
	panic(fmt.Sprintf("not a fake host's connection: %T", c))
}

// over makes the fake send its operations over c (the engine's link).
func (r *fakeRemote) over(c Conn) *fakeRemote {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conn = c
	return r
}

// fakeHostConn is the connection to a fake host: the test's remote finds
// the host by its name, and each operation is sent over it as a command
// named after it, which fails as the host's lose and unreachable say.
type fakeHostConn struct {
	Conn
	host string
	r    *fakeRemote
}

func (c fakeHostConn) Run(_ context.Context, op string, _ io.Reader) (sshexec.Result, error) {
	return sshexec.Result{}, c.r.fault(op)
}

func (c fakeHostConn) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return c.r.dial(ctx, network, addr)
}

func (fakeHostConn) Close() error { return nil }

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fakeWorker is a worker's unit on a fake host.
type fakeWorker struct {
	pid      int
	restarts int
	link     string // the release its link names
	runs     string // the release its process runs
	// missing: the host has no such unit; disabled: it is not enabled;
	// hang: its old process never stops (a restart lasts until cut).
	missing, disabled, hang bool
	// crashOn: on a release whose ID ends so, systemd restarts it right
	// after each start.
	crashOn string
}

// worker is the fake host's worker unit, made on first use.
func (r *fakeRemote) worker(unit string) *fakeWorker {
	if r.workers == nil {
		r.workers = map[string]*fakeWorker{}
	}
	w, ok := r.workers[unit]
	if !ok {
		w = &fakeWorker{pid: 500 + len(r.workers)}
		r.workers[unit] = w
	}
	return w
}

func (r *fakeRemote) workerState(unit string) unitState {
	w := r.worker(unit)
	if w.missing {
		return unitState{ID: unit + ".service", Load: "not-found", Active: "inactive", Sub: "dead"}
	}
	if w.disabled {
		return unitState{ID: unit + ".service", Load: "loaded", Active: "inactive", Sub: "dead", FileState: "disabled"}
	}
	if w.crashOn != "" && strings.HasSuffix(w.runs, w.crashOn) {
		// Each reading finds it started again by systemd, until systemd
		// gives up on the third.
		if w.restarts >= 3 {
			return unitState{ID: unit + ".service", Load: "loaded", Active: "failed", Sub: "failed", Restarts: w.restarts, Result: "exit-code"}
		}
		w.pid++
		w.restarts++
	}
	return unitState{ID: unit + ".service", Load: "loaded", Active: "active", Sub: "running", MainPID: w.pid, StartedAt: uint64(w.pid), Restarts: w.restarts}
}

func (r *fakeRemote) WorkerStates(ctx context.Context, units []string) (map[string]unitState, error) {
	if err := r.wire(ctx, "WorkerStates"); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]unitState{}
	for _, u := range units {
		if tmpl, ok := strings.CutSuffix(u, "@*"); ok {
			// systemctl's pattern: the instances it has loaded.
			for name, w := range r.workers {
				if strings.HasPrefix(name, tmpl+"@") && !w.missing {
					out[name] = r.workerState(name)
				}
			}
			continue
		}
		out[u] = r.workerState(u)
	}
	return out, nil
}

func (r *fakeRemote) RestartWorker(ctx context.Context, unit string, _ []string, release string) (restartMark, error) {
	if err := r.wire(ctx, "RestartWorker"); err != nil {
		return restartMark{}, err
	}
	r.mu.Lock()
	if r.worker(unit).hang {
		r.mu.Unlock()
		<-ctx.Done()
		return restartMark{}, fmt.Errorf("restart %s: %w", unit, ctx.Err())
	}
	defer r.mu.Unlock()
	w := r.worker(unit)
	if release != "" {
		if !r.releases[release] {
			return restartMark{}, fmt.Errorf("release %s is not in /srv/my-app/releases", release)
		}
		r.log("switch %s %s", unit, release)
		w.link = release
	}
	r.log("restart %s", unit)
	before := r.workerState(unit)
	w.pid += 1000
	w.runs = w.link
	return restartMark{clock: 1, before: before, after: r.workerState(unit)}, nil
}

func (r *fakeRemote) WorkerLogFiles(_ context.Context, units []string) (map[string][]string, error) {
	logs := map[string][]string{}
	for _, u := range units {
		logs[u] = []string{"/var/log/my-app/" + u + ".log"}
	}
	return logs, nil
}

func (r *fakeRemote) WorkerOutput(_ context.Context, unit string, _ restartMark, _ int) (string, error) {
	return "==> /var/log/my-app/" + unit + ".log <==\nworker: cannot reach the queue\n", nil
}
