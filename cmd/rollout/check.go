package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/rollout-dev/rollout/deployer"
)

// checkCommand runs what a deploy checks before it changes anything, and
// changes nothing.
func checkCommand() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "run every check a deploy runs before it changes anything (offline; --live: on the hosts too, read-only, no lock); changes nothing",
		Description: `Offline (the default) it reads the config and the flags, checks and packs the
artifact (release:) and opens the secrets (secrets:), with no connection.
With --live it then connects to every host (and balancer) and runs the
deploy's preflight there: sudo, the units, nginx -t and the upstream (or
HAProxy's backend), the release layout, the access log a bake reads, and
whether the deploy lock is free (read, never taken). Local hooks do not run.
It exits as the deploy would have before its first change: 0, 2 for a local
mistake, 3 for a host that is unreachable or fails a check.

Examples:
   rollout check
   rollout check --live --artifact build/
   rollout check --live --output json`,
		Flags: append(append(overrideFlags(), releaseFlags()...),
			&cli.BoolFlag{Name: "live", Usage: "also connect to every host and run the deploy's preflight there (read-only, the lock read, not taken)"}),
		OnUsageError: onUsageError,
		Action:       checkAction,
	}
}

func checkAction(c *cli.Context) error {
	pr, apps, err := loadApps(c)
	if err != nil {
		return err
	}
	if err := checkArtifactFlag(c, apps); err != nil {
		return err
	}
	version := c.String("version")
	return eachApp(c, pr, apps, 1, false, func(cfg *deployer.Config, o appOutput) error {
		art, sec, cleanup, err := releaseInputs(c, cfg)
		if err != nil {
			return err
		}
		defer cleanup()
		if !c.Bool("live") {
			if _, err := connector(cfg); err != nil {
				return err // the SSH keys and known_hosts this machine would use
			}
			fmt.Fprintf(o.stdout, "%s: config ok: %d host(s), %s\n", cfg.App, len(cfg.Hosts), instancesSummary(cfg))
			if art != nil {
				fmt.Fprintf(o.stdout, "%s: artifact ok: %d bytes, sha256 %s\n", cfg.App, art.Size, art.SHA256)
			}
			if sec != nil {
				fmt.Fprintf(o.stdout, "%s: secrets ok: %d variable(s), every required one set\n", cfg.App, len(sec.Env))
			}
			fmt.Fprintf(o.stdout, "%s: offline checks passed; rollout check --live runs the hosts' checks\n", cfg.App)
			return nil
		}
		d, out, err := newDeployer(c, cfg, version, o)
		if err != nil {
			return err
		}
		d.Artifact, d.Secrets = art, sec
		rep, err := d.Check(c.Context)
		out.report(rep, err)
		return err
	})
}

// instancesSummary says how many instances each host runs.
func instancesSummary(cfg *deployer.Config) string {
	if cfg.InstancesAuto() {
		return fmt.Sprintf("one instance per CPU core from port %d", cfg.BasePort())
	}
	return fmt.Sprintf("%d instance(s) per host", len(cfg.Ports()))
}
