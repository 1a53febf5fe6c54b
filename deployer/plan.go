package deployer

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// appOutputLines is how many lines of each log file and of the journal are
// shown for an instance that does not come up.
const appOutputLines = 20

// Plan is every step a deploy takes, in order, with the exact remote
// commands. Building it does no I/O; `rollout plan` and `deploy --dry-run`
// print it.
type Plan struct {
	App      string `json:"app"`
	Version  string `json:"version"`
	Parallel int    `json:"parallel"`
	// MaxUnavailable is how many instances of a host restart together.
	MaxUnavailable string `json:"max_unavailable"`
	// MaxSurge is how many new instances of a host start beside the old
	// ones (strategy.max_surge); "": off.
	MaxSurge string `json:"max_surge,omitempty"`
	// Probe says what the availability probe does; "": it is off.
	Probe string `json:"probe,omitempty"`
	// Batches says how the fleet goes in batches (strategy.batches), and
	// Bake what happens between them (strategy.bake).
	Batches string     `json:"batches,omitempty"`
	Bake    *Step      `json:"bake,omitempty"`
	Before  []Step     `json:"before,omitempty"` // local hooks
	Hosts   []HostPlan `json:"hosts"`
	After   []Step     `json:"after,omitempty"` // local hooks
	// Release is the release ID a deploy ships (release: set), and
	// OnFailure what happens when one of its instances does not come up.
	Release   string `json:"release,omitempty"`
	OnFailure string `json:"on_failure,omitempty"`
	// Preview is what each host says now (plan --live), when read.
	Preview []Preview `json:"preview,omitempty"`
}

// HostPlan is one host's part of the plan.
type HostPlan struct {
	Host      string         `json:"host"`
	Preflight Step           `json:"preflight"`
	Lock      Step           `json:"lock"`
	Ship      []Step         `json:"ship,omitempty"` // release: read the layout, upload and prepare
	Before    []Step         `json:"before,omitempty"`
	Scale     Step           `json:"scale"`   // reconcile the instances with the config
	Inspect   Step           `json:"inspect"` // once, to order the instances
	Instances []InstancePlan `json:"instances"`
	Workers   []WorkerPlan   `json:"workers,omitempty"` // after the instances
	After     []Step         `json:"after,omitempty"`
	History   Step           `json:"history"`          // on every way out, with the lock's release
	Record    *Step          `json:"record,omitempty"` // release: the release log, current, cleanup
}

// InstancePlan is one instance's steps.
type InstancePlan struct {
	Port  int    `json:"port"`
	Unit  string `json:"unit"`
	Steps []Step `json:"steps"`
}

// WorkerPlan is one worker unit's steps (workers:).
type WorkerPlan struct {
	Unit  string `json:"unit"`
	Steps []Step `json:"steps"`
}

// Step is one step: what it does, and the remote command it runs, if any.
type Step struct {
	Name    StepName `json:"name"`
	Does    string   `json:"does"`
	Command string   `json:"command,omitempty"`
	Stdin   string   `json:"stdin,omitempty"`
	Local   bool     `json:"local,omitempty"`
	// Also are the other commands the step may run, as Does says when.
	Also []string `json:"also,omitempty"`
}

// BuildPlan returns the plan of deploying version with cfg. Instances are
// listed in port order; at run time, instances already out of service go
// first.
func BuildPlan(cfg *Config, version string) *Plan {
	return BuildPlanFor(cfg, version, nil)
}

// BuildPlanFor is BuildPlan with what the hosts said (PreviewReleases);
// nil: they were not asked.
func BuildPlanFor(cfg *Config, version string, preview []Preview) *Plan {
	c := newSSHRemote(cfg, nil)
	p := &Plan{App: cfg.App, Version: version, Parallel: max(cfg.Parallel, 1), MaxUnavailable: cfg.Strategy.MaxUnavailable.String(), Preview: preview}
	if cfg.surging() {
		p.MaxSurge = cfg.Strategy.MaxSurge.String()
	}
	if len(preview) > 0 {
		p.Release = preview[0].Release
	}
	if st := cfg.Strategy; len(st.Batches) > 0 {
		var b []string
		for _, a := range st.Batches {
			b = append(b, a.String())
		}
		p.Batches = fmt.Sprintf("[%s] of the fleet's instances on the release at the end of each batch (a share of each host's, rounding going to the first hosts: a batch of 1 is one instance of the first host); hosts in a batch go %d at a time; every instance of a batch is back in service before the next",
			strings.Join(b, ", "), max(cfg.Parallel, 1))
		if st.Bake > 0 {
			sample := fmt.Sprintf("with fewer than %d requests to the new instances, bake again (at most 3 bakes), then stop", st.MinRequests)
			if st.SmallSample == SmallSampleProceed {
				sample = fmt.Sprintf("with fewer than %d requests to the new instances, go on with a warning", st.MinRequests)
			}
			p.Bake = &Step{Name: StepBake, Command: newSSHRemote(cfg, nil).cmdReadAccessLog(cfg.AccessLogFile(), logPos{inode: "INODE", offset: 0}, 0, cfg.Ports()),
				Does: fmt.Sprintf("after each batch but the last, for %s: read each host's %s from the bake's start every few seconds (following a rotation), count each instance's requests and 5xx by upstream=\"$upstream_addr\" upstream_status=\"$upstream_status\", and the restarts by systemd; stop the rollout (and revert, with release.on_failure: revert) as soon as the new instances answer more than %g 5xx and more than the old ones by as much, or one is restarted by systemd; %s (the command is shown for the first read; the preflight checks the log's last lines carry the fields)",
					st.Bake, cfg.AccessLogFile(), st.MaxErrorRatio, sample)}
		}
	}
	if pc := cfg.Probe; pc.Enabled {
		fail := "a failed request is a warning"
		if pc.FailOnError {
			fail = "a failed request fails the deploy (probe.fail_on_error)"
		}
		p.Probe = fmt.Sprintf("in the preflight, GET http://%s%s through each host's SSH connection must get an answer (3 tries); then from the first change to the last, one such request every %s on a new connection (timeout %s), counting failures (no answer or 5xx), latency and versions; %s",
			cfg.ProbeAddress(), pc.Path, pc.Interval, pc.Timeout, fail)
	}
	for _, h := range cfg.Hooks.Before {
		p.Before = append(p.Before, Step{Name: StepHook, Does: "run locally before the deploy", Command: h, Local: true})
	}
	for _, h := range cfg.Hooks.After {
		p.After = append(p.After, Step{Name: StepHook, Does: "run locally after the deploy (ROLLOUT_RESULT=ok|failed)", Command: h, Local: true})
	}
	ports := cfg.Ports()
	if cfg.InstancesAuto() {
		ports = []int{cfg.BasePort()}
	}
	for i, host := range cfg.Hosts {
		bp := newBalancerPlan(cfg, host)
		if i == 0 {
			p.Probe = strings.Replace(p.Probe, "each host's SSH connection", bp.probeVia, 1)
		}
		health := fmt.Sprintf("GET http://%s%s %s, want %d", net.JoinHostPort(bp.addr, "%d"), cfg.Health.Path, bp.healthFrom, cfg.Health.Status)
		hp := HostPlan{Host: host, Preflight: Step{
			Name:    StepPreflight,
			Does:    "connect; check sudo and the units; " + bp.preflight + " (changes nothing; every host must pass before any host changes, any host hook runs or any lock is taken)",
			Command: c.cmdPreflight(ports),
			Also:    bp.checks,
		}}
		if cfg.InstancesAuto() {
			hp.Preflight.Does = "connect; count the CPU cores (instances: auto) first; " + strings.TrimPrefix(hp.Preflight.Does, "connect; ")
			hp.Preflight.Also = append([]string{c.cmdCores()}, hp.Preflight.Also...)
		}
		hp.Lock = Step{Name: StepLock, Command: c.cmdAcquireLock(false, ""), Stdin: "who holds it: user, machine, CI run, version, pid, a token (JSON)",
			Does: fmt.Sprintf("take the deploy lock (atomically, or stop naming its holder; a lock whose holder is a process of this machine that is gone is taken over at once, and with --break-stale-lock one not refreshed for %s); refresh it every %s; release it on every way out",
				cfg.LockStaleAfter, cfg.LockStaleAfter/3),
			Also: []string{c.cmdRefreshLock("TOKEN"), c.cmdReleaseLock("TOKEN")}}
		env := hookEnv(cfg, version, cfg.Ports(), host, "")
		for _, h := range cfg.Hooks.HostBefore {
			hp.Before = append(hp.Before, Step{Name: StepHook, Does: "run before the first instance", Command: c.cmdHook(h, env)})
		}
		for _, h := range cfg.Hooks.HostAfter {
			hp.After = append(hp.After, Step{Name: StepHook, Does: "run after the last instance", Command: c.cmdHook(h, env)})
		}
		if cfg.Release != nil {
			planRelease(p, &hp, c, cfg, version, ports)
		}
		hp.History = Step{Name: StepHistory, Command: c.cmdAppendHistory(), Stdin: "one JSON line: who, when, version, outcome, restarted and left-out instances, error",
			Does: "on every way out, before releasing the lock: append this deploy to the host's history (rollout history)"}
		first := ports[0]
		hp.Scale = Step{Name: StepScale, Command: bp.read, Does: fmt.Sprintf(
			"compare the servers of %s with the instances %s; start, health-check and only then add each missing one; drain, stop, disable and remove each surplus one whose unit runs or is enabled (the commands are shown for %d)",
			bp.what, instancesText(cfg), first),
			Also: []string{c.cmdStart(first), c.cmdUnitState(first), c.cmdIsInstance(first), c.cmdStop(first), bp.undrain([]int{first}).Command}}
		hp.Inspect = Step{Name: StepCapacity, Command: c.cmdInspect(ports), Does: fmt.Sprintf(
			"read unit states and %s, and health-check every instance; instances serving nothing go first", bp.what), Also: []string{bp.read}}
		for i, port := range ports {
			ip := InstancePlan{Port: port, Unit: cfg.UnitName(port)}
			release := ""
			if cfg.Release != nil {
				release = p.Release
			}
			restart := Step{Name: StepRestart, Command: c.cmdRestart(port, cfg.LogFiles(port), release),
				Does: "note the host's clock, the log files' sizes and the unit's state, restart the instance, print its state"}
			if len(cfg.Logs) == 0 {
				restart.Does += "; the log files come from the unit files' StandardOutput=/StandardError=, read once per host first"
				restart.Also = []string{c.cmdUnitFiles(c.units(ports))}
			}
			var back []int
			if i > 0 {
				back = []int{ports[i-1]}
			}
			ip.Steps = []Step{
				{Name: StepCapacity, Does: fmt.Sprintf(
					"health-check every instance (%s); those drained in %s as last read do not count; stop unless the drain leaves %s", strings.Replace(health, "%d", "PORT", 1), bp.what, servingFloor(cfg.MinServing()))},
				bp.drain([]int{port}, back),
				bp.wait([]int{port}),
				restart,
				{Name: StepActive, Command: c.cmdUnitState(port), Does: fmt.Sprintf("from the state the restart printed, then repeat until systemd runs a new process (new MainPID), at most %s; stop if it exits", cfg.Health.Timeout)},
				{Name: StepHealth, Does: fmt.Sprintf(health+"; every %s until healthy, at most %s; stop if the process exits", port, cfg.Health.Interval, cfg.Health.Timeout)},
			}
			if cfg.Health.MinHealthy > 0 {
				ip.Steps = append(ip.Steps, Step{Name: StepStable, Command: c.cmdUnitState(port), Does: fmt.Sprintf("stay healthy on the same process, not restarted by systemd, for %s", cfg.Health.MinHealthy)})
			}
			// What the app said, when it does not come up.
			fail := &ip.Steps[len(ip.Steps)-1]
			fail.Does += fmt.Sprintf("; if the instance does not come up, show its state and what it and systemd said since the restart (the last %d lines), and leave it out of service", appOutputLines)
			var offsets []string
			for _, f := range cfg.LogFiles(port) {
				offsets = append(offsets, "SIZE", f)
			}
			fail.Does += " (SINCE and SIZE are the clock and the log files' sizes that the restart noted)"
			fail.Also = append(fail.Also, c.appOutputCommand(cfg.UnitName(port), appOutputLines, "SINCE", offsets))
			if i < len(ports)-1 {
				ip.Steps = append(ip.Steps, Step{Name: StepUndrain, Does: fmt.Sprintf("back into service with the drain of %d: %s", ports[i+1], bp.change)})
			} else {
				ip.Steps = append(ip.Steps, bp.undrain([]int{port}))
			}
			if cfg.Release != nil {
				sw := Step{Name: StepSwitch,
					Does: fmt.Sprintf("point %s/instances/%d at release %s (a new link renamed over the old one), in the restart's command just below (its ROOT, PORT and RELEASE arguments): the restart starts it on that release", cfg.Release.Root, port, p.Release)}
				ip.Steps = slices.Insert(ip.Steps, 3, sw)
				ip.Steps[0].Does = fmt.Sprintf("skip the instance if it already runs release %s (its link and its process's directory), is healthy and in service: a rerun resumes (--force restarts it); otherwise ", p.Release) + ip.Steps[0].Does
			}
			hp.Instances = append(hp.Instances, ip)
		}
		if cfg.surging() {
			planSurge(&hp, c, cfg, bp, release(p, cfg))
		} else {
			planGroups(&hp, cfg.Unavailable(len(cfg.Ports())), cfg.Strategy.MaxUnavailable, bp)
		}
		hp.Workers = planWorkers(c, cfg, p.Release)
		p.Hosts = append(p.Hosts, hp)
	}
	return p
}

// planWorkers are the steps of the host's workers, after its instances.
func planWorkers(c sshRemote, cfg *Config, release string) []WorkerPlan {
	var out []WorkerPlan
	stable := max(cfg.Health.MinHealthy, minWorkerStable)
	for _, w := range cfg.Workers {
		k := cfg.Unavailable(w.Count)
		units := w.Instances()
		if w.Auto { // known on the host: its first stands for them
			units, k = []string{w.Unit + "@1"}, cfg.Unavailable(1)
		}
		for _, u := range units {
			restart := Step{Name: StepRestart, Command: c.cmdRestartUnit(u, u, nil, release), Also: []string{c.cmdUnitFiles(cfg.WorkerUnits())},
				Does: fmt.Sprintf("after every instance of the host, %d of %s at a time: note the clock, its log files' sizes (from the unit files, read once) and its state, restart it (its old process's stop and the start: at most stop_timeout %s + health.timeout %s), print its state", k, w.Unit, w.StopTimeout, cfg.Health.Timeout)}
			steps := []Step{restart,
				{Name: StepActive, Command: c.cmdWorkerStates([]string{u}), Does: fmt.Sprintf("repeat until systemd runs a new process (new MainPID), at most %s; stop if it exits", cfg.Health.Timeout)},
				{Name: StepStable, Command: c.cmdWorkerStates([]string{u}), Does: fmt.Sprintf("keep the same process, not restarted by systemd, for %s (a worker has no health check); if it does not, show what it and systemd said since the restart (the last %d lines), revert and stop", stable, appOutputLines),
					Also: []string{c.appOutputCommand(u, appOutputLines, "SINCE", nil)}},
			}
			if release != "" {
				steps[0].Does = fmt.Sprintf("skip it if it already runs release %s (its link and its process's directory; --force restarts it); otherwise ", release) + steps[0].Does
				steps = slices.Insert(steps, 0, Step{Name: StepSwitch, Does: fmt.Sprintf("point %s/instances/%s at release %s, in the restart's command just below", cfg.Release.Root, u, release)})
			}
			if w.Auto {
				steps[0].Does += fmt.Sprintf("; count: auto: %s@1 … one per CPU core of the host, each as this one", w.Unit)
			}
			out = append(out, WorkerPlan{Unit: u, Steps: steps})
		}
	}
	return out
}

// planGroups says, with strategy.max_unavailable above 1, which instances
// of the host restart together: a group is drained in its first
// instance's write, restarted and checked at once, and put back with the
// next group's drain.
func planGroups(hp *HostPlan, k int, given Amount, bp balancerPlan) {
	if k < 2 {
		return
	}
	hp.Inspect.Does += fmt.Sprintf("; then instances go %d at a time (strategy.max_unavailable %s)", k, given)
	var prev []int
	for g := range slices.Chunk(hp.Instances, k) {
		first := g[0].Port
		var ports []int
		for _, ip := range g {
			ports = append(ports, ip.Port)
		}
		for j := range g {
			for i := range g[j].Steps {
				st := &g[j].Steps[i]
				switch {
				case st.Name == StepCapacity && j == 0:
					st.Does += fmt.Sprintf("; the group %s counts as one: the ones of it that serve now all stop serving", portList(ports))
				case st.Name == StepCapacity:
					st.Does = fmt.Sprintf("checked with its group (%s), at %d's capacity step", portList(ports), first)
				case st.Name == StepDrain && j == 0:
					*st = bp.drain(ports, prev)
				case st.Name == StepWaitDrain && j == 0:
					*st = bp.wait(ports)
				case st.Name == StepDrain, st.Name == StepWaitDrain && j > 0:
					st.Command, st.Stdin = "", ""
					st.Does = fmt.Sprintf("in %d's change (%s), with its group", first, bp.change)
				case st.Name == StepRestart:
					st.Does = "at the same time as the rest of its group: " + st.Does
				case st.Name == StepUndrain && st.Command == "":
					st.Does = "back into service with the next group's drain: " + bp.change
				}
			}
		}
		prev = ports
	}
}

// planRelease adds a deploy's release steps to a host's plan.
func planRelease(p *Plan, hp *HostPlan, c sshRemote, cfg *Config, version string, ports []int) {
	rel := cfg.Release
	if p.Release == "" {
		p.Release = ReleaseID(time.Now(), version)
	}
	p.OnFailure = rel.OnFailure
	prepare := "no release.prepare"
	if rel.Prepare != "" {
		prepare = fmt.Sprintf("run release.prepare %q in it as %s (at most %s; its output is shown if it fails)", rel.Prepare, cfg.setupDefaults().User, rel.PrepareTimeout)
	}
	e := ReleaseEntry{ID: p.Release, Version: version, SHA256: "SHA256", User: "USER", Outcome: ReleaseNew}
	hp.Ship = []Step{
		{Name: StepPreflight, Command: c.cmdReleaseState(ports, cfg.WorkerUnits()), Does: fmt.Sprintf(
			"read the releases in %s/releases, the release log, current, and for each instance its link, the release its process runs and its unit's WorkingDirectory; stop unless every unit runs from %s/instances/%%i", rel.Root, rel.Root)},
		{Name: StepUpload, Command: c.cmdUpload(e), Stdin: "the artifact, checked and packed locally as a gzipped tar (no absolute paths, no .. entries, no links leaving it)",
			Does: fmt.Sprintf("unless a release with the artifact's SHA-256 is already on the host (then its ID is used for every host and nothing is uploaded): stream it into %s/releases/%s.partial (every host at once), check its SHA-256, link the shared paths %v, %s, make it root:%s (directories 2750, files 0640 or 0750), rename it into place; on any failure remove it and stop before any instance restarts (exit 3)",
				rel.Root, p.Release, rel.Shared, prepare, cfg.setupDefaults().Group)},
	}
	if sc := cfg.Secrets; sc != nil {
		required := "no secrets.required"
		if len(sc.Required) > 0 {
			required = "secrets.required " + strings.Join(sc.Required, ", ")
		}
		hp.Ship = append(hp.Ship, Step{Name: StepUpload, Command: c.cmdWriteSecrets(p.Release),
			Stdin: "a tar of env (systemd's EnvironmentFile= format) and secrets.age (" + sc.File + " as it is), decrypted locally before anything connected",
			Does:  fmt.Sprintf("before anything connects, stop (exit 3) if the secrets lack a name of %s or of the release's .env.example; then, every host at once, check that the units read %s, and store the secrets in %s/releases/%s/.rollout (root's, 0700; files 0600), where systemd reads them for each instance of the release; name the variables added, removed and changed (never values) from the current release's", required, cfg.secretsEnvFile(), rel.Root, p.Release)})
	}
	if rel.Migrate != "" && hp.Host == cfg.migrateHost() {
		s := cfg.setupDefaults()
		hp.Ship = append(hp.Ship, Step{Name: StepMigrate, Command: c.cmdMigrate(p.Release),
			Does: fmt.Sprintf("once for the whole fleet, on this host, after every host has the release and before any instance restarts: run release.migrate %q in %s/releases/%s as %s, through systemd-run with the env of its instances (%s, then the release's secrets), at most %s, its output shown as it comes; skipped when the release's marker says an earlier run migrated it; a failure, a timeout or a lost connection stops the deploy with nothing restarted (exit 3)",
				rel.Migrate, rel.Root, p.Release, s.User, s.EnvFile, rel.MigrateTimeout)})
	}
	policy := "release.on_failure: halt: stop, keep the old instances serving, leave the switched ones on the new release (a rerun resumes)"
	if rel.OnFailure == OnFailureRevert {
		policy = "release.on_failure: revert: when an instance does not come up, switch it and every instance already switched, on every host in reverse order, back to the release it ran before, with the same drain, health and undrain gates; mark the release BAD"
	}
	hp.Record = &Step{Name: StepRelease, Command: c.cmdRecordRelease([]ReleaseEntry{{ID: p.Release, Version: version, Outcome: ReleaseOK}}, p.Release, []string{"OLD_ID..."}),
		Does: fmt.Sprintf("once the host's last instance is done, point %s/current at the release; after the whole deploy, log its outcome and remove the releases beyond the newest %d good ones (OLD_ID...), never one that current or an instance names. %s", rel.Root, rel.Keep, policy)}
}

// WriteJSON writes the plan as indented JSON.
func (p *Plan) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

// WriteText writes the plan for people, short: each host's steps, its
// first instance's steps in full and one line for each other instance; no
// remote command (WriteScripts prints them). Its length grows with the
// instances by a line each.
func (p *Plan) WriteText(w io.Writer) error { return p.write(w, false) }

// WriteScripts writes the whole plan: every step of every instance, with
// the exact remote command each runs.
func (p *Plan) WriteScripts(w io.Writer) error { return p.write(w, true) }

func (p *Plan) write(w io.Writer, scripts bool) error {
	ew := &errWriter{w: w}
	each := "one at a time"
	if p.MaxUnavailable != "" && p.MaxUnavailable != "1" {
		each = p.MaxUnavailable + " at a time (strategy.max_unavailable)"
	}
	if p.MaxSurge != "" {
		each = p.MaxSurge + " at a time, each new one started on a spare port beside the old one before the old one leaves (strategy.max_surge)"
	}
	ew.printf("plan: deploy %s version %q to %d host(s), %d at a time; instances %s on each host\n", p.App, p.Version, len(p.Hosts), p.Parallel, each)
	if scripts {
		ew.printf("nothing below has been run\n")
	} else {
		ew.printf("nothing below has been run; rollout plan --scripts shows every remote command and every instance's steps\n")
	}
	if p.Release != "" {
		ew.printf("release %s (or the release already on a host with the artifact's SHA-256); on failure: %s\n", p.Release, p.OnFailure)
	}
	if p.Probe != "" {
		ew.printf("probe: %s\n", p.Probe)
	}
	if p.Batches != "" {
		ew.printf("batches: %s\n", p.Batches)
	}
	step := func(indent string, n int, s Step) {
		ew.printf("%s%d. %s: %s\n", indent, n, s.Name, s.Does)
		if !scripts {
			return
		}
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
		for _, cmd := range s.Also {
			ew.printf("%s   also $ %s\n", indent, strings.ReplaceAll(cmd, "\n", "\n"+indent+"     "))
		}
	}
	for i, s := range p.Before {
		step("", i+1, s)
	}
	if p.Bake != nil {
		ew.printf("\nbetween batches\n")
		step("  ", 1, *p.Bake)
	}
	for i, h := range p.Hosts {
		ew.printf("\nhost %s\n", h.Host)
		if i < len(p.Preview) {
			p.Preview[i].write(ew)
		}
		n := 1
		step("  ", n, h.Preflight)
		n++
		step("  ", n, h.Lock)
		for _, s := range h.Ship {
			n++
			step("  ", n, s)
		}
		for _, s := range h.Before {
			n++
			step("  ", n, s)
		}
		n++
		step("  ", n, h.Scale)
		n++
		step("  ", n, h.Inspect)
		for k, inst := range h.Instances {
			if !scripts && k > 0 {
				names := make([]string, len(inst.Steps))
				for j, s := range inst.Steps {
					names[j] = string(s.Name)
				}
				ew.printf("  instance %d (%s): %s, as %d\n", inst.Port, inst.Unit, strings.Join(names, ", "), h.Instances[0].Port)
				continue
			}
			ew.printf("  instance %d (%s)\n", inst.Port, inst.Unit)
			for j, s := range inst.Steps {
				step("    ", j+1, s)
			}
		}
		for k, wp := range h.Workers {
			if !scripts && k > 0 {
				ew.printf("  worker %s: as %s\n", wp.Unit, h.Workers[0].Unit)
				continue
			}
			ew.printf("  worker %s\n", wp.Unit)
			for j, s := range wp.Steps {
				step("    ", j+1, s)
			}
		}
		for j, s := range h.After {
			step("  ", n+j+1, s)
		}
		n += len(h.After) + 1
		if h.Record != nil {
			step("  ", n, *h.Record)
			n++
		}
		step("  ", n, h.History)
	}
	if len(p.After) > 0 {
		ew.printf("\n")
	}
	for i, s := range p.After {
		step("", i+1, s)
	}
	return ew.err
}

// write says what the host said now, before its steps.
func (v Preview) write(ew *errWriter) {
	if v.Error != "" {
		ew.printf("  now: could not be read: %s\n", v.Error)
		return
	}
	if v.Paused != "" {
		ew.printf("  now: mid-rollout, paused after the canary on release %s (rollout promote continues it, rollout rollback takes it back; this deploy would replace it)\n", v.Paused)
	}
	upload := "already on the host: no upload"
	if v.Upload {
		upload = "not on the host: uploaded"
	}
	ew.printf("  now: release %s is %s; restarts %s", v.Release, upload, portList(v.Restart))
	if len(v.Skip) > 0 {
		ew.printf("; skips %s (already run it, healthy, in service)", portList(v.Skip))
	}
	if len(v.Remove) > 0 {
		ew.printf("; cleanup would then remove %s", strings.Join(v.Remove, ", "))
	}
	ew.printf("\n")
}

// portWords is ports as one word list for a script: "3000 3001".
func portWords(ports []int) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, " ")
}

// portList is ports for people: "3000, 3001", or "none".
func portList(ports []int) string {
	if len(ports) == 0 {
		return "none"
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ", ")
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

func instancesText(cfg *Config) string {
	if cfg.InstancesAuto() {
		return fmt.Sprintf("(auto: one per CPU core, counted with nproc when connected, ports from %d; the steps below are shown for the first)", cfg.BasePort())
	}
	return fmt.Sprint(cfg.Ports())
}
