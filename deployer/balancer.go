package deployer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
)

// servers are an app host's instances as a balancer holds them: port ->
// drained (out of service). A port missing is not one of its servers.
type servers map[int]bool

// in reports whether port is served: listed and not drained.
func (s servers) in(port int) bool {
	drained, listed := s[port]
	return listed && !drained
}

// with is s with the ports drained (drain true) or put back (false).
func (s servers) with(drain bool, ports ...int) servers {
	out := maps.Clone(s)
	if out == nil {
		out = servers{}
	}
	for _, p := range ports {
		out[p] = drain
	}
	return out
}

// without is s without the ports.
func (s servers) without(ports ...int) servers {
	out := maps.Clone(s)
	for _, p := range ports {
		delete(out, p)
	}
	return out
}

// balancer is the engine's one way to take an app host's instances out of
// service and put them back, wherever they are served: the host's own
// Nginx (nginxBalancer) or HAProxy (haproxyBalancer), or the load balancer
// hosts of lb: (lbBalancer, with
// a driver per kind of balancer). The engine asks "drain these" and
// "serve these again" and never which balancer it is.
type balancer interface {
	fmt.Stringer // what it changes, for messages
	// preflight checks, before any change, that the balancer can be
	// changed for these instances, and returns the host's servers.
	preflight(ctx context.Context, ports []int) (servers, error)
	// read reads the host's servers again.
	read(ctx context.Context) (servers, error)
	// change makes the host's servers to (drained, put back, added or
	// removed) from from, what it last returned, in one step, then waits
	// for the drained ports' requests in flight. When it no longer holds
	// from, nothing changes: errUpstreamChanged.
	change(ctx context.Context, from, to servers, drained []int) (drainWait, error)
	// how is how one change is made, for events: "one reload".
	how() string
	// dial opens a connection to an instance from where the balancer
	// sends it requests (health checks).
	dial(ctx context.Context, network, addr string) (net.Conn, error)
}

// newBalancer is an app host's balancer: the load balancer hosts of the
// run (lb:) when it has them, else the host's own HAProxy (haproxy:) or
// Nginx. host is its name, cfg its config
// (nginx.server_address: its address on the balancers); r its remote.
func (d *Deployer) newBalancer(host string, cfg *Config, r remote) balancer {
	if d.lbs != nil {
		return &lbBalancer{b: d.lbs, app: r, addr: cfg.Nginx.ServerAddress, host: host, cfg: cfg}
	}
	return hostBalancer(cfg, r)
}

// hostBalancer is the balancer on the app host itself: its HAProxy
// (haproxy:), its Caddy (caddy:), its Traefik (traefik:) or its Nginx.
func hostBalancer(cfg *Config, r remote) balancer {
	switch {
	case cfg.HAProxy != nil:
		return newHAProxyBalancer(cfg, r)
	case cfg.Caddy != nil:
		return newCaddyBalancer(cfg, r)
	case cfg.Traefik != nil:
		return newTraefikBalancer(cfg, r)
	}
	return &nginxBalancer{r: r, n: cfg.Nginx, cfg: cfg}
}

// frontends are the sessions whose Nginx (or HAProxy) serves the site:
// the load balancer hosts with lb:, else the app hosts. The probe sends
// its requests through them.
func (d *Deployer) frontends(sessions []*session) []*session {
	if d.lbs == nil {
		return sessions
	}
	var out []*session
	for _, lb := range d.lbs.all {
		out = append(out, lb.s)
	}
	return out
}

// nginxBalancer is the Nginx on the app host itself: the server lines of
// one upstream block in its upstream file, changed with a compare-and-swap
// write, nginx -t and a reload, and the requests in flight counted on the
// host.
type nginxBalancer struct {
	r   remote
	n   NginxConfig
	cfg *Config // the host's (the probe's settings)
	// content is the upstream file as rollout last read or wrote it.
	content []byte
}

var _ balancer = (*nginxBalancer)(nil)

func (b *nginxBalancer) String() string { return b.n.UpstreamFile }

func (b *nginxBalancer) how() string { return "one reload" }

func (b *nginxBalancer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return b.r.DialContext(ctx, network, addr)
}

// preflight checks that the Nginx config passes its test and the upstream
// file has the block, and, with the probe on, that the site answers
// through this Nginx.
func (b *nginxBalancer) preflight(ctx context.Context, _ []int) (servers, error) {
	content, err := b.r.NginxCheck(ctx, b.n)
	if err != nil {
		return nil, err
	}
	s, err := b.adopt(content)
	if err == nil && b.cfg != nil && b.cfg.Probe.Enabled {
		err = newProber(b.cfg, "", b.r.DialContext).check(ctx)
	}
	return s, err
}

func (b *nginxBalancer) read(ctx context.Context) (servers, error) {
	content, err := b.r.ReadUpstream(ctx, b.n)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", b.n.UpstreamFile, err)
	}
	return b.adopt(content)
}

func (b *nginxBalancer) adopt(content []byte) (servers, error) {
	s, err := upstreamServers(content, b.n.Upstream, b.n.ServerAddress)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (rollout edits the server lines of that block)", b.n.UpstreamFile, err)
	}
	b.content = content
	return s, nil
}

// change writes the file with the change made, or nothing when it holds
// it already. A file changed by someone else is read again (for the
// caller to check capacity on it) and errUpstreamChanged returned.
func (b *nginxBalancer) change(ctx context.Context, from, to servers, drained []int) (drainWait, error) {
	next, err := editUpstream(b.content, b.n, from, to)
	if err != nil {
		return drainWait{}, fmt.Errorf("%s: %w", b.n.UpstreamFile, err)
	}
	if bytes.Equal(next, b.content) && len(drained) == 0 {
		return drainWait{}, nil
	}
	wait, err := b.r.WriteUpstream(ctx, b.n, b.content, next, drained, true)
	if errors.Is(err, errUpstreamChanged) {
		if _, rerr := b.read(ctx); rerr != nil {
			return wait, rerr
		}
		return wait, errUpstreamChanged
	}
	if err != nil {
		return wait, err
	}
	b.content = next
	return wait, nil
}

// haproxyBalancer is HAProxy on the app host itself (haproxy:): the
// servers of one backend at haproxy.server_address, drained and readied
// through its runtime API with the haproxy driver (no reload, so no client
// connection is closed), and the drain's wait is HAProxy's count of the
// servers' current sessions.
type haproxyBalancer struct {
	r    remote
	drv  haproxyDriver
	addr string
	cfg  *Config // the host's (the probe's settings)
	// state is the backend's servers as rollout last read or changed them.
	state []byte
}

var _ balancer = (*haproxyBalancer)(nil)

func newHAProxyBalancer(cfg *Config, r remote) *haproxyBalancer {
	return &haproxyBalancer{r: r, cfg: cfg, addr: cfg.Nginx.ServerAddress,
		drv: haproxyDriver{api: haproxyAPI{Socket: cfg.HAProxy.Socket, Backend: cfg.HAProxy.Backend}, maintIsIdle: cfg.surging()}}
}

func (b *haproxyBalancer) String() string { return b.drv.String() }

func (b *haproxyBalancer) how() string { return "one runtime API call (no reload)" }

func (b *haproxyBalancer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return b.r.DialContext(ctx, network, addr)
}

// preflight checks that the runtime API answers at level admin and that
// the backend has a server for every instance, none in maintenance, and,
// with the probe on, that the site answers through this host.
func (b *haproxyBalancer) preflight(ctx context.Context, ports []int) (servers, error) {
	state, err := b.drv.check(ctx, b.r)
	if err != nil {
		return nil, err
	}
	if err := b.drv.ready(state, b.addr, ports); err != nil {
		return nil, fmt.Errorf("%s: %w", b.drv, err)
	}
	if b.cfg.surging() {
		if err := b.drv.idle(state, b.addr, b.cfg.App, b.cfg.idlePorts()); err != nil {
			return nil, fmt.Errorf("%s: %w", b.drv, err)
		}
	}
	s, err := b.adopt(state)
	if err == nil && b.cfg.Probe.Enabled {
		err = newProber(b.cfg, "", b.r.DialContext).check(ctx)
	}
	return s, err
}

func (b *haproxyBalancer) read(ctx context.Context) (servers, error) {
	state, err := b.drv.read(ctx, b.r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", b.drv, err)
	}
	return b.adopt(state)
}

func (b *haproxyBalancer) adopt(state []byte) (servers, error) {
	s, err := b.view(state)
	if err != nil {
		return nil, err
	}
	b.state = state
	return s, nil
}

// view is the host's servers in state. With strategy.max_surge a server
// in maintenance is an idle slot's port: not one of the servers (a surge
// readies it, and puts the port it leaves in maintenance).
func (b *haproxyBalancer) view(state []byte) (servers, error) {
	s, err := b.drv.servers(state, b.addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.drv, err)
	}
	return s, nil
}

// change drains and readies the servers in one call, when the backend
// still holds from (else it is read again and errUpstreamChanged
// returned); the call waits for the drained servers' sessions.
func (b *haproxyBalancer) change(ctx context.Context, from, to servers, _ []int) (drainWait, error) {
	cur, err := b.view(b.state)
	if err != nil {
		return drainWait{}, err
	}
	if !maps.Equal(cur, from) {
		if cur, err = b.read(ctx); err != nil {
			return drainWait{}, err
		}
		if !maps.Equal(cur, from) {
			return drainWait{}, errUpstreamChanged
		}
	}
	state, wait, err := b.drv.apply(ctx, b.r, b.state, lbChange{addr: b.addr, from: from, to: to})
	b.state = state
	return wait, err
}

// editUpstream makes the server lines of n's block in content go from
// from to to: drained or put back, added (drained if so), or removed.
// Every other byte stays.
func editUpstream(content []byte, n NginxConfig, from, to servers) ([]byte, error) {
	next := content
	all := map[int]bool{}
	for p := range from {
		all[p] = true
	}
	for p := range to {
		all[p] = true
	}
	for _, p := range slices.Sorted(maps.Keys(all)) {
		down, listed := to[p]
		was, there := from[p]
		var err error
		switch {
		case !listed && there:
			next, err = removeServer(next, n.Upstream, n.ServerAddress, p)
		case !listed:
		case !there:
			if next, err = addServer(next, n.Upstream, n.ServerAddress, p); err == nil && down {
				next, err = setServerDown(next, n.Upstream, n.ServerAddress, p, true)
			}
		case was != down:
			next, err = setServerDown(next, n.Upstream, n.ServerAddress, p, down)
		}
		if err != nil {
			return nil, err
		}
	}
	return next, nil
}

// appHostBalancerFiles are the balancer's files setup writes on an app
// host: with its own Nginx, the upstream file naming the instances
// (written only when missing: rollout edits it while it deploys) and the
// site sending requests to it; with lb:, none (they are the balancers',
// BalancerFiles); with haproxy:, the backend's server lines, which setup
// does not write (rollout does not write haproxy.cfg).
func appHostBalancerFiles(cfg *Config, ports []int) []ManagedFile {
	if h := cfg.HAProxy; h != nil {
		var servers []haproxyServer
		for _, p := range ports {
			servers = append(servers, haproxyServer{name: fmt.Sprintf("%s-%d", cfg.App, p), addr: h.ServerAddress, port: p})
		}
		for _, o := range cfg.idleOf(ports) { // max_surge: in maintenance
			servers = append(servers, haproxyServer{name: fmt.Sprintf("%s-%d", cfg.App, o), addr: h.ServerAddress, port: o, disabled: true})
		}
		return []ManagedFile{haproxyLines(h.Socket, h.Backend, servers)}
	}
	if cfg.Caddy != nil {
		return caddyFiles(cfg, ports)
	}
	if cfg.Traefik != nil {
		return traefikFiles(cfg, ports)
	}
	if cfg.LB != nil {
		return nil
	}
	var up bytes.Buffer
	fmt.Fprintf(&up, "# Written by rollout setup; rollout marks servers down and up while it deploys.\nupstream %s {\n", cfg.Nginx.Upstream)
	for _, p := range ports {
		fmt.Fprintf(&up, "    server %s:%d;\n", cfg.Nginx.ServerAddress, p)
	}
	up.WriteString("}\n")
	return []ManagedFile{
		{Path: cfg.Nginx.UpstreamFile, Owner: "root:root", Mode: "644", Content: up.String(), Keep: true},
		{Path: cfg.setupDefaults().SiteFile, Owner: "root:root", Mode: "644", Content: renderSite(cfg)},
	}
}

// liveConfig is the host's config with, for max_surge, the ports it
// serves from now: for each slot, its spare port when the balancer lists
// it and not its home port (or serves from it and not from its home
// port); its home port otherwise. When the balancer cannot be read (no
// upstream file before rollout setup), the home ports: any operation that
// needs the balancer reads it again and says why it cannot.
//
// With lb: the balancers are not the app host's: the commands that reach
// them read them (liveOn), and here each slot's port is the one whose
// unit runs, when only one of the two does (a surge under way or cut
// short runs both: its home port then).
func liveConfig(ctx context.Context, hc *Config, r remote) *Config {
	if !hc.surging() {
		return hc
	}
	if hc.LB != nil {
		home, spare := hc.slots()
		st, err := r.Inspect(ctx, hc.AllPorts())
		if err != nil {
			return hc
		}
		live := slices.Clone(home)
		for i := range home {
			if unitUp(st.units[spare[i]].Active) && !unitUp(st.units[home[i]].Active) {
				live[i] = spare[i]
			}
		}
		return hc.withLive(live)
	}
	srv, err := hostBalancer(hc, r).read(ctx)
	if err != nil {
		return hc
	}
	return hc.liveOn(srv)
}

// liveOn is hc with, for max_surge, each slot's live port as the
// balancers' servers srv say.
func (hc *Config) liveOn(srv servers) *Config {
	if !hc.surging() {
		return hc
	}
	home, spare := hc.slots()
	return hc.withLive(liveSlots(home, spare, srv))
}
