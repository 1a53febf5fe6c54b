package deployer

import (
	"github.com/rollout-dev/rollout/internal/secrets"

	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
)

// session is one host of a deploy: its connection, its config (with
// instances: auto, its ports resolved from its cores), the remote that
// works on it (and reconnects when the connection breaks), and, once the
// preflight passed, its deploy lock.
type session struct {
	index int // in Config.Hosts, and in the report
	host  string
	cfg   *Config
	conn  Conn // the first connection; link holds the current one
	// t0 is when its preflight started.
	t0 time.Time
	// link is the host's connection, reconnecting when it is lost; r is
	// the remote over it.
	link *link
	r    remote
	lock *HostLock
	// rel is the host's release layout as the preflight read it (release:
	// set): what each instance ran before this run.
	rel releaseState
	// run is the host's run, once it started.
	run *hostRun
	// bal is where its instances are served from (balancer.go).
	bal balancer
	// secrets is how the release's secrets changed the host's names (a
	// deploy with secrets:); nil if unknown.
	secrets *secrets.Change
	// handDrained are its instances drained by hand, read under the lock.
	handDrained map[int]HandDrain
}

// open makes the session's link over its first connection, and the remote
// over the link.
func (d *Deployer) open(s *session) {
	s.link = newLink(d, s.host, s.cfg, s.conn)
	s.r = d.newRemote(s.cfg, s.link)
}

func (d *Deployer) newRemote(cfg *Config, conn Conn) remote {
	if d.remote != nil {
		return d.remote(cfg, conn)
	}
	return newSSHRemote(cfg, conn)
}

// connect opens a session to every host at once and resolves each one's
// instances; it changes nothing. It returns every session it opened (to be
// closed) and the failures.
func (d *Deployer) connect(ctx context.Context) ([]*session, error) {
	cfg := d.Config
	sessions := make([]*session, len(cfg.Hosts))
	errs := make([]error, len(cfg.Hosts)+1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.lbs, errs[len(cfg.Hosts)] = d.connectBalancers(ctx)
	}()
	for i, host := range cfg.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &session{index: i, host: host, t0: time.Now()}
			d.emit(Event{Host: host, Step: StepPreflight, Status: StatusStart})
			conn, err := d.Connect(ctx, host)
			if err == nil {
				s.conn = conn
				sessions[i] = s
				s.cfg, err = resolveHost(ctx, cfg, host, d.newRemote(cfg, conn))
			}
			if err != nil {
				errs[i] = &StepError{Host: host, Step: StepPreflight, Err: err, Took: time.Since(s.t0)}
				d.emit(Event{Host: host, Step: StepPreflight, Status: StatusFail, Duration: time.Since(s.t0), Message: err.Error()})
				return
			}
			d.open(s)
		}()
	}
	wg.Wait()
	if errs[len(cfg.Hosts)] == nil {
		errs[len(cfg.Hosts)] = d.liveOnBalancers(ctx, sessions)
	}
	var opened []*session
	for _, s := range sessions {
		if s != nil {
			opened = append(opened, s)
			if s.r != nil {
				s.bal = d.newBalancer(s.host, s.cfg, s.r)
			}
		}
	}
	return opened, joinErrors(errs)
}

// liveOnBalancers sets, with strategy.max_surge and lb:, each session's
// live ports from the balancers' servers (resolveHost could only guess
// them from the units that run).
func (d *Deployer) liveOnBalancers(ctx context.Context, sessions []*session) error {
	b := d.lbs
	if b == nil || !d.Config.surging() {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.read(ctx); err != nil {
		return fmt.Errorf("read the load balancers for strategy.max_surge's live ports: %w", err)
	}
	for _, s := range sessions {
		if s == nil || s.cfg == nil {
			continue
		}
		srv, err := b.servers(s.cfg.Nginx.ServerAddress)
		if err != nil {
			return err
		}
		s.cfg = s.cfg.liveOn(srv)
	}
	return nil
}

// resolveHost is the config for one host: with instances: auto, one
// instance per CPU core it has; with strategy.max_surge, the ports it
// serves from now (liveConfig). Another app of the file with a port of
// this one on the host is an error naming both.
func resolveHost(ctx context.Context, cfg *Config, host string, r interface {
	Cores(ctx context.Context) (int, error)
}) (*Config, error) {
	cores := sync.OnceValues(func() (int, error) { return r.Cores(ctx) })
	hc := cfg
	if cfg.workersAuto() {
		n, err := cores()
		if err != nil {
			return nil, fmt.Errorf("count CPU cores for workers' count: auto: %w", err)
		}
		hc = cfg.workersForCores(n)
		cfg = hc
	}
	if cfg.InstancesAuto() {
		n, err := cores()
		if err != nil {
			return nil, fmt.Errorf("count CPU cores for instances: auto: %w", err)
		}
		if err := tooManyInstances(n); err != nil {
			return nil, fmt.Errorf("instances: auto (%d cores here): %w: give instances a number", n, err)
		}
		hc = cfg.ForCores(n)
		var cs checks
		hc.checkStrategy(&cs)
		for _, pr := range cs {
			return nil, fmt.Errorf("%s: with instances: auto (%d here): %w", pr.key, n, pr.err)
		}
	}
	if err := checkNeighbors(hc, host, cfg.InstancesAuto(), cores); err != nil {
		return nil, err
	}
	if rr, ok := r.(remote); ok {
		hc = liveConfig(ctx, hc, rr)
	}
	return hc.onBalancers(host), nil
}

// checkLock reads s's deploy lock without taking it: held by someone else
// (and not stale) fails as a deploy would.
func (d *Deployer) checkLock(ctx context.Context, s *session, t0 time.Time) error {
	st, err := s.r.LockStatus(ctx)
	st.Host = s.host
	switch {
	case err != nil:
		err = fmt.Errorf("read the deploy lock: %w", err)
	case st.Held && !st.Stale && (st.Holder == nil || !st.Holder.deadHere()):
		err = &LockedError{State: st}
	}
	if err != nil {
		d.emit(Event{Host: s.host, Step: StepLock, Status: StatusFail, Duration: time.Since(t0), Message: err.Error()})
		return &StepError{Host: s.host, Step: StepLock, Err: err, Took: time.Since(s.t0)}
	}
	e := Event{Host: s.host, Step: StepLock, Status: StatusOK, Duration: time.Since(t0), Message: "free (read, not taken)"}
	if st.Held {
		e.Status, e.Message = StatusWarn, "stale: a deploy would take it over only with --break-stale-lock (or at once if its holder is a process of this machine that is gone)"
	}
	d.emit(e)
	return nil
}

// preflight checks every host at once and takes its deploy lock; it
// changes nothing else. On any failure no lock is kept.
func (d *Deployer) preflight(ctx context.Context, op string, sessions []*session) error {
	err := d.eachHost(ctx, sessions, func(_ int, s *session) error {
		err := s.r.Preflight(ctx, s.cfg.Ports())
		var missing []int
		if err == nil {
			var srv servers
			if srv, err = s.bal.preflight(ctx, s.cfg.Ports()); err == nil {
				missing = notIn(srv, s.cfg.Ports())
			}
		}
		if err == nil && (op == opDeploy || op == opCheck) && d.Config.Strategy.Bake > 0 {
			err = checkAccessLog(ctx, s)
		}
		if err == nil && (op == opDrain || op == opUndrain) {
			err = d.checkTargets(s)
		}
		if err == nil && op == opRestart && s.cfg.surging() {
			err = checkOnlyLive(s.cfg, d.Only)
		}
		if err == nil && (op == opDeploy || op == opRestart || op == opRollback || op == opPromote || op == opCheck) {
			err = checkWorkers(ctx, s.cfg, s.r)
			if err == nil && s.cfg.surging() {
				var sc surgeCheck
				if sc, err = s.r.SurgeCheck(ctx, s.cfg.idlePorts(), s.cfg.Ports()); err == nil {
					err = checkSurgeRoom(s.cfg, sc)
				}
			}
		}
		if err == nil && s.cfg.Release != nil {
			if s.rel, err = s.r.ReleaseState(ctx, s.cfg.Ports(), s.cfg.WorkerUnits()); err == nil {
				err = checkLayout(s.cfg, s.rel)
			}
		}
		if err != nil {
			d.emit(Event{Host: s.host, Step: StepPreflight, Status: StatusFail, Duration: time.Since(s.t0), Message: err.Error()})
			return &StepError{Host: s.host, Step: StepPreflight, Err: err, Took: time.Since(s.t0)}
		}
		e := Event{Host: s.host, Step: StepPreflight, Status: StatusOK, Duration: time.Since(s.t0)}
		if len(missing) > 0 {
			e.Message = fmt.Sprintf("%s has no server line for %v: they will be started, checked and added first", s.bal, missing)
		}
		d.emit(e)
		t0 := time.Now()
		if op == opCheck {
			return d.checkLock(ctx, s, t0)
		}
		lock, err := acquireLock(ctx, s.cfg, s.host, s.r, d.Holder, d.BreakStaleLock)
		if err != nil {
			d.emit(Event{Host: s.host, Step: StepLock, Status: StatusFail, Duration: time.Since(t0), Message: err.Error()})
			return &StepError{Host: s.host, Step: StepLock, Err: err, Took: time.Since(s.t0)}
		}
		s.lock = lock
		if s.handDrained, err = readHandDrained(ctx, s.r); err != nil {
			d.emit(Event{Host: s.host, Step: StepLock, Status: StatusFail, Duration: time.Since(t0), Message: err.Error()})
			return &StepError{Host: s.host, Step: StepLock, Err: err, Took: time.Since(s.t0)}
		}
		le := Event{Host: s.host, Step: StepLock, Status: StatusOK, Duration: time.Since(t0)}
		if msg := lock.TakeOverMessage(); msg != "" {
			le.Status, le.Message = StatusWarn, msg
		}
		d.emit(le)
		return nil
	})
	if err == nil {
		return nil
	}
	// No lock is kept: every host's goes, at once, each within 15s.
	rerr := d.eachHost(ctx, sessions, func(_ int, s *session) error {
		if s.lock == nil {
			return nil
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		defer func() { s.lock = nil }()
		return s.lock.Release(cctx)
	})
	return appendErr(err, rerr).ErrorOrNil()
}

func closeSessions(sessions []*session) {
	for _, s := range sessions {
		if s.link != nil {
			s.link.Close()
		} else {
			s.conn.Close()
		}
	}
}

// joinErrors aggregates the non-nil errors, or returns nil.
func joinErrors(errs []error) error {
	var merr *multierror.Error
	for _, e := range errs {
		if e != nil {
			merr = appendErr(merr, e)
		}
	}
	return merr.ErrorOrNil()
}

// notIn are the ports that are none of srv's servers.
func notIn(srv servers, ports []int) []int {
	var out []int
	for _, p := range ports {
		if _, ok := srv[p]; !ok {
			out = append(out, p)
		}
	}
	return out
}

// eachHost runs fn for every session at once and joins the errors.
func (d *Deployer) eachHost(ctx context.Context, sessions []*session, fn func(i int, s *session) error) error {
	errs := make([]error, len(sessions))
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i, s)
		}()
	}
	wg.Wait()
	return joinErrors(errs)
}
