package deployer

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// InitOptions are what `rollout init` was told: the hosts as the user
// named them, how to reach them, and the app to write.
type InitOptions struct {
	Hosts           []string
	User            string // given with --user; "" to leave it out
	Key, KnownHosts string
	App             string // "" with one app found
	Now             time.Time
}

// ErrNoInstances is returned when no host has template instances named
// by ports.
var ErrNoInstances = errors.New("no systemd template instances named by a port (NAME@PORT.service) are running or enabled")

// ErrPickApp is returned when several apps were found and none was picked.
var ErrPickApp = errors.New("several apps found: pick one with --app")

// InitResult is what `rollout init` found and decided.
type InitResult struct {
	App  string
	YAML []byte
	// Undecided are what it could not decide and left for the user.
	Undecided []string
}

// AppNames are the apps found on any host, sorted.
func AppNames(ds []*Discovery) []string {
	var names []string
	for _, d := range ds {
		for _, a := range d.Apps {
			if !slices.Contains(names, a.Name) {
				names = append(names, a.Name)
			}
		}
	}
	slices.Sort(names)
	return names
}

// InitConfig writes a rollout.yaml for one app from every host's
// Discovery (in the order of opts.Hosts). Hosts that disagree on what
// the config must say (the app, its ports, its upstream) are an error
// naming each host's value: rollout init reports, it does not guess.
func InitConfig(ds []*Discovery, opts InitOptions) (*InitResult, error) {
	names := AppNames(ds)
	switch {
	case len(names) == 0:
		return nil, ErrNoInstances
	case opts.App == "" && len(names) > 1:
		return nil, fmt.Errorf("%w (%s)", ErrPickApp, strings.Join(names, ", "))
	case opts.App != "" && !slices.Contains(names, opts.App):
		return nil, fmt.Errorf("no app %q on any host (found: %s)", opts.App, strings.Join(names, ", "))
	}
	name := opts.App
	if name == "" {
		name = names[0]
	}
	apps := make([]FoundApp, len(ds))
	var missing []string
	for i, d := range ds {
		j := slices.IndexFunc(d.Apps, func(a FoundApp) bool { return a.Name == name })
		if j < 0 {
			missing = append(missing, d.Host)
			continue
		}
		apps[i] = d.Apps[j]
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("hosts disagree: %s has no instances of %s", strings.Join(missing, ", "), name)
	}

	r := &InitResult{App: name}
	inst, moved, err := initInstances(ds, apps)
	if err != nil {
		return nil, err
	}
	up, err := initUpstream(ds, apps)
	if err != nil {
		return nil, err
	}
	for i, a := range apps {
		if len(a.Other) > 0 {
			r.Undecided = append(r.Undecided, fmt.Sprintf("%s: instances of %s not named by a port are left out: %s", ds[i].Host, name, strings.Join(a.Other, ", ")))
		}
		if extra := a.Upstreams[0].Extra; len(extra) > 0 {
			r.Undecided = append(r.Undecided, fmt.Sprintf("%s: upstream %s also names %s, which no instance of %s runs on: rollout leaves those lines alone", ds[i].Host, up.Name, portList(extra), name))
		}
		if len(a.Running) < len(a.Ports) {
			r.Undecided = append(r.Undecided, fmt.Sprintf("%s: %d of %d instances of %s are not running", ds[i].Host, len(a.Ports)-len(a.Running), len(a.Ports), name))
		}
		if !ds[i].Sudo && !slices.Contains(ds[i].Helpers, name) {
			r.Undecided = append(r.Undecided, fmt.Sprintf("%s: user %s is not root and sudo -n refuses it: rollout needs passwordless sudo for systemctl, nginx and the upstream file, or the app's helper (sudo: helper, installed by rollout setup)", ds[i].Host, ds[i].User))
		}
	}
	health, healthNote := initHealth(ds, apps)
	if healthNote != "" {
		r.Undecided = append(r.Undecided, healthNote)
	}
	listen := apps[0].Listen
	for i, a := range apps {
		if a.Listen != listen {
			r.Undecided = append(r.Undecided, fmt.Sprintf("%s: its site listens on %q, %s's on %q: probe.address is %s's", ds[i].Host, a.Listen, ds[0].Host, listen, ds[0].Host))
			break
		}
	}
	if listen == "" {
		r.Undecided = append(r.Undecided, fmt.Sprintf("no server block with a listen directive proxies to upstream %s: the availability probe is left off (probe: false)", up.Name))
	}
	workers, notes := initWorkers(ds, name)
	r.Undecided = append(r.Undecided, notes...)
	r.YAML = renderInit(ds, apps, opts, name, inst, up, health, listen)
	r.YAML = append(r.YAML, initSurge(ds, apps, moved)...)
	r.YAML = append(r.YAML, workers...)
	if _, err := ParseConfig("rollout.yaml", r.YAML); err != nil {
		return nil, fmt.Errorf("the config init wrote does not load (a bug in rollout init): %w", err)
	}
	return r, nil
}

// initInstances says the instances in YAML: "base_port: B\ninstances: N"
// (or auto when every host runs one per core), or "ports: [...]". Hosts
// of N contiguous instances each, some from B and the others from B+N,
// were moved by deploys with strategy.max_surge (moved: base_port B, and
// initSurge writes the strategy).
func initInstances(ds []*Discovery, apps []FoundApp) (string, bool, error) {
	contiguous, auto, same := true, true, true
	base, n := apps[0].Ports[0], len(apps[0].Ports)
	for _, a := range apps {
		base = min(base, a.Ports[0])
	}
	moved := true // each host's instances are base.. or base+n..
	for i, a := range apps {
		run := a.Ports[len(a.Ports)-1]-a.Ports[0] == len(a.Ports)-1
		contiguous = contiguous && run && a.Ports[0] == apps[0].Ports[0]
		auto = auto && len(a.Ports) == ds[i].Cores
		same = same && slices.Equal(a.Ports, apps[0].Ports)
		moved = moved && run && len(a.Ports) == n && (a.Ports[0] == base || a.Ports[0] == base+n)
	}
	switch {
	case contiguous && auto:
		return fmt.Sprintf("# One instance per CPU core on each host (the instances match the cores).\nbase_port: %d\ninstances: auto\n", base), false, nil
	case contiguous && same:
		return fmt.Sprintf("base_port: %d\ninstances: %d\n", base, n), false, nil
	case same:
		return "ports: [" + portList(apps[0].Ports) + "]\n", false, nil
	case moved:
		var at []string
		for i, a := range apps {
			at = append(at, fmt.Sprintf("%s %s", ds[i].Host, PortRanges(a.Ports)))
		}
		count := strconv.Itoa(n)
		if auto {
			count = "auto"
		}
		return fmt.Sprintf("# The hosts serve from %s (strategy.max_surge moves each instance\n# between its port and a spare one at every deploy).\nbase_port: %d\ninstances: %s\n",
			strings.Join(at, ", "), base, count), true, nil
	}
	var each []string
	for i, a := range apps {
		each = append(each, fmt.Sprintf("%s: %s (%d cores)", ds[i].Host, portList(a.Ports), ds[i].Cores))
	}
	return "", false, fmt.Errorf("hosts disagree on the instances of %s: %s", apps[0].Name, strings.Join(each, "; "))
}

// initSurge is the strategy for hosts moved by strategy.max_surge
// (moved); else, when memory was read on every host, what a surge would
// need there, and the strategy commented out when it fits.
func initSurge(ds []*Discovery, apps []FoundApp, moved bool) []byte {
	if moved {
		return []byte("strategy:\n  max_surge: 100%\n")
	}
	var each uint64
	tight := -1
	for i, a := range apps {
		if a.MemoryEach == 0 || ds[i].MemAvailable == 0 {
			return nil
		}
		each = max(each, a.MemoryEach)
		if tight < 0 || ds[i].MemAvailable < ds[tight].MemAvailable {
			tight = i
		}
	}
	if tight < 0 {
		return nil
	}
	n := len(apps[tight].Ports)
	need, have := each*uint64(n), ds[tight].MemAvailable
	top := slices.Max(apps[tight].Ports)
	var b strings.Builder
	fmt.Fprintf(&b, "# New instances beside the old ones (strategy.max_surge: 100%%) would need\n# about %s more on a host (%d of about %s each, as they run now); the\n# tightest, %s, has %s available",
		MiB(need), n, MiB(each), ds[tight].Host, MiB(have))
	if need > have {
		fmt.Fprintf(&b, ": %s short. One at a time it is.\n", MiB(need-have))
		return []byte(b.String())
	}
	fmt.Fprintf(&b, ". To deploy that way (%d-%d\n# become the spare ports: nothing else may listen there), uncomment:\n# strategy:\n#   max_surge: 100%%\n", top+1, top+n)
	return []byte(b.String())
}

// initUpstream is the upstream block every host drains the app from.
func initUpstream(ds []*Discovery, apps []FoundApp) (FoundUpstream, error) {
	var each []string
	for i, a := range apps {
		switch {
		case ds[i].NginxErr != "":
			return FoundUpstream{}, fmt.Errorf("%s: could not read the Nginx config (nginx -T): %s", ds[i].Host, ds[i].NginxErr)
		case len(a.Upstreams) == 0:
			return FoundUpstream{}, fmt.Errorf("%s: no Nginx upstream block has server lines (one per line) for %s's ports %s", ds[i].Host, a.Name, portList(a.Ports))
		}
		u := a.Upstreams[0]
		if len(u.Ports) < len(a.Ports) {
			return FoundUpstream{}, fmt.Errorf("%s: upstream %s in %s names %s of %s's instances %s: add a server line for each", ds[i].Host, u.Name, u.File, portList(u.Ports), a.Name, portList(a.Ports))
		}
		each = append(each, fmt.Sprintf("%s: %s in %s (%s)", ds[i].Host, u.Name, u.File, u.Addr))
	}
	first := apps[0].Upstreams[0]
	for _, a := range apps[1:] {
		if u := a.Upstreams[0]; u.File != first.File || u.Name != first.Name || u.Addr != first.Addr {
			return FoundUpstream{}, fmt.Errorf("hosts disagree on the upstream of %s: %s", apps[0].Name, strings.Join(each, "; "))
		}
	}
	return first, nil
}

// initHealth is the health path every host's instance answered 2xx on,
// in HealthPaths' order, and a note when there was none.
func initHealth(ds []*Discovery, apps []FoundApp) (string, string) {
	for _, p := range HealthPaths {
		ok := true
		for _, a := range apps {
			i := slices.IndexFunc(a.Health, func(h HealthAnswer) bool { return h.Path == p })
			ok = ok && i >= 0 && a.Health[i].Status >= 200 && a.Health[i].Status < 300
		}
		if ok {
			return p, ""
		}
	}
	var tried []string
	for i, a := range apps {
		for _, h := range a.Health {
			if h.Status != 0 {
				tried = append(tried, fmt.Sprintf("%s %s %d", ds[i].Host, h.Path, h.Status))
			}
		}
		if len(a.Health) == 0 {
			tried = append(tried, ds[i].Host+": no running instance to ask")
		}
	}
	return "/healthz", fmt.Sprintf("no health path answered 2xx on every host (%s): health.path is /healthz; set the path your app answers", strings.Join(tried, ", "))
}

// helperEverywhere: every host lets its user run app's helper.
func helperEverywhere(ds []*Discovery, app string) bool {
	for _, d := range ds {
		if !slices.Contains(d.Helpers, app) {
			return false
		}
	}
	return len(ds) > 0
}

// yamlString is s as a YAML scalar, quoted when it must be.
func yamlString(s string) string {
	b, err := yaml.Marshal(s)
	if err != nil {
		return strconv.Quote(s)
	}
	return strings.TrimSuffix(string(b), "\n")
}

// initWorkers are the app's workers in YAML: the templates numbered 1, 2,
// … whose name is the app's and more (my-app-worker for my-app), with
// the highest count any host runs; and what it could not decide.
func initWorkers(ds []*Discovery, name string) ([]byte, []string) {
	count := map[string]int{}
	var units []string
	for _, d := range ds {
		for _, w := range d.Workers {
			rest, ok := strings.CutPrefix(w.Unit, name)
			if !ok || rest == "" || !strings.ContainsAny(rest[:1], "-_.") {
				continue
			}
			if !slices.Contains(units, w.Unit) {
				units = append(units, w.Unit)
			}
			count[w.Unit] = max(count[w.Unit], w.Count)
		}
	}
	if len(units) == 0 {
		return nil, nil
	}
	slices.Sort(units)
	var notes []string
	var b strings.Builder
	b.WriteString("# Workers: templates with numbered instances and no port, restarted after\n# the web instances (give each exec_start to have rollout setup write it).\nworkers:\n")
	for _, u := range units {
		fmt.Fprintf(&b, "  - unit: %s\n    count: %d\n", yamlString(u), count[u])
		for _, d := range ds {
			j := slices.IndexFunc(d.Workers, func(w FoundWorker) bool { return w.Unit == u })
			switch {
			case j < 0:
				notes = append(notes, fmt.Sprintf("%s: no instance of worker %s (the others run %d): deploys will refuse the host until it has the unit", d.Host, u, count[u]))
			case d.Workers[j].Count != count[u]:
				notes = append(notes, fmt.Sprintf("%s: worker %s runs %d instance(s), another host %d: count is %d", d.Host, u, d.Workers[j].Count, count[u], count[u]))
			}
		}
	}
	return []byte(b.String()), notes
}

func renderInit(ds []*Discovery, apps []FoundApp, opts InitOptions, name, instances string, up FoundUpstream, health string, listen string) []byte {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# rollout.yaml for %s, written by `rollout init` on %s from what the hosts\n", name, opts.Now.UTC().Format("2006-01-02 15:04 UTC"))
	w("# run today. Check it, then: rollout plan --version V (it changes nothing).\n")
	w("app: %s\n", yamlString(name))
	w("# The systemd template instance; {port} is the instance's port.\n")
	w("unit: %s\n", yamlString(name+"@{port}"))
	w("hosts:\n")
	for _, h := range opts.Hosts {
		w("  - %s\n", yamlString(h))
	}
	if opts.User != "" || opts.Key != "" || opts.KnownHosts != "" {
		w("ssh:\n")
		if opts.User != "" {
			w("  user: %s\n", yamlString(opts.User))
		}
		if opts.Key != "" {
			w("  key: %s\n", yamlString(opts.Key))
		}
		if opts.KnownHosts != "" {
			w("  known_hosts: %s\n", yamlString(opts.KnownHosts))
		}
	}
	if helperEverywhere(ds, name) {
		w("# Every host has %s's helper (rollout setup): the deploy user may run\n# only it as root, and only for this app.\nsudo: helper\n", name)
	}
	w("%s", instances)
	w("# The upstream block rollout marks instances down in, one at a time.\n")
	w("nginx:\n  upstream_file: %s\n  upstream: %s\n", yamlString(up.File), yamlString(up.Name))
	if up.Addr != "127.0.0.1" {
		w("  server_address: %s\n", yamlString(up.Addr))
	}
	w("# A restarted instance is healthy when it answers this path with status.\n")
	w("health:\n  path: %s\n  status: 200\n", yamlString(health))
	if logs := apps[0].LogFiles; len(logs) > 0 {
		w("# The instances write their output to\n")
		for _, f := range logs {
			w("#   %s\n", f)
		}
		w("# rollout reads these from the unit file and shows a failed start's own words.\n")
	}
	switch {
	case listen == "":
		w("# No site proxying to %s was found: the availability probe is off.\nprobe: false\n", up.Name)
	case listen != "127.0.0.1:80":
		w("# The availability probe asks the site through each host's Nginx.\nprobe:\n  address: %s\n", yamlString(listen))
	}
	return []byte(b.String())
}
