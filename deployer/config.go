package deployer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is a rollout.yaml: the fleet, how to reach it, and how to roll it.
type Config struct {
	App          string
	UnitTemplate string // e.g. "my-app@{port}"
	Hosts        []string
	SSH          SSHConfig
	Sudo         string // auto, true or false
	Nginx        NginxConfig
	Health       HealthConfig
	DrainTimeout time.Duration
	Logs         []string // log file templates; {port} is the instance's port
	Hooks        Hooks
	Parallel     int

	ports      []int
	minServing *int
}

// SSHConfig says how to reach the hosts.
type SSHConfig struct {
	User           string
	Port           int
	Key            string
	KnownHosts     string
	AcceptNew      bool
	ConnectTimeout time.Duration
}

// NginxConfig names the upstream rollout drains instances from.
type NginxConfig struct {
	UpstreamFile  string
	Upstream      string
	ServerAddress string
	TestCommand   string
	ReloadCommand string
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
// each host (HostBefore, HostAfter).
type Hooks struct {
	Before, After, HostBefore, HostAfter []string
}

// Ports are the instances' ports, in order.
func (c *Config) Ports() []int { return c.ports }

// SetPorts replaces the instances' ports.
func (c *Config) SetPorts(ports []int) { c.ports = ports }

// MinServing is how many instances of a host must keep serving while one is
// restarted: by default all the others.
func (c *Config) MinServing() int {
	if c.minServing != nil {
		return *c.minServing
	}
	return len(c.ports) - 1
}

// SetMinServing overrides MinServing.
func (c *Config) SetMinServing(n int) { c.minServing = &n }

// UnitName is the systemd unit of the instance on port.
func (c *Config) UnitName(port int) string {
	return strings.Replace(c.UnitTemplate, "{port}", strconv.Itoa(port), 1)
}

// UseSudo says whether privileged commands go through `sudo -n`.
func (c *Config) UseSudo() bool {
	switch c.Sudo {
	case "true":
		return true
	case "false":
		return false
	}
	return c.SSH.User != "root"
}

// LogFiles are the configured log files of the instance on port.
func (c *Config) LogFiles(port int) []string {
	var files []string
	for _, l := range c.Logs {
		files = append(files, strings.ReplaceAll(l, "{port}", strconv.Itoa(port)))
	}
	return files
}

// LoadConfig reads and validates a rollout.yaml.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig parses and validates a config; errors name the file, line
// and key ("rollout.yaml:12: health.timeout: ...").
func ParseConfig(name string, data []byte) (*Config, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: the config is empty", name)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("%s:%d: only one YAML document is allowed", name, extra.Line)
	}
	p := &parser{file: name}
	cfg := p.config(doc.Content[0])
	if len(p.errs) > 0 {
		return nil, p.err()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}

// fieldError is one problem, located.
type fieldError struct {
	line int
	msg  string
}

type parser struct {
	file string
	errs []fieldError
}

func (p *parser) errorf(n *yaml.Node, key, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, fieldError{line: line, msg: key + ": " + fmt.Sprintf(format, args...)})
}

func (p *parser) err() error {
	sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].line < p.errs[j].line })
	var errs []error
	for _, e := range p.errs {
		if e.line > 0 {
			errs = append(errs, fmt.Errorf("%s:%d: %s", p.file, e.line, e.msg))
		} else {
			errs = append(errs, fmt.Errorf("%s: %s", p.file, e.msg))
		}
	}
	return errors.Join(errs...)
}

// mapping checks n is a mapping with only known keys and returns its values
// by key.
func (p *parser) mapping(n *yaml.Node, path string, known ...string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, orTop(path), "must be a mapping of keys")
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !contains(known, k.Value) {
			msg := fmt.Sprintf("unknown key %q (in %s)", k.Value, orTop(path))
			if s := closest(k.Value, known); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			p.errs = append(p.errs, fieldError{line: k.Line, msg: msg})
			continue
		}
		if _, dup := out[k.Value]; dup {
			p.errorf(k, join(path, k.Value), "given twice")
		}
		out[k.Value] = v
	}
	return out
}

func orTop(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (p *parser) str(n *yaml.Node, key string, dst *string) {
	if n == nil {
		return
	}
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errorf(n, key, "must be a string")
		return
	}
	*dst = n.Value
}

func (p *parser) integer(n *yaml.Node, key string, dst *int) {
	if n == nil {
		return
	}
	v, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		p.errorf(n, key, "must be a whole number, got %q", n.Value)
		return
	}
	*dst = v
}

func (p *parser) boolean(n *yaml.Node, key string, dst *bool) {
	if n == nil {
		return
	}
	var v bool
	if n.Kind != yaml.ScalarNode || n.Decode(&v) != nil || n.Tag != "!!bool" {
		p.errorf(n, key, "must be true or false, got %q", n.Value)
		return
	}
	*dst = v
}

func (p *parser) duration(n *yaml.Node, key string, dst *time.Duration) {
	if n == nil {
		return
	}
	d, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		p.errorf(n, key, "must be a duration like \"30s\", got %q", n.Value)
		return
	}
	if d < 0 {
		p.errorf(n, key, "must not be negative, got %q", n.Value)
		return
	}
	*dst = d
}

func (p *parser) strings(n *yaml.Node, key string, dst *[]string) {
	if n == nil {
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, key, "must be a list")
		return
	}
	*dst = nil
	for i, item := range n.Content {
		var s string
		p.str(item, fmt.Sprintf("%s[%d]", key, i), &s)
		*dst = append(*dst, s)
	}
}

// validators whose errors need the value's line.
func (p *parser) check(n *yaml.Node, key string, err error) {
	if n != nil && err != nil {
		p.errorf(n, key, "%v", err)
	}
}

// DefaultConfig is a config with every default and no hosts.
func DefaultConfig() *Config {
	return &Config{
		Sudo: "auto",
		SSH:  SSHConfig{Port: 22, KnownHosts: "~/.ssh/known_hosts", ConnectTimeout: 10 * time.Second},
		Nginx: NginxConfig{
			ServerAddress: "127.0.0.1",
			TestCommand:   "nginx -t",
			ReloadCommand: "systemctl reload nginx",
			PIDFile:       "/run/nginx.pid",
		},
		Health:       HealthConfig{Path: "/healthz", Status: 200, Timeout: 30 * time.Second, AttemptTimeout: 2 * time.Second, Interval: 50 * time.Millisecond, MinHealthy: 2 * time.Second},
		DrainTimeout: 30 * time.Second,
		Parallel:     1,
	}
}

func (p *parser) config(root *yaml.Node) *Config {
	c := DefaultConfig()
	top := p.mapping(root, "", "app", "unit", "hosts", "ssh", "sudo", "ports", "base_port", "instances",
		"min_serving", "nginx", "health", "drain_timeout", "logs", "hooks", "parallel")
	p.str(top["app"], "app", &c.App)
	p.str(top["unit"], "unit", &c.UnitTemplate)
	p.strings(top["hosts"], "hosts", &c.Hosts)
	for i, h := range c.Hosts {
		p.check(top["hosts"].Content[i], fmt.Sprintf("hosts[%d]", i), validHost(h))
	}
	if n := top["sudo"]; n != nil {
		c.Sudo = strings.ToLower(n.Value)
		if c.Sudo == "yes" || c.Sudo == "no" || !contains([]string{"auto", "true", "false"}, c.Sudo) {
			p.errorf(n, "sudo", "must be auto, true or false, got %q", n.Value)
		}
	}
	if n := top["ssh"]; n != nil {
		m := p.mapping(n, "ssh", "user", "port", "key", "known_hosts", "accept_new", "connect_timeout")
		p.str(m["user"], "ssh.user", &c.SSH.User)
		p.integer(m["port"], "ssh.port", &c.SSH.Port)
		p.str(m["key"], "ssh.key", &c.SSH.Key)
		p.str(m["known_hosts"], "ssh.known_hosts", &c.SSH.KnownHosts)
		p.boolean(m["accept_new"], "ssh.accept_new", &c.SSH.AcceptNew)
		p.duration(m["connect_timeout"], "ssh.connect_timeout", &c.SSH.ConnectTimeout)
	}
	p.ports(c, top)
	if n := top["min_serving"]; n != nil {
		var v int
		p.integer(n, "min_serving", &v)
		c.minServing = &v
		if v < 0 || (len(c.ports) > 0 && v > len(c.ports)-1) {
			p.errorf(n, "min_serving", "must be 0..%d (the other instances of a host), got %d", max(len(c.ports)-1, 0), v)
		}
	}
	if n := top["nginx"]; n != nil {
		m := p.mapping(n, "nginx", "upstream_file", "upstream", "server_address", "test_command", "reload_command", "pid_file")
		p.str(m["upstream_file"], "nginx.upstream_file", &c.Nginx.UpstreamFile)
		p.str(m["upstream"], "nginx.upstream", &c.Nginx.Upstream)
		p.str(m["server_address"], "nginx.server_address", &c.Nginx.ServerAddress)
		p.str(m["test_command"], "nginx.test_command", &c.Nginx.TestCommand)
		p.str(m["reload_command"], "nginx.reload_command", &c.Nginx.ReloadCommand)
		p.str(m["pid_file"], "nginx.pid_file", &c.Nginx.PIDFile)
		for key, err := range c.Nginx.problems() {
			p.check(m[strings.TrimPrefix(key, "nginx.")], key, err)
		}
	}
	if n := top["health"]; n != nil {
		m := p.mapping(n, "health", "path", "status", "timeout", "attempt_timeout", "interval", "min_healthy")
		p.str(m["path"], "health.path", &c.Health.Path)
		p.integer(m["status"], "health.status", &c.Health.Status)
		p.duration(m["timeout"], "health.timeout", &c.Health.Timeout)
		p.duration(m["attempt_timeout"], "health.attempt_timeout", &c.Health.AttemptTimeout)
		p.duration(m["interval"], "health.interval", &c.Health.Interval)
		p.duration(m["min_healthy"], "health.min_healthy", &c.Health.MinHealthy)
		for key, err := range c.Health.problems() {
			p.check(m[strings.TrimPrefix(key, "health.")], key, err)
		}
	}
	p.duration(top["drain_timeout"], "drain_timeout", &c.DrainTimeout)
	p.strings(top["logs"], "logs", &c.Logs)
	for i, l := range c.Logs {
		p.check(top["logs"].Content[i], fmt.Sprintf("logs[%d]", i), validPath(strings.ReplaceAll(l, "{port}", "0")))
	}
	if n := top["hooks"]; n != nil {
		m := p.mapping(n, "hooks", "before", "after", "host_before", "host_after")
		p.strings(m["before"], "hooks.before", &c.Hooks.Before)
		p.strings(m["after"], "hooks.after", &c.Hooks.After)
		p.strings(m["host_before"], "hooks.host_before", &c.Hooks.HostBefore)
		p.strings(m["host_after"], "hooks.host_after", &c.Hooks.HostAfter)
	}
	p.integer(top["parallel"], "parallel", &c.Parallel)
	if c.UnitTemplate == "" && c.App != "" {
		c.UnitTemplate = c.App + "@{port}"
	}
	// Single-value checks, located at their keys.
	p.check(top["app"], "app", validApp(c.App))
	p.check(top["unit"], "unit", validUnit(c.UnitTemplate))
	p.check(top["parallel"], "parallel", positive(c.Parallel))
	p.check(top["drain_timeout"], "drain_timeout", positiveDuration(c.DrainTimeout))
	if m := top["ssh"]; m != nil {
		p.check(m, "ssh.user", validUser(c.SSH.User))
		p.check(m, "ssh.port", validPort(c.SSH.Port))
	}
	return c
}

func (p *parser) ports(c *Config, top map[string]*yaml.Node) {
	list, base, count := top["ports"], top["base_port"], top["instances"]
	switch {
	case list != nil && (base != nil || count != nil):
		p.errorf(list, "ports", "give either ports or base_port and instances, not both")
	case list != nil:
		if list.Kind != yaml.SequenceNode {
			p.errorf(list, "ports", "must be a list of ports")
			return
		}
		seen := map[int]bool{}
		for i, item := range list.Content {
			var port int
			key := fmt.Sprintf("ports[%d]", i)
			p.integer(item, key, &port)
			if err := validPort(port); err != nil {
				p.check(item, key, err)
				continue
			}
			if seen[port] {
				p.errorf(item, key, "port %d is listed twice", port)
			}
			seen[port] = true
			c.ports = append(c.ports, port)
		}
	case base != nil || count != nil:
		if base == nil || count == nil {
			n := base
			if n == nil {
				n = count
			}
			p.errorf(n, "base_port", "base_port and instances go together")
			return
		}
		if count.Value == "auto" {
			p.errorf(count, "instances", "instances: auto is not supported yet, give a number")
			return
		}
		var b, n int
		p.integer(base, "base_port", &b)
		p.integer(count, "instances", &n)
		if n < 1 {
			p.errorf(count, "instances", "must be at least 1, got %d", n)
			return
		}
		if err := validPort(b); err != nil {
			p.check(base, "base_port", err)
			return
		}
		if b+n-1 > 65535 {
			p.errorf(count, "instances", "base_port %d + %d instances runs past port 65535", b, n)
			return
		}
		for i := 0; i < n; i++ {
			c.ports = append(c.ports, b+i)
		}
	}
}

// Validate checks the whole config, e.g. again after flags changed it.
// Errors name the key.
func (c *Config) Validate() error {
	var errs []error
	add := func(key string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
	}
	add("app", validApp(c.App))
	add("unit", validUnit(c.UnitTemplate))
	if len(c.Hosts) == 0 {
		add("hosts", errors.New("required: at least one host"))
	}
	seen := map[string]bool{}
	for i, h := range c.Hosts {
		add(fmt.Sprintf("hosts[%d]", i), validHost(h))
		if seen[h] {
			add(fmt.Sprintf("hosts[%d]", i), fmt.Errorf("host %q is listed twice", h))
		}
		seen[h] = true
	}
	add("ssh.user", validUser(c.SSH.User))
	add("ssh.port", validPort(c.SSH.Port))
	if len(c.ports) == 0 {
		add("ports", errors.New("required: a list of ports, or base_port and instances"))
	}
	for i, p := range c.ports {
		add(fmt.Sprintf("ports[%d]", i), validPort(p))
	}
	if c.minServing != nil && (*c.minServing < 0 || *c.minServing > len(c.ports)-1) {
		add("min_serving", fmt.Errorf("must be 0..%d (the other instances of a host), got %d", max(len(c.ports)-1, 0), *c.minServing))
	}
	if !contains([]string{"auto", "true", "false"}, c.Sudo) {
		add("sudo", fmt.Errorf("must be auto, true or false, got %q", c.Sudo))
	}
	for _, key := range sortedProblemKeys(c.Nginx.problems()) {
		add(key, c.Nginx.problems()[key])
	}
	for _, key := range sortedProblemKeys(c.Health.problems()) {
		add(key, c.Health.problems()[key])
	}
	add("drain_timeout", positiveDuration(c.DrainTimeout))
	add("parallel", positive(c.Parallel))
	for i, l := range c.Logs {
		add(fmt.Sprintf("logs[%d]", i), validPath(strings.ReplaceAll(l, "{port}", "0")))
	}
	for _, hooks := range [][]string{c.Hooks.Before, c.Hooks.After, c.Hooks.HostBefore, c.Hooks.HostAfter} {
		for _, h := range hooks {
			if strings.TrimSpace(h) == "" || strings.ContainsRune(h, 0) {
				add("hooks", fmt.Errorf("a hook is empty or holds a NUL byte"))
			}
		}
	}
	return errors.Join(errs...)
}

func (n NginxConfig) problems() map[string]error {
	out := map[string]error{}
	set := func(key string, err error) {
		if err != nil {
			out[key] = err
		}
	}
	if n.UpstreamFile == "" {
		set("nginx.upstream_file", errors.New("required: the file holding the upstream's server lines"))
	} else {
		set("nginx.upstream_file", validPath(n.UpstreamFile))
	}
	if !upstreamNameRE.MatchString(n.Upstream) {
		set("nginx.upstream", fmt.Errorf("required: the upstream's name (letters, digits, _ . -), got %q", n.Upstream))
	}
	if n.ServerAddress != "localhost" && net.ParseIP(n.ServerAddress) == nil {
		set("nginx.server_address", fmt.Errorf("must be an IP address or localhost, got %q", n.ServerAddress))
	}
	set("nginx.test_command", validCommand(n.TestCommand))
	set("nginx.reload_command", validCommand(n.ReloadCommand))
	set("nginx.pid_file", validPath(n.PIDFile))
	return out
}

func (h HealthConfig) problems() map[string]error {
	out := map[string]error{}
	if !healthPathRE.MatchString(h.Path) {
		out["health.path"] = fmt.Errorf("must be a path like /healthz, got %q", h.Path)
	}
	if h.Status < 100 || h.Status > 599 {
		out["health.status"] = fmt.Errorf("must be an HTTP status, got %d", h.Status)
	}
	if err := positiveDuration(h.Timeout); err != nil {
		out["health.timeout"] = err
	}
	if err := positiveDuration(h.AttemptTimeout); err != nil {
		out["health.attempt_timeout"] = err
	} else if h.AttemptTimeout > h.Timeout {
		out["health.attempt_timeout"] = fmt.Errorf("must not exceed health.timeout (%s), got %s", h.Timeout, h.AttemptTimeout)
	}
	if err := positiveDuration(h.Interval); err != nil {
		out["health.interval"] = err
	}
	return out
}

func sortedProblemKeys(m map[string]error) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var (
	appRE          = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)
	unitRE         = regexp.MustCompile(`^[A-Za-z0-9:_.-]+@[A-Za-z0-9:_.-]*\{port\}[A-Za-z0-9:_.-]*$`)
	hostnameRE     = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
	userRE         = regexp.MustCompile(`^[a-z_][a-z0-9_.-]*$`)
	pathRE         = regexp.MustCompile(`^/[A-Za-z0-9._/@-]+$`)
	upstreamNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	healthPathRE   = regexp.MustCompile(`^/[A-Za-z0-9._~/%?&=+-]*$`)
)

func validApp(s string) error {
	if !appRE.MatchString(s) {
		return fmt.Errorf("required: lower-case letters, digits, _ . - (got %q)", s)
	}
	return nil
}

func validUnit(s string) error {
	if !unitRE.MatchString(s) || strings.Count(s, "{port}") != 1 {
		return fmt.Errorf("must be a template instance with one {port}, like my-app@{port}, got %q", s)
	}
	return nil
}

func validHost(s string) error {
	if net.ParseIP(s) != nil || (len(s) <= 253 && hostnameRE.MatchString(s)) {
		return nil
	}
	return fmt.Errorf("must be a host name or IP address, got %q", s)
}

func validUser(s string) error {
	if s != "" && !userRE.MatchString(s) {
		return fmt.Errorf("must be a user name, got %q", s)
	}
	return nil
}

func validPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("must be a port 1..65535, got %d", p)
	}
	return nil
}

func validPath(s string) error {
	if !pathRE.MatchString(s) || strings.Contains("/"+s+"/", "/../") {
		return fmt.Errorf("must be an absolute path of letters, digits and . _ - / @, got %q", s)
	}
	return nil
}

func validCommand(s string) error {
	if strings.TrimSpace(s) == "" || strings.ContainsAny(s, "\n\r\x00") {
		return fmt.Errorf("must be one non-empty line, got %q", s)
	}
	return nil
}

func positive(n int) error {
	if n < 1 {
		return fmt.Errorf("must be at least 1, got %d", n)
	}
	return nil
}

func positiveDuration(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("must be more than 0, got %s", d)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
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
