package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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

// packArtifact checks and packs the app's artifact (--artifact, {app} in
// it being the app's name, or else release.artifact), before anything
// connects; the caller removes it. Without release: the flag is refused,
// and with it an artifact is required.
func packArtifact(c *cli.Context, cfg *deployer.Config) (*deployer.Artifact, func(), error) {
	path := strings.ReplaceAll(c.String("artifact"), "{app}", cfg.App)
	switch {
	case cfg.Release == nil && path != "":
		return nil, nil, usageError{fmt.Errorf("--artifact needs the release: section in %s (without it rollout ships no code)", c.String("config"))}
	case cfg.Release == nil:
		return nil, func() {}, nil
	case path == "" && cfg.Release.Artifact != "":
		path = cfg.Release.Artifact
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(c.String("config")), path)
		}
	case path == "":
		return nil, nil, usageError{fmt.Errorf("--artifact (or ROLLOUT_ARTIFACT, or release.artifact) is required: %s has a release: section, and rollout ships the release (a directory or a .tar.gz)", c.String("config"))}
	}
	a, err := artifact.Pack(path, "")
	if err != nil {
		return nil, nil, usageError{err}
	}
	return &deployer.Artifact{SHA256: a.SHA256, Size: a.Size, Open: a.Open, EnvExample: a.EnvExample}, func() { _ = a.Remove() }, nil
}

// checkArtifactFlag refuses one --artifact for several apps that ship
// code: each needs its own ({app} in the flag, or release.artifact).
func checkArtifactFlag(c *cli.Context, apps []*deployer.Config) error {
	path := c.String("artifact")
	if path == "" || strings.Contains(path, "{app}") {
		return nil
	}
	var shipping []string
	for _, a := range apps {
		if a.Release != nil {
			shipping = append(shipping, a.App)
		}
	}
	if len(shipping) > 1 {
		return usageError{fmt.Errorf("--artifact %s would ship the same code as apps %s: put {app} in it (dist/{app}.tar.gz), give each app release.artifact, or pick one with --app", path, strings.Join(shipping, ", "))}
	}
	return nil
}

// loadReleaseApps is loadApps for a command that needs the release:
// section in every app.
func loadReleaseApps(c *cli.Context) (*deployer.Project, []*deployer.Config, error) {
	pr, apps, err := loadApps(c)
	if err != nil {
		return nil, nil, err
	}
	for _, cfg := range apps {
		if cfg.Release != nil {
			continue
		}
		if pr.Multi {
			return nil, nil, usageError{fmt.Errorf("%s needs the release: section, and app %s in %s has none (pick apps with --app)", c.Command.Name, cfg.App, c.String("config"))}
		}
		return nil, nil, usageError{fmt.Errorf("%s needs the release: section in %s", c.Command.Name, c.String("config"))}
	}
	return pr, apps, nil
}

// previewHosts reads what each host says now (plan --live).
func previewHosts(c *cli.Context, cfg *deployer.Config, version, sum string) ([]deployer.Preview, error) {
	if cfg.Release == nil {
		return nil, usageError{fmt.Errorf("--live reads the hosts' releases: %s has no release: section", c.String("config"))}
	}
	digest := ""
	if cfg.Secrets != nil {
		sealed, err := os.ReadFile(cfg.Secrets.SecretsFile(c.String("config")))
		if err != nil {
			return nil, usageError{fmt.Errorf("secrets.file: %w", err)}
		}
		digest = deployer.SecretsDigest(sealed)
	}
	connect, err := connector(cfg)
	if err != nil {
		return nil, err
	}
	return deployer.PreviewReleases(c.Context, cfg, version, sum, digest, c.Bool("force"), connect), nil
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
			breakStaleLockFlag()),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			to := c.String("to")
			if to != "" {
				if err := deployer.ValidReleaseID(to); err != nil {
					return usageError{fmt.Errorf("--to: %w", err)}
				}
			}
			pr, apps, err := loadReleaseApps(c)
			if err != nil {
				return err
			}
			if to != "" && len(apps) > 1 {
				return usageError{errors.New("--to names one app's release: pick the app with --app")}
			}
			return eachApp(c, pr, apps, 1, false, func(cfg *deployer.Config, o appOutput) error {
				return runNotified(c, cfg, c.String("version"), o, func(d *deployer.Deployer) (*deployer.Report, error) {
					d.RollbackTo, d.Force = to, c.Bool("force")
					return d.Rollback(c.Context)
				})
			})
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
			breakStaleLockFlag()),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			pr, apps, err := loadReleaseApps(c)
			if err != nil {
				return err
			}
			return eachApp(c, pr, apps, 1, false, func(cfg *deployer.Config, o appOutput) error {
				if len(cfg.Strategy.Batches) == 0 {
					// deploy --pause without strategy.batches paused after [1].
					cfg.Strategy.Batches = pauseBatches
				}
				return runNotified(c, cfg, c.String("version"), o, func(d *deployer.Deployer) (*deployer.Report, error) {
					return d.Promote(c.Context)
				})
			})
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
			pr, apps, err := loadReleaseApps(c)
			if err != nil {
				return err
			}
			return eachApp(c, pr, apps, 1, true, func(cfg *deployer.Config, out appOutput) error {
				hosts := make([]deployer.HostReleases, len(cfg.Hosts))
				connect, err := connector(cfg)
				if err != nil {
					return err
				}
				errs := deployer.EachHost(c.Context, cfg, connect, func(ctx context.Context, i int, host string, conn deployer.Conn) error {
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
					writeJSONLine(out.stdout, out.doc(map[string]any{"hosts": hosts}))
				} else {
					writeReleases(out.stdout, hosts)
				}
				return hostErrors(errs)
			})
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
			runs := ports(r.Instances)
			switch { // and the workers' units
			case len(r.Workers) > 0 && len(r.Instances) > 0:
				runs += "," + strings.Join(r.Workers, ",")
			case len(r.Workers) > 0:
				runs = strings.Join(r.Workers, ",")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Host, r.ID, r.Version, outcome, cur, runs, by)
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
