package main

import (
	"fmt"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/rollout-dev/rollout/deployer"
)

// restartCommand restarts what runs now, with every gate of a deploy.
func restartCommand() *cli.Command {
	return &cli.Command{
		Name:  "restart",
		Usage: "restart what runs now, one instance at a time, with every gate of a deploy (capacity, drain, health, undrain); nothing is shipped",
		Description: `After a change the app reads only when it starts (its env file, a
certificate), restart every instance without a deploy: each is drained,
restarted from the release its link names (nothing moves), checked and put
back, as a deploy does, under the deploy lock, with strategy.max_unavailable
and the availability probe. No hook runs. Like a deploy, it first
reconciles each host's instances with the config. It is recorded in each
host's history as "restart"; a failure stops it with the failed instance
out of the balancer, as a deploy.

Examples:
   rollout restart
   rollout restart --hosts 10.0.0.5            # one host
   rollout restart --hosts 10.0.0.5 --port 3001 # one instance`,
		Flags: append(overrideFlags(),
			&cli.IntSliceFlag{Name: "port", Aliases: []string{"p"}, Usage: "only these instances (each host's instances on these ports)"},
			breakStaleLockFlag()),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			pr, apps, err := loadApps(c)
			if err != nil {
				return err
			}
			only := c.IntSlice("port")
			for _, cfg := range apps {
				for _, p := range only {
					if !cfg.InstancesAuto() && !slices.Contains(cfg.AllPorts(), p) {
						return usageError{fmt.Errorf("--port %d: app %s has no instance on it (its ports: %v)", p, cfg.App, cfg.AllPorts())}
					}
				}
			}
			return eachApp(c, pr, apps, 1, false, func(cfg *deployer.Config, o appOutput) error {
				return runNotified(c, cfg, c.String("version"), o, func(d *deployer.Deployer) (*deployer.Report, error) {
					if len(only) > 0 {
						d.Only = only
					}
					return d.Restart(c.Context)
				})
			})
		},
	}
}
