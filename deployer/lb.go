package deployer

import (
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
	all    []*lbHost
	// checked: the preflight of every balancer ran; checkErr is how it
	// ended.
	checked  bool
	checkErr error
}

// lbHost is one load balancer host.
type lbHost struct {
	s *session
	// content is its upstream file as rollout last read or wrote it.
	content []byte
}

func (b *lbHost) host() string { return b.s.host }

// apply makes c on the balancer with driver d and keeps its state.
func (b *lbHost) apply(ctx context.Context, d lbDriver, c lbChange) (drainWait, error) {
	state, wait, err := d.apply(ctx, b.s.r, b.content, c)
	b.content = state
	return wait, err
}

// connectBalancers opens a session to every balancer host at once; nil
// without lb:.
func (d *Deployer) connectBalancers(ctx context.Context) (*balancers, error) {
	if d.Config.LB == nil {
		return nil, nil
	}
	lc := d.Config.lbSide()
	b := &balancers{d: d, cfg: lc, driver: newLBDriver(d.Config), all: make([]*lbHost, len(d.Config.LB.Hosts))}
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
				errs[i] = &StepError{Host: host, Step: StepPreflight, Err: err, Took: time.Since(t0)}
				d.emit(Event{Host: host, Step: StepPreflight, Status: StatusFail, Duration: time.Since(t0), Message: err.Error()})
				return
			}
			s := &session{host: host, cfg: lc, conn: conn, t0: t0}
			d.open(s)
			b.all[i] = &lbHost{s: s}
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
	errs := b.each(func(lb *lbHost) error {
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
	return errors.Join(b.each(func(lb *lbHost) error {
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
func (b *balancers) servers(addr string) (servers, error) {
	var each []servers
	for _, lb := range b.all {
		srv, err := b.driver.servers(lb.content, addr)
		if err != nil {
			return nil, fmt.Errorf("load balancer %s: %s: %w", lb.host(), b.driver, err)
		}
		each = append(each, srv)
	}
	return together(each), nil
}

// together are an app host's servers as several balancers hold them
// together: a port listed on every one, out of service when it is on any.
func together(each []servers) servers {
	var all servers
	for i, srv := range each {
		if i == 0 {
			all = maps.Clone(srv)
			continue
		}
		for p, down := range all {
			if other, ok := srv[p]; !ok {
				delete(all, p)
			} else if other && !down {
				all[p] = true
			}
		}
	}
	return all
}

// inService counts the instances of hosts in service on every balancer,
// as they say now.
func (b *balancers) inService(ctx context.Context, hosts []string) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.read(ctx); err != nil {
		return 0, err
	}
	n := 0
	for _, host := range hosts {
		srv, err := b.servers(b.d.Config.lbAddress(host))
		if err != nil {
			return 0, err
		}
		for p := range srv {
			if srv.in(p) {
				n++
			}
		}
	}
	return n, nil
}

// String names the balancer hosts: "lb1 and lb2".
func (b *balancers) String() string { return b.d.Config.LB.balancers() }

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

// outHalf is the half of the change that takes ports out of service.
func (c lbChange) outHalf() lbChange {
	_, out := c.split()
	return out
}

// adds reports whether the change adds servers the balancers did not
// list.
func (c lbChange) adds() bool {
	for p := range c.to {
		if _, ok := c.from[p]; !ok {
			return true
		}
	}
	return false
}

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
// into service is made on every balancer that can take it. A change that
// adds servers (a new instance of a scale, a surge's new ports) is taken
// back whole on the others: the engine stops an instance it could not
// add everywhere. Each failure
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
	waits := make(map[*lbHost]drainWait, len(b.all))
	var wmu sync.Mutex
	errs := b.each(func(lb *lbHost) error {
		w, err := lb.apply(ctx, b.driver, c)
		wmu.Lock()
		waits[lb] = w
		wmu.Unlock()
		return err
	})
	var done []*lbHost
	for i, lb := range b.all {
		if errs[i] != nil {
			merr = multierror.Append(merr, fmt.Errorf("load balancer %s (it may hold %s): %w", lb.host(), c.states(), errs[i]))
			continue
		}
		done = append(done, lb)
		wait.waited, wait.open = max(wait.waited, waits[lb].waited), wait.open+waits[lb].open
		for _, n := range waits[lb].notes {
			wait.notes = append(wait.notes, "load balancer "+lb.host()+": "+n)
		}
	}
	// What to take back on the balancers that took the change: what it
	// took out of service. A change that adds servers (a surge's new
	// ports) is taken back whole: a server on some balancers only is one
	// the engine no longer counts, and may stop.
	undo, words := c.outHalf(), "put back in service on %s"
	if c.adds() {
		undo, words = c, "taken back on %s"
	}
	if merr.ErrorOrNil() != nil && len(undo.ports()) > 0 {
		// Within 30s whatever happened to ctx.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		perrs := b.each(func(lb *lbHost) error {
			if !slices.Contains(done, lb) {
				return nil
			}
			_, err := lb.apply(cctx, b.driver, undo.reverse())
			return err
		})
		var back []string
		for i, lb := range b.all {
			switch {
			case perrs[i] != nil:
				merr = multierror.Append(merr, fmt.Errorf("load balancer %s: take back (it may hold %s): %w", lb.host(), undo.states(), perrs[i]))
			case slices.Contains(done, lb):
				back = append(back, lb.host())
			}
		}
		if len(back) > 0 {
			merr = multierror.Append(merr, fmt.Errorf(words, strings.Join(back, ", ")))
		}
	}
	return wait, merr.ErrorOrNil()
}

// each runs fn on every balancer at once; the errors are in b.all's order.
func (b *balancers) each(fn func(lb *lbHost) error) []error {
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

// lbBalancer is an app host's balancer when the load balancer hosts of
// lb: serve it: its servers are its address's on every balancer (an
// instance serves only when every balancer sends it requests), a change is
// made on every balancer at once (balancers.change), and the drained
// instances' requests in flight are counted by the balancers (haproxy) or
// on the app host (nginx). Health checks dial from the first balancer
// reachable, at the address the balancers use.
type lbBalancer struct {
	b    *balancers
	app  remote // the app host's
	addr string // the app host's address on the balancers
	host string // the app host's name in the config
	cfg  *Config
}

var _ balancer = (*lbBalancer)(nil)

func (l *lbBalancer) String() string {
	return fmt.Sprintf("%s on %s", l.b.driver, l.b.d.Config.LB.balancers())
}

func (l *lbBalancer) how() string { return l.b.driver.how() }

func (l *lbBalancer) preflight(ctx context.Context, ports []int) (servers, error) {
	if err := l.b.preflight(ctx); err != nil {
		return nil, err
	}
	l.b.mu.Lock()
	defer l.b.mu.Unlock()
	for _, lb := range l.b.all {
		err := l.b.driver.ready(lb.content, l.addr, ports)
		if err == nil && l.cfg.surging() {
			err = l.b.driver.idle(lb.content, l.addr, l.host, l.cfg.idlePorts())
		}
		if err != nil {
			return nil, fmt.Errorf("load balancer %s: %s: %w", lb.host(), l.b.driver, err)
		}
	}
	return l.b.servers(l.addr)
}

func (l *lbBalancer) read(ctx context.Context) (servers, error) {
	l.b.mu.Lock()
	defer l.b.mu.Unlock()
	if err := l.b.read(ctx); err != nil {
		return nil, err
	}
	return l.b.servers(l.addr)
}

func (l *lbBalancer) change(ctx context.Context, from, to servers, drained []int) (drainWait, error) {
	wait, err := l.b.change(ctx, lbChange{addr: l.addr, from: from, to: to})
	if err != nil || len(drained) == 0 || !l.b.driver.countsOnAppHost() {
		return wait, err
	}
	// Every balancer's old workers are shutting down: what is still open
	// to the instances is in flight, counted on the app host.
	return l.app.WaitIdle(ctx, drained)
}

// dial dials from the first balancer still reachable.
func (l *lbBalancer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
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
