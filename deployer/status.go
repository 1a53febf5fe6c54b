package deployer

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// InstanceStatus is one instance as systemd, Nginx and its health check
// see it.
type InstanceStatus struct {
	Port     int           `json:"port"`
	Unit     string        `json:"unit"`
	State    string        `json:"state"` // ActiveState: active, activating, failed, inactive
	Sub      string        `json:"sub"`   // SubState: running, auto-restart, dead
	PID      int           `json:"pid"`
	Uptime   time.Duration `json:"uptime_ns"`
	Memory   uint64        `json:"memory_bytes"`
	Restarts int           `json:"restarts"` // by systemd (NRestarts)
	InNginx  bool          `json:"in_nginx"` // with lb:, in service on every balancer
	Healthy  bool          `json:"healthy"`
	Health   string        `json:"health,omitempty"` // why not healthy
	// Release is the release its process runs (release: set); empty when
	// it runs none, or it could not be read.
	Release string `json:"release,omitempty"`
	// Balancers are, with lb:, whether each balancer sends it requests.
	Balancers []BalancerServer `json:"balancers,omitempty"`
	// Drained is who drained it by hand (rollout drain) and when; nil if
	// nobody did.
	Drained *HandDrain `json:"drained_by_hand,omitempty"`
	// Leftover: with strategy.max_surge, a unit on a slot's idle port that
	// runs though its slot serves from the other port: a surge under way,
	// or one interrupted (the next deploy stops it). It is not health
	// checked.
	Leftover bool `json:"leftover,omitempty"`
}

// BalancerServer is an instance on one load balancer (lb:).
type BalancerServer struct {
	Host  string `json:"host"`
	In    bool   `json:"in"`
	Error string `json:"error,omitempty"` // the balancer could not be read
}

// OK: running, healthy and in Nginx, or out of it because it was
// drained by hand; never a leftover.
func (i InstanceStatus) OK() bool {
	return !i.Leftover && i.State == "active" && i.Healthy && (i.InNginx || i.Drained != nil)
}

// WorkerStatus is one worker's unit (workers:) as systemd sees it.
type WorkerStatus struct {
	Unit     string        `json:"unit"`
	State    string        `json:"state"`
	Sub      string        `json:"sub"`
	PID      int           `json:"pid"`
	Uptime   time.Duration `json:"uptime_ns"`
	Restarts int           `json:"restarts"`
	Release  string        `json:"release,omitempty"`
	// BeyondCount: an instance of the worker's template running beyond its
	// count (a count lowered, the extra ones never stopped): it goes on
	// with the code it has, and the next deploy refuses it.
	BeyondCount bool `json:"beyond_count,omitempty"`
}

// OK: running, and one of the worker's instances.
func (w WorkerStatus) OK() bool { return !w.BeyondCount && w.State == "active" && w.PID > 0 }

// HostStatus is one host's instances, or why they could not be read.
type HostStatus struct {
	Host      string           `json:"host"`
	Error     string           `json:"error,omitempty"`
	Instances []InstanceStatus `json:"instances"`
	Workers   []WorkerStatus   `json:"workers,omitempty"`
	// Paused is the release of a rollout paused after its canary (release
	// log: canary), beside the current one; "" if none.
	Paused  string `json:"paused,omitempty"`
	Current string `json:"current,omitempty"`
}

// OK: every instance is OK.
func (h HostStatus) OK() bool {
	if h.Error != "" {
		return false
	}
	for _, i := range h.Instances {
		if !i.OK() {
			return false
		}
	}
	for _, w := range h.Workers {
		if !w.OK() {
			return false
		}
	}
	return true
}

// Status reads every instance of a host: systemd's view, the upstream
// file, and a health check of each through the connection, all at once.
// With lb:, lbs are the balancers as ReadBalancers read them: the
// instances' server lines are theirs, and the health check dials from the
// first one read.
func Status(ctx context.Context, cfg *Config, host string, conn Conn, lbs Balancers) HostStatus {
	return hostStatus(ctx, cfg, host, newSSHRemote(cfg, conn), lbs)
}

func hostStatus(ctx context.Context, cfg *Config, host string, r remote, lbs Balancers) HostStatus {
	hc, err := resolveHost(ctx, cfg, host, r)
	if err != nil {
		return HostStatus{Host: host, Error: err.Error()}
	}
	hc = lbs.live(hc)
	var rst *releaseState
	if hc.Release != nil {
		// Best effort: the instances' state stands without it.
		if st, err := r.ReleaseState(ctx, append(hc.Ports(), hc.idlePorts()...), hc.WorkerUnits()); err == nil {
			rst = &st
		}
	}
	return resolvedStatus(ctx, hc, host, r, lbs, rst)
}

// resolvedStatus is hostStatus for cfg resolved on the host (resolveHost),
// with its release layout as already read (nil: none, or not read).
func resolvedStatus(ctx context.Context, cfg *Config, host string, r remote, lbs Balancers, rst *releaseState) HostStatus {
	hs := HostStatus{Host: host}
	src := lbs.source(cfg, r)
	var health map[int]error
	done := make(chan struct{})
	go func() {
		defer close(done)
		health = checkAll(ctx, newHealthCheck(cfg, src.dial, r), cfg.Ports())
	}()
	// With max_surge, the slots' idle ports too: a unit running there is
	// a leftover, shown as one.
	idle := cfg.idlePorts()
	st, err := r.Inspect(ctx, append(cfg.Ports(), idle...))
	var srv servers
	var serr, herr, werr error
	var hand map[int]HandDrain
	var workers map[string]unitState
	if err == nil {
		srv, serr = src.read(ctx)
		hand, herr = readHandDrained(ctx, r)
		if units := cfg.WorkerUnits(); len(units) > 0 {
			workers, werr = r.WorkerStates(ctx, workerPatterns(cfg))
		}
	}
	<-done
	if err != nil {
		hs.Error = fmt.Sprintf("read state: %v", err)
		return hs
	}
	switch {
	case serr != nil:
		hs.Error = serr.Error()
	case herr != nil:
		hs.Error = herr.Error()
	case werr != nil:
		hs.Error = fmt.Sprintf("read the workers' state: %v", werr)
	}
	var running map[int]string
	if rst != nil {
		running = rst.running
		hs.Current = rst.current
		if id, err := pausedRelease([]releaseState{*rst}); err == nil {
			hs.Paused = id
		}
	}
	for _, p := range cfg.Ports() {
		u := st.units[p]
		is := InstanceStatus{Port: p, Unit: cfg.UnitName(p), State: u.Active, Sub: u.Sub, PID: u.MainPID,
			Memory: u.Memory, Restarts: u.Restarts, InNginx: srv.in(p), Healthy: health[p] == nil, Release: running[p],
			Balancers: src.each(p), Uptime: u.uptime(st.uptime)}
		if health[p] != nil {
			is.Health = health[p].Error()
		}
		if m, ok := hand[p]; ok {
			is.Drained = &m
		}
		hs.Instances = append(hs.Instances, is)
	}
	for _, p := range idle {
		if u := st.units[p]; unitUp(u.Active) {
			hs.Instances = append(hs.Instances, InstanceStatus{Port: p, Unit: cfg.UnitName(p), State: u.Active, Sub: u.Sub, PID: u.MainPID,
				Memory: u.Memory, Restarts: u.Restarts, InNginx: srv.in(p), Release: running[p], Balancers: src.each(p),
				Uptime: u.uptime(st.uptime), Leftover: true, Health: fmt.Sprintf("not checked: its slot serves from %d", cfg.otherPort(p))})
		}
	}
	if werr == nil {
		for _, unit := range cfg.WorkerUnits() {
			u := workers[unit]
			ws := WorkerStatus{Unit: unit, State: u.Active, Sub: u.Sub, PID: u.MainPID, Restarts: u.Restarts, Uptime: u.uptime(st.uptime)}
			if rst != nil {
				ws.Release = rst.workers[unit].running
			}
			hs.Workers = append(hs.Workers, ws)
		}
		for _, unit := range extraWorkers(cfg, workers) {
			u := workers[unit]
			hs.Workers = append(hs.Workers, WorkerStatus{Unit: unit, State: u.Active, Sub: u.Sub, PID: u.MainPID,
				Restarts: u.Restarts, Uptime: u.uptime(st.uptime), BeyondCount: true})
		}
	}
	return hs
}

// EachHost connects to every host at once and runs fn on each (i is the
// host's index in cfg.Hosts); it returns one error per host, nil where fn
// succeeded.
func EachHost(ctx context.Context, cfg *Config, connect func(context.Context, string) (Conn, error), fn func(ctx context.Context, i int, host string, conn Conn) error) []error {
	errs := make([]error, len(cfg.Hosts))
	var wg sync.WaitGroup
	for i, host := range cfg.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := connect(ctx, host)
			if err != nil {
				errs[i] = &UnreachableError{Host: host, Err: err}
				return
			}
			defer conn.Close()
			if err := fn(ctx, i, host, conn); err != nil {
				errs[i] = fmt.Errorf("%s: %w", host, err)
			}
		}()
	}
	wg.Wait()
	return errs
}
