package deployer

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// LBConfig is the lb: section: load balancers on hosts of their own, in
// front of every app host. rollout reaches them over SSH like the app
// hosts (the same ssh: settings), drains an instance on every one of them
// and counts its requests in flight on the app host.
type LBConfig struct {
	Hosts []string
	// Driver is how the balancer is changed: "nginx", the upstream file
	// (nginx.upstream_file) on each balancer host, with nginx.* there.
	Driver string
	// UpstreamFile is nginx.upstream_file given here (driver: nginx): the
	// upstream file on each balancer.
	UpstreamFile string
	// Socket and Backend are HAProxy's (driver: haproxy): its runtime
	// API's socket, at level admin, and the backend whose servers are the
	// instances.
	Socket, Backend string
	// Addresses are the addresses the balancers reach app hosts at, by
	// app host; an app host given as an IP address needs none.
	Addresses map[string]string

	nginxGiven bool // nginx.upstream_file or nginx.upstream with haproxy
	fileTwice  bool // lb.upstream_file and nginx.upstream_file both given
}

// Balancer drivers.
const (
	lbNginx   = "nginx"
	lbHAProxy = "haproxy"
)

func lbSection(c *Config) field {
	lb := &LBConfig{Driver: lbNginx, Socket: "/run/haproxy/admin.sock"}
	fields := []field{
		strs("hosts", &lb.Hosts),
		str("driver", &lb.Driver),
		str("upstream_file", &lb.UpstreamFile),
		str("socket", &lb.Socket),
		str("backend", &lb.Backend),
		one("server_addresses", func(p *parser, key string) { p.readStrMap(key, &lb.Addresses) }),
	}
	return one("lb", func(p *parser, key string) {
		if !p.fields(key, fields) {
			return
		}
		c.LB = lb
		if lb.UpstreamFile != "" && lb.Driver != lbHAProxy {
			// The same setting as nginx.upstream_file, where the issue's
			// users look for it: given once, in either place.
			lb.fileTwice = c.Nginx.UpstreamFile != ""
			c.Nginx.UpstreamFile = lb.UpstreamFile
		}
		if lb.Driver == lbHAProxy {
			// The instances are the backend's servers: the engine's
			// upstream is named after it, and messages name it where
			// they would name the upstream file (there is none).
			lb.nginxGiven = c.Nginx.UpstreamFile != "" || c.Nginx.Upstream != ""
			c.Nginx.Upstream = lb.Backend
			c.Nginx.UpstreamFile = "haproxy backend " + lb.Backend
		}
	})
}

// readStrMap reads a mapping of strings to strings at key, if given.
func (p *parser) readStrMap(key string, dst *map[string]string) {
	n, ok := p.nodes[key]
	if !ok {
		return
	}
	var keys []string
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			keys = append(keys, n.Content[i].Value)
		}
	}
	if !p.mapping(key, keys...) {
		return
	}
	*dst = map[string]string{}
	for _, k := range keys {
		var s string
		p.readStr(join(key, k), &s)
		(*dst)[k] = s
	}
}

// checkLB checks the lb: section: its hosts, none an app host, and the
// address each app host is reached at from the balancers.
func (c *Config) checkLB(cs *checks) {
	if c.LB != nil && c.UsesHelper() && c.Instances.Auto {
		cs.add("sudo", errors.New("helper with lb: needs the instances' ports listed (ports:, or base_port with a number of instances): a balancer's helper checks them, and it cannot count the app hosts' cores"))
	}
	switch {
	case c.Traefik != nil:
		c.checkTraefik(cs)
	case c.Caddy != nil:
		c.checkCaddy(cs)
	case c.HAProxy != nil:
		c.checkHAProxy(cs)
	case c.LB == nil || c.LB.Driver != lbHAProxy:
		n := len(*cs)
		c.Nginx.check(cs)
		for i := n; i < len(*cs); i++ {
			if c.LB != nil && c.LB.UpstreamFile != "" && (*cs)[i].key == "nginx.upstream_file" {
				(*cs)[i].key = "lb.upstream_file" // where the file gave it
			}
		}
	}
	lb := c.LB
	if lb == nil {
		return
	}
	if len(lb.Hosts) == 0 {
		cs.add("lb.hosts", errors.New("required: the load balancer hosts"))
	}
	for i, h := range lb.Hosts {
		key := fmt.Sprintf("lb.hosts[%d]", i)
		switch {
		case net.ParseIP(h) == nil && (len(h) > 253 || !hostnameRE.MatchString(h)):
			cs.add(key, fmt.Errorf("must be a host name or an IP address, got %s", quoteValue(h)))
		case slices.Contains(lb.Hosts[:i], h):
			cs.add(key, fmt.Errorf("%s is listed twice", quoteValue(h)))
		case slices.Contains(c.Hosts, h):
			cs.add(key, fmt.Errorf("%s is also an app host: with lb:, the balancers are hosts of their own (leave lb: out for Nginx beside the instances)", quoteValue(h)))
		}
	}
	switch lb.Driver {
	case lbNginx:
		if lb.fileTwice {
			cs.add("lb.upstream_file", errors.New("is nginx.upstream_file, also given: give it once"))
		}
		if lb.Backend != "" {
			cs.add("lb.backend", errors.New("is HAProxy's (driver: haproxy); with nginx the upstream is nginx.upstream"))
		}
	case lbHAProxy:
		cs.add("lb.backend", match(upstreamRE, lb.Backend, `a backend name: letters, digits, "_", "." or "-"`))
		cs.add("lb.socket", validPath(lb.Socket, false))
		if lb.nginxGiven || lb.UpstreamFile != "" {
			cs.add("nginx", errors.New("is for driver: nginx (as lb.upstream_file); with driver: haproxy the instances are lb.backend's servers in haproxy.cfg"))
		}
	default:
		cs.add("lb.driver", fmt.Errorf("must be nginx or haproxy, got %s", quoteValue(lb.Driver)))
	}
	for h, a := range lb.Addresses {
		key := "lb.server_addresses." + h
		switch {
		case !slices.Contains(c.Hosts, h):
			cs.add(key, fmt.Errorf("%s is not one of hosts", quoteValue(h)))
		case net.ParseIP(a) == nil || net.ParseIP(a).To4() == nil:
			cs.add(key, fmt.Errorf("must be an IPv4 address (server lines of IPv6 addresses are not supported yet), got %s", quoteValue(a)))
		}
	}
	for _, h := range c.Hosts {
		switch a := c.lbAddress(h); {
		case a == "":
			cs.add("lb.server_addresses", fmt.Errorf("app host %s is not an IP address: give the address the load balancers reach it at (lb.server_addresses: {%s: 10.0.0.5})", quoteValue(h), h), "hosts")
		case net.ParseIP(a).To4() == nil:
			cs.add("lb.server_addresses", fmt.Errorf("app host %s is an IPv6 address, and server lines of IPv6 addresses are not supported yet: give its IPv4 address (lb.server_addresses: {%s: 10.0.0.5})", quoteValue(h), h), "hosts")
		}
	}
	if c.Nginx.ServerAddress != DefaultConfig().Nginx.ServerAddress {
		cs.add("nginx.server_address", errors.New("is set per app host with lb: (lb.server_addresses; an IP address in hosts needs none)"))
	}
	if c.Strategy.Bake > 0 {
		cs.add("strategy.bake", errors.New("reads the access log on the app hosts, and with lb: it is on the load balancers: not supported with lb: yet"))
	}
	if c.Watch != nil {
		cs.add("watch", errors.New("host alerts read Nginx on the app host, and with lb: it is on the load balancers: not supported with lb: yet (rollout watch from the controller works)"))
	}
}

// lbAddress is the address the balancers reach app host h at: its entry
// in lb.server_addresses, or h itself when it is an IP address; "" if
// neither.
func (c *Config) lbAddress(h string) string {
	if a := c.LB.Addresses[h]; a != "" {
		return a
	}
	if ip := net.ParseIP(h); ip != nil {
		return ip.String()
	}
	return ""
}

// lbSide is the config rollout changes a balancer host with: the Nginx
// settings, and no lb: (the balancer host is an Nginx host of its own).
func (c *Config) lbSide() *Config {
	lc := *c
	lc.LB = nil
	lc.balancer = c.LB
	return &lc
}

// balancers names the balancer hosts, for messages: "lb1 and lb2".
func (lb *LBConfig) balancers() string {
	if len(lb.Hosts) == 1 {
		return lb.Hosts[0]
	}
	return strings.Join(lb.Hosts[:len(lb.Hosts)-1], ", ") + " and " + lb.Hosts[len(lb.Hosts)-1]
}

// onBalancers is host's config as the balancers of lb: see it: its server
// lines name the host's address there. Without lb: it is cfg.
func (c *Config) onBalancers(host string) *Config {
	if c.LB == nil {
		return c
	}
	lc := *c
	lc.Nginx.ServerAddress = c.lbAddress(host)
	return &lc
}

// helperNginx is the upstream file and commands the helper's
// write-upstream takes: Traefik's file (nothing to test or signal) with
// traefik:, else Nginx's.
func (c *Config) helperNginx() NginxConfig {
	if tr := c.Traefik; tr != nil {
		return traefikFileNginx(tr)
	}
	return c.Nginx
}

// helperHAProxy are the socket and backend a host's helper takes: a
// balancer host's (lbSide of driver haproxy), or an app host's with
// haproxy:; "" on any other host.
func (c *Config) helperHAProxy() (socket, backend string) {
	if b := c.balancer; b != nil && b.Driver == lbHAProxy {
		return b.Socket, b.Backend
	}
	if h := c.HAProxy; h != nil {
		return h.Socket, h.Backend
	}
	return "", ""
}

// HAProxyConfig is the haproxy: section: HAProxy on each app host, in
// front of its instances instead of Nginx, changed through its runtime API
// (no reload). Its backend's servers are the instances, at ServerAddress.
type HAProxyConfig struct {
	Socket, Backend, ServerAddress string

	nginxGiven bool // some nginx: setting given too
}

func haproxySection(c *Config) field {
	h := &HAProxyConfig{Socket: "/run/haproxy/admin.sock", ServerAddress: DefaultConfig().Nginx.ServerAddress}
	fields := []field{
		str("socket", &h.Socket),
		str("backend", &h.Backend),
		str("server_address", &h.ServerAddress),
	}
	return one("haproxy", func(p *parser, key string) {
		if !p.fields(key, fields) {
			return
		}
		c.HAProxy = h
		// As with lb.driver haproxy: the engine's upstream is named after
		// the backend, and messages name it where they would name the
		// upstream file.
		h.nginxGiven = c.Nginx != DefaultConfig().Nginx
		c.Nginx.Upstream = h.Backend
		c.Nginx.UpstreamFile = "haproxy backend " + h.Backend
		c.Nginx.ServerAddress = h.ServerAddress
	})
}

// checkHAProxy checks the haproxy: section.
func (c *Config) checkHAProxy(cs *checks) {
	h := c.HAProxy
	cs.add("haproxy.backend", match(upstreamRE, h.Backend, `a backend name: letters, digits, "_", "." or "-"`))
	cs.add("haproxy.socket", validPath(h.Socket, false))
	c.checkHostBalancer(cs, "haproxy", h.ServerAddress, h.nginxGiven, "haproxy.backend's servers in haproxy.cfg")
	if c.LB != nil {
		cs.add("haproxy", errors.New("is HAProxy on the app hosts; with lb:, the balancers are on hosts of their own (lb.driver: haproxy)"), "lb")
	}
}

// checkHostBalancer checks what every balancer on the app host in Nginx's
// place (haproxy:, caddy:, traefik:) shares: its server_address, no
// nginx: beside it, and what reads Nginx's own files (bake, watch:).
func (c *Config) checkHostBalancer(cs *checks, key, addr string, nginxGiven bool, instances string) {
	if addr != "localhost" && net.ParseIP(addr) == nil {
		cs.add(key+".server_address", fmt.Errorf(`must be an IP address or "localhost", got %s`, quoteValue(addr)))
	}
	if nginxGiven {
		cs.add("nginx", fmt.Errorf("is for Nginx beside the instances; with %s: the instances are %s", key, instances))
	}
	if c.Strategy.Bake > 0 {
		cs.add("strategy.bake", fmt.Errorf("reads Nginx's access log on the app hosts: not supported with %s: yet", key))
	}
	if c.Watch != nil {
		cs.add("watch", fmt.Errorf("host alerts read Nginx on the app host: not supported with %s: yet (rollout watch from the controller works)", key))
	}
}
