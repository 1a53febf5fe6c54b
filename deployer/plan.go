package deployer

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Plan is every step a deploy takes, in order, with the exact remote
// commands. Building it does no I/O; `rollout plan` and `deploy --dry-run`
// print it.
type Plan struct {
	App      string     `json:"app"`
	Version  string     `json:"version"`
	Parallel int        `json:"parallel"`
	Before   []Step     `json:"before,omitempty"` // local hooks
	Hosts    []HostPlan `json:"hosts"`
	After    []Step     `json:"after,omitempty"` // local hooks
}

// HostPlan is one host's part of the plan.
type HostPlan struct {
	Host      string         `json:"host"`
	Preflight Step           `json:"preflight"`
	Before    []Step         `json:"before,omitempty"`
	Instances []InstancePlan `json:"instances"`
	After     []Step         `json:"after,omitempty"`
}

// InstancePlan is one instance's steps.
type InstancePlan struct {
	Port  int    `json:"port"`
	Unit  string `json:"unit"`
	Steps []Step `json:"steps"`
}

// Step is one step: what it does, and the remote command it runs, if any.
type Step struct {
	Name    string `json:"name"`
	Does    string `json:"does"`
	Command string `json:"command,omitempty"`
	Stdin   string `json:"stdin,omitempty"`
	Local   bool   `json:"local,omitempty"`
}

// BuildPlan returns the plan of deploying version with cfg. Instances are
// listed in port order; at run time, instances already out of service go
// first.
func BuildPlan(cfg *Config, version string) *Plan {
	c := newCommands(cfg)
	p := &Plan{App: cfg.App, Version: version, Parallel: max(cfg.Parallel, 1)}
	d := &Deployer{Config: cfg, Version: version}
	for _, h := range cfg.Hooks.Before {
		p.Before = append(p.Before, Step{Name: StepHook, Does: "run locally before the deploy", Command: h, Local: true})
	}
	for _, h := range cfg.Hooks.After {
		p.After = append(p.After, Step{Name: StepHook, Does: "run locally after the deploy (ROLLOUT_RESULT=ok|failed)", Command: h, Local: true})
	}
	hc := fmt.Sprintf("GET http://127.0.0.1:%%d%s through the SSH connection, want %d", cfg.Health.Path, cfg.Health.Status)
	addr := cfg.Nginx.ServerAddress
	for _, host := range cfg.Hosts {
		hp := HostPlan{Host: host, Preflight: Step{
			Name:    StepPreflight,
			Does:    "connect; check sudo, the units, the upstream file and that the nginx config passes its test (changes nothing; every host must pass before any host changes)",
			Command: c.preflight(),
		}}
		for _, h := range cfg.Hooks.HostBefore {
			hp.Before = append(hp.Before, Step{Name: StepHook, Does: "run before the first instance", Command: hookCommand(h, d.hookEnv(host, ""))})
		}
		for _, h := range cfg.Hooks.HostAfter {
			hp.After = append(hp.After, Step{Name: StepHook, Does: "run after the last instance", Command: hookCommand(h, d.hookEnv(host, ""))})
		}
		for _, port := range cfg.Ports() {
			ip := InstancePlan{Port: port, Unit: cfg.UnitName(port)}
			ip.Steps = []Step{
				{Name: StepCapacity, Command: c.inspect(), Does: fmt.Sprintf(
					"read unit states and %s; health-check each instance in nginx (%s); stop unless at least %d others stay serving",
					cfg.Nginx.UpstreamFile, strings.Replace(hc, "%d", "PORT", 1), max(cfg.MinServing(), 1))},
				{Name: StepDrain, Command: c.writeUpstream(), Stdin: fmt.Sprintf("%s with \"server %s:%d ... down;\"", cfg.Nginx.UpstreamFile, addr, port),
					Does: "mark the instance down in the upstream; test the nginx config (restore the previous file if it fails); reload nginx; wait for the old workers to stop taking requests"},
				{Name: StepWaitDrain, Command: c.connections(port), Does: fmt.Sprintf("repeat until 0 connections are established to :%d, at most %s", port, cfg.DrainTimeout)},
				{Name: StepRestart, Command: c.restart(port, cfg.LogFiles(port)), Does: "note the log files' sizes, then restart the instance (log files come from the unit file when the config lists none)"},
				{Name: StepActive, Command: c.unitState(port), Does: fmt.Sprintf("repeat until systemd runs a new process (new MainPID), at most %s; stop if it exits", cfg.Health.Timeout)},
				{Name: StepHealth, Does: fmt.Sprintf(hc+"; every %s until healthy, at most %s; stop if the process exits", port, cfg.Health.Interval, cfg.Health.Timeout)},
			}
			if cfg.Health.MinHealthy > 0 {
				ip.Steps = append(ip.Steps, Step{Name: StepStable, Command: c.unitState(port), Does: fmt.Sprintf("stay healthy on the same process, not restarted by systemd, for %s", cfg.Health.MinHealthy)})
			}
			ip.Steps = append(ip.Steps, Step{Name: StepUndrain, Command: c.writeUpstream(),
				Stdin: fmt.Sprintf("%s with \"server %s:%d ...;\" (down removed)", cfg.Nginx.UpstreamFile, addr, port),
				Does:  "put the instance back in the upstream; test the nginx config; reload nginx"})
			hp.Instances = append(hp.Instances, ip)
		}
		p.Hosts = append(p.Hosts, hp)
	}
	return p
}

// WriteJSON writes the plan as indented JSON.
func (p *Plan) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

// WriteText writes the plan for people: every step, with its command.
func (p *Plan) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("plan: deploy %s version %q to %d host(s), %d at a time; instances one at a time on each host\n", p.App, p.Version, len(p.Hosts), p.Parallel)
	ew.printf("nothing below has been run\n")
	step := func(indent string, n int, s Step) {
		ew.printf("%s%d. %s: %s\n", indent, n, s.Name, s.Does)
		if s.Command != "" {
			prefix := indent + "   $ "
			if s.Local {
				prefix = indent + "   (local) $ "
			}
			ew.printf("%s%s\n", prefix, strings.ReplaceAll(s.Command, "\n", "\n"+indent+"     "))
		}
		if s.Stdin != "" {
			ew.printf("%s   stdin: %s\n", indent, s.Stdin)
		}
	}
	for i, s := range p.Before {
		step("", i+1, s)
	}
	for _, h := range p.Hosts {
		ew.printf("\nhost %s\n", h.Host)
		n := 1
		step("  ", n, h.Preflight)
		for _, s := range h.Before {
			n++
			step("  ", n, s)
		}
		for _, inst := range h.Instances {
			ew.printf("  instance %d (%s)\n", inst.Port, inst.Unit)
			for j, s := range inst.Steps {
				step("    ", j+1, s)
			}
		}
		for j, s := range h.After {
			step("  ", n+j+1, s)
		}
	}
	if len(p.After) > 0 {
		ew.printf("\n")
	}
	for i, s := range p.After {
		step("", i+1, s)
	}
	return ew.err
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
