package deployer

import (
	"bytes"
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
	Version  string        `json:"version"`
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
	rep := &Report{Version: d.Version}
	for _, h := range cfg.Hosts {
		rep.Hosts = append(rep.Hosts, HostReport{Host: h, Outcome: HostNotStarted})
	}
	finish := func(err error) (*Report, error) {
		rep.Duration = time.Since(start)
		result := "ok"
		if err != nil {
			result = "failed"
		}
		if herr := d.localHooks(context.WithoutCancel(ctx), cfg.Hooks.After, "after", result); herr != nil && err == nil {
			err = herr
		}
		return rep, err
	}

	if err := d.localHooks(ctx, cfg.Hooks.Before, "before", ""); err != nil {
		return finish(err)
	}

	conns, err := d.preflight(ctx)
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
				hr, took, herr := d.runHost(ctx, cfg.Hosts[i], conns[i], stop)
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

func (d *Deployer) runHost(ctx context.Context, host string, conn Conn, stop <-chan struct{}) (*hostRun, time.Duration, error) {
	t0 := time.Now()
	d.emit(Event{Host: host, Step: StepHost, Status: "start"})
	hr := d.newHostRun(host, conn, stop)
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

// preflight connects to every host in parallel and checks each one; it
// changes nothing.
func (d *Deployer) preflight(ctx context.Context) ([]Conn, error) {
	cfg := d.Config
	conns := make([]Conn, len(cfg.Hosts))
	errs := make([]error, len(cfg.Hosts))
	cmds := newCommands(cfg)
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
				_, err = c.Run(ctx, cmds.preflight(), nil)
				err = explainRemote(err, cfg)
			}
			if err != nil {
				errs[i] = &StepError{Host: host, Step: StepPreflight, Err: err}
				d.emit(Event{Host: host, Step: StepPreflight, Status: "fail", Duration: time.Since(t0), Message: err.Error()})
				return
			}
			d.emit(Event{Host: host, Step: StepPreflight, Status: "ok", Duration: time.Since(t0)})
		}()
	}
	wg.Wait()
	var merr *multierror.Error
	for _, e := range errs {
		if e != nil {
			merr = multierror.Append(merr, e)
		}
	}
	return conns, merr.ErrorOrNil()
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
		cmd.Env = append(os.Environ(), d.hookEnv("", result)...)
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
func (d *Deployer) hookEnv(host, result string) []string {
	ports := make([]string, 0, len(d.Config.Ports()))
	for _, p := range d.Config.Ports() {
		ports = append(ports, strconv.Itoa(p))
	}
	env := []string{
		"ROLLOUT_APP=" + d.Config.App,
		"ROLLOUT_VERSION=" + d.Version,
		"ROLLOUT_HOSTS=" + strings.Join(d.Config.Hosts, " "),
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
	logs   map[int][]string // per port, discovered from the unit file

	restarted, leftOut []int
}

func (d *Deployer) newHostRun(host string, conn Conn, stop <-chan struct{}) *hostRun {
	cfg := d.Config
	return &hostRun{
		d: d, cfg: cfg, host: host, conn: conn, cmds: newCommands(cfg), stop: stop,
		health: healthcheck.HTTP{Dial: conn.DialContext, Path: cfg.Health.Path, Status: cfg.Health.Status, AttemptTimeout: cfg.Health.AttemptTimeout},
		logs:   map[int][]string{},
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

// run deploys every instance of the host, between its hooks.
func (h *hostRun) run(ctx context.Context) error {
	for _, hook := range h.cfg.Hooks.HostBefore {
		if err := h.hook(ctx, "before", hook); err != nil {
			return err
		}
	}
	st, err := h.inspect(ctx)
	if err != nil {
		return &StepError{Host: h.host, Step: StepCapacity, Err: err}
	}
	for _, port := range h.order(ctx, st) {
		if h.stopped() {
			return &StepError{Host: h.host, Port: port, Step: StepCapacity, Err: ErrStopped}
		}
		if err := h.instance(ctx, port); err != nil {
			return err
		}
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
	res, err := h.conn.Run(ctx, hookCommand(hook, h.d.hookEnv(h.host, "")), nil)
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

// serving returns the instances that take traffic now: in the upstream,
// running, and passing their health check.
func (h *hostRun) serving(ctx context.Context, st hostState) map[int]bool {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[int]bool{}
	for _, p := range h.cfg.Ports() {
		if st.down[p] || !st.units[h.cfg.UnitName(p)].running() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if h.health.Check(ctx, p) == nil {
				mu.Lock()
				out[p] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// order puts instances that serve nothing now first: restarting them takes
// nothing out of service.
func (h *hostRun) order(ctx context.Context, st hostState) []int {
	serving := h.serving(ctx, st)
	ports := append([]int(nil), h.cfg.Ports()...)
	sort.SliceStable(ports, func(i, j int) bool { return !serving[ports[i]] && serving[ports[j]] })
	return ports
}

// instance rolls one instance: capacity check, drain, wait for its
// requests, restart, wait for the new process, health, stability, undrain.
// On every exit path a drained instance is put back if it is healthy and
// left out if not.
func (h *hostRun) instance(ctx context.Context, port int) (err error) {
	fail := func(step string, err error) error {
		return &StepError{Host: h.host, Port: port, Step: step, Err: err}
	}

	t0 := time.Now()
	h.emit(port, StepCapacity, "start", t0, "")
	st, err := h.inspect(ctx)
	if err != nil {
		return fail(StepCapacity, err)
	}
	serving := h.serving(ctx, st)
	need := max(h.cfg.MinServing(), 1)
	if serving[port] && len(serving)-1 < need {
		err := fmt.Errorf("%w: draining %d would leave %d serving, min_serving is %d", ErrCapacity, port, len(serving)-1, need)
		h.emit(port, StepCapacity, "fail", t0, err.Error())
		return fail(StepCapacity, err)
	}
	h.emit(port, StepCapacity, "ok", t0, fmt.Sprintf("%d serving", len(serving)))

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
		if uerr := h.setDown(cctx, port, false); uerr != nil && err == nil {
			err = fail(StepUndrain, uerr)
		}
	}()

	if st.down[port] {
		h.emit(port, StepDrain, "skip", time.Time{}, "already out of nginx")
	} else if err := h.setDown(ctx, port, true); err != nil {
		return fail(StepDrain, err)
	}
	drained = true

	if err := h.waitDrained(ctx, port); err != nil {
		return fail(StepWaitDrain, err)
	}
	if h.stopped() {
		return fail(StepRestart, ErrStopped)
	}

	before := st.units[h.cfg.UnitName(port)]
	offsets, since, err := h.restart(ctx, port)
	if err != nil {
		return h.appFailure(ctx, port, StepRestart, err, offsets, since)
	}
	h.restarted = append(h.restarted, port)

	t0 = time.Now()
	h.emit(port, StepActive, "start", t0, "")
	now, err := h.waitActive(ctx, port, before)
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

	if err := h.setDown(ctx, port, false); err != nil {
		return fail(StepUndrain, err)
	}
	drained = false
	return nil
}

// setDown drains (down=true) or undrains the instance in Nginx.
func (h *hostRun) setDown(ctx context.Context, port int, down bool) error {
	step := StepUndrain
	if down {
		step = StepDrain
	}
	t0 := time.Now()
	h.emit(port, step, "start", t0, "")
	err := func() error {
		res, err := h.conn.Run(ctx, "cat -- "+sshexec.Quote(h.cfg.Nginx.UpstreamFile), nil)
		if err != nil {
			return fmt.Errorf("read %s: %w", h.cfg.Nginx.UpstreamFile, err)
		}
		next, err := setServerDown(res.Stdout, h.cfg.Nginx.Upstream, h.cfg.Nginx.ServerAddress, port, down)
		if err != nil {
			return fmt.Errorf("%s: %w", h.cfg.Nginx.UpstreamFile, err)
		}
		if _, err := h.conn.Run(ctx, h.cmds.writeUpstream(), bytes.NewReader(next)); err != nil {
			return explainRemote(fmt.Errorf("update %s: %w", h.cfg.Nginx.UpstreamFile, err), h.cfg)
		}
		return nil
	}()
	if err != nil {
		h.emit(port, step, "fail", t0, err.Error())
		return err
	}
	h.emit(port, step, "ok", t0, "")
	return nil
}

// waitDrained waits until no connection to the instance is established,
// at most drain_timeout; then it goes on and says so.
func (h *hostRun) waitDrained(ctx context.Context, port int) error {
	t0 := time.Now()
	h.emit(port, StepWaitDrain, "start", t0, "")
	deadline := t0.Add(h.cfg.DrainTimeout)
	interval := 20 * time.Millisecond
	for {
		res, err := h.conn.Run(ctx, h.cmds.connections(port), nil)
		if err != nil {
			h.emit(port, StepWaitDrain, "fail", t0, err.Error())
			return fmt.Errorf("count connections: %w", err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
		if n == 0 {
			h.emit(port, StepWaitDrain, "ok", t0, "no requests in flight")
			return nil
		}
		if time.Now().After(deadline) {
			h.emit(port, StepWaitDrain, "warn", t0, fmt.Sprintf("drain timeout %s: %d connections still open, restarting anyway", h.cfg.DrainTimeout, n))
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
		interval = min(interval*2, 250*time.Millisecond)
	}
}

// restart restarts the instance and returns where its log files ended
// before, and the host's clock, to show its output since.
func (h *hostRun) restart(ctx context.Context, port int) (map[string]int64, uint64, error) {
	t0 := time.Now()
	h.emit(port, StepRestart, "start", t0, "")
	logs, err := h.logFiles(ctx, port)
	if err != nil {
		h.emit(port, StepRestart, "fail", t0, err.Error())
		return nil, 0, err
	}
	var since uint64
	if res, err := h.conn.Run(ctx, h.cmds.clock(), nil); err == nil {
		since, _ = strconv.ParseUint(strings.TrimSpace(string(res.Stdout)), 10, 64)
	}
	res, err := h.conn.Run(ctx, h.cmds.restart(port, logs), nil)
	offsets := map[string]int64{}
	for _, line := range strings.Split(string(res.Stdout), "\n") {
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
	if err != nil {
		err = explainRemote(err, h.cfg)
		h.emit(port, StepRestart, "fail", t0, err.Error())
		return offsets, since, err
	}
	h.emit(port, StepRestart, "ok", t0, "")
	return offsets, since, nil
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
	res, err := h.conn.Run(ctx, h.cmds.unitFile(port), nil)
	if err != nil {
		return nil, fmt.Errorf("read unit file: %w", err)
	}
	h.logs[port] = unitLogFiles(string(res.Stdout), h.cfg.UnitName(port))
	return h.logs[port], nil
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
// the old one): active, with another MainPID or start time.
func (h *hostRun) waitActive(ctx context.Context, port int, before unitState) (unitState, error) {
	deadline := time.Now().Add(h.cfg.Health.Timeout)
	for {
		u, err := h.unitState(ctx, port)
		if err != nil {
			return u, err
		}
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
