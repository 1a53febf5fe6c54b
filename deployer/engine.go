package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/rollout-dev/rollout/healthcheck"
	"github.com/rollout-dev/rollout/sshexec"
)

// Conn is one host's connection: commands and tunnelled dials share it.
// *sshexec.Client is one.
type Conn interface {
	// Run runs a shell command; a non-zero exit is an *sshexec.ExitError.
	Run(ctx context.Context, cmd string, stdin io.Reader) (sshexec.Result, error)
	// DialContext opens a TCP connection from the host (to its loopback).
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	Close() error
}

var _ Conn = (*sshexec.Client)(nil)

// Deployer rolls a release through the fleet.
type Deployer struct {
	Config  *Config
	Version string
	// Connect opens a connection to a host.
	Connect func(ctx context.Context, host string) (Conn, error)
	// Events receives progress; it must not block for long.
	Events func(Event)
	// Stdout and Stderr receive local hooks' output.
	Stdout, Stderr io.Writer
	// Holder is recorded in each host's deploy lock and history; the zero
	// value means this process (NewLockInfo).
	Holder LockInfo
	// BreakStaleLock takes over a lock whose holder stopped refreshing it.
	BreakStaleLock bool
	// ScaleOnly reconciles each host's instances with the config (start
	// and add the missing ones, drain and remove the surplus ones) and
	// restarts nothing: `rollout scale`.
	ScaleOnly bool
}

func (d *Deployer) op() string {
	if d.ScaleOnly {
		return "scale"
	}
	return "deploy"
}

// Event is one step's progress.
type Event struct {
	Time     time.Time     `json:"time"`
	Host     string        `json:"host,omitempty"`
	Port     int           `json:"port,omitempty"`
	Step     string        `json:"step"`
	Status   string        `json:"status"` // start, ok, skip, warn, fail
	Duration time.Duration `json:"duration_ns,omitempty"`
	Message  string        `json:"message,omitempty"`
}

// Outcome of one host.
const (
	HostOK          = "ok"
	HostFailed      = "failed"
	HostStopped     = "stopped"
	HostInterrupted = "interrupted"
	HostNotStarted  = "not started"
)

// StepHost events bracket one host's run (after the preflight): "start",
// then "ok", "fail", or "skip" when it stopped before its next instance,
// with the host's whole time. Output groups a host's lines by them.
const StepHost = "host"

// HostReport is what happened on one host.
type HostReport struct {
	Host      string        `json:"host"`
	Outcome   string        `json:"outcome"`
	Restarted []int         `json:"restarted"`
	LeftOut   []int         `json:"left_out,omitempty"`
	Duration  time.Duration `json:"duration_ns"`
	Error     string        `json:"error,omitempty"`
}

// Report is what happened in one deploy.
type Report struct {
	Op       string        `json:"op"` // deploy or scale
	Version  string        `json:"version,omitempty"`
	Hosts    []HostReport  `json:"hosts"`
	Duration time.Duration `json:"duration_ns"`
}

// Deploy runs the rollout: local before-hooks, a preflight on every host
// (nothing changes anywhere unless every host passes), then the hosts, at
// most Config.Parallel at a time, each instance strictly one at a time. On
// the first failure no further instance is started on any host. The error
// aggregates every host's failure; the report says what happened on each.
func (d *Deployer) Deploy(ctx context.Context) (*Report, error) {
	start := time.Now()
	cfg := d.Config
	rep := &Report{Op: d.op(), Version: d.Version}
	for _, h := range cfg.Hosts {
		rep.Hosts = append(rep.Hosts, HostReport{Host: h, Outcome: HostNotStarted})
	}
	finish := func(err error) (*Report, error) {
		rep.Duration = time.Since(start)
		result := "ok"
		if err != nil {
			result = "failed"
		}
		if d.ScaleOnly {
			return rep, err
		}
		if herr := d.localHooks(context.WithoutCancel(ctx), cfg.Hooks.After, "after", result); herr != nil && err == nil {
			err = herr
		}
		return rep, err
	}

	if !d.ScaleOnly {
		if err := d.localHooks(ctx, cfg.Hooks.Before, "before", ""); err != nil {
			return finish(err)
		}
	}

	if d.Holder.Token == "" {
		d.Holder = NewLockInfo(d.op(), d.Version)
	}
	conns, hostCfgs, locks, err := d.preflight(ctx)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if err != nil {
		return finish(err)
	}
	// Every host was locked: on the way out each one gets its history line,
	// then its lock back, whatever happened.
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		for i, l := range locks {
			r := rep.Hosts[i]
			entry := HistoryEntry{Time: time.Now().UTC(), User: d.Holder.User, From: d.Holder.From, RunURL: d.Holder.RunURL,
				Op: d.op(), Version: d.Version, Outcome: r.Outcome, Duration: r.Duration, Restarted: r.Restarted, LeftOut: r.LeftOut, Error: r.Error}
			if err := AppendHistory(cctx, hostCfgs[i], conns[i], entry); err != nil {
				fmt.Fprintf(d.Stderr, "rollout: %s: %v\n", cfg.Hosts[i], err)
			}
			if err := l.Release(cctx); err != nil {
				fmt.Fprintf(d.Stderr, "rollout: %v\n", err)
			}
		}
	}()

	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	go func() {
		select {
		case <-ctx.Done():
			halt()
		case <-stop:
		}
	}()
	for i, l := range locks {
		go func() {
			select {
			case <-l.Lost:
				d.emit(Event{Host: cfg.Hosts[i], Step: StepLock, Status: "fail", Message: "the deploy lock was taken over by someone else: stopping"})
				halt()
			case <-stop:
			}
		}()
	}

	// Workers take hosts in config order, so with parallel 1 the hosts go
	// one after another as listed.
	var (
		mu   sync.Mutex
		errs *multierror.Error
		wg   sync.WaitGroup
		next = make(chan int)
	)
	go func() {
		defer close(next)
		for i := range cfg.Hosts {
			select {
			case next <- i:
			case <-stop:
				return
			}
		}
	}()
	for range min(max(cfg.Parallel, 1), len(cfg.Hosts)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if d.stopping(stop) {
					return
				}
				hr, took, herr := d.runHost(ctx, hostCfgs[i], cfg.Hosts[i], conns[i], stop)
				mu.Lock()
				r := &rep.Hosts[i]
				r.Duration, r.Restarted, r.LeftOut = took, hr.restarted, hr.leftOut
				switch {
				case herr == nil:
					r.Outcome = HostOK
				case errors.Is(herr, ErrStopped) && ctx.Err() != nil:
					r.Outcome, r.Error = HostInterrupted, herr.Error()
				case errors.Is(herr, ErrStopped):
					r.Outcome, r.Error = HostStopped, herr.Error()
				case ctx.Err() != nil:
					r.Outcome, r.Error = HostInterrupted, herr.Error()
					errs = multierror.Append(errs, herr)
				default:
					r.Outcome, r.Error = HostFailed, herr.Error()
					errs = multierror.Append(errs, herr)
					halt()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	halt()
	err = errs.ErrorOrNil()
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("deploy interrupted: %w", ctx.Err())
	}
	return finish(err)
}

func (d *Deployer) stopping(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

func (d *Deployer) runHost(ctx context.Context, cfg *Config, host string, conn Conn, stop <-chan struct{}) (*hostRun, time.Duration, error) {
	t0 := time.Now()
	d.emit(Event{Host: host, Step: StepHost, Status: "start"})
	hr := d.newHostRun(cfg, host, conn, stop)
	err := hr.run(ctx)
	took := time.Since(t0)
	e := Event{Host: host, Step: StepHost, Status: "ok", Duration: took}
	if err != nil {
		e.Status, e.Message = "fail", err.Error()
		if errors.Is(err, ErrStopped) {
			e.Status = "skip"
		}
	}
	d.emit(e)
	return hr, took, err
}

// preflight connects to every host in parallel, checks each one and takes
// its deploy lock; it changes nothing else. On failure no lock is kept.
func (d *Deployer) preflight(ctx context.Context) ([]Conn, []*Config, []*HostLock, error) {
	cfg := d.Config
	conns := make([]Conn, len(cfg.Hosts))
	hostCfgs := make([]*Config, len(cfg.Hosts))
	locks := make([]*HostLock, len(cfg.Hosts))
	errs := make([]error, len(cfg.Hosts))
	var wg sync.WaitGroup
	for i, host := range cfg.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			d.emit(Event{Host: host, Step: StepPreflight, Status: "start"})
			c, err := d.Connect(ctx, host)
			if err == nil {
				conns[i] = c
				hostCfgs[i], err = hostConfig(ctx, cfg, c)
			}
			if err == nil {
				_, err = c.Run(ctx, newCommands(hostCfgs[i]).preflight(), nil)
				err = explainRemote(err, cfg)
			}
			if err != nil {
				errs[i] = &StepError{Host: host, Step: StepPreflight, Err: err}
				d.emit(Event{Host: host, Step: StepPreflight, Status: "fail", Duration: time.Since(t0), Message: err.Error()})
				return
			}
			d.emit(Event{Host: host, Step: StepPreflight, Status: "ok", Duration: time.Since(t0)})
			t0 = time.Now()
			if locks[i], err = AcquireLock(ctx, cfg, host, c, d.Holder, d.BreakStaleLock); err != nil {
				errs[i] = &StepError{Host: host, Step: StepLock, Err: err}
				d.emit(Event{Host: host, Step: StepLock, Status: "fail", Duration: time.Since(t0), Message: err.Error()})
				return
			}
			d.emit(Event{Host: host, Step: StepLock, Status: "ok", Duration: time.Since(t0)})
		}()
	}
	wg.Wait()
	var merr *multierror.Error
	for _, e := range errs {
		if e != nil {
			merr = multierror.Append(merr, e)
		}
	}
	if merr != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		for _, l := range locks {
			if l != nil {
				if err := l.Release(cctx); err != nil {
					merr = multierror.Append(merr, err)
				}
			}
		}
		return conns, hostCfgs, nil, merr
	}
	return conns, hostCfgs, locks, nil
}

// hostConfig is the config for one host: with instances: auto, one
// instance per CPU core it has.
func hostConfig(ctx context.Context, cfg *Config, conn Conn) (*Config, error) {
	if !cfg.InstancesAuto() {
		return cfg, nil
	}
	res, err := conn.Run(ctx, "nproc", nil)
	if err != nil {
		return nil, fmt.Errorf("count CPU cores for instances: auto: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
	if err != nil || n < 1 {
		return nil, fmt.Errorf("count CPU cores for instances: auto: nproc said %q", res.Stdout)
	}
	return cfg.ForCores(n), nil
}

// explainRemote turns a sudo refusal into a message that says what to do.
func explainRemote(err error, cfg *Config) error {
	var ee *sshexec.ExitError
	if errors.As(err, &ee) && strings.Contains(ee.Stderr, "sudo:") {
		return fmt.Errorf("sudo -n refused for user %q (rollout needs passwordless sudo for systemctl, nginx and the upstream file, or connect as root with sudo: false): %w", cfg.SSH.User, err)
	}
	return err
}

func (d *Deployer) emit(e Event) {
	if d.Events == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	d.Events(e)
}

// localHooks runs the deploy's local hooks in order, stopping at the first
// failure.
func (d *Deployer) localHooks(ctx context.Context, hooks []string, when, result string) error {
	for _, h := range hooks {
		t0 := time.Now()
		d.emit(Event{Step: StepHook, Status: "start", Message: "local " + when + ": " + h})
		cmd := exec.CommandContext(ctx, "sh", "-c", h)
		cmd.Env = append(os.Environ(), d.hookEnv(d.Config, "", result)...)
		cmd.Stdout, cmd.Stderr = d.Stdout, d.Stderr
		if err := cmd.Run(); err != nil {
			err = fmt.Errorf("local %s hook %q: %w", when, h, err)
			d.emit(Event{Step: StepHook, Status: "fail", Duration: time.Since(t0), Message: err.Error()})
			return &StepError{Host: "local", Step: StepHook, Err: err}
		}
		d.emit(Event{Step: StepHook, Status: "ok", Duration: time.Since(t0), Message: "local " + when + ": " + h})
	}
	return nil
}

// hookEnv is the ROLLOUT_* environment of a hook.
func (d *Deployer) hookEnv(cfg *Config, host, result string) []string {
	ports := make([]string, 0, len(cfg.Ports()))
	for _, p := range cfg.Ports() {
		ports = append(ports, strconv.Itoa(p))
	}
	env := []string{
		"ROLLOUT_APP=" + cfg.App,
		"ROLLOUT_VERSION=" + d.Version,
		"ROLLOUT_HOSTS=" + strings.Join(cfg.Hosts, " "),
		"ROLLOUT_PORTS=" + strings.Join(ports, " "),
	}
	if host != "" {
		env = append(env, "ROLLOUT_HOST="+host)
	}
	if result != "" {
		env = append(env, "ROLLOUT_RESULT="+result)
	}
	return env
}

// hostRun deploys one host.
type hostRun struct {
	d      *Deployer
	cfg    *Config
	host   string
	conn   Conn
	cmds   commands
	health healthcheck.HTTP
	stop   <-chan struct{}
	logs   map[int][]string // per port, discovered from the unit files

	// upstream is the upstream file as rollout last read or wrote it.
	upstream []byte
	// pending is an instance that came back healthy and is still marked
	// down: it goes back into Nginx in the same write and reload that
	// drains the next instance, or on its own when there is none (0: no
	// instance is pending).
	pending int
	// added are instances the scale step started on this release.
	added map[int]bool

	restarted, leftOut []int
}

func (d *Deployer) newHostRun(cfg *Config, host string, conn Conn, stop <-chan struct{}) *hostRun {
	return &hostRun{
		d: d, cfg: cfg, host: host, conn: conn, cmds: newCommands(cfg), stop: stop,
		health: healthcheck.HTTP{Dial: conn.DialContext, Path: cfg.Health.Path, Status: cfg.Health.Status, AttemptTimeout: cfg.Health.AttemptTimeout},
		logs:   map[int][]string{}, added: map[int]bool{},
	}
}

func (h *hostRun) emit(port int, step, status string, t0 time.Time, msg string) {
	e := Event{Host: h.host, Port: port, Step: step, Status: status, Message: msg}
	if status != "start" && !t0.IsZero() {
		e.Duration = time.Since(t0)
	}
	h.d.emit(e)
}

func (h *hostRun) stopped() bool { return h.d.stopping(h.stop) }

// run deploys every instance of the host, between its hooks; first it
// reconciles the instances with the config (see reconcile).
func (h *hostRun) run(ctx context.Context) (err error) {
	if h.d.ScaleOnly {
		return h.reconcile(ctx)
	}
	for _, hook := range h.cfg.Hooks.HostBefore {
		if err := h.hook(ctx, "before", hook); err != nil {
			return err
		}
	}
	// On every way out, an instance that came back healthy is put back.
	defer func() {
		if perr := h.undrainPending(ctx); perr != nil && err == nil {
			err = perr
		}
	}()
	if err := h.reconcile(ctx); err != nil {
		return err
	}
	st, err := h.inspect(ctx)
	if err != nil {
		return &StepError{Host: h.host, Step: StepCapacity, Err: err}
	}
	for _, port := range h.order(ctx, st) {
		if h.stopped() {
			return &StepError{Host: h.host, Port: port, Step: StepCapacity, Err: ErrStopped}
		}
		if h.added[port] {
			h.emit(port, StepRestart, "skip", time.Time{}, "started on this release by the scale step")
			h.restarted = append(h.restarted, port)
			continue
		}
		if err := h.instance(ctx, port); err != nil {
			return err
		}
	}
	if err := h.undrainPending(ctx); err != nil {
		return err
	}
	for _, hook := range h.cfg.Hooks.HostAfter {
		if err := h.hook(ctx, "after", hook); err != nil {
			return err
		}
	}
	return nil
}

func (h *hostRun) hook(ctx context.Context, when, hook string) error {
	t0 := time.Now()
	h.emit(0, StepHook, "start", t0, when+": "+hook)
	res, err := h.conn.Run(ctx, hookCommand(hook, h.d.hookEnv(h.cfg, h.host, "")), nil)
	if err != nil {
		err = fmt.Errorf("host %s hook %q: %w", when, hook, err)
		h.emit(0, StepHook, "fail", t0, err.Error())
		return &StepError{Host: h.host, Step: StepHook, Err: err, Output: string(res.Stdout) + string(res.Stderr)}
	}
	h.emit(0, StepHook, "ok", t0, when+": "+hook)
	return nil
}

// hostState is one inspection of the host.
type hostState struct {
	units    map[string]unitState
	upstream []byte
	down     map[int]bool // port -> marked down in the upstream
}

func (h *hostRun) inspect(ctx context.Context) (hostState, error) {
	res, err := h.conn.Run(ctx, h.cmds.inspect(), nil)
	if err != nil {
		return hostState{}, fmt.Errorf("inspect: %w", err)
	}
	units, upstream, ok := strings.Cut(string(res.Stdout), inspectSep+"\n")
	if !ok {
		return hostState{}, errors.New("inspect: unexpected output")
	}
	st := hostState{upstream: []byte(upstream)}
	h.upstream = st.upstream
	if st.units, err = parseUnitStates(units); err != nil {
		return st, err
	}
	if st.down, err = upstreamServers(st.upstream, h.cfg.Nginx.Upstream, h.cfg.Nginx.ServerAddress); err != nil {
		return st, fmt.Errorf("%s: %w", h.cfg.Nginx.UpstreamFile, err)
	}
	for _, p := range h.cfg.Ports() {
		if _, ok := st.down[p]; !ok {
			return st, fmt.Errorf("%s: upstream %q has no line \"server %s:%d;\"", h.cfg.Nginx.UpstreamFile, h.cfg.Nginx.Upstream, h.cfg.Nginx.ServerAddress, p)
		}
	}
	return st, nil
}

// healthy health-checks every instance at once.
func (h *hostRun) healthy(ctx context.Context) map[int]bool {
	out := map[int]bool{}
	for p, err := range checkAll(ctx, h.health, h.cfg.Ports()) {
		if err == nil {
			out[p] = true
		}
	}
	return out
}

// checkAll health-checks the ports at once.
func checkAll(ctx context.Context, check healthcheck.HTTP, ports []int) map[int]error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[int]error{}
	for _, p := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := check.Check(ctx, p)
			mu.Lock()
			out[p] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// serving returns the instances that take traffic now, or will once the
// pending instance is back: in the upstream as rollout last read or wrote
// it (or pending), and passing their health check now. A changed upstream
// file is caught when it is written, and the check is made again.
func (h *hostRun) serving(ctx context.Context) (map[int]bool, error) {
	down, err := upstreamServers(h.upstream, h.cfg.Nginx.Upstream, h.cfg.Nginx.ServerAddress)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h.cfg.Nginx.UpstreamFile, err)
	}
	out := h.healthy(ctx)
	for p := range out {
		if down[p] && p != h.pending {
			delete(out, p)
		}
	}
	return out, nil
}

// order puts instances that serve nothing now first: restarting them takes
// nothing out of service.
func (h *hostRun) order(ctx context.Context, st hostState) []int {
	serving, _ := h.serving(ctx)
	for p := range serving {
		if !st.units[h.cfg.UnitName(p)].running() {
			delete(serving, p)
		}
	}
	ports := append([]int(nil), h.cfg.Ports()...)
	sort.SliceStable(ports, func(i, j int) bool { return !serving[ports[i]] && serving[ports[j]] })
	return ports
}

// errUpstreamChanged: the upstream file changed under rollout; it was read
// again and nothing was written.
var errUpstreamChanged = errors.New("the upstream file was changed by someone else during the deploy")

// instance rolls one instance: capacity check, drain, wait for its
// requests, restart, wait for the new process, health, stability. On every
// exit path a drained instance is put back if it is healthy and left out if
// not; a healthy one goes back with the next instance's drain.
func (h *hostRun) instance(ctx context.Context, port int) (err error) {
	fail := func(step string, err error) error {
		return &StepError{Host: h.host, Port: port, Step: step, Err: err}
	}

	drained := false
	defer func() {
		if !drained {
			return
		}
		// Decide on the way out, even if ctx was cancelled: back into
		// Nginx only if healthy. An instance interrupted while booting gets
		// health.timeout (at most 30s) to come up; a failed one is not
		// waited for.
		wait := min(h.cfg.Health.Timeout, 30*time.Second)
		if err != nil && ctx.Err() == nil {
			wait = h.cfg.Health.AttemptTimeout
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wait+10*time.Second)
		defer cancel()
		if cerr := h.health.Wait(cctx, port, wait, h.cfg.Health.Interval, nil); cerr != nil {
			h.leftOut = append(h.leftOut, port)
			h.emit(port, StepUndrain, "skip", time.Time{}, "left out of nginx: "+cerr.Error())
			var se *StepError
			if errors.As(err, &se) {
				se.LeftOut = true
			}
			return
		}
		if uerr := h.setDown(cctx, map[int]bool{port: false}, 0); uerr != nil && err == nil {
			err = fail(StepUndrain, uerr)
		}
	}()

	for attempt := 0; ; attempt++ {
		t0 := time.Now()
		h.emit(port, StepCapacity, "start", t0, "")
		serving, err := h.serving(ctx)
		if err != nil {
			return fail(StepCapacity, err)
		}
		need := max(h.cfg.MinServing(), 1)
		if serving[port] && len(serving)-1 < need {
			err := fmt.Errorf("%w: draining %d would leave %d serving, min_serving is %d", ErrCapacity, port, len(serving)-1, need)
			h.emit(port, StepCapacity, "fail", t0, err.Error())
			return fail(StepCapacity, err)
		}
		h.emit(port, StepCapacity, "ok", t0, fmt.Sprintf("%d serving", len(serving)))

		// One write and one reload put the pending instance back and take
		// this one out.
		change := map[int]bool{port: true}
		if h.pending != 0 {
			change[h.pending] = false
		}
		err = h.setDown(ctx, change, port)
		if errors.Is(err, errUpstreamChanged) && attempt < 2 {
			continue // read again: check capacity on the new content
		}
		if err != nil {
			return fail(StepDrain, err)
		}
		h.pending = 0
		drained = true
		break
	}
	if h.stopped() {
		return fail(StepRestart, ErrStopped)
	}

	offsets, since, before, after, err := h.restart(ctx, port)
	if err != nil {
		return h.appFailure(ctx, port, StepRestart, err, offsets, since)
	}
	h.restarted = append(h.restarted, port)

	t0 := time.Now()
	h.emit(port, StepActive, "start", t0, "")
	now, err := h.waitActive(ctx, port, before, after)
	if err != nil {
		h.emit(port, StepActive, "fail", t0, err.Error())
		return h.appFailure(ctx, port, StepActive, err, offsets, since)
	}
	h.emit(port, StepActive, "ok", t0, fmt.Sprintf("pid %d", now.MainPID))

	t0 = time.Now()
	h.emit(port, StepHealth, "start", t0, "")
	alive := func(ctx context.Context) error { return h.stillSame(ctx, port, now) }
	if err := h.health.Wait(ctx, port, h.cfg.Health.Timeout, h.cfg.Health.Interval, alive); err != nil {
		h.emit(port, StepHealth, "fail", t0, err.Error())
		return h.appFailure(ctx, port, StepHealth, err, offsets, since)
	}
	h.emit(port, StepHealth, "ok", t0, "")

	if h.cfg.Health.MinHealthy > 0 {
		t0 = time.Now()
		h.emit(port, StepStable, "start", t0, "")
		if err := h.waitStable(ctx, port, now); err != nil {
			h.emit(port, StepStable, "fail", t0, err.Error())
			return h.appFailure(ctx, port, StepStable, err, offsets, since)
		}
		h.emit(port, StepStable, "ok", t0, "")
	}

	// Healthy: it goes back into Nginx with the next instance's drain (one
	// reload for both), or on its own if there is no next one.
	h.pending = port
	drained = false
	return nil
}

// undrainPending puts the pending instance back into Nginx if it is still
// healthy, and leaves it out if not. It runs on every way out of the host,
// even after an interrupt.
func (h *hostRun) undrainPending(ctx context.Context) error {
	port := h.pending
	if port == 0 {
		return nil
	}
	h.pending = 0
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.Health.AttemptTimeout+30*time.Second)
	defer cancel()
	if err := h.health.Wait(cctx, port, h.cfg.Health.AttemptTimeout, h.cfg.Health.Interval, nil); err != nil {
		h.leftOut = append(h.leftOut, port)
		h.emit(port, StepUndrain, "skip", time.Time{}, "left out of nginx: "+err.Error())
		return &StepError{Host: h.host, Port: port, Step: StepUndrain, Err: err, LeftOut: true}
	}
	if err := h.setDown(cctx, map[int]bool{port: false}, 0); err != nil {
		return &StepError{Host: h.host, Port: port, Step: StepUndrain, Err: err}
	}
	return nil
}

// setDown marks instances down (drain) or up (undrain) in the upstream
// file, in one write and one Nginx reload, from the content rollout last
// read or wrote. With drainPort set it also waits for that instance's
// requests in flight (the wait-drain step). An undrain retries once on a
// file changed by someone else; a drain returns errUpstreamChanged, for the
// caller to check capacity again.
func (h *hostRun) setDown(ctx context.Context, change map[int]bool, drainPort int) error {
	ports := make([]int, 0, len(change))
	for p := range change {
		ports = append(ports, p)
	}
	sort.Ints(ports)
	step := func(p int) string {
		if change[p] {
			return StepDrain
		}
		return StepUndrain
	}
	note := func(p int) string {
		var with []string
		for _, q := range ports {
			if q != p {
				with = append(with, fmt.Sprintf("%s of %d", step(q), q))
			}
		}
		if len(with) == 0 {
			return ""
		}
		return "one reload with the " + strings.Join(with, ", ")
	}
	t0 := time.Now()
	for _, p := range ports {
		h.emit(p, step(p), "start", t0, "")
	}
	var out string
	var err error
	for attempt := 0; ; attempt++ {
		out, err = h.writeUpstream(ctx, change, drainPort)
		if !errors.Is(err, errUpstreamChanged) || drainPort != 0 || attempt > 0 {
			break
		}
	}
	// A drain's script waits for the old workers, then for the requests
	// in flight (the wait-drain step): "drained MS" or "busy MS N".
	var status string
	var waited time.Duration
	var open int
	if err == nil && drainPort != 0 {
		var ms int
		fmt.Sscan(strings.TrimSpace(out), &status, &ms, &open)
		waited = time.Duration(ms) * time.Millisecond
		if status != "drained" && status != "busy" {
			err = fmt.Errorf("update %s: unexpected output %q", h.cfg.Nginx.UpstreamFile, out)
		}
	}
	took := time.Since(t0) - waited
	for _, p := range ports {
		e := Event{Host: h.host, Port: p, Step: step(p), Status: "ok", Duration: took, Message: note(p)}
		if err != nil {
			e.Status, e.Message = "fail", err.Error()
		}
		h.d.emit(e)
	}
	switch {
	case err != nil || drainPort == 0:
		return err
	case status == "busy":
		h.d.emit(Event{Host: h.host, Port: drainPort, Step: StepWaitDrain, Status: "warn", Duration: waited,
			Message: fmt.Sprintf("drain timeout %s: %d connections still open, restarting anyway", h.cfg.DrainTimeout, open)})
	default:
		h.d.emit(Event{Host: h.host, Port: drainPort, Step: StepWaitDrain, Status: "ok", Duration: waited, Message: "no requests in flight"})
	}
	return nil
}

// writeUpstream runs one write of the upstream file and returns the
// script's output. When the file changed under rollout, it reads it again
// and returns errUpstreamChanged.
func (h *hostRun) writeUpstream(ctx context.Context, change map[int]bool, drainPort int) (string, error) {
	next := h.upstream
	for p, down := range change {
		var err error
		if next, err = setServerDown(next, h.cfg.Nginx.Upstream, h.cfg.Nginx.ServerAddress, p, down); err != nil {
			return "", fmt.Errorf("%s: %w", h.cfg.Nginx.UpstreamFile, err)
		}
	}
	return h.writeContent(ctx, next, drainPort)
}

// writeContent replaces the upstream file with next (see writeUpstream).
func (h *hostRun) writeContent(ctx context.Context, next []byte, drainPort int) (string, error) {
	file := h.cfg.Nginx.UpstreamFile
	res, err := h.conn.Run(ctx, h.cmds.writeUpstream(drainPort), upstreamInput(h.upstream, next))
	var ee *sshexec.ExitError
	if errors.As(err, &ee) && ee.Code == 67 {
		cur, rerr := h.conn.Run(ctx, "cat -- "+sshexec.Quote(file), nil)
		if rerr != nil {
			return "", fmt.Errorf("read %s: %w", file, rerr)
		}
		h.upstream = cur.Stdout
		return "", errUpstreamChanged
	}
	if err != nil {
		return "", explainRemote(fmt.Errorf("update %s: %w", file, err), h.cfg)
	}
	h.upstream = next
	return string(res.Stdout), nil
}

// restart restarts the instance. It returns where its log files ended
// before and the host's clock (to show its output since), and the unit's
// state just before and just after.
func (h *hostRun) restart(ctx context.Context, port int) (offsets map[string]int64, since uint64, before, after unitState, err error) {
	t0 := time.Now()
	h.emit(port, StepRestart, "start", t0, "")
	logs, err := h.logFiles(ctx, port)
	if err != nil {
		h.emit(port, StepRestart, "fail", t0, err.Error())
		return nil, 0, before, after, err
	}
	res, err := h.conn.Run(ctx, h.cmds.restart(port, logs), nil)
	parts := strings.Split(string(res.Stdout), restartSep+"\n")
	clock, sizes, _ := strings.Cut(parts[0], "\n")
	since, _ = strconv.ParseUint(strings.TrimSpace(clock), 10, 64)
	offsets = map[string]int64{}
	for _, line := range strings.Split(sizes, "\n") {
		size, file, ok := strings.Cut(line, " ")
		if n, perr := strconv.ParseInt(size, 10, 64); ok && perr == nil {
			offsets[file] = n
		}
	}
	for _, f := range logs {
		if _, ok := offsets[f]; !ok {
			offsets[f] = 0
		}
	}
	unit := h.cfg.UnitName(port)
	if err == nil && len(parts) == 3 {
		b, berr := parseUnitStates(parts[1])
		a, aerr := parseUnitStates(parts[2])
		if err = errors.Join(berr, aerr); err == nil {
			before, after = b[unit], a[unit]
		}
	} else if err == nil {
		err = fmt.Errorf("restart: unexpected output %q", res.Stdout)
	}
	if err != nil {
		err = explainRemote(err, h.cfg)
		h.emit(port, StepRestart, "fail", t0, err.Error())
		return offsets, since, before, after, err
	}
	h.emit(port, StepRestart, "ok", t0, "")
	return offsets, since, before, after, nil
}

// logFiles are the instance's log files: from the config, or else from its
// unit file's StandardOutput=/StandardError=.
func (h *hostRun) logFiles(ctx context.Context, port int) ([]string, error) {
	if files := h.cfg.LogFiles(port); len(files) > 0 {
		return files, nil
	}
	if files, ok := h.logs[port]; ok {
		return files, nil
	}
	logs, err := unitsLogFiles(ctx, h.cfg, h.conn)
	if err != nil {
		return nil, err
	}
	h.logs = logs
	return h.logs[port], nil
}

// unitsLogFiles reads every instance's unit file at once and returns the
// log files each one names.
func unitsLogFiles(ctx context.Context, cfg *Config, conn Conn) (map[int][]string, error) {
	res, err := conn.Run(ctx, newCommands(cfg).unitFiles(), nil)
	if err != nil {
		return nil, fmt.Errorf("read unit files: %w", err)
	}
	files := strings.Split(string(res.Stdout), unitSep+"\n")
	logs := map[int][]string{}
	for i, p := range cfg.Ports() {
		if i < len(files) {
			logs[p] = unitLogFiles(files[i], cfg.UnitName(p))
		}
	}
	return logs, nil
}

func (h *hostRun) unitState(ctx context.Context, port int) (unitState, error) {
	res, err := h.conn.Run(ctx, h.cmds.unitState(port), nil)
	if err != nil {
		return unitState{}, err
	}
	states, err := parseUnitStates(string(res.Stdout))
	if err != nil {
		return unitState{}, err
	}
	return states[h.cfg.UnitName(port)], nil
}

// waitActive waits until systemd runs a new process for the instance (not
// the old one): active, with another MainPID or start time. u is its state
// right after the restart.
func (h *hostRun) waitActive(ctx context.Context, port int, before, u unitState) (unitState, error) {
	deadline := time.Now().Add(h.cfg.Health.Timeout)
	for {
		fresh := u.MainPID != before.MainPID || u.StartedAt != before.StartedAt
		switch {
		case u.running() && fresh:
			return u, nil
		case u.Active == "failed" || u.Sub == "auto-restart" || (u.Active == "inactive" && fresh):
			return u, fmt.Errorf("%w: systemd reports %s", ErrExited, u)
		case time.Now().After(deadline):
			return u, fmt.Errorf("not active after %s: systemd reports %s", h.cfg.Health.Timeout, u)
		}
		select {
		case <-ctx.Done():
			return u, ctx.Err()
		case <-time.After(h.cfg.Health.Interval):
		}
		var err error
		if u, err = h.unitState(ctx, port); err != nil {
			return u, err
		}
	}
}

// stillSame fails if the process that became active is gone: it exited,
// or systemd restarted it.
func (h *hostRun) stillSame(ctx context.Context, port int, was unitState) error {
	u, err := h.unitState(ctx, port)
	if err != nil {
		return nil // cannot tell; let the health check decide
	}
	switch {
	case u.MainPID != was.MainPID || u.Restarts != was.Restarts:
		return fmt.Errorf("%w: systemd reports %s (was pid %d)", ErrRestarted, u, was.MainPID)
	case !u.running():
		return fmt.Errorf("%w: systemd reports %s", ErrExited, u)
	}
	return nil
}

// waitStable requires the instance to stay healthy, on the same process,
// for min_healthy.
func (h *hostRun) waitStable(ctx context.Context, port int, was unitState) error {
	end := time.Now().Add(h.cfg.Health.MinHealthy)
	tick := min(max(h.cfg.Health.MinHealthy/4, h.cfg.Health.Interval), time.Second)
	for {
		if err := h.stillSame(ctx, port, was); err != nil {
			return err
		}
		if err := h.health.Check(ctx, port); err != nil {
			return fmt.Errorf("unhealthy within min_healthy %s: %w", h.cfg.Health.MinHealthy, err)
		}
		left := time.Until(end)
		if left <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(tick, left)):
		}
	}
}

// appFailure builds the error for an instance that did not come up, with
// what the app and systemd said since the restart.
func (h *hostRun) appFailure(ctx context.Context, port int, step string, cause error, offsets map[string]int64, since uint64) error {
	se := &StepError{Host: h.host, Port: port, Step: step, Err: cause}
	if ctx.Err() != nil {
		return se
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var b strings.Builder
	if u, err := h.unitState(cctx, port); err == nil {
		fmt.Fprintf(&b, "systemd: %s is %s\n", h.cfg.UnitName(port), u)
	}
	if res, err := h.conn.Run(cctx, h.cmds.appOutput(port, offsets, since, 20), nil); err == nil || len(res.Stdout) > 0 {
		b.Write(res.Stdout)
	}
	se.Output = b.String()
	return se
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
