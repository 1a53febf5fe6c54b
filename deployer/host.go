package deployer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/rollout-dev/rollout/healthcheck"
)

// hostRun deploys (or scales) one host: its hooks, the reconcile of its
// instances, then each instance in turn.
type hostRun struct {
	d      *Deployer
	sess   *session // whose cfg follows the run's (a surge moves ports)
	cfg    *Config
	host   string
	remote remote
	bal    balancer // where its instances are served from
	health healthcheck.HTTP
	stop   <-chan struct{}
	// mu guards what the instances of a group change at once: logs,
	// restarted, switched.
	mu   sync.Mutex
	logs map[int][]string // per port, from the unit files, read once

	// servers are the host's instances as its balancer last said.
	servers servers
	// pending are instances that came back healthy and are still
	// drained: they go back into service in the same change that drains
	// the next instance, or on their own when there is none.
	pending []int
	// added are instances the reconcile started on this release.
	added map[int]bool

	restarted, leftOut []int

	// handDrained are the instances drained by hand (rollout drain), as
	// read under the lock: they stay out of service after a restart.
	// handPorts are those a drain or undrain changed.
	handDrained map[int]HandDrain
	handPorts   []int
	// byHand: this run is a rollout drain (min_serving as configured).
	byHand bool

	// targets are the releases instances switch to just before their
	// restart (release: set); nil: no switching. workerTargets are the
	// same for the workers' units.
	targets       map[int]string
	workerTargets map[string]string
	// workersSwitched are the workers' units switched so far, in order;
	// workersRestarted those restarted and stable; wlogs their log files,
	// read once.
	workersSwitched, workersRestarted []string
	// workersSkipped already ran the target release (an earlier run's).
	workersSkipped []string
	wlogs          map[string][]string
	// rel is what each instance ran when the run began.
	rel releaseState
	// switched are the instances switched so far, in order.
	switched []int
	// skipped are instances that already ran their target.
	skipped []int
	// noHooks: the host's hooks do not run (a rollback).
	noHooks bool

	// begun: its hooks ran and its instances are queued; queue: those
	// still to restart, in order; finished: none is left, and its
	// after-hooks ran. took is the time spent on it, over every batch.
	begun, finished bool
	queue           []int
	took            time.Duration
}

// setRelease makes the run switch every instance to release id (when not
// ""); rel is the host's release layout before the run.
func (h *hostRun) setRelease(id string, rel releaseState) {
	if id == "" {
		return
	}
	h.rel = rel
	h.targets = map[int]string{}
	for _, p := range h.cfg.Ports() {
		h.targets[p] = id
	}
	h.workerTargets = map[string]string{}
	for _, u := range h.cfg.WorkerUnits() {
		h.workerTargets[u] = id
	}
}

// upToDate reports whether an instance already runs its target release,
// is in Nginx and healthy: a rerun (without --force) leaves it alone.
func (h *hostRun) upToDate(port int, serving map[int]bool) bool {
	id := h.targets[port]
	return id != "" && !h.d.Force && h.rel.links[port] == id && h.rel.running[port] == id && serving[port]
}

// switchTo points the instance's link at release id.
func (h *hostRun) switchTo(ctx context.Context, port int, id string) error {
	t0 := time.Now()
	h.emit(port, StepSwitch, StatusStart, t0, "")
	if err := h.remote.SwitchInstance(ctx, port, id); err != nil {
		h.emit(port, StepSwitch, StatusFail, t0, err.Error())
		return &StepError{Host: h.host, Port: port, Step: StepSwitch, Err: err}
	}
	if !slices.Contains(h.switched, port) {
		h.switched = append(h.switched, port)
	}
	h.emit(port, StepSwitch, StatusOK, t0, "release "+id)
	return nil
}

// moveCurrent points the host's current link at release id.
func (h *hostRun) moveCurrent(ctx context.Context, id string) error {
	if err := h.remote.RecordRelease(ctx, nil, id, nil); err != nil {
		return &StepError{Host: h.host, Step: StepRelease, Err: fmt.Errorf("point current at %s: %w", id, err)}
	}
	return nil
}

// revert restarts ports (switched by a failed run) onto their targets,
// one at a time with the deploy's gates.
func (h *hostRun) revert(ctx context.Context, ports []int) (err error) {
	defer func() {
		if perr := h.undrainPending(ctx); perr != nil && err == nil {
			err = perr
		}
	}()
	srv, err := h.bal.read(ctx)
	if err != nil {
		return &StepError{Host: h.host, Step: StepRevert, Err: err}
	}
	h.servers = srv
	for i, port := range ports {
		if h.targets[port] == "" {
			// Those before it are reverted first.
			if err := h.groups(ctx, ports[:i]); err != nil {
				return err
			}
			return &StepError{Host: h.host, Port: port, Step: StepRevert, Err: fmt.Errorf("ran no release before this run: nothing to go back to")}
		}
	}
	if err := h.groups(ctx, ports); err != nil {
		return err
	}
	return h.undrainPending(ctx)
}

func newHostRun(d *Deployer, s *session, stop <-chan struct{}) *hostRun {
	return &hostRun{
		d: d, sess: s, cfg: s.cfg, host: s.host, remote: s.r, bal: s.bal, stop: stop,
		health: newHealthCheck(s.cfg, s.bal.dial, s.r), added: map[int]bool{}, handDrained: s.handDrained,
	}
}

// newHealthCheck checks instances at nginx.server_address:PORT, the socket
// the balancer sends requests to, dialled from where it is (dial); r is
// the app host, asked whether its connection is alive when a check times
// out.
func newHealthCheck(cfg *Config, dial dialer, r interface {
	Alive(context.Context) (bool, error)
}) healthcheck.HTTP {
	return healthcheck.HTTP{Dial: dial, Host: cfg.Nginx.ServerAddress, Path: cfg.Health.Path,
		Status: cfg.Health.Status, AttemptTimeout: cfg.Health.AttemptTimeout,
		Permanent: func(err error) bool { return errors.Is(err, ErrUnreachable) },
		Explain: func(ctx context.Context, err error) error {
			// A check that timed out may mean the connection went silent
			// (packets dropped, no reset): ask it before blaming the app.
			var ne net.Error
			if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
				return err
			}
			switch reconnected, aerr := r.Alive(ctx); {
			case aerr != nil && ctx.Err() == nil:
				return aerr
			case reconnected:
				return fmt.Errorf("%w: %w", errReconnected, err)
			}
			return err
		}}
}

// errReconnected: a check failed because the connection had gone; rollout
// reconnected, and the check is worth making again.
var errReconnected = errors.New("the connection was lost and made again")

func (h *hostRun) emit(port int, step StepName, status StepStatus, t0 time.Time, msg string) {
	e := Event{Host: h.host, Port: port, Step: step, Status: status, Message: msg}
	if status != StatusStart && !t0.IsZero() {
		e.Duration = time.Since(t0)
	}
	h.d.emit(e)
}

// stopped reports whether the host must not start anything more: another
// host failed, or the deploy was interrupted (seen here at once, not only
// once the fleet has heard of it).
func (h *hostRun) stopped(ctx context.Context) bool { return ctx.Err() != nil || stopped(h.stop) }

// deploy rolls the host's instances onto the release, up to upto of them
// (-1: all, and the host finishes). The first call runs the host's
// before-hooks, reconciles its instances with the config and orders them
// (those serving nothing first); the one that rolls the last instance runs
// its after-hooks. Every instance that came back healthy is back in Nginx
// when it returns, so between batches the host is stable.
func (h *hostRun) deploy(ctx context.Context, upto int) (err error) {
	// On every way out, an instance that came back healthy is put back.
	defer func() {
		if perr := h.undrainPending(ctx); perr != nil && err == nil {
			err = perr
		}
	}()
	if !h.begun {
		h.begun = true
		if err := h.begin(ctx); err != nil {
			return err
		}
	}
	n := len(h.queue)
	if upto >= 0 {
		n = min(max(upto-h.done(), 0), n)
	}
	next := h.queue[:n]
	h.queue = h.queue[n:]
	if err := h.groups(ctx, next); err != nil {
		return err
	}
	if len(h.queue) > 0 {
		return nil
	}
	if err := h.undrainPending(ctx); err != nil {
		return err
	}
	if err := h.workers(ctx); err != nil {
		return err
	}
	for _, hook := range h.hostHooks(h.cfg.Hooks.HostAfter) {
		if err := h.hook(ctx, "after", hook); err != nil {
			return err
		}
	}
	h.finished = true
	return nil
}

// begin runs the host's before-hooks, reconciles its instances and queues
// those to restart, in order.
func (h *hostRun) begin(ctx context.Context) error {
	for _, hook := range h.hostHooks(h.cfg.Hooks.HostBefore) {
		if err := h.hook(ctx, "before", hook); err != nil {
			return err
		}
	}
	if _, err := h.reconcile(ctx); err != nil {
		return err
	}
	st, err := h.remote.Inspect(ctx, h.cfg.Ports())
	if err == nil {
		err = h.adopt(ctx)
	}
	if err == nil && h.cfg.surging() {
		err = h.beginSurge(ctx)
	}
	if err != nil {
		return &StepError{Host: h.host, Step: StepCapacity, Err: err}
	}
	serving, _ := h.serving(ctx)
	for _, port := range h.order(st, serving) {
		switch {
		case h.upToDate(port, serving):
			h.emit(port, StepRestart, StatusSkip, time.Time{}, "already runs release "+h.targets[port]+", healthy and in service (--force restarts it)")
			h.skipped = append(h.skipped, port)
		case h.added[port]:
			h.emit(port, StepRestart, StatusSkip, time.Time{}, "started on this release by the scale step")
			h.restarted = append(h.restarted, port)
		case h.d.Only != nil && !slices.Contains(h.d.Only, port):
			h.skipped = append(h.skipped, port) // rollout restart --port: another instance
		default:
			h.queue = append(h.queue, port)
		}
	}
	return nil
}

// done is how many of the host's instances are on the release: all but
// those still queued.
func (h *hostRun) done() int {
	if !h.begun {
		return 0
	}
	return len(h.cfg.Ports()) - len(h.queue)
}

// groups rolls ports in order, strategy.max_unavailable of them at a time
// (group), or with strategy.max_surge that many slots at a time moved to
// their other ports (surgeGroup), and stops at the first group that
// fails.
func (h *hostRun) groups(ctx context.Context, ports []int) error {
	k, roll := h.cfg.Unavailable(len(h.cfg.Ports())), h.group
	if h.cfg.surging() {
		k, roll = h.cfg.Surge(len(h.cfg.Ports())), h.surgeGroup
	}
	for g := range slices.Chunk(ports, k) {
		if h.stopped(ctx) {
			return &StepError{Host: h.host, Port: g[0], Step: StepCapacity, Err: ErrStopped}
		}
		if err := roll(ctx, g); err != nil {
			return err
		}
	}
	return nil
}

// hostHooks are the hooks to run, none for a rollback.
func (h *hostRun) hostHooks(hooks []string) []string {
	if h.noHooks {
		return nil
	}
	return hooks
}

// scale reconciles the host's instances and restarts nothing.
func (h *hostRun) scale(ctx context.Context) error {
	changed, err := h.reconcile(ctx)
	if err == nil && !changed {
		h.emit(0, StepScale, StatusOK, time.Time{}, fmt.Sprintf("already %d instances", len(h.cfg.Ports())))
	}
	return err
}

// adopt reads the host's servers and checks that every instance is one,
// but those drained by hand (Caddy holds no trace of them).
func (h *hostRun) adopt(ctx context.Context) error {
	srv, err := h.bal.read(ctx)
	if err != nil {
		return err
	}
	h.servers = srv
	for _, p := range notIn(srv, h.cfg.Ports()) {
		if _, ok := h.handDrained[p]; !ok {
			return fmt.Errorf("%s has no server for %s:%d", h.bal, h.cfg.Nginx.ServerAddress, p)
		}
	}
	return nil
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
// pending ones are back: in service as the balancer last said (or
// pending), and passing their health check now. A balancer changed by
// someone else is caught at the next change, and the check made again.
func (h *hostRun) serving(ctx context.Context) (map[int]bool, error) {
	out := h.healthy(ctx)
	for p := range out {
		if h.servers[p] && !slices.Contains(h.pending, p) {
			delete(out, p)
		}
	}
	return out, nil
}

// order puts instances that serve nothing now first: restarting them takes
// nothing out of service.
func (h *hostRun) order(st hostState, serving map[int]bool) []int {
	up := func(p int) bool { return serving[p] && st.units[p].running() }
	ports := h.cfg.Ports()
	sort.SliceStable(ports, func(i, j int) bool { return !up(ports[i]) && up(ports[j]) })
	return ports
}
