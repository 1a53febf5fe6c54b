package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/rollout-dev/rollout/deployer"
)

// drainCommand takes instances or hosts out of every balancer for
// maintenance; undrainCommand puts them back.
func drainCommand() *cli.Command {
	return handCommand("drain", "take instances (HOST:PORT) or whole hosts (HOST) out of every balancer for maintenance; deploys keep them out until undrain",
		`Each instance named is taken out of every balancer that serves it (the
host's own Nginx, or every load balancer of lb:), as a deploy drains one:
under the host's deploy lock, with the capacity check, and waiting for its
requests in flight. It is recorded on the host as drained by hand, with who
and when: status and the dashboard show it, and deploys, restarts,
rollbacks and reverts restart it on the new release but keep it out of
service (and say so) until rollout undrain puts it back.

A drain that would leave a host fewer than min_serving instances serving
(never its last one) is refused. A whole host (HOST) can be drained only
behind load balancers of their own (lb:), when the other hosts keep at
least max(min_serving, 1) instances in service on them; a host served by
its own Nginx is taken out of whatever sends it traffic instead.

Examples:
   rollout drain 10.0.0.5:3001          # one instance
   rollout drain 10.0.0.5               # a whole host, behind lb:
   rollout drain 10.0.0.5:3001 10.0.0.6:3000`, (*deployer.Deployer).Drain)
}

func undrainCommand() *cli.Command {
	return handCommand("undrain", "put instances (HOST:PORT) or whole hosts (HOST) drained by hand back into every balancer",
		`Each instance named is health-checked and, if every one of its host's
passes, put back into every balancer and removed from the host's list of
instances drained by hand. One that fails its check is not put back and
its host changes nothing: start or restart it first (rollout restart
--hosts HOST --port PORT restarts it and keeps it out).

Examples:
   rollout undrain 10.0.0.5:3001
   rollout undrain 10.0.0.5             # every instance of the host`, (*deployer.Deployer).Undrain)
}

func handCommand(name, usage, description string, run func(*deployer.Deployer, context.Context) (*deployer.Report, error)) *cli.Command {
	return &cli.Command{
		Name:         name,
		Usage:        usage,
		ArgsUsage:    "HOST[:PORT]...",
		Description:  description,
		Flags:        append(overrideFlags(), breakStaleLockFlag()),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return usageError{fmt.Errorf("%s: name the instances (HOST:PORT) or hosts (HOST)", name)}
			}
			pr, apps, err := loadApps(c)
			if err != nil {
				return err
			}
			targets := map[*deployer.Config]map[string][]int{}
			for _, cfg := range apps {
				if targets[cfg], err = parseTargets(cfg, c.Args().Slice()); err != nil {
					return usageError{err}
				}
			}
			return eachApp(c, pr, apps, 1, false, func(cfg *deployer.Config, o appOutput) error {
				t := targets[cfg]
				return runNotified(c, cfg, c.String("version"), o, func(d *deployer.Deployer) (*deployer.Report, error) {
					d.Targets = t
					return run(d, c.Context)
				})
			})
		},
	}
}

// parseTargets reads HOST[:PORT] arguments against the app's hosts and
// ports: host -> its ports, none for the whole host.
func parseTargets(cfg *deployer.Config, args []string) (map[string][]int, error) {
	out := map[string][]int{}
	whole := map[string]bool{}
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			return nil, fmt.Errorf("%s: flags go before the instances (HOST[:PORT]...)", a)
		}
		if slices.Contains(cfg.Hosts, a) {
			whole[a] = true
			continue
		}
		i := strings.LastIndex(a, ":")
		port, err := strconv.Atoi(a[i+1:])
		if i < 0 || err != nil || !slices.Contains(cfg.Hosts, a[:i]) {
			return nil, fmt.Errorf("%s is not one of %s's hosts, or HOST:PORT of one (hosts: %s)", a, cfg.App, strings.Join(cfg.Hosts, ", "))
		}
		if !cfg.InstancesAuto() && !slices.Contains(cfg.AllPorts(), port) {
			return nil, fmt.Errorf("%s: %s has no instance on port %d (its ports: %v)", a, cfg.App, port, cfg.AllPorts())
		}
		if host := a[:i]; !slices.Contains(out[host], port) {
			out[host] = append(out[host], port)
		}
	}
	for h := range whole {
		out[h] = nil
	}
	for _, ports := range out {
		slices.Sort(ports)
	}
	return out, nil
}
