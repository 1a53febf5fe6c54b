package deployer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CaddyConfig is the caddy: section: Caddy on each app host, in front of
// its instances instead of Nginx. rollout changes the upstreams of the one
// reverse_proxy handler that sends requests to the instances (at
// ServerAddress) through Caddy's admin API at Admin on the host, reached
// through the SSH connection (no command, no reload of a file, no root).
//
// Resume says that Caddy runs with --resume: restarted, it loads its last
// config (rollout's changes in it, autosaved) rather than its Caddyfile.
// strategy.max_surge needs it: after a surge the instances serve from
// ports the Caddyfile does not name.
type CaddyConfig struct {
	Admin, ServerAddress string
	Resume               bool

	nginxGiven bool // some nginx: setting given too
}

// defaultCaddyAdmin is Caddy's own default admin address.
const defaultCaddyAdmin = "localhost:2019"

func caddySection(c *Config) field {
	cd := &CaddyConfig{Admin: defaultCaddyAdmin, ServerAddress: DefaultConfig().Nginx.ServerAddress}
	fields := []field{
		str("admin", &cd.Admin),
		str("server_address", &cd.ServerAddress),
		boolean("resume", &cd.Resume),
	}
	return one("caddy", func(p *parser, key string) {
		if !p.fields(key, fields) {
			return
		}
		c.Caddy = cd
		// As with haproxy:, messages name the balancer where they would
		// name the upstream file.
		cd.nginxGiven = c.Nginx != DefaultConfig().Nginx
		c.Nginx.Upstream = "caddy"
		c.Nginx.UpstreamFile = "caddy's reverse_proxy (admin API " + cd.Admin + ")"
		c.Nginx.ServerAddress = cd.ServerAddress
	})
}

// checkCaddy checks the caddy: section.
func (c *Config) checkCaddy(cs *checks) {
	cd := c.Caddy
	if !loopbackAddr(cd.Admin) {
		cs.add("caddy.admin", fmt.Errorf(`must be the admin API's loopback address and port on the host (Caddy's default: %s), got %s`, defaultCaddyAdmin, quoteValue(cd.Admin)))
	}
	c.checkHostBalancer(cs, "caddy", cd.ServerAddress, cd.nginxGiven, "the upstreams of Caddy's reverse_proxy")
	if c.LB != nil {
		cs.add("caddy", errors.New("is Caddy on the app hosts; lb: has the drivers nginx and haproxy"), "lb")
	}
	if c.HAProxy != nil {
		cs.add("caddy", errors.New("and haproxy: both put a balancer on the app hosts: choose one"), "haproxy")
	}
	// (caddy: with traefik: is traefik's check.)
	if c.surging() && !cd.Resume {
		cs.add("strategy.max_surge", errors.New("with caddy: needs Caddy run with --resume, and caddy.resume: true to say so: a Caddy restarted with its Caddyfile would send requests to the ports a surge left (rollout setup shows the systemd drop-in)"), "caddy.resume")
	}
}

// loopbackAddr reports whether addr is HOST:PORT with HOST localhost or
// a loopback address (an API on the host, reached through its SSH
// connection).
func loopbackAddr(addr string) bool {
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	ip := net.ParseIP(h)
	return err == nil && n > 0 && n < 65536 && (h == "localhost" || ip != nil && ip.IsLoopback())
}

// caddyBalancer is Caddy on the app host itself (caddy:): the upstreams of
// one reverse_proxy handler, changed through the admin API with If-Match
// (a change someone else made in between is refused, not overwritten). An
// instance out of service is one not in the upstreams. Caddy makes every
// change by loading the changed config (its graceful reload: no process
// restarts, and like Nginx's it closes idle client connections). The
// drain's wait counts the instances' connections on the host, which is
// why the handler must not keep idle connections to them (keepalive off).
type caddyBalancer struct {
	r    remote
	cd   CaddyConfig
	addr string
	cfg  *Config
	http *http.Client
	// path is the upstreams' path in Caddy's config, found by the
	// preflight; etag their ETag as last read; ups the upstreams then, by
	// port (each kept as Caddy holds it: max_requests and all).
	path string
	etag string
	ups  map[int]json.RawMessage
	// out are the ports this run took out of service (drained).
	out map[int]bool
}

var _ balancer = (*caddyBalancer)(nil)

func newCaddyBalancer(cfg *Config, r remote) *caddyBalancer {
	b := &caddyBalancer{r: r, cd: *cfg.Caddy, addr: cfg.Caddy.ServerAddress, cfg: cfg}
	b.http = &http.Client{Transport: &http.Transport{
		// Caddy's admin server restarts with every config it loads: a
		// kept connection would be closed under the next request.
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return r.DialContext(ctx, "tcp", b.cd.Admin)
		},
	}}
	return b
}

func (b *caddyBalancer) String() string { return "caddy (admin API " + b.cd.Admin + ")" }

func (b *caddyBalancer) how() string { return "one admin API change (Caddy's graceful config reload)" }

func (b *caddyBalancer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return b.r.DialContext(ctx, network, addr)
}

// errCaddyChanged is Caddy's 412: the upstreams are no longer what rollout
// read (someone changed them, or Caddy restarted with its Caddyfile).
var errCaddyChanged = errors.New("caddy's upstreams changed since rollout read them")

// call makes one admin API request; the body of an answer that is not 2xx
// is the error's. It returns the answer's body and ETag (Caddy 2.6 sends
// it as a trailer, later ones as a header).
func (b *caddyBalancer) call(ctx context.Context, method, path, ifMatch string, body []byte) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+b.cd.Admin+path, bytes.NewReader(body))
	if err != nil {
		return nil, "", err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %s %s: %w (is Caddy running, with its admin API on?)", b, method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, "", fmt.Errorf("%s: %s %s: read the answer: %w", b, method, path, err)
	}
	etag := resp.Header.Get("Etag")
	if etag == "" {
		etag = resp.Trailer.Get("Etag")
	}
	switch {
	case resp.StatusCode == http.StatusPreconditionFailed:
		return nil, "", errCaddyChanged
	case resp.StatusCode/100 != 2:
		return nil, "", fmt.Errorf("%s: %s %s: %s: %s", b, method, path, resp.Status, strings.TrimSpace(string(out)))
	}
	return out, etag, nil
}

// preflight finds the reverse_proxy handler that sends requests to the
// instances (exactly one, with only instances as upstreams, keepalive off)
// and reads its upstreams; with the probe on, it checks that the site
// answers through this host.
func (b *caddyBalancer) preflight(ctx context.Context, _ []int) (servers, error) {
	b.path = "" // found again: the preflight checks the whole config
	s, err := b.read(ctx)
	if err == nil && b.etag == "" {
		err = fmt.Errorf("%s: its admin API sends no ETag (Caddy before 2.6?): rollout changes the upstreams only with If-Match, so that it never overwrites someone else's change", b)
	}
	if err == nil && b.cfg.Probe.Enabled {
		err = newProber(b.cfg, "", b.r.DialContext).check(ctx)
	}
	return s, err
}

func (b *caddyBalancer) read(ctx context.Context) (servers, error) {
	if b.path == "" { // the preflight, and status and liveConfig
		raw, _, err := b.call(ctx, http.MethodGet, "/config/", "", nil)
		if err != nil {
			return nil, err
		}
		if b.path, err = findCaddyUpstreams(raw, b.addr, b.cfg.AllPorts()); err != nil {
			return nil, fmt.Errorf("%s: %w", b, err)
		}
		if b.cd.Resume && !caddyPersists(raw) {
			b.path = ""
			return nil, fmt.Errorf("%s: its admin config has persist off, so a Caddy run with --resume would load no change of rollout's (caddy.resume is on)", b)
		}
	}
	raw, etag, err := b.call(ctx, http.MethodGet, b.path, "", nil)
	if err != nil {
		return nil, err
	}
	ups, err := caddyUpstreams(raw, b.addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", b, b.path, err)
	}
	b.etag, b.ups = etag, ups
	return b.view(), nil
}

// view is the host's servers as last read: the upstreams, in service, and
// the ports rollout took out of them in this run, drained. (Caddy has no
// "down": a port out of service is not in the upstreams, and one that
// never was looks the same. So a port missing at the start of a run is
// added the way a new instance is: started if it is not, health checked,
// then put in; one drained by hand is left out.)
func (b *caddyBalancer) view() servers {
	s := servers{}
	for p := range b.out {
		s[p] = true
	}
	for p := range b.ups {
		s[p] = false
	}
	return s
}

// change sets the upstreams to the ports in service in to, when Caddy
// still holds from (else it is read again and errUpstreamChanged
// returned), then waits on the host until no connection to the drained
// ports is open.
func (b *caddyBalancer) change(ctx context.Context, from, to servers, drained []int) (drainWait, error) {
	if b.etag == "" || !maps.Equal(b.view(), from) {
		cur, err := b.read(ctx)
		if err != nil {
			return drainWait{}, err
		}
		if !maps.Equal(cur, from) {
			return drainWait{}, errUpstreamChanged
		}
	}
	// In port order: Caddy's lb_policy first takes the lowest then.
	var next []json.RawMessage
	for _, p := range slices.Sorted(maps.Keys(to)) {
		if !to.in(p) {
			continue
		}
		u, ok := b.ups[p] // as Caddy holds it: max_requests and all
		if !ok {
			u = json.RawMessage(fmt.Sprintf(`{"dial":%q}`, net.JoinHostPort(b.addr, strconv.Itoa(p))))
		}
		next = append(next, u)
	}
	if len(next) == 0 {
		return drainWait{}, fmt.Errorf("%s: refusing to leave the reverse_proxy with no upstream", b)
	}
	body, err := json.Marshal(next)
	if err != nil {
		return drainWait{}, err
	}
	if _, _, err := b.call(ctx, http.MethodPatch, b.path, b.etag, body); err != nil {
		if errors.Is(err, errCaddyChanged) {
			if _, rerr := b.read(ctx); rerr != nil {
				return drainWait{}, rerr
			}
			return drainWait{}, errUpstreamChanged
		}
		return drainWait{}, err
	}
	b.out = map[int]bool{}
	for p, drained := range to {
		if drained {
			b.out[p] = true
		}
	}
	// Caddy holds what was written; its ETag is read again (rather than
	// guessed from Caddy's hash) while the drained ports' requests are
	// waited for. A read that fails leaves it unknown: the next change
	// reads first.
	b.etag = ""
	var wait drainWait
	var werr error
	var wg sync.WaitGroup
	if len(drained) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait, werr = b.r.WaitIdle(ctx, drained)
		}()
	}
	_, _ = b.read(ctx)
	wg.Wait()
	return wait, werr
}

// caddyUpstreams are the upstreams of a reverse_proxy (its JSON list) by
// port; each must be one of the instances at addr.
func caddyUpstreams(raw []byte, addr string) (map[int]json.RawMessage, error) {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("the upstreams are not a JSON list: %w", err)
	}
	ups := map[int]json.RawMessage{}
	for _, u := range list {
		var up struct{ Dial string }
		if err := json.Unmarshal(u, &up); err != nil {
			return nil, fmt.Errorf("upstream %s: %w", u, err)
		}
		port, ok := dialPort(up.Dial, addr)
		if !ok {
			return nil, fmt.Errorf("upstream %q is not an instance at %s: rollout owns this reverse_proxy's upstreams, and sends only the app's instances there", up.Dial, addr)
		}
		ups[port] = u
	}
	return ups, nil
}

// dialPort is the port of a Caddy upstream's dial address when it is at
// addr.
func dialPort(dial, addr string) (int, bool) {
	host, port, err := net.SplitHostPort(dial)
	if err != nil || host != addr {
		return 0, false
	}
	p, err := strconv.Atoi(port)
	return p, err == nil
}

// findCaddyUpstreams walks Caddy's config (GET /config/) for the
// reverse_proxy handlers with an upstream at one of the ports at addr, and
// returns the path of that handler's upstreams in the admin API. It must
// be exactly one, proxying to nothing else, with static upstreams and its
// transport's keep-alive off.
func findCaddyUpstreams(raw []byte, addr string, ports []int) (string, error) {
	var root any
	if err := json.Unmarshal(raw, &root); err != nil {
		return "", fmt.Errorf("its config is not JSON: %w", err)
	}
	type found struct {
		path string
		h    map[string]any
	}
	var hits []found
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch x := v.(type) {
		case map[string]any:
			if x["handler"] == "reverse_proxy" && proxiesTo(x, addr, ports) {
				hits = append(hits, found{path, x})
			}
			for _, k := range slices.Sorted(maps.Keys(x)) {
				walk(x[k], path+"/"+k)
			}
		case []any:
			for i, e := range x {
				walk(e, path+"/"+strconv.Itoa(i))
			}
		}
	}
	walk(root, "/config")
	want := fmt.Sprintf("%s:%s", addr, portList(ports))
	switch {
	case len(hits) == 0:
		return "", fmt.Errorf("no reverse_proxy in its config sends requests to %s (rollout setup shows the Caddyfile site to add)", want)
	case len(hits) > 1:
		var paths []string
		for _, h := range hits {
			paths = append(paths, h.path)
		}
		return "", fmt.Errorf("%d reverse_proxy handlers send requests to %s (%s): rollout changes the upstreams of one", len(hits), want, strings.Join(paths, ", "))
	}
	h := hits[0]
	if _, ok := h.h["dynamic_upstreams"]; ok {
		return "", fmt.Errorf("the reverse_proxy at %s has dynamic_upstreams: rollout changes static upstreams", h.path)
	}
	up, _ := json.Marshal(h.h["upstreams"])
	if _, err := caddyUpstreams(up, addr); err != nil {
		return "", fmt.Errorf("the reverse_proxy at %s: %w", h.path, err)
	}
	if !keepAliveOff(h.h) {
		return "", fmt.Errorf(`the reverse_proxy at %s keeps idle connections to the instances: rollout waits for a drained instance's requests by its open connections, so turn keep-alive off ("transport http { keepalive off }" in the Caddyfile; rollout setup shows it)`, h.path)
	}
	return h.path + "/upstreams", nil
}

// caddyPersists reports whether Caddy autosaves the configs it loads
// (admin.config.persist, on unless set false): what --resume loads.
func caddyPersists(raw []byte) bool {
	var c struct {
		Admin struct {
			Config struct {
				Persist *bool
			}
		}
	}
	return json.Unmarshal(raw, &c) == nil && (c.Admin.Config.Persist == nil || *c.Admin.Config.Persist)
}

// proxiesTo reports whether a reverse_proxy handler has an upstream at one
// of the ports at addr.
func proxiesTo(h map[string]any, addr string, ports []int) bool {
	list, _ := h["upstreams"].([]any)
	for _, u := range list {
		m, _ := u.(map[string]any)
		dial, _ := m["dial"].(string)
		if p, ok := dialPort(dial, addr); ok && slices.Contains(ports, p) {
			return true
		}
	}
	return false
}

// keepAliveOff reports whether the handler's HTTP transport keeps no idle
// connection to its upstreams.
func keepAliveOff(h map[string]any) bool {
	t, _ := h["transport"].(map[string]any)
	ka, _ := t["keep_alive"].(map[string]any)
	enabled, set := ka["enabled"].(bool)
	return set && !enabled
}

// caddyPlan is the plan of the app host's own Caddy (caddyBalancer).
func caddyPlan(cfg *Config) balancerPlan {
	cd := cfg.Caddy
	app := newSSHRemote(cfg, nil)
	addr := cd.ServerAddress
	api := "http://" + cd.Admin
	const path = "PATH"
	patch := func(ports []int) string {
		var s []string
		for _, p := range ports {
			s = append(s, fmt.Sprintf(`{"dial":"%s:%d"}`, addr, p))
		}
		return "[" + strings.Join(s, ",") + "]"
	}
	how := fmt.Sprintf("through Caddy's admin API (%s, dialled through the SSH connection; PATH: the upstreams of the reverse_proxy found by the preflight), PATCH %s with If-Match: the ETag last read (refused when someone changed them since: then read them again and check capacity again); Caddy loads the changed config (its graceful reload, no restart)", api, path)
	return balancerPlan{
		what:       "caddy's reverse_proxy (admin API " + cd.Admin + ")",
		addr:       addr,
		probeVia:   "each host's SSH connection",
		preflight:  fmt.Sprintf("that Caddy's admin API answers at %s and that its config has exactly one reverse_proxy sending requests to the instances at %s, with only instances as upstreams and keep-alive to them off", cd.Admin, addr),
		checks:     []string{"GET " + api + "/config/"},
		read:       "GET " + api + "/" + path,
		healthFrom: "through the SSH connection",
		change:     "one admin API change",
		drain: func(ports, back []int) Step {
			s := Step{Name: StepDrain, Command: "PATCH " + api + "/" + path,
				Stdin: "the upstreams in service, without " + portList(ports),
				Does:  fmt.Sprintf("take %s out of the upstreams %s", portList(ports), how)}
			if len(back) > 0 {
				s.Stdin += " and with " + portList(back) + ", e.g. " + patch(back)
				s.Does = fmt.Sprintf("in one change, take %s out of the upstreams and put %s back (its undrain) %s", portList(ports), portList(back), how)
			}
			return s
		},
		wait: func(ports []int) Step {
			return Step{Name: StepWaitDrain, Command: app.cmdWaitIdle(ports),
				Does: fmt.Sprintf("repeat ss -Htn state established until no connection is established to %s (Caddy finishes their requests on the config it had), at most %s", portList(ports), cfg.DrainTimeout)}
		},
		undrain: func(ports []int) Step {
			return Step{Name: StepUndrain, Command: "PATCH " + api + "/" + path,
				Stdin: "the upstreams in service with " + portList(ports) + " added, e.g. " + patch(ports),
				Does:  "check it is still healthy; put the instance back in the upstreams " + how}
		},
		surge: func(news, old []int) Step {
			return Step{Name: StepDrain, Command: "PATCH " + api + "/" + path,
				Stdin: "the upstreams in service with " + portList(news) + " and without " + portList(old) + ", e.g. " + patch(news),
				Does:  fmt.Sprintf("in one change, put %s into the upstreams and take %s out %s; then wait for %s's connections", portList(news), portList(old), how, portList(old))}
		},
	}
}

// caddyFiles are what setup shows for caddy: (it writes neither): the
// Caddyfile site and, with caddy.resume, the systemd drop-in that runs
// Caddy with --resume.
func caddyFiles(cfg *Config, ports []int) []ManagedFile {
	files := []ManagedFile{caddySite(cfg, ports)}
	if cfg.Caddy.Resume {
		files = append(files, ManagedFile{Path: "/etc/systemd/system/caddy.service.d/resume.conf", Owner: "root:root", Mode: "644", Doc: true,
			Content: `# caddy.resume: Caddy restarted loads its last config (autosaved, rollout's
# changes in it) rather than the Caddyfile. Then: systemctl daemon-reload;
# systemctl restart caddy. "systemctl reload caddy" (caddy reload) still
# loads the Caddyfile: after a surge its ports are not the live ones.
[Service]
ExecStart=
ExecStart=/usr/bin/caddy run --environ --resume --config /etc/caddy/Caddyfile
`})
	}
	return files
}

// caddySite is the Caddyfile site setup shows for caddy: (it does not
// write the Caddyfile).
func caddySite(cfg *Config, ports []int) ManagedFile {
	s := cfg.setupDefaults()
	cd := cfg.Caddy
	var b strings.Builder
	fmt.Fprintf(&b, "# Add to /etc/caddy/Caddyfile. rollout changes this reverse_proxy's upstreams\n# through Caddy's admin API (%s; keep its admin option on), and waits\n# for a drained instance's requests by its connections: keep-alive off.\n# lb_try_duration: a request an instance refuses (one a restarted Caddy\n# put back in service while rollout restarts it) goes to another.\n", cd.Admin)
	site := ":" + strconv.Itoa(s.Listen)
	if s.ServerName != "_" {
		var names []string
		for _, n := range strings.Fields(s.ServerName) {
			names = append(names, n+site)
		}
		site = strings.Join(names, ", ")
	}
	fmt.Fprintf(&b, "%s {\n\treverse_proxy", site)
	for _, p := range ports {
		fmt.Fprintf(&b, " %s", net.JoinHostPort(cd.ServerAddress, strconv.Itoa(p)))
	}
	b.WriteString(" {\n\t\tlb_try_duration 2s\n\t\ttransport http {\n\t\t\tkeepalive off\n\t\t}\n\t}\n}\n")
	return ManagedFile{Path: "/etc/caddy/Caddyfile", Owner: "root:root", Mode: "644", Content: b.String(), Doc: true}
}
