package deployer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
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
	Notify       *NotifyConfig
	Sudo         string // "auto", "true" or "false"
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

	ports      []int
	basePort   int  // when given: base_port
	auto       bool // instances: auto, one per CPU core of each host
	minServing *int // nil: all the other instances of a host
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
		SSH:  SSHConfig{Port: 22, KnownHosts: "~/.ssh/known_hosts", ConnectTimeout: 10 * time.Second, ConfigFile: "~/.ssh/config"},
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
	}
}

// InstancesAuto reports instances: auto: one instance per CPU core of each
// host, from BasePort; Ports is empty until ForHost.
func (c *Config) InstancesAuto() bool { return c.auto }

// BasePort is base_port, 0 when the config lists its ports.
func (c *Config) BasePort() int { return c.basePort }

// SetInstances sets n instances from base_port; n 0 means auto.
func (c *Config) SetInstances(n int) error {
	if c.basePort == 0 {
		return errors.New("instances need base_port in the config (it lists its ports)")
	}
	if n < 0 || c.basePort+n-1 > 65535 {
		return fmt.Errorf("instances must be 1..%d from base_port %d, got %d", 65536-c.basePort, c.basePort, n)
	}
	c.auto, c.ports = n == 0, nil
	for i := range n {
		c.ports = append(c.ports, c.basePort+i)
	}
	return nil
}

// ForCores is the config for a host with cores CPU cores: with instances:
// auto its ports are one per core from base_port; otherwise c itself.
func (c *Config) ForCores(cores int) *Config {
	if !c.auto {
		return c
	}
	hc := *c
	hc.auto, hc.ports = false, nil
	for i := range max(cores, 1) {
		if c.basePort+i <= 65535 {
			hc.ports = append(hc.ports, c.basePort+i)
		}
	}
	return &hc
}

// Ports returns the instances' ports, in order.
func (c *Config) Ports() []int { return slices.Clone(c.ports) }

// SetPorts replaces the instances' ports; call Validate afterwards.
func (c *Config) SetPorts(ports []int) { c.ports = slices.Clone(ports) }

// MinServing is how many instances of a host must keep serving while one
// is restarted; by default all the others.
func (c *Config) MinServing() int {
	if c.minServing != nil {
		return *c.minServing
	}
	return max(len(c.ports)-1, 0)
}

// SetMinServing overrides MinServing (0 included); call Validate afterwards.
func (c *Config) SetMinServing(n int) { c.minServing = &n }

// Unit is the systemd unit of the instance on port.
func (c *Config) Unit(port int) string {
	tmpl := c.UnitTemplate
	if tmpl == "" {
		tmpl = c.App + "@{port}"
	}
	return strings.Replace(tmpl, "{port}", strconv.Itoa(port), 1)
}

// UnitName is Unit.
func (c *Config) UnitName(port int) string { return c.Unit(port) }

// UseSudo says whether privileged remote commands go through `sudo -n`:
// with sudo auto, whenever the SSH user is not root (an empty user counts
// as not root).
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

// LoadConfig reads and checks the config file at path.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig parses and checks a config; name is the file's name in
// errors. It reports every problem, in line order, each as
// "name:line: key: problem".
func ParseConfig(name string, data []byte) (*Config, error) {
	root, err := document(name, data)
	if err != nil {
		return nil, err
	}
	p := &parser{file: name, nodes: map[string]*yaml.Node{}, lines: map[string]int{}, bad: map[string]bool{}}
	c := p.config(root)
	for _, pr := range c.problems() {
		if !p.skip(pr) {
			p.errs = append(p.errs, &configError{file: name, line: p.lineOf(pr.key), key: pr.key, err: pr.err})
		}
	}
	if len(p.errs) > 0 {
		slices.SortStableFunc(p.errs, func(a, b *configError) int { return a.line - b.line })
		errs := make([]error, len(p.errs))
		for i, e := range p.errs {
			errs[i] = e
		}
		return nil, errors.Join(errs...)
	}
	if c.UnitTemplate == "" {
		c.UnitTemplate = c.App + "@{port}"
	}
	return c, nil
}

// Validate checks the whole config, e.g. again after flags changed it. It
// reports every problem, one per line, as "key: problem".
func (c *Config) Validate() error {
	var errs []error
	for _, pr := range c.problems() {
		errs = append(errs, &configError{key: pr.key, err: pr.err})
	}
	return errors.Join(errs...)
}

// configError is one problem, located as precisely as known.
type configError struct {
	file string
	line int
	key  string // dotted path, e.g. "hosts[1]" or "health.timeout"
	err  error
}

func (e *configError) Error() string {
	var b strings.Builder
	if e.file != "" {
		b.WriteString(e.file)
		if e.line > 0 {
			fmt.Fprintf(&b, ":%d", e.line)
		}
		b.WriteString(": ")
	}
	if e.key != "" {
		b.WriteString(e.key + ": ")
	}
	b.WriteString(e.err.Error())
	return b.String()
}

func (e *configError) Unwrap() error { return e.err }

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document returns the root node of the file's only YAML document.
func document(name string, data []byte) (*yaml.Node, error) {
	syntax := func(err error) error {
		if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
			line, _ := strconv.Atoi(m[1])
			// yaml.v3 counts lines from 0 in parser errors (not in
			// scanner errors); these are all its parser errors.
			switch m[2] {
			case "did not find expected <document start>", "did not find expected node content",
				"did not find expected '-' indicator", "did not find expected key",
				"did not find expected ',' or ']'", "did not find expected ',' or '}'",
				"found undefined tag handle", "found duplicate %YAML directive",
				"found incompatible YAML document", "found duplicate %TAG directive":
				line++
			}
			return &configError{file: name, line: line, err: errors.New(m[2])}
		}
		return &configError{file: name, err: errors.New(strings.TrimPrefix(err.Error(), "yaml: "))}
	}
	empty := &configError{file: name, err: errors.New("the file is empty; it needs at least app, hosts, ports and nginx")}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, empty
	} else if err != nil {
		return nil, syntax(err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return nil, &configError{file: name, line: next.Line, err: errors.New("only one YAML document is allowed")}
	} else if !errors.Is(err, io.EOF) {
		return nil, syntax(err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Tag == "!!null" {
		return nil, empty
	}
	return doc.Content[0], nil
}

// parser turns the YAML tree into a Config, noting each key's node and line
// and which keys had the wrong type.
type parser struct {
	file  string
	errs  []*configError
	nodes map[string]*yaml.Node // by key path
	lines map[string]int        // by key path: the key's line, or the list item's
	bad   map[string]bool       // key paths that had the wrong type
}

func (p *parser) fail(key string, err error) {
	p.bad[key] = true
	p.errs = append(p.errs, &configError{file: p.file, line: p.lineOf(key), key: key, err: err})
}

// lineOf is the line of key, or of its closest ancestor in the file.
func (p *parser) lineOf(key string) int {
	for key != "" {
		if line, ok := p.lines[key]; ok {
			return line
		}
		key = key[:max(strings.LastIndexAny(key, ".["), 0)]
	}
	return 0
}

// skip says whether a validation problem only repeats a type error.
func (p *parser) skip(pr problem) bool {
	if p.bad[""] {
		return true // the file is not a mapping: nothing else is worth saying
	}
	related := func(a, b string) bool {
		return a == b || strings.HasPrefix(b, a+".") || strings.HasPrefix(b, a+"[")
	}
	for b := range p.bad {
		for _, key := range append([]string{pr.key}, pr.deps...) {
			if related(b, key) || related(key, b) {
				return true
			}
		}
	}
	return false
}

// mapping records the children of the mapping at path, reporting unknown and
// repeated keys. It returns false if path is absent or not a mapping.
func (p *parser) mapping(path string, known ...string) bool {
	n, ok := p.nodes[path]
	if !ok {
		return false
	}
	if n.Kind != yaml.MappingNode {
		p.fail(path, fmt.Errorf("must be a mapping of keys, got %s", describe(n)))
		return false
	}
	where := path
	if where == "" {
		where = "the top level"
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		if path != "" {
			key = path + "." + k.Value
		}
		switch first, dup := p.lines[key]; {
		case !slices.Contains(known, k.Value):
			msg := fmt.Sprintf("unknown key %q (in %s)", k.Value, where)
			if s := closest(k.Value, known); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			p.errs = append(p.errs, &configError{file: p.file, line: k.Line, err: errors.New(msg)})
		case dup:
			p.errs = append(p.errs, &configError{file: p.file, line: k.Line, key: key, err: fmt.Errorf("given twice (first on line %d)", first)})
		default:
			p.nodes[key], p.lines[key] = deref(v), k.Line
		}
	}
	return true
}

// list records the items of the list at key as key[0], key[1], ...
func (p *parser) list(key string) (int, bool) {
	n, ok := p.nodes[key]
	if !ok {
		return 0, false
	}
	if n.Kind != yaml.SequenceNode {
		p.fail(key, fmt.Errorf("must be a list, got %s", describe(n)))
		return 0, false
	}
	for i, item := range n.Content {
		k := fmt.Sprintf("%s[%d]", key, i)
		p.nodes[k], p.lines[k] = deref(item), item.Line
	}
	return len(n.Content), true
}

func (p *parser) str(key string, dst *string) {
	n, ok := p.nodes[key]
	switch {
	case !ok:
	case n.Kind != yaml.ScalarNode || n.Tag == "!!null":
		p.fail(key, fmt.Errorf("must be a string, got %s", describe(n)))
	default:
		*dst = n.Value
	}
}

func (p *parser) strs(key string, dst *[]string) {
	n, ok := p.list(key)
	if !ok {
		return
	}
	*dst = nil
	for i := range n {
		var s string // "" for a wrong type: indexes stay those of the file
		p.str(fmt.Sprintf("%s[%d]", key, i), &s)
		*dst = append(*dst, s)
	}
}

func (p *parser) integer(key string, dst *int) bool {
	n, ok := p.nodes[key]
	if !ok {
		return false
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(dst) != nil {
		p.fail(key, fmt.Errorf("must be a whole number, got %s", describe(n)))
		return false
	}
	return true
}

func (p *parser) boolean(key string, dst *bool) {
	if n, ok := p.nodes[key]; ok && (n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(dst) != nil) {
		p.fail(key, fmt.Errorf("must be true or false, got %s", describe(n)))
	}
}

func (p *parser) duration(key string, dst *time.Duration) {
	n, ok := p.nodes[key]
	if !ok {
		return
	}
	_, numErr := strconv.ParseFloat(n.Value, 64)
	d, err := time.ParseDuration(n.Value)
	switch {
	case n.Kind != yaml.ScalarNode || numErr == nil || err != nil:
		p.fail(key, fmt.Errorf(`must be a duration like "30s", got %s`, describe(n)))
	case d < 0:
		p.fail(key, fmt.Errorf("must not be negative, got %q", n.Value))
	default:
		*dst = d
	}
}

func (p *parser) config(root *yaml.Node) *Config {
	c := DefaultConfig()
	p.nodes[""] = deref(root)
	if !p.mapping("", "app", "unit", "hosts", "ssh", "sudo", "ports", "base_port", "instances",
		"min_serving", "nginx", "health", "drain_timeout", "logs", "hooks", "parallel", "state_dir", "lock_stale_after", "notify", "setup") {
		return c
	}
	p.str("app", &c.App)
	p.str("unit", &c.UnitTemplate)
	p.strs("hosts", &c.Hosts)
	if p.mapping("ssh", "user", "port", "key", "known_hosts", "accept_new", "connect_timeout", "config", "jump") {
		p.str("ssh.user", &c.SSH.User)
		p.integer("ssh.port", &c.SSH.Port)
		p.str("ssh.key", &c.SSH.Key)
		p.str("ssh.known_hosts", &c.SSH.KnownHosts)
		p.boolean("ssh.accept_new", &c.SSH.AcceptNew)
		p.str("ssh.config", &c.SSH.ConfigFile)
		p.str("ssh.jump", &c.SSH.Jump)
		p.duration("ssh.connect_timeout", &c.SSH.ConnectTimeout)
	}
	p.notify(c)
	if n, ok := p.nodes["sudo"]; ok {
		var b bool
		switch {
		case n.Kind == yaml.ScalarNode && n.Tag == "!!bool" && n.Decode(&b) == nil:
			c.Sudo = strconv.FormatBool(b)
		case n.Kind == yaml.ScalarNode && n.Tag == "!!str" && slices.Contains([]string{"auto", "true", "false"}, n.Value):
			c.Sudo = n.Value
		default:
			p.fail("sudo", fmt.Errorf("must be auto, true or false, got %s", describe(n)))
		}
	}
	p.ports(c)
	var minServing int
	if p.integer("min_serving", &minServing) {
		c.minServing = &minServing
	}
	if p.mapping("nginx", "upstream_file", "upstream", "server_address", "test_command", "reload_command", "pid_file") {
		p.str("nginx.upstream_file", &c.Nginx.UpstreamFile)
		p.str("nginx.upstream", &c.Nginx.Upstream)
		p.str("nginx.server_address", &c.Nginx.ServerAddress)
		p.str("nginx.test_command", &c.Nginx.TestCommand)
		p.str("nginx.reload_command", &c.Nginx.ReloadCommand)
		p.str("nginx.pid_file", &c.Nginx.PIDFile)
	}
	if p.mapping("health", "path", "status", "timeout", "attempt_timeout", "interval", "min_healthy") {
		p.str("health.path", &c.Health.Path)
		p.integer("health.status", &c.Health.Status)
		p.duration("health.timeout", &c.Health.Timeout)
		p.duration("health.attempt_timeout", &c.Health.AttemptTimeout)
		p.duration("health.interval", &c.Health.Interval)
		p.duration("health.min_healthy", &c.Health.MinHealthy)
	}
	p.duration("drain_timeout", &c.DrainTimeout)
	p.strs("logs", &c.Logs)
	if p.mapping("hooks", "before", "after", "host_before", "host_after") {
		p.strs("hooks.before", &c.Hooks.Before)
		p.strs("hooks.after", &c.Hooks.After)
		p.strs("hooks.host_before", &c.Hooks.HostBefore)
		p.strs("hooks.host_after", &c.Hooks.HostAfter)
	}
	p.integer("parallel", &c.Parallel)
	p.setup(c)
	p.str("state_dir", &c.StateDir)
	p.duration("lock_stale_after", &c.LockStaleAfter)
	return c
}

// ports reads either ports or base_port and instances; Validate checks the
// resulting list.
func (p *parser) ports(c *Config) {
	_, hasList := p.nodes["ports"]
	_, hasBase := p.nodes["base_port"]
	inst, hasCount := p.nodes["instances"]
	switch {
	case hasList && (hasBase || hasCount):
		p.fail("ports", errors.New("give either ports or base_port with instances, not both"))
	case hasList:
		n, _ := p.list("ports")
		for i := range n {
			var port int // 0 for a wrong type: indexes stay those of the file
			p.integer(fmt.Sprintf("ports[%d]", i), &port)
			c.ports = append(c.ports, port)
		}
	case !hasCount && hasBase:
		p.fail("base_port", errors.New("needs instances too"))
	case hasCount && !hasBase:
		p.fail("instances", errors.New("needs base_port too"))
	case hasCount && inst.Kind == yaml.ScalarNode && inst.Value == "auto":
		var base int
		if p.integer("base_port", &base) {
			if err := validPort(base); err != nil {
				p.fail("base_port", err)
			}
			c.basePort, c.auto = base, true
		}
	case hasCount:
		var base, count int
		okBase, okCount := p.integer("base_port", &base), p.integer("instances", &count)
		switch {
		case !okBase || !okCount:
		case validPort(base) != nil:
			p.fail("base_port", validPort(base))
		case count < 1:
			p.fail("instances", fmt.Errorf("must be at least 1, got %d", count))
		case base+count-1 > 65535:
			p.fail("instances", fmt.Errorf("%d instances from base_port %d run past port 65535", count, base))
		default:
			c.basePort = base
			for i := range count {
				c.ports = append(c.ports, base+i)
			}
		}
	}
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// describe names a node's value for an error message.
func describe(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Tag == "!!null":
		return "nothing"
	}
	return strconv.Quote(n.Value)
}

// closest returns the known key within edit distance 2 of s, if any.
func closest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(s, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// problem is one invalid value; deps are the keys it was derived from.
type problem struct {
	key  string
	err  error
	deps []string
}

var (
	appRE        = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)
	unitCharsRE  = regexp.MustCompile(`^[A-Za-z0-9:_.@-]*$`)
	hostnameRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
	userRE       = regexp.MustCompile(`^[a-z_][a-z0-9_.-]*$`)
	pathRE       = regexp.MustCompile(`^/[A-Za-z0-9._/-]+$`)
	upstreamRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	healthPathRE = regexp.MustCompile(`^/[A-Za-z0-9._~/%?&=+-]*$`)
)

func (c *Config) problems() []problem {
	var ps []problem
	check := func(key string, err error, deps ...string) {
		if err != nil {
			ps = append(ps, problem{key, err, deps})
		}
	}
	check("app", match(appRE, c.App, `lower-case letters, digits, "_", "." or "-", starting with a letter or digit`))
	if c.UnitTemplate != "" {
		check("unit", validUnit(c.UnitTemplate))
	}
	if len(c.Hosts) == 0 {
		check("hosts", errors.New("required"))
	}
	seen := map[string]int{}
	for i, h := range c.Hosts {
		key := fmt.Sprintf("hosts[%d]", i)
		if net.ParseIP(h) == nil && (len(h) > 253 || !hostnameRE.MatchString(h)) {
			check(key, fmt.Errorf("must be a host name or an IP address, got %q", h))
			continue
		}
		id := strings.ToLower(h)
		if ip := net.ParseIP(h); ip != nil {
			id = ip.String()
		}
		if j, dup := seen[id]; dup {
			check(key, fmt.Errorf("%q is listed twice (also hosts[%d])", h, j))
		}
		seen[id] = i
	}
	if c.SSH.User != "" {
		check("ssh.user", match(userRE, c.SSH.User, `a user name: lower-case letters, digits, "_", "." or "-"`))
	}
	check("ssh.port", validPort(c.SSH.Port))
	if c.SSH.Jump != "" {
		for _, hop := range strings.Split(c.SSH.Jump, ",") {
			if _, _, _, err := ParseJump(hop); err != nil {
				check("ssh.jump", err)
				break
			}
		}
	}
	check("ssh.connect_timeout", positive(c.SSH.ConnectTimeout))
	c.Notify.problems(check)
	if !slices.Contains([]string{"auto", "true", "false"}, c.Sudo) {
		check("sudo", fmt.Errorf("must be auto, true or false, got %q", c.Sudo))
	}
	if len(c.ports) == 0 && !c.auto {
		check("ports", errors.New("required (or base_port and instances)"), "base_port", "instances")
	}
	ports := map[int]bool{}
	for i, port := range c.ports {
		key := fmt.Sprintf("ports[%d]", i)
		if err := validPort(port); err != nil {
			check(key, err)
		} else if ports[port] {
			check(key, fmt.Errorf("%d is listed twice", port))
		}
		ports[port] = true
	}
	if n := c.minServing; n != nil && len(c.ports) > 0 && (*n < 0 || *n > len(c.ports)-1) {
		check("min_serving", fmt.Errorf("must be 0..%d (the other instances of a host), got %d", len(c.ports)-1, *n),
			"ports", "base_port", "instances")
	}
	check("nginx.upstream_file", validPath(c.Nginx.UpstreamFile, false))
	if c.Nginx.Upstream == "" {
		check("nginx.upstream", errors.New("required"))
	} else {
		check("nginx.upstream", match(upstreamRE, c.Nginx.Upstream, `an upstream name: letters, digits, "_", "." or "-"`))
	}
	if c.Nginx.ServerAddress != "localhost" && net.ParseIP(c.Nginx.ServerAddress) == nil {
		check("nginx.server_address", fmt.Errorf(`must be an IP address or "localhost", got %q`, c.Nginx.ServerAddress))
	}
	check("nginx.test_command", validCommand(c.Nginx.TestCommand))
	if c.Nginx.ReloadCommand != "" { // empty: SIGHUP to the master in pid_file
		check("nginx.reload_command", validCommand(c.Nginx.ReloadCommand))
	}
	check("nginx.pid_file", validPath(c.Nginx.PIDFile, false))
	check("health.path", match(healthPathRE, c.Health.Path, `a path starting with "/" (letters, digits and . _ ~ / % ? & = + -)`))
	if c.Health.Status < 100 || c.Health.Status > 599 {
		check("health.status", fmt.Errorf("must be an HTTP status 100..599, got %d", c.Health.Status))
	}
	check("health.timeout", positive(c.Health.Timeout))
	if err := positive(c.Health.AttemptTimeout); err != nil {
		check("health.attempt_timeout", err)
	} else if c.Health.AttemptTimeout > c.Health.Timeout {
		check("health.attempt_timeout", fmt.Errorf("must not be longer than health.timeout (%s), got %s",
			c.Health.Timeout, c.Health.AttemptTimeout), "health.timeout")
	}
	check("health.interval", positive(c.Health.Interval))
	if c.Health.MinHealthy < 0 {
		check("health.min_healthy", fmt.Errorf("must not be negative, got %s", c.Health.MinHealthy))
	}
	check("drain_timeout", positive(c.DrainTimeout))
	for i, l := range c.Logs {
		check(fmt.Sprintf("logs[%d]", i), validPath(l, true))
	}
	for _, h := range []struct {
		key   string
		hooks []string
	}{{"hooks.before", c.Hooks.Before}, {"hooks.after", c.Hooks.After},
		{"hooks.host_before", c.Hooks.HostBefore}, {"hooks.host_after", c.Hooks.HostAfter}} {
		for i, hook := range h.hooks {
			if strings.TrimSpace(hook) == "" || strings.ContainsRune(hook, 0) {
				check(fmt.Sprintf("%s[%d]", h.key, i), fmt.Errorf("must be a non-empty command without NUL bytes, got %q", hook))
			}
		}
	}
	ps = append(ps, c.setupProblems()...)
	check("state_dir", validPath(c.StateDir, false))
	if err := positive(c.LockStaleAfter); err != nil {
		check("lock_stale_after", err)
	} else if c.LockStaleAfter < 3*time.Second {
		check("lock_stale_after", fmt.Errorf("must be at least 3s (the lock is refreshed every third of it), got %s", c.LockStaleAfter))
	}
	if c.Parallel < 1 {
		check("parallel", fmt.Errorf("must be at least 1, got %d", c.Parallel))
	}
	return ps
}

func match(re *regexp.Regexp, s, what string) error {
	switch {
	case s == "":
		return errors.New("required")
	case !re.MatchString(s):
		return fmt.Errorf("must be %s, got %q", what, s)
	}
	return nil
}

func validUnit(s string) error {
	at := strings.Index(s, "@")
	switch {
	case strings.Count(s, "{port}") != 1:
		return fmt.Errorf(`must contain {port} exactly once, like "my-app@{port}", got %q`, s)
	case !unitCharsRE.MatchString(strings.Replace(s, "{port}", "", 1)):
		return fmt.Errorf("may only contain letters, digits and : _ . @ - besides {port}, got %q", s)
	case at < 1 || at > strings.Index(s, "{port}"):
		return fmt.Errorf(`must be a systemd template instance, a name then "@" then {port}, like "my-app@{port}", got %q`, s)
	}
	return nil
}

func validPort(port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("must be a port 1..65535, got %d", port)
	}
	return nil
}

// validPath checks an absolute remote path; with portOK it may hold {port}.
func validPath(s string, portOK bool) error {
	bare := s
	if portOK {
		bare = strings.ReplaceAll(s, "{port}", "0")
	}
	switch {
	case s == "":
		return errors.New("required")
	case !strings.HasPrefix(s, "/"):
		return fmt.Errorf("must be an absolute path, got %q", s)
	case !pathRE.MatchString(bare) && portOK:
		return fmt.Errorf("may only contain letters, digits, . _ - / and {port}, got %q", s)
	case !pathRE.MatchString(bare):
		return fmt.Errorf("may only contain letters, digits and . _ - /, got %q", s)
	case slices.Contains(strings.Split(s, "/"), ".."):
		return fmt.Errorf(`must not contain ".." segments, got %q`, s)
	}
	return nil
}

func validCommand(s string) error {
	if strings.TrimSpace(s) == "" || strings.ContainsAny(s, "\n\r\x00") {
		return fmt.Errorf("must be one non-empty line, got %q", s)
	}
	return nil
}

func positive(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("must be more than 0, got %s", d)
	}
	return nil
}

var jumpRE = regexp.MustCompile(`^(?:([a-z_][a-z0-9_.-]*)@)?([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?$`)

// ParseJump splits one bastion hop, [user@]host[:port]; user and port are
// empty and 0 when not given.
func ParseJump(hop string) (user, host string, port int, err error) {
	m := jumpRE.FindStringSubmatch(strings.TrimSpace(hop))
	if m == nil {
		return "", "", 0, fmt.Errorf("a bastion must be [user@]host[:port], got %q", hop)
	}
	if m[3] != "" {
		port, _ = strconv.Atoi(m[3])
		if err := validPort(port); err != nil {
			return "", "", 0, fmt.Errorf("bastion %q: %w", hop, err)
		}
	}
	return m[1], strings.Trim(m[2], "[]"), port, nil
}
