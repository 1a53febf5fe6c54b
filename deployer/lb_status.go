package deployer

import (
	"context"
	"fmt"
	"net"
	"sync"
)

// Balancers are the load balancer hosts (lb:) as status reads them, once
// for every host of a poll; nil without lb: (each app host's own Nginx is
// read with the host).
type Balancers []balancerRead

type balancerRead struct {
	host    string
	content []byte
	err     error
	dial    dialer
	driver  lbDriver
}

// ReadBalancers reads every balancer's upstream file at once, over the
// connections conn gives (the caller's, to close); nil without lb:.
func ReadBalancers(ctx context.Context, cfg *Config, conn func(context.Context, string) (Conn, error)) Balancers {
	if cfg.LB == nil {
		return nil
	}
	lc := cfg.lbSide()
	driver := newLBDriver(cfg)
	lbs := make(Balancers, len(cfg.LB.Hosts))
	var wg sync.WaitGroup
	for i, h := range cfg.LB.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lbs[i].host, lbs[i].driver = h, driver
			c, err := conn(ctx, h)
			if err == nil {
				lbs[i].dial = c.DialContext
				lbs[i].content, err = driver.read(ctx, newSSHRemote(lc, c))
			}
			lbs[i].err = err
		}()
	}
	wg.Wait()
	return lbs
}

// LoadBalancers is ReadBalancers over connections of its own, which the
// function it returns closes (once the statuses that dial through them
// are read).
func LoadBalancers(ctx context.Context, cfg *Config, connect func(context.Context, string) (Conn, error)) (Balancers, func()) {
	var mu sync.Mutex
	var conns []Conn
	lbs := ReadBalancers(ctx, cfg, func(ctx context.Context, host string) (Conn, error) {
		conn, err := connect(ctx, host)
		if err == nil {
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
		return conn, err
	})
	return lbs, func() {
		for _, c := range conns {
			c.Close()
		}
	}
}

// live is cfg (resolved on its host) with, for strategy.max_surge, the
// live ports as every balancer read says; cfg as it is when one could not
// be read.
func (lbs Balancers) live(cfg *Config) *Config {
	if len(lbs) == 0 || !cfg.surging() {
		return cfg
	}
	var each []servers
	for _, lb := range lbs {
		if lb.err != nil {
			return cfg
		}
		srv, err := lb.driver.servers(lb.content, cfg.Nginx.ServerAddress)
		if err != nil {
			return cfg
		}
		each = append(each, srv)
	}
	return cfg.liveOn(together(each))
}

// statusSource is what status reads of an app host's balancer: its
// servers, each balancer's view of an instance (lb:), and where health
// checks dial from.
type statusSource struct {
	read func(ctx context.Context) (servers, error)
	each func(port int) []BalancerServer
	dial dialer
}

// servedReader is a balancer whose read is a file it serves from
// (Traefik's): readServed says what it serves, for status.
type servedReader interface {
	readServed(ctx context.Context) (servers, error)
}

// source is the status source of the app host whose config (resolved on
// it) is cfg and remote r: the balancers as read, or without lb: the
// host's own Nginx or HAProxy (hostBalancer).
func (lbs Balancers) source(cfg *Config, r remote) statusSource {
	if cfg.LB == nil {
		b := hostBalancer(cfg, r)
		read := b.read
		if sr, ok := b.(servedReader); ok {
			read = sr.readServed
		}
		return statusSource{read: read, each: func(int) []BalancerServer { return nil }, dial: r.DialContext}
	}
	addr := cfg.Nginx.ServerAddress
	// Each host's own: lbs is shared by the hosts read at once.
	onLB, lbErr := make([]map[int]bool, len(lbs)), make([]error, len(lbs))
	src := statusSource{dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, fmt.Errorf("no load balancer (%s) could be read", cfg.LB.balancers())
	}}
	for k, lb := range lbs {
		if lbErr[k] = lb.err; lb.err == nil {
			var err error
			if onLB[k], err = lb.driver.servers(lb.content, addr); err != nil {
				lbErr[k] = fmt.Errorf("%s: %w", lb.driver, err)
			}
		}
	}
	for _, lb := range lbs {
		if lb.err == nil {
			src.dial = lb.dial
			break
		}
	}
	src.read = func(context.Context) (servers, error) {
		all := servers{}
		for _, p := range cfg.Ports() {
			all[p] = false
			for k := range lbs {
				if drained, listed := onLB[k][p]; lbErr[k] != nil || !listed || drained {
					all[p] = true
				}
			}
		}
		return all, nil
	}
	src.each = func(p int) []BalancerServer {
		var out []BalancerServer
		for k, lb := range lbs {
			drained, listed := onLB[k][p]
			bs := BalancerServer{Host: lb.host, In: lbErr[k] == nil && listed && !drained}
			if lbErr[k] != nil {
				bs.Error = lbErr[k].Error()
			}
			out = append(out, bs)
		}
		return out
	}
	return src
}
