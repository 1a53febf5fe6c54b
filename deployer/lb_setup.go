package deployer

import (
	"context"
	"fmt"
	"strings"
	"sync"
)

// BalancerFiles are the files of the load balancer hosts (lb:), for the
// instances of each app host (ports, by host): with nginx, the upstream
// file naming every instance at its host's address (written only when
// missing: rollout edits it while it deploys) and the site sending
// requests to it; with haproxy, the backend's server lines, which setup
// does not write.
func BalancerFiles(cfg *Config, ports map[string][]int) []ManagedFile {
	lb := cfg.LB
	if lb == nil {
		return nil
	}
	if lb.Driver == lbHAProxy {
		var servers []haproxyServer
		for _, h := range cfg.Hosts {
			for _, p := range ports[h] {
				servers = append(servers, haproxyServer{name: fmt.Sprintf("%s-%d", h, p), addr: cfg.lbAddress(h), port: p})
			}
			// With strategy.max_surge, the idle port of each slot, in
			// maintenance.
			for _, p := range cfg.idleOf(ports[h]) {
				servers = append(servers, haproxyServer{name: fmt.Sprintf("%s-%d", h, p), addr: cfg.lbAddress(h), port: p, disabled: true})
			}
		}
		return append([]ManagedFile{haproxyLines(lb.Socket, lb.Backend, servers)}, balancerHelpers(cfg)...)
	}
	var lines strings.Builder
	fmt.Fprintf(&lines, "# Written by rollout setup; rollout marks servers down and up while it deploys.\nupstream %s {\n", cfg.Nginx.Upstream)
	for _, h := range cfg.Hosts {
		for _, p := range ports[h] {
			fmt.Fprintf(&lines, "    server %s:%d;\n", cfg.lbAddress(h), p)
		}
	}
	lines.WriteString("}\n")
	var files []ManagedFile
	for _, h := range lb.Hosts {
		files = append(files,
			ManagedFile{Host: h, Path: cfg.Nginx.UpstreamFile, Owner: "root:root", Mode: "644", Content: lines.String(), Keep: true},
			ManagedFile{Host: h, Path: cfg.setupDefaults().SiteFile, Owner: "root:root", Mode: "644", Content: renderSite(cfg)})
	}
	return append(files, balancerHelpers(cfg)...)
}

// haproxyLines is the backend of haproxy.cfg rollout changes, for the user
// to add (setup does not write haproxy.cfg): a server line per instance.
func haproxyLines(socket, backend string, servers []haproxyServer) ManagedFile {
	var lines strings.Builder
	fmt.Fprintf(&lines, "# Add to haproxy.cfg (rollout drains and readies these servers through\n# the runtime API: \"stats socket %s level admin\" in global).\nbackend %s\n", socket, backend)
	for _, s := range servers {
		disabled := ""
		if s.disabled {
			disabled = " disabled"
		}
		fmt.Fprintf(&lines, "    server %s %s:%d check%s\n", s.name, s.addr, s.port, disabled)
	}
	return ManagedFile{Path: "/etc/haproxy/haproxy.cfg", Owner: "root:root", Mode: "644", Content: lines.String(), Doc: true}
}

// balancerHelpers are, with sudo: helper, each balancer host's helper and
// sudoers drop-in: the helper of the balancer's side, which takes only
// this app's upstream file and Nginx commands, or its HAProxy socket and
// backend, and its ports.
func balancerHelpers(cfg *Config) []ManagedFile {
	var files []ManagedFile
	for _, h := range cfg.LB.Hosts {
		for _, f := range cfg.lbSide().helperFiles() {
			f.Host = h
			files = append(files, f)
		}
	}
	return files
}

// SetupBalancer writes the nginx files of one load balancer host (lb:) as
// BalancerFiles says, then tests and reloads its Nginx; only what differs
// is changed. With dryRun nothing changes and the result holds a diff.
func SetupBalancer(ctx context.Context, cfg *Config, host string, conn Conn, dryRun bool, ports map[string][]int) (*SetupResult, error) {
	lc := cfg.lbSide().asRoot()
	return setupBalancer(ctx, cfg, host, newSSHRemote(lc, conn), dryRun, ports)
}

func setupBalancer(ctx context.Context, cfg *Config, host string, r hostSetup, dryRun bool, ports map[string][]int) (*SetupResult, error) {
	p := &setupPlan{res: &SetupResult{Host: host}, dryRun: dryRun}
	var want setupWant
	for _, f := range BalancerFiles(cfg, ports) {
		if f.Host == host && !f.Doc {
			want.Files = append(want.Files, f)
		}
	}
	if len(want.Files) == 0 {
		return p.res, nil
	}
	if cfg.UsesHelper() {
		want.Dirs = []managedDir{{helperDir, "root:root", "755"}}
	}
	found, err := r.SetupInspect(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	p.dirs(want.Dirs, found.Dirs)
	for _, f := range want.Files {
		if err := p.file(f, found.Files, true); err != nil {
			return nil, err
		}
	}
	if cfg.LB.Driver == lbNginx {
		p.nginxCheck(cfg.lbSide().Nginx)
	}
	return p.apply(ctx, r)
}

// setupBalancers writes the load balancers' side (lb:): with nginx the
// upstream file naming every app host's instances, and the site; HAProxy's
// config is the user's (render shows the server lines to add).
func (d *Deployer) setupBalancers(ctx context.Context, rep *SetupReport, dryRun bool) {
	cfg := d.Config
	lb := cfg.LB
	if lb == nil {
		return
	}
	if lb.Driver != lbNginx && !cfg.UsesHelper() {
		rep.Balancers = []*SetupResult{{Host: strings.Join(lb.Hosts, ", "),
			Changes: []string{"none: rollout does not write haproxy.cfg; `rollout render` shows backend " + lb.Backend + "'s server lines to add"}}}
		return
	}
	if len(rep.Errs) > 0 {
		rep.Errs = append(rep.Errs, fmt.Errorf("load balancers %s not set up: an app host failed", strings.Join(lb.Hosts, ", ")))
		return
	}
	ports := map[string][]int{}
	for i, r := range rep.Hosts {
		ports[cfg.Hosts[i]] = r.Ports
	}
	rep.Balancers = make([]*SetupResult, len(lb.Hosts))
	errs := make([]error, len(lb.Hosts))
	var wg sync.WaitGroup
	for i, host := range lb.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := d.Connect(ctx, host)
			if err != nil {
				errs[i] = fmt.Errorf("load balancer %w", &UnreachableError{Host: host, Err: err})
				return
			}
			defer conn.Close()
			if rep.Balancers[i], err = SetupBalancer(ctx, cfg, host, conn, dryRun, ports); err != nil {
				errs[i] = fmt.Errorf("load balancer %s: %w", host, err)
			}
		}()
	}
	wg.Wait()
	rep.Errs = append(rep.Errs, nonNil(errs)...)
}
