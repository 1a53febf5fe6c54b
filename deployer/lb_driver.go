package deployer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// lbDriver is how rollout reads and changes one kind of load balancer
// (lb.driver). Its state is what read returns: the upstream file for
// nginx, the backend's servers for haproxy.
type lbDriver interface {
	fmt.Stringer // what it changes, for messages
	// check checks the balancer before any change and reads its state.
	check(ctx context.Context, r remote) ([]byte, error)
	read(ctx context.Context, r remote) ([]byte, error)
	// servers are addr's servers in state: port -> out of service.
	servers(state []byte, addr string) (map[int]bool, error)
	// ready checks, at the preflight, that the balancer can deploy addr's
	// ports as its state says.
	ready(state []byte, addr string, ports []int) error
	// idle checks, at the preflight of a surge (strategy.max_surge), that
	// the balancer can take addr's spare ports into service; name is
	// what the balancer's lines for addr are named after.
	idle(state []byte, addr, name string, spare []int) error
	// apply makes the change on the balancer (r) whose state rollout last
	// read or wrote is state; it returns the state after it (state when
	// nothing changed) and how the wait for the drained instances'
	// requests ended.
	apply(ctx context.Context, r remote, state []byte, c lbChange) ([]byte, drainWait, error)
	// countsOnAppHost: the drained instances' requests in flight are
	// counted on their app host (not by the balancer).
	countsOnAppHost() bool
	// how is how one change is made, for events.
	how() string
	// plan is what the plan says it does for the app host at addr
	// (balancer_plan.go); lc runs commands on a balancer.
	plan(lc sshRemote, cfg *Config, addr string) balancerPlan
}

// newLBDriver is the driver of lb.driver.
func newLBDriver(cfg *Config) lbDriver {
	if cfg.LB.Driver == lbHAProxy {
		return haproxyDriver{api: haproxyAPI{Socket: cfg.LB.Socket, Backend: cfg.LB.Backend}, maintIsIdle: cfg.surging()}
	}
	return nginxDriver{n: cfg.Nginx}
}

// nginxDriver changes the upstream file on each balancer, one write and
// one reload per change, as on a host of its own.
type nginxDriver struct{ n NginxConfig }

func (n nginxDriver) String() string { return n.n.UpstreamFile }

func (n nginxDriver) check(ctx context.Context, r remote) ([]byte, error) {
	return r.NginxCheck(ctx, n.n)
}

func (n nginxDriver) read(ctx context.Context, r remote) ([]byte, error) {
	return r.ReadUpstream(ctx, n.n)
}

func (n nginxDriver) servers(state []byte, addr string) (map[int]bool, error) {
	return upstreamServers(state, n.n.Upstream, addr)
}

func (n nginxDriver) ready([]byte, string, []int) error { return nil }

// idle: a spare port becomes a server line the change adds.
func (n nginxDriver) idle([]byte, string, string, []int) error { return nil }

func (n nginxDriver) countsOnAppHost() bool { return true }

func (n nginxDriver) how() string { return "one reload on each balancer" }

// edit makes the change in a balancer's upstream file.
func (n nginxDriver) edit(content []byte, c lbChange) ([]byte, error) {
	have, err := upstreamServers(content, n.n.Upstream, c.addr)
	if err != nil {
		return nil, err
	}
	// Only the ports the change changes: a half of a change (split) names
	// no others, and they stay as they are.
	from, to := servers{}, servers{}
	for _, p := range c.ports() {
		if v, ok := have[p]; ok {
			from[p] = v
		}
		if v, ok := c.to[p]; ok {
			to[p] = v
		}
	}
	at := n.n
	at.ServerAddress = c.addr
	return editUpstream(content, at, from, to)
}

// apply writes the change, or nothing when the file holds it already. A
// file changed by someone else meanwhile is read again and the change
// made on it, once. It waits for the old workers, not for the requests.
func (n nginxDriver) apply(ctx context.Context, r remote, content []byte, c lbChange) ([]byte, drainWait, error) {
	var drained []int
	for _, p := range c.ports() {
		if c.to[p] {
			drained = append(drained, p)
		}
	}
	for attempt := 0; ; attempt++ {
		next, err := n.edit(content, c)
		if err != nil {
			return content, drainWait{}, fmt.Errorf("%s: %w", n.n.UpstreamFile, err)
		}
		if bytes.Equal(next, content) {
			return content, drainWait{}, nil
		}
		_, err = r.WriteUpstream(ctx, n.n, content, next, drained, false)
		if errors.Is(err, errUpstreamChanged) && attempt == 0 {
			cur, rerr := r.ReadUpstream(ctx, n.n)
			if rerr != nil {
				return content, drainWait{}, fmt.Errorf("read %s: %w", n.n.UpstreamFile, rerr)
			}
			content = cur
			continue
		}
		if err != nil {
			return content, drainWait{}, err
		}
		return next, drainWait{}, nil
	}
}

// haproxyDriver drains and readies the backend's servers through HAProxy's
// runtime API: no reload, and the drain waits until the balancer has no
// session left on the server. It never writes haproxy.cfg, and never
// readies a server someone put in maintenance.
type haproxyDriver struct {
	api haproxyAPI
	// maintIsIdle (strategy.max_surge): a server in maintenance is an
	// idle slot's port, not one of the servers; one a change adds is
	// readied from maintenance ("wake"), one it removes is put in
	// maintenance ("maint"), its sessions waited for.
	maintIsIdle bool
}

func (h haproxyDriver) String() string { return "haproxy backend " + h.api.Backend }

func (h haproxyDriver) check(ctx context.Context, r remote) ([]byte, error) {
	return r.HAProxy(ctx, h.api, "check", nil)
}

func (h haproxyDriver) read(ctx context.Context, r remote) ([]byte, error) {
	return r.HAProxy(ctx, h.api, "state", nil)
}

func (h haproxyDriver) countsOnAppHost() bool { return false }

func (h haproxyDriver) how() string { return "one change on each balancer (no reload)" }

// haproxyServer is one server of "show servers state".
type haproxyServer struct {
	name  string
	addr  string
	port  int
	admin int // srv_admin_state: bits of maintenance and drain
	// disabled: a line setup renders starts it in maintenance (an idle
	// slot's port, strategy.max_surge).
	disabled bool
}

// The bits of srv_admin_state (HAProxy's enum srv_admin): maintenance
// (forced, inherited from a tracked server, a failed address resolution:
// SRV_ADMF_MAINT) and drain (forced, inherited: SRV_ADMF_DRAIN). The
// others say nothing of service: 0x04 (the server has "disabled" in
// haproxy.cfg; it stays once the server is put in service through the
// API) and 0x40 (its FQDN changed).
const (
	haproxyMaintBits = 0x01 | 0x02 | 0x20
	haproxyDrainBits = 0x08 | 0x10
)

// maint: the server is in maintenance.
func (s haproxyServer) maint() bool { return s.admin&haproxyMaintBits != 0 }

// out: the server is sent no new request (in maintenance or drained).
func (s haproxyServer) out() bool { return s.admin&(haproxyMaintBits|haproxyDrainBits) != 0 }

// parseServersState reads "show servers state" (format 1: a version line,
// a "# name..." header, a line per server), after the "pid N" line
// rollout's reads put first (cutPid).
func parseServersState(state []byte) ([]haproxyServer, error) {
	_, state = cutPid(state)
	lines := strings.Split(strings.TrimSpace(string(state)), "\n")
	if len(lines) < 2 || strings.TrimSpace(lines[0]) != "1" || !strings.HasPrefix(lines[1], "# ") {
		return nil, fmt.Errorf("show servers state: unexpected output %q", quoteValue(string(state)))
	}
	col := map[string]int{}
	for i, name := range strings.Fields(strings.TrimPrefix(lines[1], "# ")) {
		col[name] = i
	}
	for _, name := range []string{"srv_name", "srv_addr", "srv_port", "srv_admin_state"} {
		if _, ok := col[name]; !ok {
			return nil, fmt.Errorf("show servers state: no %s column in %q", name, lines[1])
		}
	}
	var out []haproxyServer
	for _, line := range lines[2:] {
		f := strings.Fields(line)
		if len(f) <= max(col["srv_name"], col["srv_addr"], col["srv_port"], col["srv_admin_state"]) {
			continue
		}
		port, perr := strconv.Atoi(f[col["srv_port"]])
		admin, aerr := strconv.Atoi(f[col["srv_admin_state"]])
		if perr != nil || aerr != nil {
			return nil, fmt.Errorf("show servers state: unexpected line %q", line)
		}
		out = append(out, haproxyServer{name: f[col["srv_name"]], addr: f[col["srv_addr"]], port: port, admin: admin})
	}
	return out, nil
}

// cutPid splits a state as rollout reads it into HAProxy's process ID
// (its first line, "pid N") and "show servers state"; "" when the state
// has no such line.
func cutPid(state []byte) (string, []byte) {
	line, rest, _ := bytes.Cut(state, []byte("\n"))
	if pid, ok := bytes.CutPrefix(line, []byte("pid ")); ok {
		return string(bytes.TrimSpace(pid)), rest
	}
	return "", state
}

// byPort are addr's servers by port. Two servers at one address and port
// are an error: rollout would not know which one is the instance.
func (h haproxyDriver) byPort(state []byte, addr string) (map[int]haproxyServer, error) {
	all, err := parseServersState(state)
	if err != nil {
		return nil, err
	}
	out := map[int]haproxyServer{}
	for _, s := range all {
		if s.addr != addr {
			continue
		}
		if o, dup := out[s.port]; dup {
			return nil, fmt.Errorf("servers %s and %s are both %s:%d", o.name, s.name, addr, s.port)
		}
		out[s.port] = s
	}
	return out, nil
}

// servers are addr's servers: port -> out of service; with maintIsIdle
// (strategy.max_surge) one in maintenance is an idle slot's port, not one
// of them.
func (h haproxyDriver) servers(state []byte, addr string) (map[int]bool, error) {
	all, err := h.byPort(state, addr)
	if err != nil {
		return nil, err
	}
	out := servers{}
	for p, s := range all {
		if !h.maintIsIdle || !s.maint() {
			out[p] = s.out()
		}
	}
	return out, nil
}

// ready: every instance is a server of the backend, none in maintenance.
func (h haproxyDriver) ready(state []byte, addr string, ports []int) error {
	servers, err := h.byPort(state, addr)
	if err != nil {
		return err
	}
	for _, p := range ports {
		s, ok := servers[p]
		switch {
		case !ok:
			return fmt.Errorf("no server at %s:%d: rollout does not write haproxy.cfg; add \"server NAME %s:%d check\" to backend %s and reload HAProxy", addr, p, addr, p, h.api.Backend)
		case s.maint():
			return fmt.Errorf("server %s/%s (%s:%d) is in maintenance (admin state %#x), put there by someone: rollout never readies it; \"set server %s/%s state ready\" when it may serve again", h.api.Backend, s.name, addr, p, s.admin, h.api.Backend, s.name)
		}
	}
	return nil
}

// idle: every port in spare (strategy.max_surge's idle ports) is a server
// of the backend, or the line to add is named.
func (h haproxyDriver) idle(state []byte, addr, name string, spare []int) error {
	servers, err := h.byPort(state, addr)
	if err != nil {
		return err
	}
	for _, p := range spare {
		if _, ok := servers[p]; !ok {
			return fmt.Errorf("no server at %s:%d for strategy.max_surge's spare port: rollout does not write haproxy.cfg; add \"server %s-%d %s:%d check disabled\" to backend %s (rollout setup --dry-run shows every line) and reload HAProxy", addr, p, name, p, addr, p, h.api.Backend)
		}
	}
	return nil
}

// apply drains and readies the servers the change names, in one call:
// the script refuses to ready a server in maintenance on the state it
// reads first, and prints the state after the change. A server the
// backend lacks is an error (rollout does not write haproxy.cfg).
//
// The call names the HAProxy process the state was read from. One
// reloaded or restarted since has forgotten every state set through its
// API (a server rollout drained serves again): nothing is changed then,
// and the change is made again from the new process's states to c.to,
// which sets again what rollout holds out; the drainWait's note says so.
func (h haproxyDriver) apply(ctx context.Context, r remote, state []byte, c lbChange) ([]byte, drainWait, error) {
	var notes []string
	for attempt := 0; ; attempt++ {
		items, err := h.items(state, c)
		if err != nil || len(items) == 0 {
			return state, drainWait{notes: notes}, err
		}
		pid, _ := cutPid(state)
		if pid != "" {
			items = append([]string{"pid:" + pid}, items...)
		}
		out, err := r.HAProxy(ctx, h.api, "apply", items)
		if err != nil {
			return state, drainWait{notes: notes}, err
		}
		// "drained MS" or "busy MS OPEN", or "restarted"; then the state.
		first, after, _ := bytes.Cut(out, []byte("\n"))
		if string(first) == "restarted" {
			now, _ := cutPid(after)
			from, err := h.servers(after, c.addr)
			switch {
			case err != nil:
				return state, drainWait{notes: notes}, err
			case attempt > 0:
				return after, drainWait{notes: notes}, fmt.Errorf("HAProxy at %s restarted again during the change (process %s, now %s)", h.api.Socket, pid, now)
			}
			notes = append(notes, fmt.Sprintf("HAProxy at %s was reloaded or restarted since rollout's last change (process %s, now %s), which forgets the states set through its API: %s", h.api.Socket, pid, now, h.lost(from, c)))
			state, c.from = after, from
			continue
		}
		wait := drainWait{notes: notes}
		var status string
		var ms int
		fmt.Sscan(string(first), &status, &ms, &wait.open)
		if status != "drained" && status != "busy" {
			return state, wait, fmt.Errorf("haproxy apply: unexpected output %q", quoteValue(string(out)))
		}
		wait.waited = time.Duration(ms) * time.Millisecond
		if _, err := parseServersState(after); err != nil {
			return state, wait, err
		}
		return after, wait, nil
	}
}

// lost says what a new HAProxy process (whose servers are now) undid of
// what rollout had set (c.from): the servers it held out that serve again,
// drained again by this change, or put back by it anyway.
func (h haproxyDriver) lost(now servers, c lbChange) string {
	var again, early []int
	for _, p := range slices.Sorted(maps.Keys(c.from)) {
		switch {
		case !c.from[p] || !now.in(p):
		case c.to[p]:
			again = append(again, p)
		default:
			early = append(early, p)
		}
	}
	var parts []string
	if len(again) > 0 {
		parts = append(parts, fmt.Sprintf("%s:%s served again, drained again", c.addr, portList(again)))
	}
	if len(early) > 0 {
		parts = append(parts, fmt.Sprintf("%s:%s served again before rollout put it back", c.addr, portList(early)))
	}
	if len(parts) == 0 {
		return "nothing rollout held out served again"
	}
	return strings.Join(parts, "; ")
}

// items are the apply script's items for c: the readies first (capacity
// before the drains).
func (h haproxyDriver) items(state []byte, c lbChange) ([]string, error) {
	servers, err := h.byPort(state, c.addr)
	if err != nil {
		return nil, err
	}
	var items, drains []string
	for _, p := range c.ports() {
		s, there := servers[p]
		down, listed := c.to[p]
		_, was := c.from[p]
		switch {
		case there && h.maintIsIdle && !listed && was:
			drains = append(drains, "maint:"+s.name)
		case there && h.maintIsIdle && listed && !was && !down && s.maint():
			items = append(items, "wake:"+s.name)
		case !there || !listed:
			return nil, fmt.Errorf("%s: no server to add or remove at %s:%d: rollout does not write haproxy.cfg; change backend %s there and reload HAProxy", h, c.addr, p, h.api.Backend)
		case !down && s.maint():
			return nil, fmt.Errorf("server %s/%s (%s:%d) is in maintenance (admin state %#x), put there by someone: rollout never readies it", h.api.Backend, s.name, c.addr, p, s.admin)
		case down:
			drains = append(drains, "drain:"+s.name)
		default:
			items = append(items, "ready:"+s.name)
		}
	}
	return append(items, drains...), nil
}
