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
	InNginx  bool          `json:"in_nginx"`
	Healthy  bool          `json:"healthy"`
	Health   string        `json:"health,omitempty"` // why not healthy
	// Release is the release its process runs (release: set); empty when
	// it runs none, or it could not be read.
	Release string `json:"release,omitempty"`
}

// OK: running, in Nginx and healthy.
func (i InstanceStatus) OK() bool { return i.State == "active" && i.InNginx && i.Healthy }

// HostStatus is one host's instances, or why they could not be read.
type HostStatus struct {
	Host      string           `json:"host"`
	Error     string           `json:"error,omitempty"`
	Instances []InstanceStatus `json:"instances"`
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
	return true
}

// Status reads every instance of a host: systemd's view, the upstream
// file, and a health check of each through the connection, all at once.
func Status(ctx context.Context, cfg *Config, host string, conn Conn) HostStatus {
	return hostStatus(ctx, cfg, host, newSSHRemote(cfg, conn))
}

func hostStatus(ctx context.Context, cfg *Config, host string, r remote) HostStatus {
	hs := HostStatus{Host: host}
	cfg, err := resolveHost(ctx, cfg, host, r)
	if err != nil {
		hs.Error = err.Error()
		return hs
	}
	var health map[int]error
	done := make(chan struct{})
	go func() {
		defer close(done)
		health = checkAll(ctx, newHealthCheck(cfg, r), cfg.Ports())
	}()
	st, err := r.Inspect(ctx, cfg.Ports())
	<-done
	if err != nil {
		hs.Error = fmt.Sprintf("read state: %v", err)
		return hs
	}
	var running map[int]string
	if cfg.Release != nil {
		// Best effort: the instances' state stands without it.
		if rst, err := r.ReleaseState(ctx, cfg.Ports()); err == nil {
			running = rst.running
			hs.Current = rst.current
			if id, err := pausedRelease([]releaseState{rst}); err == nil {
				hs.Paused = id
			}
		}
	}
	servers, err := upstreamServers(st.upstream, cfg.Nginx.Upstream, cfg.Nginx.ServerAddress)
	if err != nil {
		hs.Error = fmt.Sprintf("%s: %v", cfg.Nginx.UpstreamFile, err)
	}
	for _, p := range cfg.Ports() {
		u := st.units[p]
		down, listed := servers[p]
		is := InstanceStatus{Port: p, Unit: cfg.UnitName(p), State: u.Active, Sub: u.Sub, PID: u.MainPID,
			Memory: u.Memory, Restarts: u.Restarts, InNginx: listed && !down, Healthy: health[p] == nil, Release: running[p]}
		if u.running() && u.StartedAt > 0 && st.uptime > u.StartedAt {
			is.Uptime = time.Duration(st.uptime-u.StartedAt) * time.Microsecond
		}
		if health[p] != nil {
			is.Health = health[p].Error()
		}
		hs.Instances = append(hs.Instances, is)
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
				errs[i] = fmt.Errorf("%s: %w", host, err)
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
