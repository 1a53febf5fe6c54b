package deployer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
)

// group rolls instances together (strategy.max_unavailable; usually one):
// capacity check and drain for all of them in one write, then each is
// restarted and waited for (new process, health, stability) at once. On
// every way out a drained instance is put back if it is healthy and left
// out if not; a healthy one goes back with the next group's drain.
func (h *hostRun) group(ctx context.Context, ports []int) error {
	if err := h.drain(ctx, ports); err != nil {
		return err
	}
	errs := make([]error, len(ports))
	switch {
	case h.stopped(ctx):
		for i, port := range ports {
			errs[i] = &StepError{Host: h.host, Port: port, Step: StepRestart, Err: ErrStopped}
		}
	case len(ports) == 1:
		errs[0] = h.instance(ctx, ports[0])
	default:
		errs = h.instances(ctx, ports)
	}
	var failed []error
	for i, port := range ports {
		if errs[i] == nil {
			// Healthy: it goes back into Nginx with the next group's
			// drain (one reload for both), or on its own at the end;
			// unless it was drained by hand.
			if !h.keepOut(port) {
				h.pending = append(h.pending, port)
			}
			continue
		}
		failed = append(failed, h.afterFailure(ctx, port, errs[i]))
	}
	if len(failed) == 1 {
		return failed[0]
	}
	return errors.Join(failed...)
}

// instances brings the instances up at once (instance), each one's
// error at its index.
func (h *hostRun) instances(ctx context.Context, ports []int) []error {
	errs := make([]error, len(ports))
	var wg sync.WaitGroup
	for i, port := range ports {
		wg.Go(func() { errs[i] = h.instance(ctx, port) })
	}
	wg.Wait()
	return errs
}

// instance brings one drained instance up on the new release: restart,
// wait for the new process, health, stability. It may run beside the
// others of its group.
func (h *hostRun) instance(ctx context.Context, port int) error {
	mark, err := h.restart(ctx, port)
	if err != nil {
		return h.appFailure(ctx, port, StepRestart, err, mark)
	}
	h.mu.Lock()
	h.restarted = append(h.restarted, port)
	h.mu.Unlock()

	t0 := time.Now()
	h.emit(port, StepActive, StatusStart, t0, "")
	now, err := h.waitActive(ctx, h.portState(port), mark.before, mark.after)
	if err != nil {
		h.emit(port, StepActive, StatusFail, t0, err.Error())
		return h.appFailure(ctx, port, StepActive, err, mark)
	}
	h.emit(port, StepActive, statusOf(now), t0, activeNote(now))

	t0 = time.Now()
	h.emit(port, StepHealth, StatusStart, t0, "")
	alive := func(ctx context.Context) error { return stillSame(ctx, h.portState(port), now) }
	if err := h.health.Wait(ctx, port, h.cfg.Health.Timeout, h.cfg.Health.Interval, alive); err != nil {
		h.emit(port, StepHealth, StatusFail, t0, err.Error())
		return h.appFailure(ctx, port, StepHealth, err, mark)
	}
	h.emit(port, StepHealth, StatusOK, t0, "")

	if h.cfg.Health.MinHealthy > 0 {
		t0 = time.Now()
		h.emit(port, StepStable, StatusStart, t0, "")
		if err := h.waitStable(ctx, port, now); err != nil {
			h.emit(port, StepStable, StatusFail, t0, err.Error())
			return h.appFailure(ctx, port, StepStable, err, mark)
		}
		h.emit(port, StepStable, StatusOK, t0, "")
	}
	return nil
}

// drain checks capacity and takes the group's instances out of Nginx,
// putting the pending ones back in the same write; then waits for their
// requests. A file changed by someone else is read again and capacity
// checked again.
func (h *hostRun) drain(ctx context.Context, ports []int) error {
	port := ports[0] // the group's events and errors name its first
	for attempt := 0; ; attempt++ {
		t0 := time.Now()
		h.emit(port, StepCapacity, StatusStart, t0, "")
		serving, err := h.serving(ctx)
		if err != nil {
			return &StepError{Host: h.host, Port: port, Step: StepCapacity, Err: err}
		}
		need := max(h.minServing(), 1)
		out := 0
		for _, p := range ports {
			if serving[p] {
				out++
			}
		}
		if out > 0 && len(serving)-out < need {
			err := fmt.Errorf("%w: draining %s would leave %d serving; it must leave %s%s", ErrCapacity, portList(ports), len(serving)-out, servingFloor(h.minServing()), h.handNote())
			h.emit(port, StepCapacity, StatusFail, t0, err.Error())
			return &StepError{Host: h.host, Port: port, Step: StepCapacity, Err: err}
		}
		h.emit(port, StepCapacity, StatusOK, t0, fmt.Sprintf("%d serving", len(serving)))

		err = h.apply(ctx, upstreamChange{drain: ports, undrain: h.pending})
		if errors.Is(err, errUpstreamChanged) && attempt < 2 {
			continue // read again: check capacity on the new content
		}
		if err != nil {
			return &StepError{Host: h.host, Port: port, Step: StepDrain, Err: err}
		}
		h.pending = nil
		return nil
	}
}

// afterFailure decides, on the way out of a drained instance that did not
// finish (even if ctx was cancelled), whether it goes back into Nginx:
// only if healthy. An instance interrupted while booting gets
// health.timeout (at most 30s) to come up; a failed one is not waited for.
func (h *hostRun) afterFailure(ctx context.Context, port int, err error) error {
	if h.keepOut(port) {
		return err
	}
	wait := min(h.cfg.Health.Timeout, 30*time.Second)
	if err != nil && ctx.Err() == nil {
		wait = h.cfg.Health.AttemptTimeout
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wait+10*time.Second)
	defer cancel()
	if cerr := h.health.Wait(cctx, port, wait, h.cfg.Health.Interval, nil); cerr != nil {
		h.leftOut = append(h.leftOut, port)
		why := fmt.Sprintf("left out of service: checked again for %s, still not healthy", wait)
		if errors.Is(cerr, ErrUnreachable) {
			why = "left out of service: " + cerr.Error()
		}
		h.emit(port, StepUndrain, StatusSkip, time.Time{}, why)
		var se *StepError
		if errors.As(err, &se) {
			se.LeftOut = true
		}
		return err
	}
	if uerr := h.apply(cctx, upstreamChange{undrain: []int{port}}); uerr != nil && err == nil {
		return &StepError{Host: h.host, Port: port, Step: StepUndrain, Err: uerr}
	}
	return err
}

// undrainPending puts the pending instances back into Nginx if they are
// still healthy, and leaves out those that are not. It runs on every way
// out of the host, even after an interrupt.
func (h *hostRun) undrainPending(ctx context.Context) error {
	if len(h.pending) == 0 {
		return nil
	}
	ports := h.pending
	h.pending = nil
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.Health.AttemptTimeout+30*time.Second)
	defer cancel()
	var back []int
	var errs []error
	for _, port := range ports {
		if herr := h.health.Wait(cctx, port, h.cfg.Health.AttemptTimeout, h.cfg.Health.Interval, nil); herr != nil {
			h.leftOut = append(h.leftOut, port)
			h.emit(port, StepUndrain, StatusSkip, time.Time{}, "left out of service: "+herr.Error())
			errs = append(errs, &StepError{Host: h.host, Port: port, Step: StepUndrain, Err: herr, LeftOut: true})
			continue
		}
		back = append(back, port)
	}
	if len(back) > 0 {
		if uerr := h.apply(cctx, upstreamChange{undrain: back}); uerr != nil {
			errs = append(errs, &StepError{Host: h.host, Port: back[0], Step: StepUndrain, Err: uerr})
		}
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// restart restarts the instance and says where its output starts.
func (h *hostRun) restart(ctx context.Context, port int) (restartMark, error) {
	t0 := time.Now()
	h.emit(port, StepRestart, StatusStart, t0, "")
	logs, err := h.logFiles(ctx, port)
	if err != nil {
		h.emit(port, StepRestart, StatusFail, t0, err.Error())
		return restartMark{}, err
	}
	id := h.targets[port]
	h.mu.Lock()
	if id != "" && !slices.Contains(h.switched, port) {
		// Switched by the restart script, in the same command; on a
		// failure it may have been: a revert puts it back either way.
		h.switched = append(h.switched, port)
	}
	h.mu.Unlock()
	mark, err := h.remote.Restart(ctx, port, logs, id)
	if err != nil {
		h.emit(port, StepRestart, StatusFail, t0, err.Error())
		return mark, err
	}
	if id != "" {
		h.emit(port, StepSwitch, StatusOK, time.Time{}, "release "+id+" (with the restart)")
	}
	h.emit(port, StepRestart, StatusOK, t0, "")
	return mark, nil
}

// logFiles are the instance's log files: from the config, or else from its
// unit file's StandardOutput=/StandardError=, read once for every instance.
func (h *hostRun) logFiles(ctx context.Context, port int) ([]string, error) {
	if files := h.cfg.LogFiles(port); len(files) > 0 {
		return files, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.logs[port]; !ok {
		// Every port an instance may have (a surge's spare ones too).
		ports := h.cfg.AllPorts()
		if !slices.Contains(ports, port) {
			ports = append(ports, port)
		}
		logs, err := h.remote.LogFiles(ctx, ports)
		if err != nil {
			return nil, err
		}
		if h.logs == nil {
			h.logs = map[int][]string{}
		}
		maps.Copy(h.logs, logs)
	}
	return h.logs[port], nil
}

// stateFunc reads one unit's state.
type stateFunc func(context.Context) (unitState, error)

// portState reads the state of the instance on port.
func (h *hostRun) portState(port int) stateFunc {
	return func(ctx context.Context) (unitState, error) { return h.remote.UnitState(ctx, port) }
}

// waitActive waits until systemd runs a new process for the instance (not
// the old one): active, with another MainPID or start time. u is its state
// right after the restart.
func (h *hostRun) waitActive(ctx context.Context, state stateFunc, before, u unitState) (unitState, error) {
	deadline := time.Now().Add(h.cfg.Health.Timeout)
	retried := false
	for {
		fresh := u.MainPID != before.MainPID || u.StartedAt != before.StartedAt
		switch {
		case u.running() && fresh:
			u.setupRetried = retried
			return u, nil
		case u.Sub == "auto-restart" && u.ExitStatus == exitCgroup && u.Restarts < 3 && time.Now().Before(deadline):
			// systemd's own failure, before the app ran: wait for its
			// restart (a few times at most; the app's crash is not this).
			retried = true
		case u.Active == "failed" || u.Sub == "auto-restart" || (u.Active == "inactive" && fresh):
			return u, fmt.Errorf("%w: systemd reports %s", ErrExited, u)
		case time.Now().After(deadline):
			return u, fmt.Errorf("not active within health.timeout %s: systemd reports %s", h.cfg.Health.Timeout, u)
		}
		select {
		case <-ctx.Done():
			return u, ctx.Err()
		case <-time.After(h.cfg.Health.Interval):
		}
		var err error
		if u, err = state(ctx); err != nil {
			return u, err
		}
	}
}

// stillSame fails if the process that became active is gone: it exited,
// or systemd restarted it.
func stillSame(ctx context.Context, state stateFunc, was unitState) error {
	u, err := state(ctx)
	if errors.Is(err, ErrUnreachable) {
		return err
	}
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
	tick := min(max(h.cfg.Health.MinHealthy/4, h.cfg.Health.Interval), time.Second)
	return holdFor(ctx, h.portState(port), was, h.cfg.Health.MinHealthy, tick, func(ctx context.Context) error {
		err := h.health.Check(ctx, port)
		switch {
		case err == nil || errors.Is(err, errReconnected):
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("interrupted while it had to stay healthy for %s: %w", h.cfg.Health.MinHealthy, ctx.Err())
		case errors.Is(err, ErrUnreachable):
			return err
		}
		return fmt.Errorf("unhealthy within min_healthy %s: %w", h.cfg.Health.MinHealthy, err)
	})
}

// holdFor requires the process that became active (was) to run on,
// without a restart, for d, read every tick; check, when not nil, is
// asked too at each reading and fails it with its error.
func holdFor(ctx context.Context, state stateFunc, was unitState, d, tick time.Duration, check func(context.Context) error) error {
	end := time.Now().Add(d)
	for {
		if err := stillSame(ctx, state, was); err != nil {
			return err
		}
		if check != nil {
			if err := check(ctx); err != nil {
				return err
			}
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

// settleTimeout bounds the wait for systemd to be done with a unit whose
// process died: its restarts, then running again (the same process for
// settleRunning) or given up on.
const (
	settleTimeout = 15 * time.Second
	settleRunning = 3 * time.Second
)

// settle reads the unit's state; if its process died (cause), it waits
// until systemd is done restarting it, at most settleTimeout, and says how
// long it waited (0: the first reading was final).
func (h *hostRun) settle(ctx context.Context, state stateFunc, cause error) (unitState, time.Duration, error) {
	t0 := time.Now()
	u, err := state(ctx)
	if err != nil || !(errors.Is(cause, ErrExited) || errors.Is(cause, ErrRestarted)) {
		return u, 0, err
	}
	// A crash loop runs between its crashes: running counts as settled
	// only once the same process has run for settleRunning.
	since := time.Now()
	for time.Since(t0) < settleTimeout {
		if u.Active == "failed" || u.Active == "inactive" || (u.running() && time.Since(since) >= settleRunning) {
			break
		}
		select {
		case <-ctx.Done():
			return u, time.Since(t0), nil
		case <-time.After(250 * time.Millisecond):
		}
		next, err := state(ctx)
		if err != nil {
			continue
		}
		if next.MainPID != u.MainPID || !next.running() {
			since = time.Now()
		}
		u = next
	}
	return u, time.Since(t0), nil
}

// appFailure builds the error for an instance that did not come up, with
// what the app and systemd said since the restart.
func (h *hostRun) appFailure(ctx context.Context, port int, step StepName, cause error, mark restartMark) error {
	se := &StepError{Host: h.host, Port: port, Step: step, Err: cause}
	return h.failure(ctx, se, h.cfg.UnitName(port), h.portState(port), func(ctx context.Context) (string, error) {
		return h.remote.AppOutput(ctx, port, mark, appOutputLines)
	})
}

// failure completes se, the failure of unit's step, with what the app and
// systemd said since the restart (said reads it), once systemd is done
// restarting it (state reads it).
func (h *hostRun) failure(ctx context.Context, se *StepError, unit string, state stateFunc, said func(context.Context) (string, error)) error {
	cause, step := se.Err, se.Step
	if ctx.Err() != nil {
		se.Err = fmt.Errorf("interrupted (%v) during %s: %w", context.Cause(ctx), step, cause)
		return se
	}
	if errors.Is(cause, ErrUnreachable) || errors.Is(cause, sshexec.ErrConnectionLost) {
		return se // not the app's doing: nothing of its to show
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout+10*time.Second)
	defer cancel()
	var out string
	if u, waited, err := h.settle(cctx, state, cause); err == nil {
		out = fmt.Sprintf("systemd: %s is %s\n", unit, u)
		if waited > 0 {
			se.Err = fmt.Errorf("%w; %s later systemd reports %s", cause, waited.Round(time.Millisecond), u)
		}
	}
	if s, err := said(cctx); err == nil {
		out += s
	}
	se.Output = out
	return se
}
