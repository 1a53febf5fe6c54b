package deployer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// upstreamChange is one write of the upstream file: instances to mark down
// (drain) and to put back (undrain), with one Nginx reload for all.
type upstreamChange struct {
	drain, undrain []int
	// remove are instances taken out of service and out of the
	// balancer's servers (their requests in flight waited for, as a
	// drain's); undrain adds an instance it does not list (a surge).
	remove []int
}

// out are the instances the change takes out of service.
func (c upstreamChange) out() []int { return append(slices.Clone(c.drain), c.remove...) }

func (c upstreamChange) step(port int) StepName {
	if slices.Contains(c.out(), port) {
		return StepDrain
	}
	return StepUndrain
}

func (c upstreamChange) ports() []int {
	ports := append(c.out(), c.undrain...)
	slices.Sort(ports)
	return ports
}

// note says what else the write did, for the event of one port; how is
// "one reload" (or, through HAProxy's API, "one change").
func (c upstreamChange) note(port int, how string) string {
	var with []string
	for _, q := range c.ports() {
		if q != port {
			with = append(with, fmt.Sprintf("%s of %d", c.step(q), q))
		}
	}
	if len(with) == 0 {
		return ""
	}
	return how + " with the " + strings.Join(with, ", ")
}

// apply makes the change on the host's balancer, from its servers as
// rollout last read or changed them, in one step (one Nginx write and
// reload, one HAProxy call), then waits for the drained instances'
// requests in flight (the wait-drain step). An undrain-only change retries
// once on a balancer changed by someone else; a drain returns
// errUpstreamChanged for the caller to check capacity again on the
// balancer as it is now.
func (h *hostRun) apply(ctx context.Context, change upstreamChange) error {
	t0 := time.Now()
	for _, p := range change.ports() {
		h.emit(p, change.step(p), StatusStart, t0, "")
	}
	var wait drainWait
	var err error
	for attempt := 0; ; attempt++ {
		to := h.servers.with(true, change.drain...).with(false, change.undrain...).without(change.remove...)
		wait, err = h.change(ctx, to, change.out())
		if !errors.Is(err, errUpstreamChanged) || len(change.out()) > 0 || attempt > 0 {
			break
		}
	}
	took := time.Since(t0) - wait.waited
	for i, p := range change.ports() {
		e := Event{Host: h.host, Port: p, Step: change.step(p), Status: StatusOK, Duration: took, Message: change.note(p, h.bal.how())}
		switch {
		case err != nil:
			e.Status, e.Message = StatusFail, err.Error()
		case len(wait.notes) > 0 && i == 0:
			// What the change found and set right, once per change.
			e.Status, e.Message = StatusWarn, strings.Join(append(slices.Clip(wait.notes), e.Message), "; ")
			e.Message = strings.TrimSuffix(e.Message, "; ")
		}
		h.d.emit(e)
	}
	if err != nil || len(change.out()) == 0 {
		return err
	}
	for _, p := range change.out() {
		e := Event{Host: h.host, Port: p, Step: StepWaitDrain, Status: StatusOK, Duration: wait.waited, Message: "no requests in flight"}
		if wait.open > 0 {
			e.Status = StatusWarn
			e.Message = fmt.Sprintf("drain timeout %s: %d connections still open, restarting anyway", h.cfg.DrainTimeout, wait.open)
		}
		h.d.emit(e)
	}
	return nil
}

// change makes the host's servers to. When the balancer was changed by
// someone else, it reads it again and returns errUpstreamChanged.
func (h *hostRun) change(ctx context.Context, to servers, drained []int) (drainWait, error) {
	wait, err := h.bal.change(ctx, h.servers, to, drained)
	if errors.Is(err, errUpstreamChanged) {
		cur, rerr := h.bal.read(ctx)
		if rerr != nil {
			return wait, rerr
		}
		h.servers = cur
		return wait, errUpstreamChanged
	}
	if err != nil {
		return wait, err
	}
	h.servers = to
	return wait, nil
}
