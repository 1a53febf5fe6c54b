package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/rollout-dev/rollout/deployer"
)

func renderCommand() *cli.Command {
	return &cli.Command{
		Name:  "render",
		Usage: "print the files `rollout setup` writes (unit, Nginx upstream and site, env file), without connecting",
		Description: `With instances: auto the upstream is shown for one instance; setup writes one
per CPU core of each host.

Examples:
   rollout render
   rollout render -c staging.yaml --output json`,
		Flags:        connFlags(),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			pr, apps, err := loadApps(c)
			if err != nil {
				return err
			}
			return eachApp(c, pr, apps, 1, true, func(cfg *deployer.Config, out appOutput) error {
				ports := cfg.Ports()
				if cfg.InstancesAuto() {
					ports = []int{cfg.BasePort()}
				}
				files := deployer.Render(cfg, ports)
				byHost := map[string][]int{}
				for _, h := range cfg.Hosts {
					byHost[h] = ports
				}
				files = append(files, deployer.BalancerFiles(cfg, byHost)...)
				if c.String("output") == "json" {
					writeJSONLine(out.stdout, out.doc(map[string]any{"files": files}))
					return nil
				}
				for _, f := range files {
					note := ""
					switch {
					case f.Doc:
						note = " (not written by setup: add these lines yourself)"
					case f.Keep:
						note = " (written only if missing; an existing one is kept)"
					}
					where := ""
					if f.Host != "" {
						where = f.Host + ":"
					}
					fmt.Fprintf(out.stdout, "==> %s%s  %s %s%s\n%s\n", where, f.Path, f.Owner, f.Mode, note, f.Content)
				}
				return nil
			})
		},
	}
}

func setupCommand() *cli.Command {
	return &cli.Command{
		Name:  "setup",
		Usage: "prepare bare hosts: service user, directories, hardened template unit, Nginx upstream and site",
		Description: `Needs systemd, Nginx and the runtime installed. Idempotent: only what differs
is changed, and a second run reports no changes. Takes the deploy lock and
records a history line on each host. --dry-run shows a diff per file and
changes nothing. See the files with rollout render.

Examples:
   rollout setup --dry-run
   rollout setup
   rollout setup --hosts 10.0.0.9           # a new server`,
		Flags: append(connFlags(),
			&cli.BoolFlag{Name: "dry-run", Usage: "show what would change, as a diff per file; change nothing"},
			breakStaleLockFlag()),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			pr, apps, err := loadApps(c)
			if err != nil {
				return err
			}
			return eachApp(c, pr, apps, 1, false, func(cfg *deployer.Config, out appOutput) error { return setup(c, cfg, out) })
		},
	}
}

// setup prepares one app's hosts and prints what it did.
func setup(c *cli.Context, cfg *deployer.Config, out appOutput) error {
	if cfg.Watch != nil {
		// The webhook's URL goes to each host's root-only file;
		// like a deploy's notification, it comes from the
		// environment, never from rollout.yaml.
		cfg.Watch.SetWebhook(os.Getenv(cfg.Notify.URLEnv))
	}
	dry := c.Bool("dry-run")
	connect, err := connector(cfg)
	if err != nil {
		return err
	}
	d := &deployer.Deployer{Config: cfg, Connect: connect, BreakStaleLock: c.Bool("break-stale-lock"),
		Events: func(e deployer.Event) { fmt.Fprintf(out.stderr, "rollout: %s: %s\n", e.Host, e.Message) }}
	rep := d.Setup(c.Context, dry)
	if c.String("output") == "json" {
		doc := map[string]any{"hosts": rep.Hosts, "dry_run": dry, "error": errString(errors.Join(rep.Errs...))}
		if cfg.LB != nil {
			doc["balancers"] = rep.Balancers
		}
		writeJSONLine(out.stdout, out.doc(doc))
	} else {
		for _, r := range append(slices.Clone(rep.Hosts), rep.Balancers...) {
			if r == nil {
				continue
			}
			verb := "changed"
			if dry {
				verb = "would change"
			}
			switch {
			case len(r.Changes) == 0:
				fmt.Fprintf(out.stdout, "%s: no changes\n", r.Host)
			default:
				fmt.Fprintf(out.stdout, "%s: %s:\n  - %s\n", r.Host, verb, strings.Join(r.Changes, "\n  - "))
			}
			if r.Diff != "" {
				fmt.Fprintln(out.stdout, r.Diff)
			}
		}
	}
	for _, err := range rep.Errs {
		fmt.Fprintln(out.stderr, "rollout:", err)
	}
	return rep.Err()
}
