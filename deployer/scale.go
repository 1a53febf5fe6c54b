package deployer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
)

// StepScale is the step that adds and removes instances.
const StepScale = "scale"

func (c commands) enableNow(port int) string {
	return c.priv("systemctl enable --now -- " + sshexec.Quote(c.cfg.UnitName(port)))
}

func (c commands) disableNow(port int) string {
	return c.priv("systemctl disable --now -- " + sshexec.Quote(c.cfg.UnitName(port)))
}

// reconcile makes the host run the config's instances: a port missing from
// the upstream is enabled and started, must become active and healthy, and
// only then is added to the upstream; a port in the upstream but not in the
// config is drained (its requests finish), stopped, disabled and removed
// from the upstream. New instances come first, so capacity only grows
// before it shrinks; the last serving instance is never removed.
func (h *hostRun) reconcile(ctx context.Context) error {
	file := h.cfg.Nginx.UpstreamFile
	res, err := h.conn.Run(ctx, "cat -- "+sshexec.Quote(file), nil)
	if err != nil {
		return &StepError{Host: h.host, Step: StepScale, Err: fmt.Errorf("read %s: %w", file, err)}
	}
	h.upstream = res.Stdout
	servers, err := upstreamServers(h.upstream, h.cfg.Nginx.Upstream, h.cfg.Nginx.ServerAddress)
	if err != nil {
		return &StepError{Host: h.host, Step: StepScale, Err: fmt.Errorf("%s: %w", file, err)}
	}
	want := h.cfg.Ports()
	var surplus []int
	for p := range servers {
		if !slices.Contains(want, p) {
			surplus = append(surplus, p)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(surplus)))
	for _, p := range want {
		if _, ok := servers[p]; ok {
			continue
		}
		if h.stopped() {
			return &StepError{Host: h.host, Port: p, Step: StepScale, Err: ErrStopped}
		}
		if err := h.addInstance(ctx, p); err != nil {
			return err
		}
	}
	removed := 0
	for _, p := range surplus {
		if h.stopped() {
			return &StepError{Host: h.host, Port: p, Step: StepScale, Err: ErrStopped}
		}
		ours, err := h.isInstance(ctx, p)
		if err != nil {
			return &StepError{Host: h.host, Port: p, Step: StepScale, Err: err}
		}
		if !ours {
			h.emit(p, StepScale, "warn", time.Time{}, fmt.Sprintf("%s:%d is in the upstream but %s is neither running nor enabled: not one of ours, left alone",
				h.cfg.Nginx.ServerAddress, p, h.cfg.UnitName(p)))
			continue
		}
		if err := h.removeInstance(ctx, p); err != nil {
			return err
		}
		removed++
	}
	if removed == 0 && len(h.added) == 0 && h.d.ScaleOnly {
		h.emit(0, StepScale, "ok", time.Time{}, fmt.Sprintf("already %d instances", len(want)))
	}
	return nil
}

// isInstance reports whether the port's unit is one of the app's
// instances: running (or trying to) or enabled. A server line without one
// is someone else's.
func (h *hostRun) isInstance(ctx context.Context, port int) (bool, error) {
	unit := sshexec.Quote(h.cfg.UnitName(port))
	res, err := h.conn.Run(ctx, "systemctl is-active -- "+unit+"; systemctl is-enabled -- "+unit+" 2>/dev/null; true", nil)
	if err != nil {
		return false, fmt.Errorf("state of %s: %w", h.cfg.UnitName(port), err)
	}
	f := strings.Fields(string(res.Stdout))
	active := len(f) > 0 && f[0] != "inactive" && f[0] != "unknown"
	enabled := len(f) > 1 && f[1] == "enabled"
	return active || enabled, nil
}

func (h *hostRun) addInstance(ctx context.Context, port int) error {
	t0 := time.Now()
	h.emit(port, StepScale, "start", t0, "add")
	fail := func(err error) error {
		h.emit(port, StepScale, "fail", t0, err.Error())
		return err
	}
	if _, err := h.conn.Run(ctx, h.cmds.enableNow(port), nil); err != nil {
		return fail(h.appFailure(ctx, port, StepScale, explainRemote(fmt.Errorf("enable and start: %w", err), h.cfg), nil, 0))
	}
	u, err := h.unitState(ctx, port)
	if err == nil {
		u, err = h.waitActive(ctx, port, unitState{}, u)
	}
	if err == nil {
		alive := func(ctx context.Context) error { return h.stillSame(ctx, port, u) }
		err = h.health.Wait(ctx, port, h.cfg.Health.Timeout, h.cfg.Health.Interval, alive)
	}
	if err != nil {
		err = h.appFailure(ctx, port, StepScale, err, nil, 0)
		// Leave the host as it was: the new instance does not stay.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, derr := h.conn.Run(cctx, h.cmds.disableNow(port), nil); derr != nil {
			err = errors.Join(err, fmt.Errorf("stop and disable %s again: %w", h.cfg.UnitName(port), derr))
		}
		return fail(err)
	}
	next, err := addServer(h.upstream, h.cfg.Nginx.Upstream, h.cfg.Nginx.ServerAddress, port)
	if err == nil {
		_, err = h.writeContent(ctx, next, 0)
	}
	if err != nil {
		return fail(&StepError{Host: h.host, Port: port, Step: StepScale, Err: fmt.Errorf("add to %s: %w", h.cfg.Nginx.UpstreamFile, err)})
	}
	h.added[port] = true
	h.emit(port, StepScale, "ok", t0, fmt.Sprintf("added: started, healthy (pid %d), in nginx", u.MainPID))
	return nil
}

func (h *hostRun) removeInstance(ctx context.Context, port int) error {
	t0 := time.Now()
	h.emit(port, StepScale, "start", t0, "remove")
	fail := func(err error) error {
		h.emit(port, StepScale, "fail", t0, err.Error())
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
	if err := h.setDown(ctx, map[int]bool{port: true}, port); err != nil && !errors.Is(err, errUpstreamChanged) {
		return fail(fmt.Errorf("drain: %w", err))
	} else if err != nil {
		return fail(err)
	}
	if _, err := h.conn.Run(ctx, h.cmds.disableNow(port), nil); err != nil {
		return fail(explainRemote(fmt.Errorf("stop and disable: %w", err), h.cfg))
	}
	next, err := removeServer(h.upstream, h.cfg.Nginx.Upstream, h.cfg.Nginx.ServerAddress, port)
	if err == nil {
		_, err = h.writeContent(ctx, next, 0)
	}
	if err != nil {
		return fail(fmt.Errorf("remove from %s: %w", h.cfg.Nginx.UpstreamFile, err))
	}
	h.emit(port, StepScale, "ok", t0, "removed: drained, stopped, disabled, out of nginx")
	return nil
}
