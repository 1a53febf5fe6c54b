package deployer

import (
	"fmt"
	"net"
	"slices"
	"strconv"
)

// release is the release a deploy's plan ships, "" without release:.
func release(p *Plan, cfg *Config) string {
	if cfg.Release == nil {
		return ""
	}
	return p.Release
}

// planSurge replaces the host's instance steps with a surge's
// (strategy.max_surge): each instance's slot moves to its other port, a
// group at a time, the new instances started and checked before one
// change swaps them in.
func planSurge(hp *HostPlan, c sshRemote, cfg *Config, bp balancerPlan, release string) {
	k := cfg.Surge(len(hp.Instances))
	spare := cfg.idlePorts()
	hp.Preflight.Also = append(hp.Preflight.Also, c.cmdSurgeCheck(spare, cfg.Ports()))
	hp.Preflight.Does += fmt.Sprintf("; strategy.max_surge %s: the spare ports %s must be free (or run this app's own units, left by an interrupted surge), and %d more instances must fit in the host's MemAvailable at the running ones' resident memory",
		cfg.Strategy.MaxSurge, portList(spare), k)
	hp.Inspect.Does += fmt.Sprintf("; with strategy.max_surge %s the instances move %d at a time to their slot's other port (this plan shows the configured ports serving; when the host serves from the spare ports, the other way round); first, this app's units running on the other ports but not in %s (an interrupted surge's) are stopped and disabled (%s)",
		cfg.Strategy.MaxSurge, k, bp.what, c.cmdStop(spare[0]))
	for i := range hp.Instances {
		hp.Instances[i].Steps = nil
	}
	for g := range slices.Chunk(hp.Instances, k) {
		var old, news []int
		for _, ip := range g {
			old = append(old, ip.Port)
			news = append(news, cfg.otherPort(ip.Port))
		}
		for j := range g {
			ip := &g[j]
			port, s := ip.Port, cfg.otherPort(ip.Port)
			var steps []Step
			if release != "" {
				steps = append(steps, Step{Name: StepSwitch, Does: fmt.Sprintf("point %s/instances/%d at release %s, in the start's command just below", cfg.Release.Root, s, release)})
			}
			steps = append(steps,
				Step{Name: StepRestart, Command: c.cmdRestart(s, cfg.LogFiles(s), release), Does: fmt.Sprintf("start a new instance %s beside %d, at the same time as the rest of its group %s (the restart script starts a stopped unit, noting where its output starts)", cfg.UnitName(s), port, portList(news))},
				Step{Name: StepActive, Command: c.cmdUnitState(s), Does: fmt.Sprintf("repeat until systemd runs it, at most %s; stop if it exits", cfg.Health.Timeout)},
				Step{Name: StepHealth, Does: fmt.Sprintf("GET http://%s%s %s, want %d; every %s until healthy, at most %s", net.JoinHostPort(bp.addr, strconv.Itoa(s)), cfg.Health.Path, bp.healthFrom, cfg.Health.Status, cfg.Health.Interval, cfg.Health.Timeout)},
			)
			if cfg.Health.MinHealthy > 0 {
				steps = append(steps, Step{Name: StepStable, Command: c.cmdUnitState(s), Does: fmt.Sprintf("stay healthy on the same process for %s", cfg.Health.MinHealthy)})
			}
			fail := &steps[len(steps)-1]
			fail.Does += fmt.Sprintf("; if a new instance of the group does not come up, show what it and systemd said (the last %d lines), stop and disable every new instance of the group, and stop: the old ones serve on, untouched", appOutputLines)
			fail.Also = []string{c.appOutputCommand(cfg.UnitName(s), appOutputLines, "SINCE", nil), c.cmdStop(news...)}
			if j == 0 {
				steps = append(steps, Step{Name: StepScale, Command: c.cmdEnable(news...), Does: "once every new instance of the group is stable, enable them all in one command (they start at boot)"})
				d := bp.surge(news, old)
				d.Does = fmt.Sprintf("once every new instance of the group is stable: capacity (the serving instances but %s, and %s) must leave %s; then in one change (%s): %s", portList(old), portList(news), servingFloor(cfg.MinServing()), bp.change, d.Does)
				steps = append(steps, d, bp.wait(old))
			} else {
				steps = append(steps, Step{Name: StepDrain, Does: fmt.Sprintf("in %d's change, with its group", g[0].Port)})
			}
			if j == 0 {
				steps = append(steps, Step{Name: StepScale, Command: c.cmdStop(old...), Does: fmt.Sprintf("stop and disable the group's old instances in one command: %s serve in their place", portList(news))})
			}
			ip.Steps = steps
		}
	}
}
