package deployer

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Worker is a systemd template unit of the app's with no port and no
// balancer (a queue consumer, a scheduler): workers: [{unit, count,
// stop_timeout}]. Its instances, UNIT@1 … UNIT@N, run the release the web
// instances run: a deploy switches and restarts them after the host's web
// instances, strategy.max_unavailable at a time.
type Worker struct {
	// Unit is the template's name before the @: my-app-worker for
	// my-app-worker@.service.
	Unit string
	// Count is how many instances run on each host; with Auto, one per
	// CPU core of each host (Count is then set per host).
	Count int
	Auto  bool
	// StopTimeout bounds the restart of an instance: its old process's
	// graceful stop (the unit's TimeoutStopSec should be at most this),
	// and the start after it.
	StopTimeout time.Duration
	// ExecStart is the command setup's unit file runs, in the release (or
	// setup.app_dir); "": setup writes no unit for it (the host has its
	// own) and enables none of its instances.
	ExecStart string
}

// Instances are the worker's units on a host: UNIT@1 … UNIT@Count.
func (w Worker) Instances() []string {
	out := make([]string, w.Count)
	for i := range out {
		out[i] = w.Unit + "@" + strconv.Itoa(i+1)
	}
	return out
}

// maxWorkers bounds a worker's instances per host.
const maxWorkers = 256

// defaultStopTimeout is workers[].stop_timeout when not given.
const defaultStopTimeout = 30 * time.Second

var workerUnitRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9:_.-]{0,63}$`)

// WorkerUnits are every worker instance of the host's config, in order.
func (c *Config) WorkerUnits() []string {
	var out []string
	for _, w := range c.Workers {
		out = append(out, w.Instances()...)
	}
	return out
}

// worker is the worker whose instance unit is, and whether there is one.
func (c *Config) worker(unit string) (Worker, bool) {
	for _, w := range c.Workers {
		for _, u := range w.Instances() {
			if u == unit {
				return w, true
			}
		}
	}
	return Worker{}, false
}

// workersAuto reports whether some worker runs one instance per core.
func (c *Config) workersAuto() bool {
	for _, w := range c.Workers {
		if w.Auto {
			return true
		}
	}
	return false
}

// workersForCores is c with every workers' count: auto set to cores
// (c itself when none is auto).
func (c *Config) workersForCores(cores int) *Config {
	if !c.workersAuto() {
		return c
	}
	hc := *c
	hc.Workers = make([]Worker, len(c.Workers))
	for i, w := range c.Workers {
		if w.Auto {
			w.Count = min(cores, maxWorkers)
		}
		hc.Workers[i] = w
	}
	return &hc
}

// workersField reads workers:, a list of {unit, count, stop_timeout}.
func workersField(dst *[]Worker) field {
	return one("workers", func(p *parser, key string) {
		n, ok := p.list(key)
		if !ok {
			return
		}
		*dst = make([]Worker, n)
		for i := range n {
			w := &(*dst)[i]
			w.StopTimeout = defaultStopTimeout
			p.fields(fmt.Sprintf("%s[%d]", key, i), []field{
				str("unit", &w.Unit),
				one("count", func(p *parser, key string) { p.readWorkerCount(key, w) }),
				duration("stop_timeout", &w.StopTimeout),
				str("exec_start", &w.ExecStart),
			})
		}
	})
}

// readWorkerCount reads a number of instances or auto.
func (p *parser) readWorkerCount(key string, w *Worker) {
	n, ok := p.node(key)
	if !ok {
		return
	}
	if n.Kind == yaml.ScalarNode && n.Value == "auto" {
		w.Auto = true
		return
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&w.Count) != nil {
		p.fail(key, fmt.Errorf("must be a number of instances or auto (one per CPU core), got %s", describe(n)))
	}
}

// checkWorkers checks workers:.
func (c *Config) checkWorkers(cs *checks) {
	seen := map[string]bool{}
	for i, w := range c.Workers {
		key := fmt.Sprintf("workers[%d]", i)
		switch {
		case w.Unit == "":
			cs.add(key+".unit", fmt.Errorf("required: the template's name before the @ (my-app-worker for my-app-worker@.service)"))
		case !workerUnitRE.MatchString(w.Unit):
			cs.add(key+".unit", fmt.Errorf("must be a template's name before the @: 1..64 letters, digits, : _ . -, got %s", quoteValue(w.Unit)))
		case seen[w.Unit]:
			cs.add(key+".unit", fmt.Errorf("%s is given twice", quoteValue(w.Unit)))
		case strings.HasPrefix(c.unitTemplate(), w.Unit+"@"):
			cs.add(key+".unit", fmt.Errorf("%s is the web instances' template (unit: %s)", quoteValue(w.Unit), c.unitTemplate()))
		}
		seen[w.Unit] = true
		if !w.Auto && w.Count == 0 {
			cs.add(key+".count", fmt.Errorf("required: a number of instances on each host, or auto (one per CPU core)"))
		} else if !w.Auto && (w.Count < 1 || w.Count > maxWorkers) {
			cs.add(key+".count", fmt.Errorf("must be 1..%d or auto, got %d", maxWorkers, w.Count))
		}
		cs.add(key+".stop_timeout", within(w.StopTimeout, time.Second, time.Hour))
		if w.ExecStart != "" {
			cs.add(key+".exec_start", match(execRE, w.ExecStart, "an absolute program path and plain arguments (letters, digits, . _ / = : , + @ - and %i)"))
		}
	}
}

// setupWorkers are the workers setup writes a unit for.
func (c *Config) setupWorkers() []Worker {
	var out []Worker
	for _, w := range c.Workers {
		if w.ExecStart != "" {
			out = append(out, w)
		}
	}
	return out
}

// workerUnitFile is a worker's template unit file.
func (w Worker) unitFile() string { return "/etc/systemd/system/" + w.Unit + "@.service" }
