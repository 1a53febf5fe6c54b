package deployer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"
)

// reconcile makes the host run the config's instances: a port missing from
// the upstream is enabled and started, must become active and healthy, and
// only then is added to the upstream; a port in the upstream but not in the
// config is drained (its requests finish), stopped, disabled and removed
// from the upstream. New instances come first, so capacity only grows
// before it shrinks; the last serving instance is never removed. A server
// line whose unit neither runs nor is enabled is someone else's: it is
// left alone. It reports whether it added or removed any instance.
func (h *hostRun) reconcile(ctx context.Context) (bool, error) {
	servers, err := h.bal.read(ctx)
	if err != nil {
		return false, &StepError{Host: h.host, Step: StepScale, Err: err}
	}
	h.servers = servers
	want := h.cfg.Ports()
	var surplus []int
	for p := range servers {
		if !slices.Contains(want, p) {
			surplus = append(surplus, p)
		}
	}
	// An instance drained by hand is one of ours even where its balancer
	// holds no trace of it (Caddy: out of service is out of the upstreams).
	for p := range h.handDrained {
		if _, listed := servers[p]; !listed && !slices.Contains(want, p) {
			surplus = append(surplus, p)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(surplus)))
	for _, p := range want {
		if _, ok := servers[p]; ok {
			continue
		}
		if _, ok := h.handDrained[p]; ok { // out by choice: it exists
			continue
		}
		if h.stopped(ctx) {
			return true, &StepError{Host: h.host, Port: p, Step: StepScale, Err: ErrStopped}
		}
		if err := h.addInstance(ctx, p); err != nil {
			return true, err
		}
	}
	removed := 0
	for _, p := range surplus {
		if h.stopped(ctx) {
			return true, &StepError{Host: h.host, Port: p, Step: StepScale, Err: ErrStopped}
		}
		ours, err := h.remote.IsInstance(ctx, p)
		if err != nil {
			return true, &StepError{Host: h.host, Port: p, Step: StepScale, Err: err}
		}
		if !ours {
			h.emit(p, StepScale, StatusWarn, time.Time{}, fmt.Sprintf("%s:%d is in the upstream but %s is neither running nor enabled: not one of ours, left alone",
				h.cfg.Nginx.ServerAddress, p, h.cfg.UnitName(p)))
			continue
		}
		if err := h.removeInstance(ctx, p); err != nil {
			return true, err
		}
		removed++
	}
	return removed > 0 || len(h.added) > 0, nil
}

// addInstance starts a new instance and, once it is active and healthy,
// adds it to the upstream. One that does not come up is stopped and
// disabled again, and the upstream is left as it was.
func (h *hostRun) addInstance(ctx context.Context, port int) error {
	t0 := time.Now()
	h.emit(port, StepScale, StatusStart, t0, "add")
	fail := func(err error) error {
		h.emit(port, StepScale, StatusFail, t0, err.Error())
		return err
	}
	if id := h.targets[port]; id != "" {
		if err := h.switchTo(ctx, port, id); err != nil {
			return fail(err)
		}
	}
	if err := h.remote.Start(ctx, port); err != nil {
		return fail(h.appFailure(ctx, port, StepScale, err, restartMark{}))
	}
	u, err := h.remote.UnitState(ctx, port)
	if err == nil {
		u, err = h.waitActive(ctx, h.portState(port), unitState{}, u)
	}
	if err == nil {
		alive := func(ctx context.Context) error { return stillSame(ctx, h.portState(port), u) }
		err = h.health.Wait(ctx, port, h.cfg.Health.Timeout, h.cfg.Health.Interval, alive)
	}
	if err != nil {
		err = h.appFailure(ctx, port, StepScale, err, restartMark{})
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if serr := h.remote.Stop(cctx, port); serr != nil {
			err = errors.Join(err, fmt.Errorf("stop and disable %s again: %w", h.cfg.UnitName(port), serr))
		}
		return fail(err)
	}
	if _, err := h.change(ctx, h.servers.with(false, port), nil); err != nil {
		return fail(&StepError{Host: h.host, Port: port, Step: StepScale, Err: fmt.Errorf("add to %s: %w", h.bal, err)})
	}
	h.added[port] = true
	h.emit(port, StepScale, StatusOK, t0, fmt.Sprintf("added: started, healthy (pid %d), in service", u.MainPID))
	return nil
}

// removeInstance drains a surplus instance, stops and disables it, and
// removes its server line; never the last healthy one.
func (h *hostRun) removeInstance(ctx context.Context, port int) error {
	t0 := time.Now()
	h.emit(port, StepScale, StatusStart, t0, "remove")
	fail := func(err error) error {
		h.emit(port, StepScale, StatusFail, t0, err.Error())
		return &StepError{Host: h.host, Port: port, Step: StepScale, Err: err}
	}
	healthy := h.healthy(ctx)
	serving := 0
	for _, p := range h.cfg.Ports() {
		if healthy[p] {
			serving++
		}
	}
	if serving == 0 {
		return fail(fmt.Errorf("%w: none of the instances to keep (%v) is healthy; not removing %d", ErrCapacity, h.cfg.Ports(), port))
	}
	if err := h.apply(ctx, upstreamChange{drain: []int{port}}); err != nil && !errors.Is(err, errUpstreamChanged) {
		return fail(fmt.Errorf("drain: %w", err))
	} else if err != nil {
		return fail(err)
	}
	if err := h.remote.Stop(ctx, port); err != nil {
		return fail(err)
	}
	if _, err := h.change(ctx, h.servers.without(port), nil); err != nil {
		return fail(fmt.Errorf("remove from %s: %w", h.bal, err))
	}
	if err := h.forgetHand(ctx, port); err != nil {
		return fail(err)
	}
	h.emit(port, StepScale, StatusOK, t0, "removed: drained, stopped, disabled, out of service")
	return nil
}
