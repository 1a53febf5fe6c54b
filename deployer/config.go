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

// Config is a rollout.yaml: the fleet, how to reach it, and how to roll it.
// Every value that ends up in a remote command is checked by Validate.
type Config struct {
	App string
	// UnitTemplate is the systemd template instance with one {port}, e.g.
	// "my-app@{port}"; empty means "<App>@{port}".
	UnitTemplate string
	Hosts        []string
	SSH          SSHConfig
	// Notify is the notify: section; nil: no notifications.
	Notify *NotifyConfig
	Sudo   string // "auto", "true", "false" or "helper"
	// rootSetup: setup's own commands, which install the helper, run as
	// root even with sudo: helper.
	rootSetup    bool
	Nginx        NginxConfig
	Health       HealthConfig
	DrainTimeout time.Duration
	Logs         []string // absolute paths; {port} is the instance's port
	Hooks        Hooks
	Parallel     int // hosts deployed at once
	// StateDir holds, on each host, the deploy lock and the history:
	// StateDir/App/lock and StateDir/App/history.jsonl.
	StateDir string
	// LockStaleAfter: a lock not refreshed for this long is stale.
	LockStaleAfter time.Duration
	// Setup is what `rollout setup` prepares on a bare host.
	Setup SetupConfig
	// Instances are the ports of each host's instances: ports, or
	// base_port with instances.
	Instances Instances
	// Release is the release: section; nil: rollout ships no code.
	Release *ReleaseConfig
	// Secrets is the secrets: section; nil: the release carries no env.
	Secrets *SecretsConfig
	// Strategy is how many instances of a host restart together.
	Strategy StrategyConfig
	// Probe is the availability probe every deploy runs.
	Probe ProbeConfig
	// Watch is the watch: section; nil: setup installs no alerts.
	Watch *WatchConfig
	// Paths are globs of the app's files in its repository (apps.NAME.paths),
	// for deploy --changed-since.
	Paths []string
	// LB is the lb: section; nil: Nginx runs beside the instances on each
	// app host.
	LB *LBConfig
	// HAProxy is the haproxy: section: HAProxy on each app host serves the
	// instances (instead of Nginx), changed through its runtime API; nil
	// without it.
	HAProxy *HAProxyConfig
	// Caddy is the caddy: section: Caddy on each app host serves the
	// instances (instead of Nginx), changed through its admin API; nil
	// without it.
	Caddy *CaddyConfig
	// Traefik is the traefik: section: Traefik on each app host serves
	// the instances (instead of Nginx), from a file of its file provider
	// that rollout writes; nil without it.
	Traefik *TraefikConfig
	// Workers are the app's template units with no port (workers:).
	Workers []Worker

	minServing *int // nil: all the other instances of a host
	// moved: the host serves from some of its slots' spare ports
	// (strategy.max_surge); Instances are its live ports, homeIn the
	// configured ones.
	moved  bool
	homeIn Instances
	// balancer is the lb: section on the config of a balancer host's side
	// (lbSide), for its helper.
	balancer *LBConfig
	// neighbors are the file's other apps on some of the same hosts.
	neighbors []neighbor
}

// SSHConfig says how to reach the hosts.
type SSHConfig struct {
	User       string // empty: the current OS user, resolved by the caller
	Port       int
	Key        string
	KnownHosts string
	AcceptNew  bool
	// ConfigFile is an OpenSSH client config (~/.ssh/config); a missing
	// file is fine.
	ConfigFile string
	// Jump is a bastion, [user@]host[:port] (or an alias of ConfigFile),
	// for every host; several, comma-separated, are hopped in order.
	Jump           string
	ConnectTimeout time.Duration
	// KeepAlive is how often a keepalive asks each host whether the
	// connection is up; three unanswered ones close it.
	KeepAlive time.Duration
	// Reconnect is how long rollout tries to reconnect to a host whose
	// connection broke before it gives up on the host.
	Reconnect time.Duration
}

// NginxConfig names the upstream that instances are drained from.
type NginxConfig struct {
	UpstreamFile  string
	Upstream      string
	ServerAddress string // the ADDR of "server ADDR:PORT;" lines
	TestCommand   string
	ReloadCommand string // empty: send SIGHUP to the master in PIDFile
	PIDFile       string
}

// HealthConfig says when a restarted instance counts as healthy.
type HealthConfig struct {
	Path           string
	Status         int
	Timeout        time.Duration
	AttemptTimeout time.Duration
	Interval       time.Duration
	MinHealthy     time.Duration
}

// Hooks are commands run around the deploy: locally (Before, After) and on
// each host around its instances (HostBefore, HostAfter).
type Hooks struct {
	Before     []string
	After      []string
	HostBefore []string
	HostAfter  []string
}

// DefaultConfig is a config holding every default; App, Hosts, the ports
// and the Nginx upstream are left for the file to give.
func DefaultConfig() *Config {
	return &Config{
		SSH: SSHConfig{Port: 22, KnownHosts: "~/.ssh/known_hosts", ConnectTimeout: 10 * time.Second, ConfigFile: "~/.ssh/config",
			KeepAlive: 10 * time.Second, Reconnect: 30 * time.Second},
		Sudo: "auto",
		Nginx: NginxConfig{
			ServerAddress: "127.0.0.1",
			TestCommand:   "nginx -t",
			PIDFile:       "/run/nginx.pid",
		},
		Health: HealthConfig{Path: "/healthz", Status: 200, Timeout: 30 * time.Second,
			AttemptTimeout: 2 * time.Second, Interval: 50 * time.Millisecond, MinHealthy: 2 * time.Second},
		DrainTimeout:   30 * time.Second,
		Parallel:       1,
		StateDir:       "/var/lib/rollout",
		LockStaleAfter: time.Minute,
		Strategy:       defaultStrategy(),
		Probe:          defaultProbe(),
		// The file's value, 0 included, replaces these: never a silent
		// substitution.
		Setup: SetupConfig{RestartDelay: 2 * time.Second, StartLimit: 3, StartWindow: time.Minute, Listen: 80, LogRotateSize: "100M", LogRotateKeep: 5},
	}
}

// InstancesAuto reports instances: auto: one instance per CPU core of each
// host, from BasePort; Ports is empty until ForCores.
func (c *Config) InstancesAuto() bool { return c.Instances.Auto }

// BasePort is base_port, 0 when the config lists its ports.
func (c *Config) BasePort() int { return c.Instances.Base }

// SetInstances sets n instances from base_port; n 0 means auto.
func (c *Config) SetInstances(n int) error {
	base := c.Instances.Base
	if base == 0 {
		return errors.New("instances need base_port in the config (it lists its ports)")
	}
	if n < 0 || base+n-1 > maxPort {
		return fmt.Errorf("instances must be 1..%d from base_port %d, got %d", maxPort+1-base, base, n)
	}
	if err := tooManyInstances(n); err != nil {
		return fmt.Errorf("instances %w", err)
	}
	c.Instances = Instances{Base: base, Count: n, Auto: n == 0}
	return nil
}

// ForCores is the config for a host with cores CPU cores: with instances:
// auto its ports are one per core from base_port; otherwise c itself.
func (c *Config) ForCores(cores int) *Config {
	if !c.Instances.Auto {
		return c
	}
	hc := *c
	hc.Instances = Instances{Base: c.Instances.Base, Count: len(c.Instances.Resolve(cores))}
	return &hc
}

// Ports returns the instances' ports, in order; none while instances: auto
// is not resolved for a host (see ForCores).
func (c *Config) Ports() []int {
	if c.Instances.Auto {
		return nil
	}
	return c.Instances.Resolve(1)
}

// SetPorts replaces the instances by a list of ports; call Validate
// afterwards.
func (c *Config) SetPorts(ports []int) { c.Instances = Instances{List: slices.Clone(ports)} }

// MinServing is how many instances of a host must keep serving while
// some restart; by default all but strategy.max_unavailable of them.
func (c *Config) MinServing() int {
	if c.minServing != nil {
		return *c.minServing
	}
	n := len(c.Ports())
	return max(n-c.Unavailable(n), 0)
}

// servingFloor says how many instances of a host a drain must leave
// serving (n, min_serving), as the plan and a capacity failure word it:
// never the host's last one (min_serving: 0 included).
func servingFloor(n int) string {
	switch n {
	case 0:
		return "at least 1 other serving (min_serving is 0, but a host's last serving instance is never drained)"
	case 1:
		return "at least 1 other serving (min_serving)"
	default:
		return fmt.Sprintf("at least %d others serving (min_serving)", n)
	}
}

// SetMinServing overrides MinServing (0 included); call Validate afterwards.
func (c *Config) SetMinServing(n int) { c.minServing = &n }

// Unit is the systemd unit of the instance on port.
func (c *Config) Unit(port int) string {
	return strings.Replace(c.unitTemplate(), "{port}", strconv.Itoa(port), 1)
}

// unitTemplate is unit: with its default, "<App>@{port}".
func (c *Config) unitTemplate() string {
	if c.UnitTemplate == "" {
		return c.App + "@{port}"
	}
	return c.UnitTemplate
}

// UnitName is Unit.
func (c *Config) UnitName(port int) string { return c.Unit(port) }

// UseSudo says whether privileged remote commands go through `sudo -n`:
// with sudo auto or helper, whenever the SSH user is not root (an empty
// user counts as not root).
func (c *Config) UseSudo() bool {
	switch c.Sudo {
	case "true":
		return true
	case "false":
		return false
	}
	return c.SSH.User != "root"
}

// LogFiles returns the configured log files of the instance on port.
func (c *Config) LogFiles(port int) []string {
	var files []string
	for _, l := range c.Logs {
		files = append(files, strings.ReplaceAll(l, "{port}", strconv.Itoa(port)))
	}
	return files
}

// LoadConfig reads and checks the config file at path, which must hold
// one app (see LoadProject for a file with apps:). A file over 1 MiB is
// refused without being read.
func LoadConfig(path string) (*Config, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, data)
}

// ParseConfig parses and checks a config of at most 1 MiB holding one app;
// name is the file's name in errors. It reports the problems in line
// order, each as "name:line: key: problem" (the first maxErrors, then how
// many more).
func ParseConfig(name string, data []byte) (*Config, error) {
	pr, err := ParseProject(name, data)
	if err != nil {
		return nil, err
	}
	if pr.Multi {
		return nil, &configError{file: name, key: appsKey, err: fmt.Errorf("the file has apps: (%s); this needs a file of one app", strings.Join(pr.Names(), ", "))}
	}
	return pr.Apps[0], nil
}

// parseConfig parses the root node of a config of one app, from the
// file named name.
func parseConfig(name string, root *yaml.Node) (*Config, error) {
	p := newParser(name)
	c := p.config(root)
	p.report(c.problems())
	if err := p.err(); err != nil {
		return nil, err
	}
	if c.UnitTemplate == "" {
		c.UnitTemplate = c.App + "@{port}"
	}
	return c, nil
}

// Validate checks the whole config, e.g. again after flags changed it. It
// reports the problems, one per line, as "key: problem" (the first
// maxErrors, then how many more).
func (c *Config) Validate() error {
	return c.ValidateSet("", func(string) string { return "" })
}

// ValidateSet is Validate naming where each problem's value came from:
// setBy(key) for a key set other than by the file (a flag, say, for
// "hosts" or "parallel"; list keys are asked without their index), file
// otherwise.
func (c *Config) ValidateSet(file string, setBy func(key string) string) error {
	var errs []*configError
	for _, pr := range c.problems() {
		base, _, _ := strings.Cut(pr.key, "[")
		from := file
		if by := setBy(base); by != "" {
			from = by
		}
		errs = append(errs, &configError{file: from, key: pr.key, err: pr.err})
	}
	return joinProblems(file, errs)
}

// config reads the file's root node into a Config holding the defaults
// for what the file leaves out, those derived from other keys included.
func (p *parser) config(root *yaml.Node) *Config {
	c := DefaultConfig()
	p.nodes[""] = deref(root)
	p.fields("", schema(c))
	c.releaseDefaults()
	return c
}

// schema is every key of the file and where its value goes, in the order
// read (and "did you mean" tries them).
func schema(c *Config) []field {
	return []field{
		str("app", &c.App),
		str("unit", &c.UnitTemplate),
		strs("hosts", &c.Hosts),
		section("ssh",
			str("user", &c.SSH.User),
			integer("port", &c.SSH.Port),
			str("key", &c.SSH.Key),
			str("known_hosts", &c.SSH.KnownHosts),
			boolean("accept_new", &c.SSH.AcceptNew),
			str("config", &c.SSH.ConfigFile),
			str("jump", &c.SSH.Jump),
			duration("connect_timeout", &c.SSH.ConnectTimeout),
			duration("keepalive", &c.SSH.KeepAlive),
			duration("reconnect", &c.SSH.Reconnect),
		),
		sudo(&c.Sudo),
		instances(&c.Instances),
		optInteger("min_serving", &c.minServing),
		section("nginx",
			str("upstream_file", &c.Nginx.UpstreamFile),
			str("upstream", &c.Nginx.Upstream),
			str("server_address", &c.Nginx.ServerAddress),
			str("test_command", &c.Nginx.TestCommand),
			str("reload_command", &c.Nginx.ReloadCommand),
			str("pid_file", &c.Nginx.PIDFile),
		),
		section("health",
			str("path", &c.Health.Path),
			integer("status", &c.Health.Status),
			duration("timeout", &c.Health.Timeout),
			duration("attempt_timeout", &c.Health.AttemptTimeout),
			duration("interval", &c.Health.Interval),
			duration("min_healthy", &c.Health.MinHealthy),
		),
		duration("drain_timeout", &c.DrainTimeout),
		strs("logs", &c.Logs),
		section("hooks",
			strs("before", &c.Hooks.Before),
			strs("after", &c.Hooks.After),
			strs("host_before", &c.Hooks.HostBefore),
			strs("host_after", &c.Hooks.HostAfter),
		),
		integer("parallel", &c.Parallel),
		str("state_dir", &c.StateDir),
		duration("lock_stale_after", &c.LockStaleAfter),
		notifySection(c),
		setupSection(&c.Setup),
		releaseSection(c),
		secretsSection(c),
		strategySection(c),
		probeSection(c),
		watchSection(c),
		lbSection(c),
		haproxySection(c),
		caddySection(c),
		traefikSection(c),
		workersField(&c.Workers),
		strs(pathsKey, &c.Paths),
	}
}
