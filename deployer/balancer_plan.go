package deployer

import (
	"fmt"
	"net"
	"strings"
)

// balancerPlan is what the plan says an app host's balancer does, built
// from the config alone (no I/O), by the driver that does it at run time
// (newBalancerPlan picks it as newBalancer does).
type balancerPlan struct {
	// what names what is changed, for the other steps' words.
	what string
	// addr is the instances' address there (nginx.server_address, or
	// the host's on the load balancers), and probeVia whose SSH
	// connections the probe's requests go through.
	addr, probeVia string
	// preflight is what the preflight checks on it, and checks the
	// commands it runs.
	preflight string
	checks    []string
	// read reads the host's servers (the scale and capacity steps).
	read string
	// healthFrom says where health checks dial from.
	healthFrom string
	// change is how one change is made, for the words of an undrain made
	// with the next drain: "one write, one reload".
	change string
	// drain is the step that takes ports out (with back put in again in
	// the same change), wait the wait for their requests in flight, and
	// undrain the step that puts ports back on its own.
	drain   func(ports, back []int) Step
	wait    func(ports []int) Step
	undrain func(ports []int) Step
	// surge is strategy.max_surge's one change: news into service, old
	// out of it.
	surge func(news, old []int) Step
}

func newBalancerPlan(cfg *Config, host string) balancerPlan {
	switch {
	case cfg.LB != nil:
		return lbPlan(cfg, host)
	case cfg.HAProxy != nil:
		return haproxyPlan(cfg)
	case cfg.Caddy != nil:
		return caddyPlan(cfg)
	case cfg.Traefik != nil:
		return traefikPlan(cfg)
	}
	return nginxPlan(cfg)
}

// haproxyPlan is the plan of the app host's own HAProxy (haproxyBalancer):
// the haproxy driver's steps, run on the app host.
func haproxyPlan(cfg *Config) balancerPlan {
	b := newHAProxyBalancer(cfg, nil)
	p := b.drv.plan(newSSHRemote(cfg, nil), cfg, b.addr)
	p.addr = b.addr
	p.probeVia = "each host's SSH connection"
	p.healthFrom = "through the SSH connection"
	p.change = "one runtime API call"
	p.wait = func([]int) Step {
		return Step{Name: StepWaitDrain, Does: "in the drain's call: until HAProxy counts no current session on the servers (show stat), at most " + cfg.DrainTimeout.String()}
	}
	return p
}

// nginxPlan is the plan of the app host's own Nginx (nginxBalancer).
func nginxPlan(cfg *Config) balancerPlan {
	c := newSSHRemote(cfg, nil)
	n := cfg.Nginx
	addr := n.ServerAddress
	lines := func(ports []int, down string) string {
		var s []string
		for _, p := range ports {
			s = append(s, fmt.Sprintf("\"server %s:%d ...%s;\"", addr, p, down))
		}
		return strings.Join(s, ", ")
	}
	return balancerPlan{
		what:       n.UpstreamFile,
		addr:       addr,
		probeVia:   "each host's SSH connection",
		preflight:  "that the nginx config passes its test and that " + n.UpstreamFile + " has the upstream block " + n.Upstream + " (instances without a server line are started and added first)",
		checks:     []string{c.cmdNginxCheck(n)},
		read:       c.cmdReadUpstream(n),
		healthFrom: "through the SSH connection",
		change:     "one write, one reload",
		drain: func(ports, back []int) Step {
			s := Step{Name: StepDrain, Command: c.cmdWriteUpstream(n, ports, true),
				Stdin: fmt.Sprintf("the SHA-256 of %s as last read, then the file with %s", n.UpstreamFile, lines(ports, " down")),
				Does:  fmt.Sprintf("unless someone else changed the file since it was read (then read it again and check capacity again), mark %s down in the upstream; test the nginx config (restore the previous file if it fails); reload nginx; wait for the old workers to stop taking requests", portList(ports))}
			if len(back) > 0 {
				s.Stdin += fmt.Sprintf(" and %s (down removed)", lines(back, ""))
				s.Does = fmt.Sprintf("unless someone else changed the file since it was read (then read it again and check capacity again), in one write and one reload put %s back (its undrain) and mark %s down; test the nginx config (restore the previous file if it fails); reload nginx; wait for the old workers to stop taking requests", portList(back), portList(ports))
			}
			return s
		},
		wait: func(ports []int) Step {
			return Step{Name: StepWaitDrain, Does: fmt.Sprintf("in the drain script: repeat ss -Htn state established until no connection is established to %s, at most %s", portList(ports), cfg.DrainTimeout)}
		},
		undrain: func(ports []int) Step {
			return Step{Name: StepUndrain, Command: c.cmdWriteUpstream(n, nil, true),
				Stdin: fmt.Sprintf("the SHA-256 of %s as last read, then the file with %s (down removed)", n.UpstreamFile, lines(ports, "")),
				Does:  "check it is still healthy; put the instance back in the upstream; test the nginx config; reload nginx"}
		},
		surge: func(news, old []int) Step {
			return Step{Name: StepDrain, Command: c.cmdWriteUpstream(n, old, true),
				Stdin: fmt.Sprintf("the SHA-256 of %s as last read, then the file with %s and no line for %s", n.UpstreamFile, lines(news, ""), portList(old)),
				Does:  fmt.Sprintf("unless someone else changed the file since it was read, add %s to %s and remove %s from it; test the nginx config (restore the previous file if it fails); reload nginx; wait for the old workers to stop taking requests", portList(news), n.UpstreamFile, portList(old))}
		},
	}
}

// lbPlan is the plan of the load balancer hosts of lb: (lbBalancer): every
// change is made on each of them at once by its driver.
func lbPlan(cfg *Config, host string) balancerPlan {
	lb := cfg.LB
	lc := newSSHRemote(cfg.lbSide(), nil)
	app := newSSHRemote(cfg, nil)
	on := "on every load balancer (" + lb.balancers() + ") at once: "
	p := newLBDriver(cfg).plan(lc, cfg, cfg.lbAddress(host))
	p.preflight = "and, once per run, on each load balancer (" + lb.balancers() + "): connect, check sudo, " + p.preflight + "; a balancer that cannot be reached stops the run here"
	p.addr = cfg.lbAddress(host)
	p.probeVia = "each load balancer's SSH connection (" + lb.balancers() + ")"
	p.healthFrom = fmt.Sprintf("from the first load balancer reachable (%s), through its SSH connection", lb.Hosts[0])
	drain, undrain := p.drain, p.undrain
	p.drain = func(ports, back []int) Step {
		s := drain(ports, back)
		s.Does = on + s.Does + "; if one balancer fails, put the instances back on the others and stop before the restart"
		return s
	}
	p.undrain = func(ports []int) Step {
		s := undrain(ports)
		s.Does = on + s.Does + "; a balancer that fails is named with what it may hold, and the others still take the instances back"
		return s
	}
	surge := p.surge
	p.surge = func(news, old []int) Step {
		s := surge(news, old)
		s.Does = on + s.Does + "; if one balancer fails, the old instances are put back in service on the others and the new ones stop"
		return s
	}
	if p.wait == nil { // counted on the app host
		p.wait = func(ports []int) Step {
			return Step{Name: StepWaitDrain, Command: app.cmdWaitIdle(ports),
				Does: fmt.Sprintf("on the app host, after every balancer's old workers stopped taking requests: repeat ss -Htn state established until no connection is established to %s, at most %s", portList(ports), cfg.DrainTimeout)}
		}
	}
	return p
}

// plan is the nginx driver's part of lbPlan: each balancer's upstream file.
func (n nginxDriver) plan(lc sshRemote, cfg *Config, addr string) balancerPlan {
	return balancerPlan{
		what:      n.n.UpstreamFile,
		preflight: "that its nginx config passes its test and that " + n.n.UpstreamFile + " has the upstream block",
		checks:    []string{lc.cmdNginxCheck(n.n)},
		read:      lc.cmdReadUpstream(n.n),
		change:    "one write and reload on each balancer",
		drain: func(ports, back []int) Step {
			return Step{Name: StepDrain, Command: lc.cmdWriteUpstream(n.n, ports, false),
				Stdin: fmt.Sprintf("the SHA-256 of %s as last read, then the file with %s:%s down", n.n.UpstreamFile, addr, portList(ports)),
				Does:  fmt.Sprintf("mark %s:%s down (and put %s back) in %s unless someone else changed it (then read it again, once); test the nginx config (restore the previous file if it fails); reload nginx; wait for the old workers", addr, portList(ports), portList(back), n.n.UpstreamFile)}
		},
		undrain: func(ports []int) Step {
			return Step{Name: StepUndrain, Command: lc.cmdWriteUpstream(n.n, nil, false),
				Stdin: fmt.Sprintf("the SHA-256 of %s as last read, then the file with %s:%s back in service", n.n.UpstreamFile, addr, portList(ports)),
				Does:  "check it is still healthy; put it back in " + n.n.UpstreamFile + "; test the nginx config; reload nginx"}
		},
		surge: func(news, old []int) Step {
			return Step{Name: StepDrain, Command: lc.cmdWriteUpstream(n.n, nil, false),
				Stdin: fmt.Sprintf("the SHA-256 of %s as last read, then the file with server lines for %s:%s and none for %s:%s", n.n.UpstreamFile, addr, portList(news), addr, portList(old)),
				Does:  fmt.Sprintf("add %s:%s to %s and remove %s:%s from it unless someone else changed it (then read it again, once); test the nginx config (restore the previous file if it fails); reload nginx; wait for the old workers", addr, portList(news), n.n.UpstreamFile, addr, portList(old))}
		},
	}
}

// plan is the haproxy driver's part of lbPlan: each balancer's backend,
// through the runtime API.
func (h haproxyDriver) plan(lc sshRemote, cfg *Config, addr string) balancerPlan {
	const server = "SERVER"
	preflight := "socat, that " + h.api.Socket + " answers at level admin and that backend " + h.api.Backend + " has a server at each instance's address and port, none in maintenance (rollout never readies one)"
	if h.maintIsIdle {
		preflight += ", and one at each spare port (strategy.max_surge), in maintenance while idle: the only servers rollout readies from maintenance"
	}
	return balancerPlan{
		what:      "backend " + h.api.Backend + " (show servers state)",
		preflight: preflight,
		checks:    []string{lc.cmdHAProxy(h.api, "check", nil)},
		read:      lc.cmdHAProxy(h.api, "state", nil),
		change:    "one API call on each balancer",
		drain: func(ports, back []int) Step {
			return Step{Name: StepDrain, Command: lc.cmdHAProxy(h.api, "apply", []string{"drain:" + server}),
				Does: fmt.Sprintf("through HAProxy's runtime API, no reload: set server %s/%s state drain for %s (SERVER: the backend's server at %s), and state ready for %s in the same call; wait until their current sessions reach 0, at most %s. %s",
					h.api.Backend, server, portList(ports), net.JoinHostPort(addr, "PORT"), portList(back), cfg.DrainTimeout, haproxySessionPlan(lc, h.api.Socket))}
		},
		wait: func(ports []int) Step {
			return Step{Name: StepWaitDrain, Does: "in the drain's call, on each balancer: until HAProxy counts no current session on the server (show stat), at most " + cfg.DrainTimeout.String()}
		},
		undrain: func(ports []int) Step {
			return Step{Name: StepUndrain, Command: lc.cmdHAProxy(h.api, "apply", []string{"ready:" + server}),
				Does: "check it is still healthy; set server " + h.api.Backend + "/" + server + " state ready (refused if someone put it in maintenance)"}
		},
		surge: func(news, old []int) Step {
			return Step{Name: StepDrain, Command: lc.cmdHAProxy(h.api, "apply", []string{"wake:" + server, "maint:" + server}),
				Does: fmt.Sprintf("through HAProxy's runtime API, no reload: set server %s/%s state ready for %s (in maintenance while idle) and state maint for %s (SERVER: the backend's server at %s) in one call; wait until the old ones' current sessions reach 0, at most %s. %s",
					h.api.Backend, server, portList(news), portList(old), net.JoinHostPort(addr, "PORT"), cfg.DrainTimeout, haproxySessionPlan(lc, h.api.Socket))}
		},
	}
}

// haproxySessionPlan says how the runtime API at socket is reached for a
// change.
func haproxySessionPlan(r sshRemote, socket string) string {
	if r.priv.helper != "" {
		return "Each change is one command: the helper's haproxy verb (this script), which takes only this socket and backend"
	}
	return "The changes go over one runtime API session kept open for the run (" + r.cmdHAProxySession(socket) + ", in interactive mode); where it cannot be opened or stops answering, this command makes the change instead"
}
