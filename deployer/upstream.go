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
}

func (c upstreamChange) step(port int) StepName {
	if slices.Contains(c.drain, port) {
		return StepDrain
	}
	return StepUndrain
}

func (c upstreamChange) ports() []int {
	ports := append(slices.Clone(c.drain), c.undrain...)
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

// apply makes the change from the upstream file as rollout last read or
// wrote it, in one write and one Nginx reload, then waits for the drained
// instances' requests in flight (the wait-drain step). An undrain-only
// change retries once on a file changed by someone else; a drain returns
// errUpstreamChanged for the caller to check capacity again on the file as
// it is now.
func (h *hostRun) apply(ctx context.Context, change upstreamChange) error {
	t0 := time.Now()
	for _, p := range change.ports() {
		h.emit(p, change.step(p), StatusStart, t0, "")
	}
	var wait drainWait
	var err error
	for attempt := 0; ; attempt++ {
		var next []byte
		if next, err = h.changed(change); err == nil {
			wait, err = h.write(ctx, next, change.drain)
		}
		if !errors.Is(err, errUpstreamChanged) || len(change.drain) > 0 || attempt > 0 {
			break
		}
	}
	took := time.Since(t0) - wait.waited
	how := "one reload"
	if lb := h.cfg.LB; lb != nil && lb.Driver == lbHAProxy {
		how = "one change (no reload)"
	}
	for _, p := range change.ports() {
		e := Event{Host: h.host, Port: p, Step: change.step(p), Status: StatusOK, Duration: took, Message: change.note(p, how)}
		if err != nil {
			e.Status, e.Message = StatusFail, err.Error()
		}
		h.d.emit(e)
	}
	if err != nil || len(change.drain) == 0 {
		return err
	}
	for _, p := range change.drain {
		e := Event{Host: h.host, Port: p, Step: StepWaitDrain, Status: StatusOK, Duration: wait.waited, Message: "no requests in flight"}
		if wait.open > 0 {
			e.Status = StatusWarn
			e.Message = fmt.Sprintf("drain timeout %s: %d connections still open, restarting anyway", h.cfg.DrainTimeout, wait.open)
		}
		h.d.emit(e)
	}
	return nil
}

// changed is the upstream file with the change made.
func (h *hostRun) changed(change upstreamChange) ([]byte, error) {
	next := h.upstream
	for _, p := range change.ports() {
		var err error
		if next, err = setServerDown(next, h.cfg.Nginx.Upstream, h.cfg.Nginx.ServerAddress, p, change.step(p) == StepDrain); err != nil {
			return nil, fmt.Errorf("%s: %w", h.cfg.Nginx.UpstreamFile, err)
		}
	}
	return next, nil
}

// write replaces the upstream file with next. When the file changed under
// rollout, it reads it again and returns errUpstreamChanged.
func (h *hostRun) write(ctx context.Context, next []byte, drained []int) (drainWait, error) {
	wait, err := h.remote.WriteUpstream(ctx, h.upstream, next, drained)
	if errors.Is(err, errUpstreamChanged) {
		cur, rerr := h.remote.ReadUpstream(ctx)
		if rerr != nil {
			return wait, fmt.Errorf("read %s: %w", h.cfg.Nginx.UpstreamFile, rerr)
		}
		h.upstream = cur
		return wait, errUpstreamChanged
	}
	if err != nil {
		return wait, err
	}
	h.upstream = next
	return wait, nil
}
