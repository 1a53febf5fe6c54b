package deployer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rollout-dev/rollout/healthcheck"
)

// Discovery is what one host says about itself to `rollout init`, read
// without changing anything.
type Discovery struct {
	Host string
	User string
	Root bool
	Sudo bool // sudo -n works (or the user is root)
	// Helpers are the apps whose helper (sudo: helper) the user may run.
	Helpers []string
	Cores   int
	Apps    []FoundApp
	// Workers are templates whose instances are numbered 1, 2, … (up to
	// 256: no web instance listens on such a port): workers of an app.
	Workers []FoundWorker
	// NginxErr says why the Nginx config could not be read; "" when it was.
	NginxErr string
	// MemAvailable is the host's MemAvailable, bytes; 0 when unknown.
	MemAvailable uint64
}

// FoundApp is one systemd template with running or enabled instances
// whose names are ports (NAME@PORT.service).
type FoundApp struct {
	Name    string // the template's prefix: "my-app" of my-app@.service
	Ports   []int  // the instances running or enabled, sorted
	Running []int
	// Other are the template's instances whose names are not ports.
	Other []string
	// Upstreams are the upstream blocks with server lines at these ports.
	Upstreams []FoundUpstream
	// Listen is the address of the site that proxies to the first
	// upstream, as the host itself reaches it ("127.0.0.1:80"; "": none
	// found).
	Listen string
	// LogFiles are where one instance writes its output, its port as {port}.
	LogFiles []string
	// Health is what the health path candidates answered on one instance.
	Health []HealthAnswer
	// MemoryEach is the running instances' average resident memory
	// (VmRSS), bytes; 0 when none runs.
	MemoryEach uint64
}

// FoundWorker is a template whose instances are numbers, not ports.
type FoundWorker struct {
	Unit    string // the template's prefix: my-app-worker
	Count   int    // its highest instance number
	Running int
}

// FoundUpstream is an upstream block of the Nginx config whose server
// lines name some of an app's ports.
type FoundUpstream struct {
	File, Name, Addr string
	Ports            []int // this app's ports it names
	Extra            []int // its ports on Addr that are no instance of the app
}

// HealthAnswer is what one health path candidate answered.
type HealthAnswer struct {
	Path   string
	Status int    // 0: no answer
	Err    string // why there was no answer
}

// HealthPaths are the paths `rollout init` tries, in order of preference.
var HealthPaths = []string{"/healthz", "/health", "/"}

// Discover reads what `rollout init` needs from host over conn: the user
// and its sudo, the cores, the template instances and their output files,
// the Nginx upstream blocks and sites that name their ports, and what one
// running instance answers on the health path candidates.
func Discover(ctx context.Context, conn Conn, host string) (*Discovery, error) {
	return discover(ctx, sshRemote{cfg: &Config{}, conn: conn}, host)
}

// hostDiscovery is what `rollout init` reads on a host: over SSH in
// sshRemote (never with sudo: discover.sh asks sudo -n itself, for nginx -T).
type hostDiscovery interface {
	// DiscoverHost runs discover.sh and returns what it printed.
	DiscoverHost(ctx context.Context) ([]byte, error)
	// UnitFiles reads each unit's file (systemctl cat), by unit.
	UnitFiles(ctx context.Context, units []string) (map[string]string, error)
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

func discover(ctx context.Context, r hostDiscovery, host string) (*Discovery, error) {
	out, err := r.DiscoverHost(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the host: %w", err)
	}
	d, nginxT := parseDiscovery(host, out)
	for i := range d.Apps {
		a := &d.Apps[i]
		a.Upstreams, a.Listen = findUpstreams(nginxT, a.Ports)
		port := a.Ports[0]
		if len(a.Running) > 0 {
			port = a.Running[0]
		}
		unit := fmt.Sprintf("%s@%d", a.Name, port)
		files, err := r.UnitFiles(ctx, []string{unit + ".service"})
		if err != nil {
			return nil, fmt.Errorf("read the unit file of %s: %w", unit, err)
		}
		for _, f := range unitLogFiles(files[unit+".service"], unit) {
			a.LogFiles = append(a.LogFiles, strings.ReplaceAll(f, strconv.Itoa(port), "{port}"))
		}
		if len(a.Running) > 0 {
			addr := "127.0.0.1"
			if len(a.Upstreams) > 0 {
				addr = a.Upstreams[0].Addr
			}
			a.Health = probeHealthPaths(ctx, r.DialContext, addr, port)
		}
	}
	return d, nil
}

// parseDiscovery reads discover.sh's output: the Discovery without what
// needs more commands, and the output of nginx -T ("" when it failed).
func parseDiscovery(host string, out []byte) (*Discovery, string) {
	parts := sections(out)
	d := &Discovery{Host: host}
	id := strings.Fields(parts["id"])
	if len(id) == 2 {
		d.Root, d.User = id[0] == "0", id[1]
	}
	sudo := strings.TrimSpace(parts["sudo"])
	d.Sudo = sudo == "yes" || sudo == "root"
	for _, line := range strings.Split(parts["helpers"], "\n") {
		if app, ok := strings.CutSuffix(strings.TrimSpace(line), " allowed"); ok {
			d.Helpers = append(d.Helpers, app)
		}
	}
	d.Cores, _ = strconv.Atoi(strings.TrimSpace(parts["cores"]))

	running := map[string]bool{}
	known := map[string]bool{}
	for _, line := range strings.Split(parts["units"], "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		// UNIT LOAD ACTIVE SUB DESCRIPTION...
		if f[2] == "active" || f[2] == "activating" || f[2] == "reloading" {
			running[f[0]], known[f[0]] = true, true
		}
	}
	for _, line := range strings.Split(parts["wants"], "\n") {
		if u := strings.TrimSpace(line); u != "" {
			known[u] = true
		}
	}
	rss := map[string]uint64{}
	for line := range strings.Lines(parts["memory"]) {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "available":
			if kb, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				d.MemAvailable = kb << 10
			}
		case len(f) == 3 && f[0] == "rss":
			if kb, err := strconv.ParseUint(f[2], 10, 64); err == nil {
				rss[f[1]] = kb << 10
			}
		}
	}
	apps := map[string]*FoundApp{}
	for unit := range known {
		name, inst, ok := strings.Cut(strings.TrimSuffix(unit, ".service"), "@")
		if !ok || name == "" || inst == "" {
			continue
		}
		a := apps[name]
		if a == nil {
			a = &FoundApp{Name: name}
			apps[name] = a
		}
		port, err := strconv.Atoi(inst)
		if err != nil || validPort(port) != nil || strconv.Itoa(port) != inst {
			a.Other = append(a.Other, unit)
			continue
		}
		a.Ports = append(a.Ports, port)
		if running[unit] {
			a.Running = append(a.Running, port)
		}
	}
	for _, a := range apps {
		var sum, n uint64
		for _, p := range a.Running {
			if b := rss[fmt.Sprintf("%s@%d.service", a.Name, p)]; b > 0 {
				sum, n = sum+b, n+1
			}
		}
		if n > 0 {
			a.MemoryEach = sum / n
		}
	}
	for _, a := range apps {
		if len(a.Ports) > 0 && slices.Max(a.Ports) <= maxWorkers && len(a.Other) == 0 {
			// Numbered, not ported: a worker (workers:).
			fw := FoundWorker{Unit: a.Name, Count: slices.Max(a.Ports), Running: len(a.Running)}
			d.Workers = append(d.Workers, fw)
			continue
		}
		if len(a.Ports) == 0 {
			continue // no instance named by a port: not an app of ours
		}
		slices.Sort(a.Ports)
		slices.Sort(a.Running)
		slices.Sort(a.Other)
		d.Apps = append(d.Apps, *a)
	}
	slices.SortFunc(d.Apps, func(a, b FoundApp) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(d.Workers, func(a, b FoundWorker) int { return strings.Compare(a.Unit, b.Unit) })

	nginxT := parts["nginx"]
	if _, failed := parts["nginx-failed"]; failed || !strings.Contains(nginxT, "# configuration file ") {
		d.NginxErr = firstLines(nginxT, 3)
		if d.NginxErr == "" {
			d.NginxErr = "nginx -T printed nothing"
		}
		nginxT = ""
	}
	return d, nginxT
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "; ")
}

var (
	configFileRE = regexp.MustCompile(`(?m)^# configuration file (.+):$`)
	proxyPassRE  = regexp.MustCompile(`(?:^|[\s{;])proxy_pass\s+https?://([A-Za-z0-9_.-]+)[/;\s]`)
	listenRE     = regexp.MustCompile(`(?:^|[\s{;])listen\s+(?:(\S+):)?(\d+)[\s;]`)
)

// nginxFiles splits the output of nginx -T into its files' contents.
func nginxFiles(nginxT string) map[string]string {
	files := map[string]string{}
	marks := configFileRE.FindAllStringSubmatchIndex(nginxT, -1)
	for i, m := range marks {
		end := len(nginxT)
		if i+1 < len(marks) {
			end = marks[i+1][0]
		}
		files[nginxT[m[2]:m[3]]] += nginxT[m[1]:end]
	}
	return files
}

// findUpstreams finds, in the output of nginx -T, the upstream blocks
// whose server lines (one per line, as rollout edits them) name ports,
// most ports first, and the port of the site that proxies to the first.
func findUpstreams(nginxT string, ports []int) ([]FoundUpstream, string) {
	files := nginxFiles(nginxT)
	var found []FoundUpstream
	for file, content := range files {
		var cur *FoundUpstream
		for _, line := range strings.Split(content, "\n") {
			if cur == nil {
				if m := upstreamOpenRE.FindStringSubmatch(line); m != nil {
					cur = &FoundUpstream{File: file, Name: m[1]}
				}
				continue
			}
			if m := serverLineRE.FindStringSubmatch(line); m != nil {
				if p, err := strconv.Atoi(m[3]); err == nil {
					switch {
					case slices.Contains(ports, p) && (cur.Addr == "" || cur.Addr == m[2]):
						cur.Addr = m[2]
						cur.Ports = append(cur.Ports, p)
					case cur.Addr == m[2]:
						cur.Extra = append(cur.Extra, p)
					}
				}
			}
			if closesBlock(line) {
				if len(cur.Ports) > 0 {
					found = append(found, *cur)
				}
				cur = nil
			}
		}
	}
	slices.SortFunc(found, func(a, b FoundUpstream) int {
		if len(a.Ports) != len(b.Ports) {
			return len(b.Ports) - len(a.Ports)
		}
		return strings.Compare(a.File+a.Name, b.File+b.Name)
	})
	if len(found) == 0 {
		return nil, ""
	}
	return found, siteListen(files, found[0].Name)
}

// siteListen is the address of the last listen directive before a
// proxy_pass to upstream, in any file: the site that serves it, as the
// host reaches it (a wildcard address is 127.0.0.1; "": none found).
func siteListen(files map[string]string, upstream string) string {
	names := make([]string, 0, len(files))
	for f := range files {
		names = append(names, f)
	}
	slices.Sort(names)
	for _, f := range names {
		listen := ""
		for _, line := range strings.Split(files[f], "\n") {
			code, _, _ := strings.Cut(line, "#")
			if m := listenRE.FindStringSubmatch(code + " "); m != nil {
				host := strings.Trim(m[1], "[]")
				if host == "" || host == "*" || host == "0.0.0.0" || host == "::" {
					host = "127.0.0.1"
				}
				listen = net.JoinHostPort(host, m[2])
			}
			if m := proxyPassRE.FindStringSubmatch(code + " "); m != nil && m[1] == upstream && listen != "" {
				return listen
			}
		}
	}
	return ""
}

// probeHealthPaths GETs each of HealthPaths from host:port through the
// connection, with the health check deploys use: the status it answered,
// or why there was none.
func probeHealthPaths(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), host string, port int) []HealthAnswer {
	var answers []HealthAnswer
	for _, p := range HealthPaths {
		a := HealthAnswer{Path: p}
		h := healthcheck.HTTP{Dial: dial, Host: host, Path: p, Status: http.StatusOK, AttemptTimeout: 3 * time.Second}
		var se *healthcheck.StatusError
		switch err := h.Check(ctx, port); {
		case err == nil:
			a.Status = http.StatusOK
		case errors.As(err, &se):
			a.Status = se.Got
		default:
			a.Err = err.Error()
		}
		answers = append(answers, a)
	}
	return answers
}
