package deployer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
)

// balancers are the load balancer hosts of a run (lb:), shared by its app
// hosts. Each app host's instances are the server lines of its address in
// every balancer's upstream file; the engine sees them through lbRemote as
// one upstream block of its own (view), and a change of it is made on
// every balancer, one change at a time.
type balancers struct {
	d      *Deployer
	cfg    *Config // the balancer side's (lbSide)
	driver lbDriver
	mu     sync.Mutex
	all    []*balancer
	// checked: the preflight of every balancer ran; checkErr is how it
	// ended.
	checked  bool
	checkErr error
}

// balancer is one load balancer host.
type balancer struct {
	s *session
	// content is its upstream file as rollout last read or wrote it.
	content []byte
}

func (b *balancer) host() string { return b.s.host }

// connectBalancers opens a session to every balancer host at once.
func (d *Deployer) connectBalancers(ctx context.Context) (*balancers, error) {
	lc := d.Config.lbSide()
	b := &balancers{d: d, cfg: lc, driver: newLBDriver(lc), all: make([]*balancer, len(d.Config.LB.Hosts))}
	errs := make([]error, len(b.all))
	var wg sync.WaitGroup
	for i, host := range d.Config.LB.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			conn, err := d.Connect(ctx, host)
			if err != nil {
				err = fmt.Errorf("load balancer: %w", err)
				errs[i] = &StepError{Host: host, Step: StepPreflight, Err: err}
				d.emit(Event{Host: host, Step: StepPreflight, Status: StatusFail, Duration: time.Since(t0), Message: err.Error()})
				return
			}
			s := &session{host: host, cfg: lc, conn: conn, t0: t0}
			d.open(s)
			b.all[i] = &balancer{s: s}
		}()
	}
	wg.Wait()
	return b, joinErrors(errs)
}

// close closes every balancer's connection.
func (b *balancers) close() {
	if b == nil {
		return
	}
	for _, lb := range b.all {
		if lb != nil {
			lb.s.link.Close()
		}
	}
}

// preflight checks every balancer once (its Nginx config passes its test
// and the upstream file has the block) and reads its upstream file.
func (b *balancers) preflight(ctx context.Context) error {
	d := b.d
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.checked {
		return b.checkErr
	}
	b.checked = true
	errs := b.each(func(lb *balancer) error {
		content, err := b.driver.check(ctx, lb.s.r)
		if err == nil {
			_, err = b.driver.servers(content, "")
		}
		if err == nil && d.Config.Probe.Enabled {
			err = newProber(b.cfg, lb.host(), lb.s.r.DialContext).check(ctx)
		}
		if err != nil {
			err = fmt.Errorf("load balancer %s: %s: %w", lb.host(), b.driver, err)
			d.emit(Event{Host: lb.host(), Step: StepPreflight, Status: StatusFail, Duration: time.Since(lb.s.t0), Message: err.Error()})
			return err
		}
		lb.content = content
		d.emit(Event{Host: lb.host(), Step: StepPreflight, Status: StatusOK, Duration: time.Since(lb.s.t0), Message: "load balancer"})
		return nil
	})
	b.checkErr = errors.Join(errs...)
	return b.checkErr
}

// read reads every balancer's upstream file again; b.mu held.
func (b *balancers) read(ctx context.Context) error {
	return errors.Join(b.each(func(lb *balancer) error {
		content, err := b.driver.read(ctx, lb.s.r)
		if err != nil {
			return fmt.Errorf("load balancer %s: read %s: %w", lb.host(), b.driver, err)
		}
		lb.content = content
		return nil
	})...)
}

// servers are addr's server lines as the balancers hold them together: a
// port listed on every balancer, down when it is down on any of them (an
// instance serves only when every balancer sends it requests); b.mu held.
func (b *balancers) servers(addr string) (map[int]bool, error) {
	var all map[int]bool
	for i, lb := range b.all {
		servers, err := b.driver.servers(lb.content, addr)
		if err != nil {
			return nil, fmt.Errorf("load balancer %s: %s: %w", lb.host(), b.driver, err)
		}
		if i == 0 {
			all = servers
			continue
		}
		for p, down := range all {
			if other, ok := servers[p]; !ok {
				delete(all, p)
			} else if other && !down {
				all[p] = true
			}
		}
	}
	return all, nil
}

// view is an upstream file holding only addr's server lines as servers
// says: what the engine reads and edits for an app host behind balancers.
func view(upstream, addr string, servers map[int]bool) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "upstream %s {\n", upstream)
	for _, p := range slices.Sorted(maps.Keys(servers)) {
		down := ""
		if servers[p] {
			down = " down"
		}
		fmt.Fprintf(&b, "    server %s:%d%s;\n", addr, p, down)
	}
	b.WriteString("}\n")
	return b.Bytes()
}

// lbChange is one change of addr's server lines on the balancers: what
// each port was (from) and is to be (to); a port missing from either is
// added or removed.
type lbChange struct {
	addr     string
	from, to map[int]bool
}

// split is the change in two: the ports that go into service (or are
// added), and those that go out of it (or are removed).
func (c lbChange) split() (in, out lbChange) {
	in = lbChange{addr: c.addr, from: map[int]bool{}, to: map[int]bool{}}
	out = lbChange{addr: c.addr, from: map[int]bool{}, to: map[int]bool{}}
	for _, p := range c.ports() {
		was, wok := c.from[p]
		will, ok := c.to[p]
		half := out // drained, or removed
		if ok && !will {
			half = in
		}
		if wok {
			half.from[p] = was
		}
		if ok {
			half.to[p] = will
		}
	}
	return in, out
}

// ports are the ports the change changes, in order.
func (c lbChange) ports() []int {
	var ports []int
	for _, p := range slices.Sorted(maps.Keys(c.from)) {
		if will, ok := c.to[p]; !ok || will != c.from[p] {
			ports = append(ports, p)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(c.to)) {
		if _, ok := c.from[p]; !ok {
			ports = append(ports, p)
		}
	}
	slices.Sort(ports)
	return ports
}

func (c lbChange) reverse() lbChange { return lbChange{addr: c.addr, from: c.to, to: c.from} }

// states says what a balancer that may not have made the change holds:
// "10.0.0.5:3001 in service or drained".
func (c lbChange) states() string {
	word := func(m map[int]bool, p int) string {
		down, ok := m[p]
		switch {
		case !ok:
			return "not listed"
		case down:
			return "drained"
		}
		return "in service"
	}
	var parts []string
	for _, p := range c.ports() {
		parts = append(parts, fmt.Sprintf("%s:%d %s or %s", c.addr, p, word(c.from, p), word(c.to, p)))
	}
	return strings.Join(parts, ", ")
}

// change makes c on every balancer at once, one write and reload (or one
// API call) each. Taking an instance out must succeed everywhere: when a
// balancer fails, what the change took out is put back on the others, so
// the instances stay in service there. A change that only puts instances
// into service is made on every balancer that can take it. Each failure
// says what that balancer may hold. When c.from is no longer what the
// balancers hold, nothing is changed: errUpstreamChanged.
func (b *balancers) change(ctx context.Context, c lbChange) (drainWait, error) {
	var wait drainWait
	b.mu.Lock()
	defer b.mu.Unlock()
	cur, err := b.servers(c.addr)
	if err == nil && !maps.Equal(cur, c.from) {
		if err = b.read(ctx); err == nil {
			if cur, err = b.servers(c.addr); err == nil && !maps.Equal(cur, c.from) {
				return wait, errUpstreamChanged
			}
		}
	}
	if err != nil {
		return wait, err
	}
	merr := &multierror.Error{ErrorFormat: oneLine}
	waits := make(map[*balancer]drainWait, len(b.all))
	var wmu sync.Mutex
	errs := b.each(func(lb *balancer) error {
		w, err := b.driver.apply(ctx, lb, c)
		wmu.Lock()
		waits[lb] = w
		wmu.Unlock()
		return err
	})
	var done []*balancer
	for i, lb := range b.all {
		if errs[i] != nil {
			merr = multierror.Append(merr, fmt.Errorf("load balancer %s (it may hold %s): %w", lb.host(), c.states(), errs[i]))
			continue
		}
		done = append(done, lb)
		wait.waited, wait.open = max(wait.waited, waits[lb].waited), wait.open+waits[lb].open
	}
	if _, out := c.split(); merr.ErrorOrNil() != nil && len(out.ports()) > 0 {
		// Put back on the balancers that took the change, within 30s
		// whatever happened to ctx.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		perrs := b.each(func(lb *balancer) error {
			if !slices.Contains(done, lb) {
				return nil
			}
			_, err := b.driver.apply(cctx, lb, out.reverse())
			return err
		})
		var back []string
		for i, lb := range b.all {
			switch {
			case perrs[i] != nil:
				merr = multierror.Append(merr, fmt.Errorf("load balancer %s: put back (it may hold %s): %w", lb.host(), out.states(), perrs[i]))
			case slices.Contains(done, lb):
				back = append(back, lb.host())
			}
		}
		if len(back) > 0 {
			merr = multierror.Append(merr, fmt.Errorf("put back in service on %s", strings.Join(back, ", ")))
		}
	}
	return wait, merr.ErrorOrNil()
}

// each runs fn on every balancer at once; the errors are in b.all's order.
func (b *balancers) each(fn func(lb *balancer) error) []error {
	errs := make([]error, len(b.all))
	var wg sync.WaitGroup
	for i, lb := range b.all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(lb)
		}()
	}
	wg.Wait()
	return errs
}

// lbRemote is an app host's remote behind balancers of its own: the
// upstream it reads and writes is its view of the balancers' (view), a
// write changes every balancer and then waits on the app host for the
// drained instances' requests in flight, and health checks dial the
// instances from a balancer, at the address the balancers use.
type lbRemote struct {
	remote // the app host's
	b      *balancers
	addr   string // the app host's address on the balancers
}

func (l *lbRemote) Preflight(ctx context.Context, ports []int) ([]byte, error) {
	if _, err := l.remote.Preflight(ctx, ports); err != nil {
		return nil, err
	}
	if err := l.b.preflight(ctx); err != nil {
		return nil, err
	}
	l.b.mu.Lock()
	defer l.b.mu.Unlock()
	for _, lb := range l.b.all {
		if err := l.b.driver.ready(lb.content, l.addr, ports); err != nil {
			return nil, fmt.Errorf("load balancer %s: %s: %w", lb.host(), l.b.driver, err)
		}
	}
	return l.view()
}

// view is the app host's view; b.mu held.
func (l *lbRemote) view() ([]byte, error) {
	servers, err := l.b.servers(l.addr)
	if err != nil {
		return nil, err
	}
	return view(l.b.cfg.Nginx.Upstream, l.addr, servers), nil
}

func (l *lbRemote) Inspect(ctx context.Context, ports []int) (hostState, error) {
	st, err := l.remote.Inspect(ctx, ports)
	if err == nil {
		st.upstream, err = l.ReadUpstream(ctx)
	}
	return st, err
}

func (l *lbRemote) ReadUpstream(ctx context.Context) ([]byte, error) {
	l.b.mu.Lock()
	defer l.b.mu.Unlock()
	if err := l.b.read(ctx); err != nil {
		return nil, err
	}
	return l.view()
}

func (l *lbRemote) WriteUpstream(ctx context.Context, have, next []byte, drained []int) (drainWait, error) {
	up := l.b.cfg.Nginx.Upstream
	from, err := upstreamServers(have, up, l.addr)
	if err != nil {
		return drainWait{}, err
	}
	to, err := upstreamServers(next, up, l.addr)
	if err != nil {
		return drainWait{}, err
	}
	wait, err := l.b.change(ctx, lbChange{addr: l.addr, from: from, to: to})
	if err != nil || len(drained) == 0 || !l.b.driver.countsOnAppHost() {
		return wait, err
	}
	// Every balancer's old workers are shutting down: what is still open
	// to the instances is in flight, counted on the app host.
	return l.remote.WriteUpstream(ctx, nil, nil, drained)
}

// DialContext dials from the first balancer still reachable.
func (l *lbRemote) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var err error
	for _, lb := range l.b.all {
		var c net.Conn
		if c, err = lb.s.r.DialContext(ctx, network, addr); err == nil || !errors.Is(err, ErrUnreachable) {
			return c, err
		}
	}
	return nil, err
}

// oneLine formats the balancers' errors on one line, as a step's error is.
func oneLine(errs []error) string {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}
