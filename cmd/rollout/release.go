package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/rollout-dev/rollout/deployer"
	"github.com/rollout-dev/rollout/internal/artifact"
)

// releaseFlags are deploy's flags for the release: section.
func releaseFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "artifact", EnvVars: []string{"ROLLOUT_ARTIFACT"}, Usage: "the release to ship (release: set): a directory or a .tar.gz"},
		&cli.BoolFlag{Name: "force", EnvVars: []string{"ROLLOUT_FORCE"}, Usage: "restart instances that already run the release (a rerun skips them)"},
		&cli.BoolFlag{Name: "pause", EnvVars: []string{"ROLLOUT_PAUSE"}, Usage: "stop after the first batch (the canary; batches [1, 100%] unless strategy.batches says otherwise): rollout promote continues, rollout rollback takes it back"},
	}
}

// packArtifact checks and packs --artifact, before anything connects; the
// caller removes it. Without release: the flag is refused, and with it the
// flag is required.
func packArtifact(c *cli.Context, cfg *deployer.Config) (*deployer.Artifact, func(), error) {
	path := c.String("artifact")
	switch {
	case cfg.Release == nil && path != "":
		return nil, nil, usageError{fmt.Errorf("--artifact needs the release: section in %s (without it rollout ships no code)", c.String("config"))}
	case cfg.Release == nil:
		return nil, func() {}, nil
	case path == "":
		return nil, nil, usageError{fmt.Errorf("--artifact (or ROLLOUT_ARTIFACT) is required: %s has a release: section, and rollout ships the release (a directory or a .tar.gz)", c.String("config"))}
	}
	a, err := artifact.Pack(path, "")
	if err != nil {
		return nil, nil, usageError{err}
	}
	return &deployer.Artifact{SHA256: a.SHA256, Size: a.Size, Open: a.Open}, func() { _ = a.Remove() }, nil
}

// loadReleaseConfig is loadConfig for a command that needs the release:
// section.
func loadReleaseConfig(c *cli.Context) (*deployer.Config, error) {
	cfg, err := loadConfig(c)
	if err == nil && cfg.Release == nil {
		err = usageError{fmt.Errorf("%s needs the release: section in %s", c.Command.Name, c.String("config"))}
	}
	return cfg, err
}

// previewHosts reads what each host says now (plan --live).
func previewHosts(c *cli.Context, cfg *deployer.Config, version string) ([]deployer.Preview, error) {
	if cfg.Release == nil {
		return nil, usageError{fmt.Errorf("--live reads the hosts' releases: %s has no release: section", c.String("config"))}
	}
	sum := ""
	if c.String("artifact") != "" {
		art, cleanup, err := packArtifact(c, cfg)
		if err != nil {
			return nil, err
		}
		defer cleanup()
		sum = art.SHA256
	}
	return deployer.PreviewReleases(c.Context, cfg, version, sum, c.Bool("force"), connector(cfg)), nil
}

func rollbackCommand() *cli.Command {
	return &cli.Command{
		Name:  "rollback",
		Usage: "roll every host back onto an earlier release, one instance at a time, and mark the release it leaves BAD",
		Description: `Needs the release: section. Goes to the newest release older than the current
one that is on every host and was deployed successfully (never one marked BAD),
or to --to ID; with the same drain, health and undrain gates as a deploy.
Exits 3, changing nothing, when there is nothing to roll back to.

Examples:
   rollout rollback
   rollout rollback --to 20261127101500-v41
   rollout releases                     # what is there to go back to`,
		Flags: append(overrideFlags(),
			&cli.StringFlag{Name: "to", Usage: "the release ID to go back to (see rollout releases)"},
			&cli.BoolFlag{Name: "force", Usage: "restart instances that already run that release"},
			&cli.BoolFlag{Name: "break-stale-lock", EnvVars: []string{"ROLLOUT_BREAK_STALE_LOCK"}, Usage: "take over a deploy lock whose holder stopped refreshing it"}),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			cfg, err := loadReleaseConfig(c)
			if err != nil {
				return err
			}
			to := c.String("to")
			if to != "" {
				if err := deployer.ValidReleaseID(to); err != nil {
					return usageError{fmt.Errorf("--to: %w", err)}
				}
			}
			d, out, err := newDeployer(c, cfg, c.String("version"))
			if err != nil {
				return err
			}
			d.RollbackTo, d.Force = to, c.Bool("force")
			rep, err := d.Rollback(c.Context)
			out.report(rep, err)
			notifyDeploy(c.Context, cfg, rep, err, os.Getenv, c.App.ErrWriter)
			return err
		},
	}
}

func promoteCommand() *cli.Command {
	return &cli.Command{
		Name:  "promote",
		Usage: "continue a deploy that paused after its canary (deploy --pause), batch by batch",
		Description: `Needs the release: section and strategy.batches. Rolls the paused release
(a canary on every host's release log) through the batches after the first,
with the same gates, bakes and revert as the deploy; the canary's instances
are left as they are. Exits 3, changing nothing, when no rollout is paused.

Examples:
   rollout deploy --artifact build/ --version v42 --pause
   rollout status                       # the canary, beside the others
   rollout promote                      # or: rollout rollback`,
		Flags: append(overrideFlags(),
			&cli.BoolFlag{Name: "break-stale-lock", EnvVars: []string{"ROLLOUT_BREAK_STALE_LOCK"}, Usage: "take over a deploy lock whose holder stopped refreshing it"}),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			cfg, err := loadReleaseConfig(c)
			if err != nil {
				return err
			}
			if len(cfg.Strategy.Batches) == 0 {
				// deploy --pause without strategy.batches paused after [1].
				cfg.Strategy.Batches = pauseBatches
			}
			d, out, err := newDeployer(c, cfg, c.String("version"))
			if err != nil {
				return err
			}
			rep, err := d.Promote(c.Context)
			out.report(rep, err)
			notifyDeploy(c.Context, cfg, rep, err, os.Getenv, c.App.ErrWriter)
			return err
		},
	}
}

// pauseBatches are the batches of deploy --pause without strategy.batches:
// the canary, then the rest.
var pauseBatches = []deployer.Amount{{N: 1}, {Percent: 100}}

func releasesCommand() *cli.Command {
	return &cli.Command{
		Name:  "releases",
		Usage: "list every release on every host: its outcome, which instances run it, which is current",
		Description: `Needs the release: section. Changes nothing.

Examples:
   rollout releases
   rollout releases --output json`,
		Flags:        connFlags(),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			cfg, err := loadReleaseConfig(c)
			if err != nil {
				return err
			}
			hosts := make([]deployer.HostReleases, len(cfg.Hosts))
			errs := deployer.EachHost(c.Context, cfg, connector(cfg), func(ctx context.Context, i int, host string, conn deployer.Conn) error {
				var err error
				hosts[i], err = deployer.Releases(ctx, cfg, host, conn)
				return err
			})
			for i, err := range errs {
				if err != nil {
					hosts[i] = deployer.HostReleases{Host: cfg.Hosts[i], Error: err.Error()}
				}
			}
			if c.String("output") == "json" {
				writeJSONLine(c.App.Writer, map[string]any{"hosts": hosts})
			} else {
				writeReleases(c.App.Writer, hosts)
			}
			return hostErrors(errs)
		},
	}
}

func writeReleases(w io.Writer, hosts []deployer.HostReleases) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tRELEASE\tVERSION\tOUTCOME\tCURRENT\tINSTANCES\tDEPLOYED BY")
	for _, h := range hosts {
		if h.Error != "" {
			fmt.Fprintf(tw, "%s\t-\t\tunreachable\t\t\t%s\n", h.Host, h.Error)
			continue
		}
		for _, r := range h.Releases {
			cur, outcome := "", string(r.Outcome)
			if r.Current {
				cur = "current"
			}
			if !r.Present {
				outcome += " (removed)"
			}
			by := r.User
			if !r.Time.IsZero() {
				by = strings.TrimSpace(by + " " + r.Time.Format("2006-01-02 15:04"))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Host, r.ID, r.Version, outcome, cur, ports(r.Instances), by)
		}
	}
	tw.Flush()
	for _, h := range hosts {
		for _, m := range h.Mismatched {
			link := m.Link
			if link == "" {
				link = "no link"
			}
			running := m.Running
			if running == "" {
				running = "nothing"
			}
			fmt.Fprintf(w, "%s:%d: its link names %s but its process runs %s\n", h.Host, m.Port, link, running)
		}
	}
}
