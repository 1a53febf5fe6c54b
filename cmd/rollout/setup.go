package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

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
			&cli.BoolFlag{Name: "break-stale-lock", EnvVars: []string{"ROLLOUT_BREAK_STALE_LOCK"}, Usage: "take over a deploy lock whose holder stopped refreshing it"}),
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

// setup prepares one app's hosts.
func setup(c *cli.Context, cfg *deployer.Config, out appOutput) error {
	if cfg.Watch != nil {
		// The webhook's URL goes to each host's root-only file;
		// like a deploy's notification, it comes from the
		// environment, never from rollout.yaml.
		cfg.Watch.SetWebhook(os.Getenv(cfg.Notify.URLEnv))
	}
	dry := c.Bool("dry-run")
	now := time.Now() // a moved host's first release: one ID for the fleet
	holder := deployer.NewLockInfo("setup", "")
	results := make([]*deployer.SetupResult, len(cfg.Hosts))
	errs := deployer.EachHost(c.Context, cfg, connector(cfg), func(ctx context.Context, i int, host string, conn deployer.Conn) (err error) {
		t0 := time.Now()
		if !dry {
			lock, err := deployer.AcquireLock(ctx, cfg, host, conn, holder, c.Bool("break-stale-lock"))
			if err != nil {
				return err
			}
			if msg := lock.TakeOverMessage(); msg != "" {
				fmt.Fprintf(out.stderr, "rollout: %s: %s\n", host, msg)
			}
			defer func() {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
				defer cancel()
				e := deployer.HistoryEntry{Time: time.Now().UTC(), User: holder.User, From: holder.From, RunURL: holder.RunURL,
					Op: "setup", Outcome: deployer.HostOK, Duration: time.Since(t0)}
				if err != nil {
					e.Outcome, e.Error = deployer.HostFailed, err.Error()
				}
				err = errors.Join(err, deployer.AppendHistory(cctx, cfg, conn, e), lock.Release(cctx))
			}()
		}
		results[i], err = deployer.Setup(ctx, cfg, host, conn, dry, now)
		return err
	})
	lbResults, lbErrs := setupBalancers(c, cfg, results, errs, dry)
	errs = append(errs, lbErrs...)
	if c.String("output") == "json" {
		doc := map[string]any{"hosts": results, "dry_run": dry, "error": errString(errors.Join(errs...))}
		if cfg.LB != nil {
			doc["balancers"] = lbResults
		}
		writeJSONLine(out.stdout, out.doc(doc))
	} else {
		for _, r := range append(slices.Clone(results), lbResults...) {
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
	for _, err := range errs {
		if err != nil {
			fmt.Fprintln(out.stderr, "rollout:", err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("setup failed on %d host(s)", countErrs(errs))
	}
	return nil
}

// setupBalancers writes the load balancers' side (lb:, driver nginx): the
// upstream file with every app host's instances and the site, once every
// app host was set up (their ports known). HAProxy's config is the user's:
// render shows the server lines to add.
func setupBalancers(c *cli.Context, cfg *deployer.Config, apps []*deployer.SetupResult, appErrs []error, dry bool) ([]*deployer.SetupResult, []error) {
	lb := cfg.LB
	if lb == nil {
		return nil, nil
	}
	if lb.Driver != "nginx" {
		return []*deployer.SetupResult{{Host: strings.Join(lb.Hosts, ", "),
			Changes: []string{"none: rollout does not write haproxy.cfg; `rollout render` shows backend " + lb.Backend + "'s server lines to add"}}}, nil
	}
	if err := errors.Join(appErrs...); err != nil {
		return nil, []error{fmt.Errorf("load balancers %s not set up: an app host failed", strings.Join(lb.Hosts, ", "))}
	}
	ports := map[string][]int{}
	for i, r := range apps {
		ports[cfg.Hosts[i]] = r.Ports
	}
	results := make([]*deployer.SetupResult, len(lb.Hosts))
	errs := make([]error, len(lb.Hosts))
	connect := connector(cfg)
	var wg sync.WaitGroup
	for i, host := range lb.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := connect(c.Context, host)
			if err == nil {
				defer conn.Close()
				results[i], err = deployer.SetupBalancer(c.Context, cfg, host, conn, dry, ports)
			}
			if err != nil {
				errs[i] = fmt.Errorf("load balancer %s: %w", host, err)
			}
		}()
	}
	wg.Wait()
	return results, errs
}

func countErrs(errs []error) int {
	n := 0
	for _, e := range errs {
		if e != nil {
			n++
		}
	}
	return n
}
