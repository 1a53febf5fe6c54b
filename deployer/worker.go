package deployer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// minWorkerStable is the least time a restarted worker must keep its new
// process (health.min_healthy when longer): a worker has no health check,
// so this is what tells a worker that runs from one that crash-loops.
const minWorkerStable = time.Second

// workers restarts the host's workers (workers:) on the run's release,
// after its web instances, strategy.max_unavailable of each worker's
// instances at a time: each must run a new process that systemd keeps,
// without a restart, for health.min_healthy (at least a second). A worker
// that already runs its target release is left alone (unless --force),
// as is every worker when a restart names some ports (--port).
func (h *hostRun) workers(ctx context.Context) error {
	if h.d.Only != nil {
		return nil
	}
	for _, w := range h.cfg.Workers {
		var queue []string
		for _, u := range w.Instances() {
			if id := h.workerTargets[u]; id != "" && !h.d.Force && h.rel.workers[u].link == id && h.rel.workers[u].running == id {
				h.emitWorker(u, StepRestart, StatusSkip, time.Time{}, "already runs release "+id+" (--force restarts it)")
				h.workersSkipped = append(h.workersSkipped, u)
				continue
			}
			queue = append(queue, u)
		}
		for g := range slices.Chunk(queue, h.cfg.Unavailable(w.Count)) {
			if h.stopped(ctx) {
				return &StepError{Host: h.host, Worker: g[0], Step: StepRestart, Err: ErrStopped}
			}
			if err := h.workerGroup(ctx, w, g); err != nil {
				return err
			}
		}
	}
	return nil
}

// workerGroup restarts units at once and waits for each.
func (h *hostRun) workerGroup(ctx context.Context, w Worker, units []string) error {
	errs := make([]error, len(units))
	var wg sync.WaitGroup
	for i, u := range units {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = h.worker(ctx, w, u)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// worker restarts one worker's unit (switching its link with a release)
// and waits until it runs a new process that stays.
func (h *hostRun) worker(ctx context.Context, w Worker, unit string) error {
	state := func(ctx context.Context) (unitState, error) {
		st, err := h.remote.WorkerStates(ctx, []string{unit})
		return st[unit], err
	}
	t0 := time.Now()
	h.emitWorker(unit, StepRestart, StatusStart, t0, "")
	id := h.workerTargets[unit]
	if id != "" {
		h.mu.Lock()
		if !slices.Contains(h.workersSwitched, unit) {
			h.workersSwitched = append(h.workersSwitched, unit)
		}
		h.mu.Unlock()
	}
	logs, err := h.workerLogs(ctx, unit)
	var mark restartMark
	if err == nil {
		// The old process's graceful stop, then the start.
		rctx, cancel := context.WithTimeout(ctx, w.StopTimeout+h.cfg.Health.Timeout)
		mark, err = h.remote.RestartWorker(rctx, unit, logs, id)
		if errors.Is(rctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("its restart did not end within stop_timeout %s + health.timeout %s (an old process that does not stop on SIGTERM? the unit's TimeoutStopSec should be at most stop_timeout): %w", w.StopTimeout, h.cfg.Health.Timeout, err)
		}
		cancel()
	}
	if err != nil {
		h.emitWorker(unit, StepRestart, StatusFail, t0, err.Error())
		return h.workerFailure(ctx, unit, state, StepRestart, err, mark)
	}
	if id != "" {
		h.emitWorker(unit, StepSwitch, StatusOK, time.Time{}, "release "+id+" (with the restart)")
	}
	h.emitWorker(unit, StepRestart, StatusOK, t0, "")

	t0 = time.Now()
	h.emitWorker(unit, StepActive, StatusStart, t0, "")
	now, err := h.waitActive(ctx, state, mark.before, mark.after)
	if err != nil {
		h.emitWorker(unit, StepActive, StatusFail, t0, err.Error())
		return h.workerFailure(ctx, unit, state, StepActive, err, mark)
	}
	h.emitWorker(unit, StepActive, statusOf(now), t0, activeNote(now))

	t0 = time.Now()
	stable := max(h.cfg.Health.MinHealthy, minWorkerStable)
	h.emitWorker(unit, StepStable, StatusStart, t0, "")
	if err := holdFor(ctx, state, now, stable, 250*time.Millisecond, nil); err != nil {
		h.emitWorker(unit, StepStable, StatusFail, t0, err.Error())
		return h.workerFailure(ctx, unit, state, StepStable, err, mark)
	}
	h.emitWorker(unit, StepStable, StatusOK, t0, fmt.Sprintf("same process for %s", stable))
	h.mu.Lock()
	h.workersRestarted = append(h.workersRestarted, unit)
	h.mu.Unlock()
	return nil
}

// workerLogs are a worker unit's log files, from its unit file's
// StandardOutput=/StandardError=, read once for every worker.
func (h *hostRun) workerLogs(ctx context.Context, unit string) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.wlogs == nil {
		logs, err := h.remote.WorkerLogFiles(ctx, h.cfg.WorkerUnits())
		if err != nil {
			return nil, err
		}
		h.wlogs = logs
	}
	return h.wlogs[unit], nil
}

// workerFailure builds the error for a worker that did not come up, with
// what it and systemd said since the restart.
func (h *hostRun) workerFailure(ctx context.Context, unit string, state stateFunc, step StepName, cause error, mark restartMark) error {
	se := &StepError{Host: h.host, Worker: unit, Step: step, Err: cause}
	return h.failure(ctx, se, unit, state, func(ctx context.Context) (string, error) {
		return h.remote.WorkerOutput(ctx, unit, mark, appOutputLines)
	})
}

// checkWorkers checks, before any change, that every worker's unit is
// installed on the host, and that no instance beyond a worker's count
// runs there: after a count is lowered, one left running would go on
// with the code it has while the others move on.
func checkWorkers(ctx context.Context, cfg *Config, r remote) error {
	units := cfg.WorkerUnits()
	if len(units) == 0 {
		return nil
	}
	st, err := r.WorkerStates(ctx, workerPatterns(cfg))
	if err != nil {
		return fmt.Errorf("read the workers' units: %w", err)
	}
	var missing, disabled []string
	for _, u := range units {
		switch fs := st[u].FileState; {
		case fs == "enabled" || fs == "enabled-runtime":
		case st[u].Load != "loaded":
			missing = append(missing, u)
		case fs != "":
			disabled = append(disabled, u)
		}
	}
	switch {
	case len(missing) > 0:
		return fmt.Errorf("the workers' units %s are not installed (%s@.service): give the worker exec_start and run rollout setup, or install the unit", strings.Join(missing, ", "), strings.Split(missing[0], "@")[0])
	case len(disabled) > 0:
		return fmt.Errorf("the workers' units %s are not enabled (a count raised?): rollout setup links, enables and starts them (or systemctl enable them)", strings.Join(disabled, ", "))
	}
	if extra := extraWorkers(cfg, st); len(extra) > 0 {
		verb := "are"
		if len(extra) == 1 {
			verb = "is"
		}
		return fmt.Errorf("%s %s running beyond the workers' count (a count lowered?): they would go on with the code they have; rollout setup stops and disables them (or sudo systemctl disable --now %s), or raise the count",
			strings.Join(extra, ", "), verb, strings.Join(extra, " "))
	}
	return nil
}

// workerPatterns are the workers' units and a pattern of each worker's
// template: a pattern matches the instances systemd has loaded (running,
// starting or failed), whatever their number, so the instances beyond the
// count are read in the same systemctl show (extraWorkers).
func workerPatterns(cfg *Config) []string {
	asked := cfg.WorkerUnits()
	for _, w := range cfg.Workers {
		asked = append(asked, w.Unit+"@*")
	}
	return asked
}

// extraWorkers are the instances in st of a worker's template that are
// not among its instances (UNIT@1 … UNIT@Count, by name: UNIT@03 is
// not UNIT@3) and are running or starting, in order.
func extraWorkers(cfg *Config, st map[string]unitState) []string {
	return beyondCount(cfg, st, unitState.upOrStarting)
}

// beyondCount are the instances in st of a worker's template that are
// not among its instances and of which is says so, in order: by length,
// then name (UNIT@3 before UNIT@12).
func beyondCount(cfg *Config, st map[string]unitState, is func(unitState) bool) []string {
	var out []string
	for _, w := range cfg.Workers {
		var extra []string
		for id, s := range st {
			if strings.HasPrefix(id, w.Unit+"@") && !slices.Contains(w.Instances(), id) && is(s) {
				extra = append(extra, id)
			}
		}
		slices.SortFunc(extra, func(a, b string) int { return cmp.Or(cmp.Compare(len(a), len(b)), strings.Compare(a, b)) })
		out = append(out, extra...)
	}
	return out
}

// upOrStarting: systemd runs the unit or is starting it.
func (s unitState) upOrStarting() bool {
	return s.Active == "active" || s.Active == "activating" || s.Active == "reloading"
}

// revertWorkers restarts the workers a failed run switched onto their
// targets (the releases they ran before), one at a time.
// A worker that ran no release before is left as it is (and said), and
// the others still go back.
func (h *hostRun) revertWorkers(ctx context.Context, units []string) error {
	var errs []error
	for _, u := range units {
		if h.workerTargets[u] == "" {
			errs = append(errs, &StepError{Host: h.host, Worker: u, Step: StepRevert, Err: fmt.Errorf("ran no release before this run: nothing to go back to")})
			continue
		}
		w, _ := h.cfg.worker(u)
		if err := h.worker(ctx, w, u); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (h *hostRun) emitWorker(unit string, step StepName, status StepStatus, t0 time.Time, msg string) {
	e := Event{Host: h.host, Worker: unit, Step: step, Status: status, Message: msg}
	if status != StatusStart && !t0.IsZero() {
		e.Duration = time.Since(t0)
	}
	h.d.emit(e)
}
