package deployer

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
)

// problem is one invalid value; deps are the keys it was derived from.
type problem struct {
	key  string
	err  error
	deps []string
}

// checks are the problems found so far, in the order found.
type checks []problem

// add notes err, if not nil, as a problem of key.
func (cs *checks) add(key string, err error, deps ...string) {
	if err != nil {
		*cs = append(*cs, problem{key, err, deps})
	}
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

// problems are the config's invalid values, section by section.
func (c *Config) problems() []problem {
	var cs checks
	cs.add("app", match(appRE, c.App, `lower-case letters, digits, "_", "." or "-", starting with a letter or digit`))
	if c.UnitTemplate != "" {
		cs.add("unit", validUnit(c.UnitTemplate))
	}
	c.checkHosts(&cs)
	c.SSH.check(&cs)
	c.Notify.problems(cs.add)
	c.checkWatch(&cs)
	c.checkSudo(&cs)
	c.checkPorts(&cs)
	c.checkStrategy(&cs)
	c.checkSurge(&cs)
	c.checkBatches(&cs)
	c.checkProbe(&cs)
	c.checkLB(&cs) // and the nginx: section, which the balancers may not use
	c.checkWorkers(&cs)
	c.Health.check(&cs)
	cs.add("drain_timeout", within(c.DrainTimeout, time.Second, time.Hour))
	for i, l := range c.Logs {
		cs.add(fmt.Sprintf("logs[%d]", i), validPath(l, true))
	}
	c.Hooks.check(&cs)
	cs = append(cs, c.setupProblems()...)
	c.releaseProblems(&cs)
	c.secretsProblems(&cs)
	cs.add("state_dir", validPath(c.StateDir, false))
	if c.LockStaleAfter < 3*time.Second {
		cs.add("lock_stale_after", fmt.Errorf("must be at least 3s (the lock is refreshed every third of it), got %s", c.LockStaleAfter))
	} else {
		cs.add("lock_stale_after", within(c.LockStaleAfter, 3*time.Second, time.Hour))
	}
	if c.Parallel < 1 {
		cs.add("parallel", fmt.Errorf("must be at least 1, got %d", c.Parallel))
	}
	return cs
}

// checkHosts checks that there are hosts, each a host name or an IP
// address, none listed twice.
func (c *Config) checkHosts(cs *checks) {
	if len(c.Hosts) == 0 {
		cs.add("hosts", errors.New("required"))
	}
	seen := map[string]int{}
	for i, h := range c.Hosts {
		key := fmt.Sprintf("hosts[%d]", i)
		if net.ParseIP(h) == nil && (len(h) > 253 || !hostnameRE.MatchString(h)) {
			cs.add(key, fmt.Errorf("must be a host name or an IP address, got %s", quoteValue(h)))
			continue
		}
		id := strings.ToLower(h)
		if ip := net.ParseIP(h); ip != nil {
			id = ip.String()
		}
		if j, dup := seen[id]; dup {
			cs.add(key, fmt.Errorf("%s is listed twice (also hosts[%d])", quoteValue(h), j))
		}
		seen[id] = i
	}
}

// check checks how the hosts are reached: user, port, bastions, timeout.
func (s SSHConfig) check(cs *checks) {
	if s.User != "" {
		cs.add("ssh.user", match(userRE, s.User, `a user name: lower-case letters, digits, "_", "." or "-"`))
	}
	cs.add("ssh.port", validPort(s.Port))
	if s.Jump != "" {
		for _, hop := range strings.Split(s.Jump, ",") {
			if _, _, _, err := sshexec.ParseJump(hop); err != nil {
				cs.add("ssh.jump", boundQuote(err, hop))
				break
			}
		}
	}
	cs.add("ssh.connect_timeout", within(s.ConnectTimeout, time.Second, 10*time.Minute))
	if s.KeepAlive < time.Second || s.KeepAlive > 10*time.Minute {
		cs.add("ssh.keepalive", fmt.Errorf("must be 1s..10m, got %s", s.KeepAlive))
	}
	if s.Reconnect < 0 || s.Reconnect > 10*time.Minute {
		cs.add("ssh.reconnect", fmt.Errorf("must be 0s (never) ..10m, got %s", s.Reconnect))
	}
}

// boundQuote is err, which quotes s whole, with s quoted by quoteValue
// instead (the same error when s is short).
func boundQuote(err error, s string) error {
	if len(s) <= maxQuoted {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), strconv.Quote(s), quoteValue(s)))
}

// checkPorts checks the instances' ports and min_serving against them.
func (c *Config) checkPorts(cs *checks) {
	ports := c.Ports()
	if len(ports) == 0 && !c.Instances.Auto {
		cs.add("ports", errors.New("required (or base_port and instances)"), "base_port", "instances")
	}
	seen := map[int]bool{}
	for i, port := range ports {
		key := fmt.Sprintf("ports[%d]", i)
		if err := validPort(port); err != nil {
			cs.add(key, err)
		} else if seen[port] {
			cs.add(key, fmt.Errorf("%d is listed twice", port))
		}
		seen[port] = true
	}
	if n := c.minServing; n != nil && len(ports) > 0 && (*n < 0 || *n > len(ports)-1) {
		cs.add("min_serving", fmt.Errorf("must be 0..%d (the other instances of a host), got %d", len(ports)-1, *n),
			"ports", "base_port", "instances")
	}
}

// check checks the upstream and the commands and files of Nginx.
func (n NginxConfig) check(cs *checks) {
	cs.add("nginx.upstream_file", validPath(n.UpstreamFile, false))
	if n.Upstream == "" {
		cs.add("nginx.upstream", errors.New("required"))
	} else {
		cs.add("nginx.upstream", match(upstreamRE, n.Upstream, `an upstream name: letters, digits, "_", "." or "-"`))
	}
	if n.ServerAddress != "localhost" && net.ParseIP(n.ServerAddress) == nil {
		cs.add("nginx.server_address", fmt.Errorf(`must be an IP address or "localhost", got %s`, quoteValue(n.ServerAddress)))
	}
	cs.add("nginx.test_command", validCommand(n.TestCommand))
	if n.ReloadCommand != "" { // empty: SIGHUP to the master in pid_file
		cs.add("nginx.reload_command", validCommand(n.ReloadCommand))
	}
	cs.add("nginx.pid_file", validPath(n.PIDFile, false))
}

// check checks the health check's path, status and timings.
func (h HealthConfig) check(cs *checks) {
	cs.add("health.path", match(healthPathRE, h.Path, `a path starting with "/" (letters, digits and . _ ~ / % ? & = + -)`))
	if h.Status < 100 || h.Status > 599 {
		cs.add("health.status", fmt.Errorf("must be an HTTP status 100..599, got %d", h.Status))
	}
	cs.add("health.timeout", within(h.Timeout, time.Second, time.Hour))
	if err := within(h.AttemptTimeout, 10*time.Millisecond, time.Minute); err != nil {
		cs.add("health.attempt_timeout", err)
	} else if h.AttemptTimeout > h.Timeout {
		cs.add("health.attempt_timeout", fmt.Errorf("must not be longer than health.timeout (%s), got %s",
			h.Timeout, h.AttemptTimeout), "health.timeout")
	}
	cs.add("health.interval", within(h.Interval, 10*time.Millisecond, time.Minute))
	cs.add("health.min_healthy", within(h.MinHealthy, 0, 10*time.Minute))
}

// check checks that every hook is a command.
func (h Hooks) check(cs *checks) {
	for _, hook := range []struct {
		key      string
		commands []string
	}{{"hooks.before", h.Before}, {"hooks.after", h.After}, {"hooks.host_before", h.HostBefore}, {"hooks.host_after", h.HostAfter}} {
		for i, cmd := range hook.commands {
			if strings.TrimSpace(cmd) == "" || strings.ContainsRune(cmd, 0) {
				cs.add(fmt.Sprintf("%s[%d]", hook.key, i), fmt.Errorf("must be a non-empty command without NUL bytes, got %s", quoteValue(cmd)))
			}
		}
	}
}

// match checks that s is given and matches re; what describes re.
func match(re *regexp.Regexp, s, what string) error {
	switch {
	case s == "":
		return errors.New("required")
	case !re.MatchString(s):
		return fmt.Errorf("must be %s, got %s", what, quoteValue(s))
	}
	return nil
}

// validUnit checks a unit template: a systemd template instance with one
// {port}.
func validUnit(s string) error {
	at := strings.Index(s, "@")
	switch {
	case strings.Count(s, "{port}") != 1:
		return fmt.Errorf(`must contain {port} exactly once, like "my-app@{port}", got %s`, quoteValue(s))
	case !unitCharsRE.MatchString(strings.Replace(s, "{port}", "", 1)):
		return fmt.Errorf("may only contain letters, digits and : _ . @ - besides {port}, got %s", quoteValue(s))
	case at < 1 || at > strings.Index(s, "{port}"):
		return fmt.Errorf(`must be a systemd template instance, a name then "@" then {port}, like "my-app@{port}", got %s`, quoteValue(s))
	}
	return nil
}

// validPort checks a TCP port.
func validPort(port int) error {
	if port < 1 || port > maxPort {
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
		return fmt.Errorf("must be an absolute path, got %s", quoteValue(s))
	case !pathRE.MatchString(bare) && portOK:
		return fmt.Errorf("may only contain letters, digits, . _ - / and {port}, got %s", quoteValue(s))
	case !pathRE.MatchString(bare):
		return fmt.Errorf("may only contain letters, digits and . _ - /, got %s", quoteValue(s))
	case slices.Contains(strings.Split(s, "/"), ".."):
		return fmt.Errorf(`must not contain ".." segments, got %s`, quoteValue(s))
	}
	return nil
}

// validCommand checks a remote command: one line, not blank.
func validCommand(s string) error {
	if strings.TrimSpace(s) == "" || strings.ContainsAny(s, "\n\r\x00") {
		return fmt.Errorf("must be one non-empty line, got %s", quoteValue(s))
	}
	return nil
}

// within checks that d is lo..hi: every duration has bounds, since "1ns"
// or "100h" is a typo, never what was meant.
func within(d, lo, hi time.Duration) error {
	if d < lo || d > hi {
		return fmt.Errorf("must be %s..%s, got %s", shortDuration(lo), shortDuration(hi), d)
	}
	return nil
}

// shortDuration is d as written in a config: "1m", not "1m0s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
