package deployer

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Snapshot is the whole fleet at one poll: each host's status, and who
// holds its deploy lock (a deploy takes instances out on purpose).
type Snapshot struct {
	Time  time.Time    `json:"time"`
	Hosts []HostStatus `json:"hosts"`
	// Locked is each host's lock holder ("" free), in the order of Hosts.
	Locked []string `json:"locked"`
	// History is the last deploys of every host, oldest first (with
	// Watcher.History).
	History []HistoryEntry `json:"history,omitempty"`
}

// Problems counts what is wrong: hosts that could not be read and
// instances that are not OK.
func (s Snapshot) Problems() int {
	n := 0
	for _, h := range s.Hosts {
		if h.Error != "" {
			n++
		}
		for _, i := range h.Instances {
			if !i.OK() {
				n++
			}
		}
		for _, w := range h.Workers {
			if !w.OK() {
				n++
			}
		}
	}
	return n
}

// Watcher polls every host's status over one connection per host, kept
// open between polls; a host whose connection broke or could not be read
// is connected again at the next poll.
type Watcher struct {
	Config  *Config
	Connect func(ctx context.Context, host string) (Conn, error)
	// PollTimeout bounds one host's poll (connecting included).
	PollTimeout time.Duration
	// History is how many of each host's last deploys a poll reads too (0:
	// none).
	History int

	mu    sync.Mutex
	conns map[string]Conn
}

// Poll reads every host at once.
func (w *Watcher) Poll(ctx context.Context) Snapshot {
	cfg := w.Config
	s := Snapshot{Time: time.Now(), Hosts: make([]HostStatus, len(cfg.Hosts)), Locked: make([]string, len(cfg.Hosts))}
	history := make([][]HistoryEntry, len(cfg.Hosts))
	lbs := ReadBalancers(ctx, cfg, w.conn)
	for _, lb := range lbs {
		if lb.err != nil {
			w.drop(lb.host) // connect again next time
		}
	}
	var wg sync.WaitGroup
	for i, host := range cfg.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Hosts[i], s.Locked[i], history[i] = w.pollHost(ctx, host, lbs)
		}()
	}
	wg.Wait()
	if w.History > 0 {
		s.History = MergeHistory(history, w.History)
	}
	return s
}

func (w *Watcher) pollHost(ctx context.Context, host string, lbs Balancers) (HostStatus, string, []HistoryEntry) {
	timeout := w.PollTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := w.conn(ctx, host)
	if err != nil {
		return HostStatus{Host: host, Error: err.Error()}, "", nil
	}
	if _, err := newSSHRemote(w.Config, conn).Alive(ctx); err != nil {
		w.drop(host)
		if conn, err = w.conn(ctx, host); err != nil {
			return HostStatus{Host: host, Error: err.Error()}, "", nil
		}
	}
	hs := Status(ctx, w.Config, host, conn, lbs)
	holder := ""
	if st, err := LockStatus(ctx, w.Config, host, conn); err == nil && st.Held && !st.Stale {
		holder = "someone"
		if st.Holder != nil {
			holder = st.Holder.String()
		}
	}
	var history []HistoryEntry
	if w.History > 0 && hs.Error == "" {
		history, _ = ReadHistory(ctx, w.Config, host, conn, w.History) // best effort
	}
	if hs.Error != "" {
		w.drop(host) // connect again next time
	}
	return hs, holder, history
}

func (w *Watcher) conn(ctx context.Context, host string) (Conn, error) {
	w.mu.Lock()
	c := w.conns[host]
	w.mu.Unlock()
	if c != nil {
		return c, nil
	}
	c, err := w.Connect(ctx, host)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conns == nil {
		w.conns = map[string]Conn{}
	}
	w.conns[host] = c
	return c, nil
}

func (w *Watcher) drop(host string) {
	w.mu.Lock()
	c := w.conns[host]
	delete(w.conns, host)
	w.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// Close closes every connection.
func (w *Watcher) Close() {
	w.mu.Lock()
	conns := w.conns
	w.conns = nil
	w.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Transition is one change between two polls.
type Transition struct {
	Host string `json:"host"`
	Port int    `json:"port,omitempty"` // 0: the host itself (or a worker)
	// Worker is the worker's unit (workers:) that changed, if one did.
	Worker string `json:"worker,omitempty"`
	// Kind is what changed: unreachable, reachable, down, up, restarted,
	// unhealthy, healthy, out-of-nginx, in-nginx.
	Kind string `json:"kind"`
	// Problem: something went wrong (false: a recovery).
	Problem bool   `json:"problem"`
	Detail  string `json:"detail,omitempty"`
	// During names the deploy lock's holder when the host was locked: a
	// deploy takes instances out on purpose.
	During string `json:"during,omitempty"`
}

func (t Transition) String() string {
	s := Where(t.Host, t.Port, t.Worker) + " " + t.Kind
	if t.Detail != "" {
		s += ": " + t.Detail
	}
	if t.During != "" {
		s += " (during a deploy by " + t.During + ")"
	}
	return s
}

// Transitions are the changes from prev to cur; with no prev (the first
// poll), every problem in cur is one. Hosts are matched by name and
// instances by port. A change on a host locked at either poll is marked as
// during that deploy (its end puts back what it took out).
func Transitions(prev *Snapshot, cur Snapshot) []Transition {
	var out []Transition
	for hi, h := range cur.Hosts {
		during := ""
		if hi < len(cur.Locked) {
			during = cur.Locked[hi]
		}
		var was *HostStatus
		if prev != nil {
			if pi := slices.IndexFunc(prev.Hosts, func(p HostStatus) bool { return p.Host == h.Host }); pi >= 0 {
				was = &prev.Hosts[pi]
				if during == "" && pi < len(prev.Locked) {
					during = prev.Locked[pi]
				}
			}
		}
		add := func(port int, kind string, problem bool, detail string) {
			out = append(out, Transition{Host: h.Host, Port: port, Kind: kind, Problem: problem, Detail: detail, During: during})
		}
		switch {
		case h.Error != "" && (was == nil || was.Error == ""):
			add(0, "unreachable", true, h.Error)
			continue
		case h.Error != "":
			continue // still unreachable: said once
		case was != nil && was.Error != "":
			add(0, "reachable", false, "")
			was = nil // its instances' problems are new again
		}
		for _, i := range h.Instances {
			var before *InstanceStatus
			if was != nil {
				if j := slices.IndexFunc(was.Instances, func(b InstanceStatus) bool { return b.Port == i.Port }); j >= 0 {
					before = &was.Instances[j]
				}
			}
			if i.Leftover {
				if before == nil || !before.Leftover {
					add(i.Port, "leftover", true, fmt.Sprintf("%s runs (pid %d) on a slot's idle port, not in service (%s): a surge under way, or left by an interrupted one; the next deploy stops it", i.Unit, i.PID, i.Health))
				}
				continue
			}
			running := i.State == "active"
			switch {
			case !running && (before == nil || before.State == "active"):
				add(i.Port, "down", true, i.State+"/"+i.Sub)
			case running && before != nil && before.State != "active":
				add(i.Port, "up", false, fmt.Sprintf("pid %d", i.PID))
			}
			if before != nil && i.Restarts > before.Restarts {
				add(i.Port, "restarted", true, fmt.Sprintf("systemd restarted it %d time(s) since the last poll (%d in all)", i.Restarts-before.Restarts, i.Restarts))
			}
			if running {
				switch {
				case !i.Healthy && (before == nil || before.Healthy || before.State != "active"):
					add(i.Port, "unhealthy", true, i.Health)
				case i.Healthy && before != nil && before.State == "active" && !before.Healthy:
					add(i.Port, "healthy", false, "")
				}
			}
			switch {
			case !i.InNginx && i.Drained != nil && (before == nil || before.InNginx):
				add(i.Port, "out-of-nginx", false, i.Drained.String())
			case !i.InNginx && (before == nil || before.InNginx):
				add(i.Port, "out-of-nginx", true, "not in the upstream, or marked down")
			case i.InNginx && before != nil && !before.InNginx:
				add(i.Port, "in-nginx", false, "")
			}
		}
		for _, wk := range h.Workers {
			var before *WorkerStatus
			if was != nil {
				if j := slices.IndexFunc(was.Workers, func(b WorkerStatus) bool { return b.Unit == wk.Unit }); j >= 0 {
					before = &was.Workers[j]
				}
			}
			worker := func(kind string, problem bool, detail string) {
				out = append(out, Transition{Host: h.Host, Worker: wk.Unit, Kind: kind, Problem: problem, Detail: detail, During: during})
			}
			switch {
			case wk.BeyondCount:
				if before == nil {
					worker("beyond-count", true, fmt.Sprintf("running beyond the workers' count (pid %d): it goes on with the code it has; rollout setup stops and disables it (or sudo systemctl disable --now %s), or raise the count", wk.PID, wk.Unit))
				}
			case !wk.OK() && (before == nil || before.OK()):
				worker("down", true, wk.State+"/"+wk.Sub)
			case wk.OK() && before != nil && !before.OK():
				worker("up", false, fmt.Sprintf("pid %d", wk.PID))
			}
			if before != nil && wk.Restarts > before.Restarts {
				worker("restarted", true, fmt.Sprintf("systemd restarted it %d time(s) since the last poll (%d in all)", wk.Restarts-before.Restarts, wk.Restarts))
			}
		}
	}
	return out
}
