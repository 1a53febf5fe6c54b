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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// TraefikConfig is the traefik: section: Traefik on each app host, in
// front of its instances instead of Nginx. rollout owns one file of
// Traefik's file provider (File): the service Service, whose servers are
// the instances at ServerAddress; it rewrites the file to take an instance
// out of service and put it back (a compare-and-swap write, renamed into
// place), and reads Traefik's API at API on the host until Traefik serves
// the change. Traefik applies a dynamic change without a reload: no
// client connection is closed.
type TraefikConfig struct {
	File, Service, API, ServerAddress string

	nginxGiven bool // some nginx: setting given too
}

const defaultTraefikAPI = "localhost:8080"

func traefikSection(c *Config) field {
	tr := &TraefikConfig{API: defaultTraefikAPI, ServerAddress: DefaultConfig().Nginx.ServerAddress}
	fields := []field{
		str("file", &tr.File),
		str("service", &tr.Service),
		str("api", &tr.API),
		str("server_address", &tr.ServerAddress),
	}
	return one("traefik", func(p *parser, key string) {
		if !p.fields(key, fields) {
			return
		}
		c.Traefik = tr
		tr.nginxGiven = c.Nginx != DefaultConfig().Nginx
		c.Nginx.ServerAddress = tr.ServerAddress
	})
}

// traefikDefaults fills what the section left out from the app's name, and
// names the balancer where messages would name the upstream file.
func (c *Config) traefikDefaults() {
	tr := c.Traefik
	if tr.Service == "" {
		tr.Service = c.App
	}
	if tr.File == "" {
		tr.File = "/etc/traefik/dynamic/" + c.App + ".yml"
	}
	c.Nginx.Upstream = tr.Service
	c.Nginx.UpstreamFile = tr.File
}

// checkTraefik checks the traefik: section.
func (c *Config) checkTraefik(cs *checks) {
	c.traefikDefaults()
	tr := c.Traefik
	cs.add("traefik.file", validPath(tr.File, false))
	if !strings.HasSuffix(tr.File, ".yml") && !strings.HasSuffix(tr.File, ".yaml") {
		cs.add("traefik.file", fmt.Errorf("must end in .yml or .yaml (Traefik's file provider reads those), got %s", quoteValue(tr.File)))
	}
	cs.add("traefik.service", match(upstreamRE, tr.Service, `a service name: letters, digits, "_", "." or "-"`))
	if !loopbackAddr(tr.API) {
		cs.add("traefik.api", fmt.Errorf(`must be the loopback address and port of Traefik's API on the host (api.insecure: %s), got %s`, defaultTraefikAPI, quoteValue(tr.API)))
	}
	c.checkHostBalancer(cs, "traefik", tr.ServerAddress, tr.nginxGiven, "the servers of traefik.service")
	for _, other := range []struct {
		on   bool
		name string
	}{{c.LB != nil, "lb"}, {c.HAProxy != nil, "haproxy"}, {c.Caddy != nil, "caddy"}} {
		if other.on {
			cs.add("traefik", errors.New("and "+other.name+": both put a balancer in front of the instances: choose one"), other.name)
		}
	}
}

// traefikFileNginx is the write of Traefik's file with write-upstream.sh:
// no config test, nothing to signal.
func traefikFileNginx(tr *TraefikConfig) NginxConfig {
	return NginxConfig{UpstreamFile: tr.File, Upstream: tr.Service, TestCommand: "true", ReloadCommand: "true"}
}

// renderTraefik is rollout's file for Traefik's file provider: the service
// with a server per instance in s, a drained one as a comment (so the file
// keeps which instances are drained), and a transport that keeps no idle
// connection to them (rollout counts an instance's requests in flight by
// its connections).
func renderTraefik(tr *TraefikConfig, s servers) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by rollout for Traefik's file provider: the instances of service\n# %s. rollout rewrites this file to take an instance out of service (a\n# drained one is a comment) and to put it back: do not edit it by hand.\n", tr.Service)
	fmt.Fprintf(&b, "http:\n  services:\n    %s:\n      loadBalancer:\n        serversTransport: %s\n        servers:\n", tr.Service, tr.Service)
	for _, p := range slices.Sorted(maps.Keys(s)) {
		drained := ""
		if s[p] {
			drained = "# drained: "
		}
		fmt.Fprintf(&b, "          %s- url: \"http://%s\"\n", drained, net.JoinHostPort(tr.ServerAddress, strconv.Itoa(p)))
	}
	fmt.Fprintf(&b, "  serversTransports:\n    %s:\n      maxIdleConnsPerHost: -1\n", tr.Service)
	return b.Bytes()
}

var traefikServerRE = regexp.MustCompile(`^ *(# drained: )?- url: "http://([^"]+)"$`)

// parseTraefik reads rollout's file back: its servers. A file rollout did
// not write is refused (it rewrites the whole file).
func parseTraefik(tr *TraefikConfig, content []byte) (servers, error) {
	if !bytes.Equal(renderTraefik(tr, nil)[:40], content[:min(40, len(content))]) {
		return nil, fmt.Errorf("%s was not written by rollout (rollout setup writes it; rollout rewrites the whole file)", tr.File)
	}
	s := servers{}
	for _, line := range strings.Split(string(content), "\n") {
		m := traefikServerRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		port, ok := dialPort(m[2], tr.ServerAddress)
		if !ok {
			return nil, fmt.Errorf("%s: server %s is not at %s", tr.File, m[2], tr.ServerAddress)
		}
		s[port] = m[1] != ""
	}
	if !bytes.Equal(renderTraefik(tr, s), content) {
		return nil, fmt.Errorf("%s was changed by hand since rollout wrote it (rollout rewrites the whole file: put it back with rollout setup)", tr.File)
	}
	return s, nil
}

// traefikBalancer is Traefik on the app host itself (traefik:).
type traefikBalancer struct {
	r    remote
	tr   TraefikConfig
	cfg  *Config
	http *http.Client
	// content is the file as rollout last read or wrote it.
	content []byte
	// applyTimeout is how long Traefik may take to serve a written file.
	applyTimeout time.Duration
}

var _ balancer = (*traefikBalancer)(nil)

func newTraefikBalancer(cfg *Config, r remote) *traefikBalancer {
	b := &traefikBalancer{r: r, tr: *cfg.Traefik, cfg: cfg, applyTimeout: traefikApplyTimeout}
	b.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return r.DialContext(ctx, "tcp", b.tr.API)
		},
	}}
	return b
}

func (b *traefikBalancer) String() string { return "traefik " + b.tr.File }

func (b *traefikBalancer) how() string {
	return "one write of the file Traefik watches (no reload: no connection closed)"
}

func (b *traefikBalancer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return b.r.DialContext(ctx, network, addr)
}

// served asks Traefik's API which of the instances its service sends
// requests to.
func (b *traefikBalancer) served(ctx context.Context) ([]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	path := "/api/http/services/" + b.tr.Service + "@file"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.tr.API+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("traefik's API at %s: %w (is Traefik running, with api.insecure on?)", b.tr.API, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("traefik serves no service %s@file: is its file provider reading %s (providers.file.directory)?", b.tr.Service, b.tr.File)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("traefik's API: GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	var svc struct {
		LoadBalancer struct {
			Servers []struct{ URL string }
		}
	}
	if err := json.Unmarshal(body, &svc); err != nil {
		return nil, fmt.Errorf("traefik's API: GET %s: %w", path, err)
	}
	var out []int
	for _, s := range svc.LoadBalancer.Servers {
		if p, ok := dialPort(strings.TrimPrefix(s.URL, "http://"), b.tr.ServerAddress); ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out, nil
}

// preflight reads the file and checks that Traefik serves what it says.
func (b *traefikBalancer) preflight(ctx context.Context, _ []int) (servers, error) {
	s, err := b.readServed(ctx)
	if err != nil {
		return nil, err
	}
	if b.cfg.Probe.Enabled {
		err = newProber(b.cfg, "", b.r.DialContext).check(ctx)
	}
	return s, err
}

// readServed is the file's servers as Traefik serves them (one it does
// not serve is out of service), with an error when Traefik does not
// answer, or serves other than the file says: status shows Traefik's
// word, never the file's in its place.
func (b *traefikBalancer) readServed(ctx context.Context) (servers, error) {
	s, err := b.read(ctx)
	if err != nil {
		return nil, err
	}
	got, err := b.served(ctx)
	if err != nil {
		return nil, err
	}
	out := servers{}
	for p := range s {
		out[p] = !slices.Contains(got, p)
	}
	if want := inService(s); !slices.Equal(got, want) {
		return out, fmt.Errorf("traefik serves %v for %s, but %s says %v: is its file provider watching the file?", got, b.tr.Service, b.tr.File, want)
	}
	return out, nil
}

func (b *traefikBalancer) read(ctx context.Context) (servers, error) {
	content, err := b.r.ReadUpstream(ctx, traefikFileNginx(&b.tr))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", b.tr.File, err)
	}
	s, err := parseTraefik(&b.tr, content)
	if err != nil {
		return nil, err
	}
	b.content = content
	return s, nil
}

// inService are the ports of s in service, in order.
func inService(s servers) []int {
	var out []int
	for p := range s {
		if s.in(p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// change writes the file with to (compare-and-swap), waits until Traefik's
// API serves it, then waits on the host until no connection to the
// drained ports is open.
func (b *traefikBalancer) change(ctx context.Context, from, to servers, drained []int) (drainWait, error) {
	next := renderTraefik(&b.tr, to)
	if bytes.Equal(next, b.content) && len(drained) == 0 {
		return drainWait{}, nil
	}
	_, err := b.r.WriteUpstream(ctx, traefikFileNginx(&b.tr), b.content, next, nil, true)
	if errors.Is(err, errUpstreamChanged) {
		if _, rerr := b.read(ctx); rerr != nil {
			return drainWait{}, rerr
		}
		return drainWait{}, errUpstreamChanged
	}
	if err != nil {
		return drainWait{}, err
	}
	b.content = next
	if err := b.applied(ctx, inService(to)); err != nil {
		return drainWait{}, err
	}
	if len(drained) == 0 {
		return drainWait{}, nil
	}
	return b.r.WaitIdle(ctx, drained)
}

// traefikApplyTimeout is how long Traefik may take to serve a written file.
const traefikApplyTimeout = 10 * time.Second

// applied polls Traefik's API until its service's servers are want.
func (b *traefikBalancer) applied(ctx context.Context, want []int) error {
	deadline := time.Now().Add(b.applyTimeout)
	for {
		got, err := b.served(ctx)
		if err == nil && slices.Equal(got, want) {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("it serves %v", got)
			}
			return fmt.Errorf("traefik did not apply %s within %s (want %v): %w", b.tr.File, b.applyTimeout, want, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// traefikPlan is the plan of the app host's own Traefik (traefikBalancer).
func traefikPlan(cfg *Config) balancerPlan {
	tr := cfg.Traefik
	c := newSSHRemote(cfg, nil)
	n := traefikFileNginx(tr)
	api := "http://" + tr.API + "/api/http/services/" + tr.Service + "@file"
	apply := fmt.Sprintf("unless someone else changed the file since it was read (then read it again and check capacity again), replace %s (renamed into place: Traefik's file provider sees one change); then GET %s through the SSH connection every 5ms until Traefik serves it, at most %s", tr.File, api, traefikApplyTimeout)
	return balancerPlan{
		what:       tr.File,
		addr:       tr.ServerAddress,
		probeVia:   "each host's SSH connection",
		preflight:  fmt.Sprintf("that %s is rollout's and that Traefik's API (%s) serves its servers", tr.File, api),
		checks:     []string{c.cmdReadUpstream(n), "GET " + api},
		read:       c.cmdReadUpstream(n),
		healthFrom: "through the SSH connection",
		change:     "one write of " + tr.File,
		drain: func(ports, back []int) Step {
			return Step{Name: StepDrain, Command: c.cmdWriteUpstream(n, nil, true),
				Stdin: fmt.Sprintf("the SHA-256 of %s as last read, then the file with %s as comments (drained) and %s back", tr.File, portList(ports), portList(back)),
				Does:  "take " + portList(ports) + " out of the service's servers: " + apply}
		},
		wait: func(ports []int) Step {
			return Step{Name: StepWaitDrain, Command: c.cmdWaitIdle(ports),
				Does: fmt.Sprintf("repeat ss -Htn state established until no connection is established to %s, at most %s", portList(ports), cfg.DrainTimeout)}
		},
		undrain: func(ports []int) Step {
			return Step{Name: StepUndrain, Command: c.cmdWriteUpstream(n, nil, true),
				Stdin: fmt.Sprintf("the SHA-256 of %s as last read, then the file with %s back", tr.File, portList(ports)),
				Does:  "check it is still healthy; put it back: " + apply}
		},
		surge: func(news, old []int) Step {
			return Step{Name: StepDrain, Command: c.cmdWriteUpstream(n, nil, true),
				Stdin: fmt.Sprintf("the SHA-256 of %s as last read, then the file with servers %s and none for %s", tr.File, portList(news), portList(old)),
				Does:  fmt.Sprintf("put %s into the service's servers and remove %s, in one write: %s; then wait for %s's connections", portList(news), portList(old), apply, portList(old))}
		},
	}
}

// traefikFiles are what setup writes for traefik: (the file, when it is
// missing: rollout edits it while it deploys) and shows (Traefik's static
// configuration, and a router: Traefik's and the user's).
func traefikFiles(cfg *Config, ports []int) []ManagedFile {
	tr := cfg.Traefik
	s := servers{}
	for _, p := range ports {
		s[p] = false
	}
	dir := tr.File[:strings.LastIndex(tr.File, "/")]
	static := fmt.Sprintf(`# Add to Traefik's static configuration (traefik.yml). rollout writes
# %s and reads Traefik's API (on %s: keep that port closed to the
# outside) to see each change served.
providers:
  providersThrottleDuration: 0s   # serve each change at once (the default waits 2s)
  file:
    directory: %s
    watch: true
api:
  insecure: true
entryPoints:
  traefik:
    address: "%s"
  web:
    address: ":%d"
# And a router for the service, in a file of your own in %s:
# http:
#   routers:
#     %s:
#       rule: "PathPrefix(`+"`/`"+`)"
#       service: %s
#       entryPoints: [web]
`, tr.File, tr.API, dir, tr.API, cfg.setupDefaults().Listen, dir, tr.Service, tr.Service)
	return []ManagedFile{
		{Path: tr.File, Owner: "root:root", Mode: "644", Content: string(renderTraefik(tr, s)), Keep: true},
		{Path: "/etc/traefik/traefik.yml", Owner: "root:root", Mode: "644", Content: static, Doc: true},
	}
}
