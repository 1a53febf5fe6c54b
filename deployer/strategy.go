package deployer

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"
)

// StrategyConfig is the strategy: section: how many instances of a host
// are restarted together, the batches across the fleet, and the bake that
// watches real traffic between them.
type StrategyConfig struct {
	// MaxUnavailable is how many instances of a host are drained and
	// restarted together (default 1).
	MaxUnavailable Amount
	// MaxSurge is how many new instances of a host start beside the old
	// ones, on spare ports, before the old ones leave (surge.go); zero:
	// off, instances restart in place.
	MaxSurge Amount
	// Batches are how many of the fleet's instances are on the release at
	// the end of each batch, rising to 100%; none: one batch.
	Batches []Amount
	// Bake is how long rollout watches real traffic after each batch but
	// the last; 0: no bake.
	Bake time.Duration
	// MaxErrorRatio is the share of 5xx answers the new instances may give
	// during a bake.
	MaxErrorRatio float64
	// MinRequests is the fewest requests to the new instances a bake
	// judges on; with fewer, SmallSample says what happens.
	MinRequests int
	// SmallSample is "wait" (bake again, up to three bakes in all, then
	// fail) or "proceed" (go on, with a warning).
	SmallSample string
	// PauseAfterCanary stops a deploy after its first batch (and bake),
	// the fleet stable and mixed; rollout promote continues it.
	PauseAfterCanary bool
	// AccessLog is the Nginx access log with rollout's fields
	// (upstream="$upstream_addr" upstream_status="$upstream_status");
	// "": the one rollout setup's site writes (AccessLogFile).
	AccessLog string
}

// AccessLogFile is the access log a bake reads.
func (c *Config) AccessLogFile() string {
	if c.Strategy.AccessLog != "" {
		return c.Strategy.AccessLog
	}
	return defaultAccessLog(c.App)
}

// The strategy.small_sample choices.
const (
	SmallSampleWait    = "wait"
	SmallSampleProceed = "proceed"
)

// defaultStrategy is the strategy: section's defaults.
func defaultStrategy() StrategyConfig {
	return StrategyConfig{MaxUnavailable: Amount{N: 1}, MaxErrorRatio: 0.01, MinRequests: 50, SmallSample: SmallSampleWait}
}

// defaultAccessLog is strategy.access_log when the file does not give it:
// the log rollout setup's site writes.
func defaultAccessLog(app string) string { return "/var/log/nginx/" + app + "-access.log" }

// maxBake bounds strategy.bake.
const maxBake = 24 * time.Hour

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
	return one(name, func(p *parser, key string) { p.readAmount(key, dst) })
}

// amounts is a list of amounts.
func amounts(name string, dst *[]Amount) field {
	return one(name, func(p *parser, key string) {
		n, ok := p.list(key)
		if !ok {
			return
		}
		*dst = make([]Amount, n)
		for i := range n {
			p.readAmount(fmt.Sprintf("%s[%d]", key, i), &(*dst)[i])
		}
	})
}

// readAmount reads the amount at key, if given.
func (p *parser) readAmount(key string, dst *Amount) {
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
}

// ratio is a number 0..1 (a YAML int or float).
func ratio(name string, dst *float64) field {
	return one(name, func(p *parser, key string) {
		n, ok := p.node(key)
		if !ok {
			return
		}
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!float" && n.Tag != "!!int") || n.Decode(dst) != nil {
			p.fail(key, fmt.Errorf("must be a number like 0.01, got %s", describe(n)))
		}
	})
}

func strategySection(c *Config) field {
	st := &c.Strategy
	return section("strategy",
		amount("max_unavailable", &st.MaxUnavailable),
		amount("max_surge", &st.MaxSurge),
		amounts("batches", &st.Batches),
		duration("bake", &st.Bake),
		ratio("max_error_ratio", &st.MaxErrorRatio),
		integer("min_requests", &st.MinRequests),
		str("small_sample", &st.SmallSample),
		str("access_log", &st.AccessLog),
		boolean("pause_after_canary", &st.PauseAfterCanary),
	)
}

// checkBatches checks strategy.batches and the bake.
func (c *Config) checkBatches(cs *checks) {
	st := c.Strategy
	if len(st.Batches) > 0 {
		last := st.Batches[len(st.Batches)-1]
		if last.Percent != 100 {
			cs.add(fmt.Sprintf("strategy.batches[%d]", len(st.Batches)-1), fmt.Errorf("the last batch must be 100%% (the whole fleet), got %s", last))
		}
		for i := 1; i < len(st.Batches); i++ {
			a, b := st.Batches[i-1], st.Batches[i]
			if (a.Percent > 0) == (b.Percent > 0) && a.N+a.Percent >= b.N+b.Percent {
				cs.add(fmt.Sprintf("strategy.batches[%d]", i), fmt.Errorf("batches count the fleet's instances on the release so far, so each must be more than the one before: %s after %s", b, a))
			}
		}
		if len(st.Batches) > maxBatches {
			cs.add("strategy.batches", fmt.Errorf("at most %d batches, got %d", maxBatches, len(st.Batches)))
		}
	}
	if st.Bake != 0 {
		cs.add("strategy.bake", within(st.Bake, time.Second, maxBake))
	}
	if st.Bake > 0 && len(st.Batches) < 2 {
		cs.add("strategy.bake", errors.New("bakes after each batch but the last: it needs strategy.batches with at least two batches, e.g. [1, 100%]"))
	}
	if st.PauseAfterCanary && len(st.Batches) < 2 {
		cs.add("strategy.pause_after_canary", errors.New("pauses after the first batch: it needs strategy.batches with at least two batches, e.g. [1, 100%]"))
	}
	if st.PauseAfterCanary && c.Release == nil {
		cs.add("strategy.pause_after_canary", errors.New("needs the release: section: rollout promote and rollout rollback continue from the releases on the hosts"))
	}
	if st.MaxErrorRatio < 0 || st.MaxErrorRatio > 1 {
		cs.add("strategy.max_error_ratio", fmt.Errorf("must be 0..1 (0.01 is 1%%), got %g", st.MaxErrorRatio))
	}
	if st.MinRequests < 0 || st.MinRequests > 1_000_000_000 {
		cs.add("strategy.min_requests", fmt.Errorf("must be 0..1000000000, got %d", st.MinRequests))
	}
	if st.SmallSample != SmallSampleWait && st.SmallSample != SmallSampleProceed {
		cs.add("strategy.small_sample", fmt.Errorf("must be %s or %s, got %s", SmallSampleWait, SmallSampleProceed, quoteValue(st.SmallSample)))
	}
	if st.AccessLog != "" {
		cs.add("strategy.access_log", validPath(st.AccessLog, false))
	}
}

// maxBatches bounds strategy.batches.
const maxBatches = 100

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
	cs.add("probe.timeout", within(pc.Timeout, 10*time.Millisecond, time.Minute))
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
