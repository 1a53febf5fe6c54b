package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-multierror"

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

// Deployer rolls a release through the fleet (Deploy), or reconciles each
// host's instances with the config (Scale).
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
	// Artifact is the release a deploy ships (release: set).
	Artifact *Artifact
	// Force restarts instances that already run the release, are healthy
	// and in Nginx; without it a rerun skips them (it resumes).
	Force bool
	// RollbackTo is the release a rollback goes to; "": the newest good
	// one older than the current.
	RollbackTo string
	// Secrets are the env a deploy ships with the release (secrets: set).
	Secrets *Secrets
	// Only are the ports a restart restarts (nil: every instance).
	Only []int
	// Targets are the instances Drain and Undrain change, by host; no
	// ports: every instance of the host.
	Targets map[string][]int

	// fleet are every host of the app, while a drain runs on some.
	fleet []string

	// remote is how the engine works on a connected host: over SSH unless
	// a test gives a fake.
	remote func(cfg *Config, conn Conn) remote
	// lbs are the load balancer hosts of the run (lb:), once connected.
	lbs *balancers
}

// The operations a Deployer runs.
const (
	opDeploy   = "deploy"
	opScale    = "scale"
	opRollback = "rollback"
	opPromote  = "promote"
	opCheck    = "check"
	opRestart  = "restart"
)

// Restart restarts what runs now, instance by instance, with every gate of
// a deploy (the preflight and lock, capacity, drain, wait, the restart,
// active, health, stable, undrain) and nothing shipped: each instance
// restarts from the release its link names, no link or current moves, no
// hook runs. Like a deploy it first reconciles each host's instances with
// the config. Only, when set, limits it to those ports. It is recorded in
// each host's history.
func (d *Deployer) Restart(ctx context.Context) (*Report, error) {
	return d.run(ctx, opRestart)
}

// Check runs every check a deploy runs before it changes anything, and
// changes nothing: the secrets (before anything connects), then on every
// host the connection, the preflight (sudo, units, the balancer, the
// release layout, the access log a bake reads) and whether the deploy
// lock is free, read and never taken. Local hooks do not run. The report
// says each host's outcome: ok, or not started with why.
func (d *Deployer) Check(ctx context.Context) (*Report, error) {
	return d.run(ctx, opCheck)
}

// Deploy runs the rollout: connect to every host (and count its cores for
// instances: auto), the local before-hooks, a preflight and the deploy lock
// on every host (nothing changes anywhere unless every host passes), then
// the hosts, at most Config.Parallel at a time, each instance strictly one
// at a time. On the first failure no further instance is started on any
// host. The error aggregates every host's failure; the report says what
// happened on each.
func (d *Deployer) Deploy(ctx context.Context) (*Report, error) {
	return d.run(ctx, opDeploy)
}

// Scale reconciles each host's instances with the config, as a deploy
// does first, and restarts nothing: missing instances are started,
// health-checked and only then added to the upstream; surplus ones are
// drained, stopped and removed. No hooks run.
func (d *Deployer) Scale(ctx context.Context) (*Report, error) {
	return d.run(ctx, opScale)
}

// Rollback rolls the fleet back (release: set) onto an earlier release
// already on every host, with the same gates as a deploy, and marks the
// release it leaves BAD. See rollbackTarget for the release it picks.
func (d *Deployer) Rollback(ctx context.Context) (*Report, error) {
	if d.Config.Release == nil {
		return nil, errors.New("rollback needs the release: section (rollout ships the releases it can go back to)")
	}
	return d.run(ctx, opRollback)
}

// Promote continues a deploy that paused after its canary
// (strategy.pause_after_canary): the same release, from its second batch,
// with the same gates, bakes and revert. See pausedRelease.
func (d *Deployer) Promote(ctx context.Context) (*Report, error) {
	if d.Config.Release == nil || len(d.Config.Strategy.Batches) < 2 {
		return nil, errors.New("promote continues a paused rollout: it needs the release: section and strategy.batches")
	}
	return d.run(ctx, opPromote)
}

func (d *Deployer) run(ctx context.Context, op string) (*Report, error) {
	start := time.Now()
	cfg := d.Config
	rep := &Report{Op: op, Version: d.Version}
	for _, h := range cfg.Hosts {
		rep.Hosts = append(rep.Hosts, HostReport{Host: h, Outcome: HostNotStarted})
	}
	if d.Holder.Token == "" {
		d.Holder = NewLockInfo(op, d.Version)
	}
	if err := d.checkSecrets(op); err != nil {
		rep.Duration = time.Since(start)
		return rep, err
	}
	sessions, err := d.connect(ctx)
	defer closeSessions(sessions)
	defer d.lbs.close()
	if err == nil && op == opDeploy {
		err = d.localHooks(ctx, cfg.Hooks.Before, "before", "", sessions)
	}
	if err == nil {
		err = d.preflight(ctx, op, sessions)
	}
	switch {
	case err != nil:
		noteEarlyFailures(rep, err)
	case op == opCheck:
		for i := range rep.Hosts {
			rep.Hosts[i].Outcome = HostOK
		}
	default:
		err = d.roll(ctx, op, sessions, rep)
	}
	rep.Duration = time.Since(start)
	if op == opDeploy {
		result := "ok"
		if err != nil {
			result = "failed"
		}
		if herr := d.localHooks(context.WithoutCancel(ctx), cfg.Hooks.After, "after", result, sessions); herr != nil && err == nil {
			err = herr
		}
	}
	return rep, err
}

// roll runs every host (their locks held): the release in place, then
// the fleet in batches, then, on a failure, the revert; on the way out it
// writes each host's history line and releases its lock, whatever
// happened.
func (d *Deployer) roll(ctx context.Context, op string, sessions []*session, rep *Report) error {
	defer d.finish(ctx, op, sessions, rep)
	stop := d.watchStop(ctx, sessions)
	defer stop.halt()
	if err := d.prepareRelease(ctx, op, sessions, rep); err != nil {
		return err
	}
	// The probe watches the site from the first restart to the end of any
	// revert.
	probe := d.startProbes(ctx, sessions)
	errs, paused := d.runBatches(ctx, op, sessions, rep, stop)
	if stop.lockLost.Load() && errs == nil {
		errs = appendErr(errs, errors.New("the deploy lock was taken over by someone else: stopped before the next instance"))
	}
	markUnfinished(rep, sessions, paused, ctx.Err() != nil)
	var rv *revertResult
	if mustRevert(op, rep.Release, d.Config.Release, errs.ErrorOrNil(), ctx.Err() != nil, stop.lockLost.Load()) {
		rv = &revertResult{}
		rv.to, rv.err = d.revert(ctx, rep.Release, sessions)
		rep.Reverted = rv.summary(ctx, d, sessions)
		if rv.err != nil {
			errs = appendErr(errs, rv.err)
		}
	}
	if perr := probe.stop(d, rep); perr != nil {
		errs = appendErr(errs, perr)
		failProbed(rep, perr)
	}
	if rep.Release != "" {
		d.record(ctx, op, rep.Release, sessions, errs.ErrorOrNil(), rv, paused)
	}
	if err := errs.ErrorOrNil(); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s interrupted: %w", op, ctx.Err())
	}
	return nil
}

// finish writes each host's history line and releases its lock, every
// host at once, each within its own 15s, whatever ctx says; a host given
// up on gets the report's next step.
func (d *Deployer) finish(ctx context.Context, op string, sessions []*session, rep *Report) {
	said := make([][]string, len(sessions))
	_ = d.eachHost(ctx, sessions, func(i int, s *session) error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		r := &rep.Hosts[s.index]
		entry := HistoryEntry{Time: time.Now().UTC(), User: d.Holder.User, From: d.Holder.From, RunURL: d.Holder.RunURL,
			Op: op, Version: rep.Version, Release: rep.Release, Outcome: r.Outcome, Duration: r.Duration, Restarted: r.Restarted, Workers: r.Workers, LeftOut: r.LeftOut, Ports: r.Ports, Error: r.Error}
		if s.secrets != nil {
			entry.Secrets = s.secrets.Strings()
		}
		if err := s.r.AppendHistory(cctx, entry); err != nil {
			said[i] = append(said[i], fmt.Sprintf("%s: %v", s.host, err))
		}
		lerr := s.lock.Release(cctx)
		if lerr != nil {
			said[i] = append(said[i], lerr.Error())
		}
		if s.link.givenUp() {
			r.Next = d.nextStep(op, s, r, lerr != nil)
		}
		return nil
	})
	for _, lines := range said {
		for _, l := range lines {
			fmt.Fprintf(d.Stderr, "rollout: %s\n", l)
		}
	}
}

// fleetStop is how the fleet stops: closed on the first failure, on an
// interrupt, or when a host's lock was taken over (lockLost); no host
// starts another instance after it.
type fleetStop struct {
	c        chan struct{}
	once     sync.Once
	lockLost atomic.Bool
}

func (f *fleetStop) halt() { f.once.Do(func() { close(f.c) }) }

// watchStop returns the fleet's stop, halted by ctx and by any lost lock.
func (d *Deployer) watchStop(ctx context.Context, sessions []*session) *fleetStop {
	f := &fleetStop{c: make(chan struct{})}
	go func() {
		select {
		case <-ctx.Done():
			f.halt()
		case <-f.c:
		}
	}()
	for _, s := range sessions {
		go func() {
			select {
			case <-s.lock.Lost:
				d.emit(Event{Host: s.host, Step: StepLock, Status: StatusFail, Message: "the deploy lock was taken over by someone else: stopping"})
				f.lockLost.Store(true)
				f.halt()
			case <-f.c:
			}
		}()
	}
	return f
}

// prepareRelease picks the release of the run (release: set; not for a
// scale) and, for a deploy, ships it to every host that lacks it before
// any instance restarts.
func (d *Deployer) prepareRelease(ctx context.Context, op string, sessions []*session, rep *Report) error {
	if d.Config.Release == nil || op == opScale || op == opRestart || op == opDrain || op == opUndrain {
		return nil
	}
	id, err := d.chooseRelease(op, sessions)
	if err != nil {
		d.emit(Event{Step: StepPreflight, Status: StatusFail, Message: err.Error()})
		return &StepError{Step: StepPreflight, Err: err}
	}
	rep.Release = id
	if (op == opRollback || op == opPromote) && rep.Version == "" {
		// A rollback is to the version of the release it goes back to; a
		// promote, of the release it continues.
		rep.Version = d.versionOf(sessions, id, op)
	}
	if op == opDeploy {
		if err := d.ship(ctx, id, sessions); err != nil {
			return err
		}
		if err := d.storeSecrets(ctx, id, sessions); err != nil {
			return err
		}
		return d.migrate(ctx, id, sessions)
	}
	return nil
}

// runBatches runs the fleet in its batches (one without strategy.batches),
// with a bake between them, until one fails, the fleet stops, or a deploy
// pauses after its canary; it returns the failures and whether it paused.
func (d *Deployer) runBatches(ctx context.Context, op string, sessions []*session, rep *Report, stop *fleetStop) (*multierror.Error, bool) {
	var (
		mu   sync.Mutex
		errs *multierror.Error
	)
	// Each batch says how many instances of each host are on the release
	// at its end.
	quotas := [][]int{nil}
	if (op == opDeploy || op == opPromote) && len(d.Config.Strategy.Batches) > 0 {
		quotas = batchQuotas(d.Config.Strategy.Batches, sessions)
	}
	for b, quota := range quotas {
		last := b == len(quotas)-1
		if op == opPromote && b == 0 {
			continue // the canary's batch, and its bake, were done
		}
		if len(quotas) > 1 {
			d.emit(Event{Step: StepBatch, Status: StatusStart, Message: batchText(b, quotas, sessions)})
		}
		d.batch(ctx, op, sessions, quota, last, stop.c, stop.halt, rep, &mu, &errs)
		if errs != nil || stopped(stop.c) {
			return errs, false
		}
		if len(quotas) > 1 {
			d.emit(Event{Step: StepBatch, Status: StatusOK, Message: batchText(b, quotas, sessions)})
		}
		if !last && d.Config.Strategy.Bake > 0 {
			if err := d.bake(ctx, stop.c, sessions, b, rep); err != nil {
				if !errors.Is(err, ErrStopped) {
					errs = appendErr(errs, err)
				}
				stop.halt()
				return errs, false
			}
		}
		if b == 0 && op == opDeploy && d.Config.Strategy.PauseAfterCanary {
			rep.Paused = fmt.Sprintf("paused after %s: the fleet serves both releases; `rollout promote` continues, `rollout rollback` takes the canary back", batchText(0, quotas, sessions))
			d.emit(Event{Step: StepBatch, Status: StatusSkip, Message: rep.Paused})
			return errs, true
		}
	}
	return errs, false
}

// markUnfinished says of each host begun in an earlier batch and not
// finished that it stopped with the fleet: paused (after the canary),
// interrupted, or stopped between batches.
func markUnfinished(rep *Report, sessions []*session, paused, interrupted bool) {
	for _, s := range sessions {
		r := &rep.Hosts[s.index]
		if s.run == nil || s.run.finished || r.Outcome != HostOK {
			continue
		}
		switch {
		case paused:
			r.Outcome = HostPaused
		case interrupted:
			r.Outcome, r.Error = HostInterrupted, "stopped between batches, with the rest of the fleet"
		default:
			r.Outcome, r.Error = HostStopped, "stopped between batches, with the rest of the fleet"
		}
	}
}

// mustRevert says whether a failed run is reverted: a deploy or promote
// that shipped a release, with release.on_failure: revert, that failed,
// and was neither interrupted nor stopped by a lock taken over (then the
// other holder is at work).
func mustRevert(op, release string, rel *ReleaseConfig, err error, interrupted, lockLost bool) bool {
	return release != "" && err != nil && (op == opDeploy || op == opPromote) && rel != nil &&
		rel.OnFailure == OnFailureRevert && !interrupted && !lockLost
}

// failProbed marks failed the hosts whose probe failed the deploy
// (probe.fail_on_error) and that had not failed already.
func failProbed(rep *Report, err error) {
	all := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	}
	for i := range rep.Hosts {
		r := &rep.Hosts[i]
		for _, e := range all {
			var se *StepError
			if errors.As(e, &se) && se.Host == r.Host && r.Outcome == HostOK {
				r.Outcome, r.Error = HostFailed, se.Error()
			}
		}
	}
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// batch runs the hosts with something to do in one batch (quota: how
// many of each host's instances are on the release at its end; nil: all),
// at most parallel at a time, in config order (so with parallel 1 the hosts
// go one after another as listed). last: the hosts finish in it.
func (d *Deployer) batch(ctx context.Context, op string, sessions []*session, quota []int, last bool, stop <-chan struct{}, halt func(), rep *Report, mu *sync.Mutex, errs **multierror.Error) {
	var todo []*session
	for _, s := range sessions {
		if quota == nil || s.run == nil && quota[s.index] > 0 || s.run != nil && !s.run.finished && (last || quota[s.index] > s.run.done()) {
			todo = append(todo, s)
		}
	}
	next := make(chan *session)
	go func() {
		defer close(next)
		for _, s := range todo {
			select {
			case next <- s:
			case <-stop:
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range min(max(d.Config.Parallel, 1), len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range next {
				if stopped(stop) {
					return
				}
				n := -1 // all
				if quota != nil && !last {
					n = quota[s.index]
				}
				hr, took, herr := d.runHost(ctx, op, s, stop, rep.Release, n)
				mu.Lock()
				r := &rep.Hosts[s.index]
				r.Duration, r.Restarted, r.LeftOut, r.Skipped, r.Ports = r.Duration+took, hr.restarted, hr.leftOut, hr.skipped, hr.handPorts
				r.Workers = hr.workersRestarted
				switch {
				case herr == nil:
					r.Outcome = HostOK
				case errors.Is(herr, ErrStopped) && ctx.Err() != nil:
					r.Outcome, r.Error = HostInterrupted, herr.Error()
				case errors.Is(herr, ErrStopped):
					r.Outcome, r.Error = HostStopped, herr.Error()
				case ctx.Err() != nil && !errors.Is(herr, ErrUnreachable): // a host lost is a failure, interrupted or not
					r.Outcome, r.Error = HostInterrupted, herr.Error()
					*errs = appendErr(*errs, herr)
				default:
					r.Outcome, r.Error = HostFailed, herr.Error()
					*errs = appendErr(*errs, herr)
					halt()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// runHost runs one host, or its part of a batch (upto: how many of its
// instances are on the release at the end; -1: all of them), between its
// StepHost events: "start" when it begins, the end when it finishes or
// fails.
func (d *Deployer) runHost(ctx context.Context, op string, s *session, stop <-chan struct{}, release string, upto int) (*hostRun, time.Duration, error) {
	t0 := time.Now()
	hr := s.run
	if hr == nil {
		d.emit(Event{Host: s.host, Step: StepHost, Status: StatusStart})
		hr = newHostRun(d, s, stop)
		s.run = hr
		if op == opScale {
			// New instances start on the host's current release.
			hr.setRelease(s.rel.current, s.rel)
		} else {
			hr.setRelease(release, s.rel)
			hr.noHooks = op == opRollback || op == opRestart
		}
	}
	var err error
	switch op {
	case opScale:
		err = hr.scale(ctx)
		hr.finished = err == nil
	case opDrain:
		err = hr.handDrain(ctx)
		hr.finished = err == nil
	case opUndrain:
		err = hr.handUndrain(ctx)
		hr.finished = err == nil
	default:
		err = hr.deploy(ctx, upto)
	}
	if err == nil && hr.finished && release != "" && op != opScale {
		// The host's last instance is done: current follows.
		err = hr.moveCurrent(ctx, release)
	}
	took := time.Since(t0)
	hr.took += took
	if err == nil && !hr.finished {
		return hr, took, nil // more in the next batch
	}
	e := Event{Host: s.host, Step: StepHost, Status: StatusOK, Duration: hr.took}
	if err != nil {
		e.Status, e.Message = StatusFail, err.Error()
		if errors.Is(err, ErrStopped) {
			e.Status = StatusSkip
		}
	}
	d.emit(e)
	return hr, took, err
}

// batchQuotas are, for each batch, how many instances of each host
// (indexed like Config.Hosts) are on the release at its end. A batch is a
// share of the fleet's instances (a percentage rounds up): each host takes
// its share of it, and what rounding leaves goes to the first hosts, so a
// batch of 1 is one instance of the first host.
func batchQuotas(batches []Amount, sessions []*session) [][]int {
	hosts := 0
	for _, s := range sessions {
		hosts = max(hosts, s.index+1)
	}
	sizes := make([]int, hosts)
	total := 0
	for _, s := range sessions {
		sizes[s.index] = len(s.cfg.Ports())
		total += sizes[s.index]
	}
	prev := make([]int, hosts)
	var out [][]int
	for _, b := range batches {
		want := b.N
		if b.Percent > 0 {
			want = (total*b.Percent + 99) / 100
		}
		want = max(min(want, total), 1)
		q := make([]int, hosts)
		sum := 0
		for i, n := range sizes {
			q[i] = max(want*n/max(total, 1), prev[i])
			sum += q[i]
		}
		for progressed := true; sum < want && progressed; {
			progressed = false
			for i := range hosts {
				if sum < want && q[i] < sizes[i] {
					q[i]++
					sum++
					progressed = true
				}
			}
		}
		out = append(out, q)
		prev = q
	}
	return out
}

// batchText says what batch b does: "batch 1 of 3: 1 of 8 instances (web1 1)".
func batchText(b int, quotas [][]int, sessions []*session) string {
	total, now := 0, 0
	var hosts []string
	for _, s := range sessions {
		total += len(s.cfg.Ports())
		now += quotas[b][s.index]
		if n := quotas[b][s.index]; n > 0 {
			hosts = append(hosts, fmt.Sprintf("%s %d", s.host, n))
		}
	}
	return fmt.Sprintf("batch %d of %d: %d of %d instances on the release (%s)", b+1, len(quotas), now, total, strings.Join(hosts, ", "))
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

// nextStep says how to put a host right after rollout lost it: which
// instances may be out of Nginx, whether its lock stayed, and the command
// that converges it.
func (d *Deployer) nextStep(op string, s *session, r *HostReport, lockKept bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s could not be reached again", s.host)
	if len(r.LeftOut) > 0 {
		fmt.Fprintf(&b, "; instances %v may be marked down in %s", r.LeftOut, s.cfg.Nginx.UpstreamFile)
	}
	if lockKept {
		b.WriteString("; its deploy lock is still held by this run")
	}
	cmd := "rollout deploy --version " + d.Version
	switch op {
	case opScale:
		cmd = "rollout scale"
	case opRollback:
		cmd = "rollout rollback"
	case opRestart:
		cmd = "rollout restart"
	case opDrain, opUndrain:
		fmt.Fprintf(&b, ". Once it answers, run `rollout %s %s` again from this machine: it takes this run's lock over at once (its process is gone); until then `rollout status` shows which instances are in service and which are recorded as drained by hand", op, handArgs(s.host, d.Targets[s.host]))
		return b.String()
	}
	fmt.Fprintf(&b, ". Once it answers, run `%s` again from this machine: it takes this run's lock over at once (its process is gone), puts every instance back and restarts each once more", cmd)
	return b.String()
}
