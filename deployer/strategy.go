package deployer

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"
)

// StrategyConfig is the strategy: section: how many instances of a host
// are restarted together.
type StrategyConfig struct {
	// MaxUnavailable is how many instances of a host are drained and
	// restarted together (default 1).
	MaxUnavailable Amount
}

// Amount is a number of instances, or a percentage of a host's.
type Amount struct {
	N       int // when Percent is 0
	Percent int // 1..100
}

// String is the amount as written in the config.
func (a Amount) String() string {
	if a.Percent > 0 {
		return strconv.Itoa(a.Percent) + "%"
	}
	return strconv.Itoa(a.N)
}

// Of is the amount of n instances: a percentage rounds down, but is at
// least 1; never more than n (at least 1).
func (a Amount) Of(n int) int {
	k := a.N
	if a.Percent > 0 {
		k = n * a.Percent / 100
	}
	return max(min(k, n), 1)
}

var amountRE = regexp.MustCompile(`^([0-9]{1,3})%$`)

// ParseAmount reads "N" or "P%".
func ParseAmount(s string) (Amount, error) {
	if m := amountRE.FindStringSubmatch(s); m != nil {
		p, _ := strconv.Atoi(m[1])
		if p < 1 || p > 100 {
			return Amount{}, fmt.Errorf("a percentage must be 1%%..100%%, got %s", quoteValue(s))
		}
		return Amount{Percent: p}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxPort {
		return Amount{}, fmt.Errorf(`must be a number of instances (at least 1) or a percentage like "25%%", got %s`, quoteValue(s))
	}
	return Amount{N: n}, nil
}

// amount is a number of instances or a percentage.
func amount(name string, dst *Amount) field {
	return one(name, func(p *parser, key string) {
		n, ok := p.node(key)
		if !ok {
			return
		}
		if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
			p.fail(key, fmt.Errorf(`must be a number of instances or a percentage like "25%%", got %s`, describe(n)))
			return
		}
		a, err := ParseAmount(n.Value)
		if err != nil {
			p.fail(key, err)
			return
		}
		*dst = a
	})
}

func strategySection(c *Config) field {
	return section("strategy",
		amount("max_unavailable", &c.Strategy.MaxUnavailable),
	)
}

// Unavailable is how many instances of a host of n are restarted together.
func (c *Config) Unavailable(n int) int { return c.Strategy.MaxUnavailable.Of(n) }

// checkStrategy checks strategy.max_unavailable against min_serving for
// the host's instances (once known: with instances: auto, per host).
func (c *Config) checkStrategy(cs *checks) {
	n := len(c.Ports())
	if n == 0 || c.minServing == nil || *c.minServing > n-1 {
		return
	}
	if k := c.Unavailable(n); n-k < *c.minServing {
		cs.add("strategy.max_unavailable", fmt.Errorf("%s of %d instances would leave %d serving while they restart, below min_serving %d", c.Strategy.MaxUnavailable, n, n-k, *c.minServing),
			"min_serving", "ports", "base_port", "instances")
	}
}

// ProbeConfig is the probe: section: during a deploy, rollout sends
// requests through each host's Nginx and counts what answers.
type ProbeConfig struct {
	Enabled bool
	// Address is the host:port the probe reaches from each host (over its
	// SSH connection); default 127.0.0.1 on setup.listen.
	Address  string
	Path     string
	HostName string // the Host header; "": the address
	Interval time.Duration
	Timeout  time.Duration
	// VersionHeader is the response header naming the version that
	// answered; "": versions are not counted.
	VersionHeader string
	// FailOnError makes a failed probe request fail the deploy; by default
	// it is a warning.
	FailOnError bool
}

func defaultProbe() ProbeConfig {
	return ProbeConfig{Enabled: true, Path: "/", Interval: 100 * time.Millisecond, Timeout: 2 * time.Second}
}

// probeSection is probe: false, probe: true or a mapping.
func probeSection(c *Config) field {
	pc := &c.Probe
	fields := []field{
		str("address", &pc.Address),
		str("path", &pc.Path),
		str("host", &pc.HostName),
		duration("interval", &pc.Interval),
		duration("timeout", &pc.Timeout),
		str("version_header", &pc.VersionHeader),
		boolean("fail_on_error", &pc.FailOnError),
	}
	return one("probe", func(p *parser, key string) {
		n, ok := p.node(key)
		if !ok {
			return
		}
		if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
			p.readBool(key, &pc.Enabled)
			return
		}
		p.fields(key, fields)
	})
}

var headerRE = regexp.MustCompile(`^[A-Za-z0-9-]+$`)

// ProbeAddress is the address the probe reaches on each host.
func (c *Config) ProbeAddress() string {
	if c.Probe.Address != "" {
		return c.Probe.Address
	}
	listen := c.Setup.Listen
	if listen == 0 {
		listen = 80
	}
	return "127.0.0.1:" + strconv.Itoa(listen)
}

// checkProbe checks the probe: section.
func (c *Config) checkProbe(cs *checks) {
	pc := c.Probe
	if !pc.Enabled {
		return
	}
	if pc.Address != "" {
		cs.add("probe.address", validHostPort(pc.Address))
	}
	cs.add("probe.path", match(healthPathRE, pc.Path, "a path starting with /"))
	if pc.HostName != "" {
		cs.add("probe.host", match(hostnameRE, pc.HostName, "a host name"))
	}
	if pc.Interval < 10*time.Millisecond || pc.Interval > time.Minute {
		cs.add("probe.interval", fmt.Errorf("must be 10ms..1m, got %s", pc.Interval))
	}
	if pc.Timeout <= 0 || pc.Timeout > time.Minute {
		cs.add("probe.timeout", fmt.Errorf("must be more than 0 and at most 1m, got %s", pc.Timeout))
	}
	if pc.VersionHeader != "" {
		cs.add("probe.version_header", match(headerRE, pc.VersionHeader, "an HTTP header name"))
	}
}

// validHostPort checks an address "HOST:PORT": an IP address or a host
// name, and a port.
func validHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return fmt.Errorf(`must be HOST:PORT, e.g. "127.0.0.1:80", got %s`, quoteValue(s))
	}
	if net.ParseIP(host) == nil && match(hostnameRE, host, "") != nil {
		return fmt.Errorf("the host must be an IP address or a host name, got %s", quoteValue(s))
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("the port must be a number, got %s", quoteValue(s))
	}
	return validPort(n)
}
