package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rollout-dev/rollout/deployer"
)

// errNotServing: status found an instance that is down or unhealthy.
var errNotServing = errors.New("not every instance is serving")

// connector dials cfg's hosts (and balancers), once what that reads on
// this machine (keys, known_hosts) is checked: a local mistake is a usage
// error before anything connects.
func connector(cfg *deployer.Config) (func(context.Context, string) (deployer.Conn, error), error) {
	d, err := newSSHDialer(cfg)
	if err != nil {
		return nil, usageError{err}
	}
	hosts := slices.Clone(cfg.Hosts)
	if cfg.LB != nil {
		hosts = append(hosts, cfg.LB.Hosts...)
	}
	if err := d.checkLocal(hosts); err != nil {
		return nil, err
	}
	return d.Dial, nil
}

// hostErrors joins the per-host errors, nil when there are none.
func hostErrors(errs []error) error { return errors.Join(errs...) }

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show every instance: systemd state, PID, uptime, memory, restarts, in Nginx or not, health",
		Description: `Exits 1 when any instance is down, out of Nginx or unhealthy, or a host cannot
be read, so a cron job or systemd timer can alert on it. Hosts are queried in
parallel; nothing is changed.

Examples:
   rollout status
   rollout status --output json          # for a dashboard
   rollout status --hosts 10.0.0.5`,
		Flags:        connFlags(),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			pr, apps, err := loadApps(c)
			if err != nil {
				return err
			}
			return eachApp(c, pr, apps, 1, true, func(cfg *deployer.Config, out appOutput) error { return status(c, cfg, out) })
		},
	}
}

// status prints one app's status and fails when it has a problem.
func status(c *cli.Context, cfg *deployer.Config, out appOutput) error {
	hosts := make([]deployer.HostStatus, len(cfg.Hosts))
	connect, err := connector(cfg)
	if err != nil {
		return err
	}
	lbs, closeLBs := deployer.LoadBalancers(c.Context, cfg, connect)
	defer closeLBs()
	errs := deployer.EachHost(c.Context, cfg, connect, func(ctx context.Context, i int, host string, conn deployer.Conn) error {
		hosts[i] = deployer.Status(ctx, cfg, host, conn, lbs)
		return nil
	})
	for i, err := range errs {
		if err != nil {
			hosts[i] = deployer.HostStatus{Host: cfg.Hosts[i], Error: err.Error()}
		}
	}
	if c.String("output") == "json" {
		writeJSONLine(out.stdout, out.doc(map[string]any{"hosts": hosts}))
	} else {
		writeStatus(out.stdout, hosts)
	}
	bad := 0
	for _, h := range hosts {
		if h.Error != "" {
			bad++
		}
		for _, i := range h.Instances {
			if !i.OK() {
				bad++
			}
		}
		for _, w := range h.Workers {
			if !w.OK() {
				bad++
			}
		}
	}
	if err := hostErrors(errs); err != nil {
		// Exit 3: what those hosts serve is unknown.
		return fmt.Errorf("%w: %d problem(s), and what these hosts serve is unknown:\n%w", errNotServing, bad, err)
	}
	if bad > 0 {
		return fmt.Errorf("%w: %d problem(s)", errNotServing, bad)
	}
	return nil
}

// nginxColumn is "in" or "OUT" ("drained" when drained by hand); with
// balancers, each one's: "lb1:in lb2:OUT".
func nginxColumn(i deployer.InstanceStatus) string {
	word := func(in bool) string {
		switch {
		case in:
			return "in"
		case i.Drained != nil:
			return "drained"
		}
		return "OUT"
	}
	if len(i.Balancers) == 0 {
		return word(i.InNginx)
	}
	var parts []string
	for _, b := range i.Balancers {
		w := word(b.In)
		if b.Error != "" {
			w = "?"
		}
		parts = append(parts, b.Host+":"+w)
	}
	return strings.Join(parts, " ")
}

func writeStatus(w io.Writer, hosts []deployer.HostStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	releases := false
	for _, h := range hosts {
		for _, i := range h.Instances {
			releases = releases || i.Release != ""
		}
	}
	release := func(i deployer.InstanceStatus) string {
		switch {
		case !releases:
			return ""
		case i.Release == "":
			return "\t-"
		}
		return "\t" + i.Release
	}
	head := "HOST\tPORT\tSTATE\tPID\tUPTIME\tMEMORY\tRESTARTS\tBALANCER\tHEALTH"
	if releases {
		head = "HOST\tPORT\tSTATE\tPID\tUPTIME\tMEMORY\tRESTARTS\tBALANCER\tRELEASE\tHEALTH"
	}
	fmt.Fprintln(tw, head)
	for _, h := range hosts {
		if h.Error != "" {
			fmt.Fprintf(tw, "%s\t-\tunreachable\t\t\t\t\t\t%s\n", h.Host, h.Error)
		}
		for _, i := range h.Instances {
			nginx := nginxColumn(i)
			health := "ok"
			switch {
			case i.Leftover:
				health = fmt.Sprintf("FAIL: leftover, not in service (%s): a surge under way, or one interrupted; the next deploy stops it", i.Health)
			case !i.Healthy:
				health = "FAIL: " + i.Health
			}
			pid, uptime, mem := "-", "-", "-"
			if i.PID > 0 {
				pid = fmt.Sprint(i.PID)
				uptime = i.Uptime.Round(time.Second).String()
			}
			if i.Memory > 0 {
				mem = fmt.Sprintf("%.1f MiB", float64(i.Memory)/(1<<20))
			}
			fmt.Fprintf(tw, "%s\t%d\t%s/%s\t%s\t%s\t%s\t%d\t%s%s\t%s\n", h.Host, i.Port, i.State, i.Sub, pid, uptime, mem, i.Restarts, nginx, release(i), health)
		}
		for _, w := range h.Workers {
			// A worker has no port, no balancer and no health check.
			pid, uptime, health := "-", "-", "-"
			if w.PID > 0 {
				pid, uptime = fmt.Sprint(w.PID), w.Uptime.Round(time.Second).String()
			}
			switch {
			case w.BeyondCount:
				health = "FAIL: beyond the workers' count (it keeps its code; rollout setup stops it)"
			case !w.OK():
				health = "FAIL: not running"
			}
			rel := ""
			if releases {
				rel = "\t" + orDash(w.Release)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\t-\t%d\t-%s\t%s\n", h.Host, w.Unit, w.State, w.Sub, pid, uptime, w.Restarts, rel, health)
		}
	}
	tw.Flush()
	for _, h := range hosts {
		for _, i := range h.Instances {
			if i.Drained != nil {
				fmt.Fprintf(w, "%s:%d: %s; `rollout undrain %s:%d` puts it back\n", h.Host, i.Port, i.Drained, h.Host, i.Port)
			}
		}
		if h.Paused != "" {
			var on []string
			for _, i := range h.Instances {
				if i.Release == h.Paused {
					on = append(on, fmt.Sprint(i.Port))
				}
			}
			fmt.Fprintf(w, "%s: mid-rollout, paused after the canary: release %s on %s, the others on %s; `rollout promote` continues, `rollout rollback` takes it back\n",
				h.Host, h.Paused, orNone(on), h.Current)
		}
	}
}

func logsCommand() *cli.Command {
	return &cli.Command{
		Name:  "logs",
		Usage: "print the instances' output (journal and log files) from every host, each line prefixed host:port",
		Description: `The journal of each instance's unit and its log files (the config's "logs",
or else the unit file's StandardOutput=/StandardError= files). --since applies
to the journal; log files show their last --lines lines.

Examples:
   rollout logs
   rollout logs --port 3001 --lines 50
   rollout logs --since "10 min ago"
   rollout logs --follow                  # until Ctrl-C`,
		Flags: append(connFlags(),
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep streaming new lines until Ctrl-C"},
			&cli.IntSliceFlag{Name: "port", Aliases: []string{"p"}, Usage: "only these instances"},
			&cli.StringFlag{Name: "since", Usage: `journal lines since, in journalctl's syntax ("10 min ago", "2026-11-25 09:00")`},
			&cli.IntFlag{Name: "lines", Aliases: []string{"n"}, Value: 20, Usage: "last lines of each journal and log file"}),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			pr, apps, err := loadApps(c)
			if err != nil {
				return err
			}
			return streamApps(c, pr, apps, func(cfg *deployer.Config, ao appOutput) error { return logs(c, cfg, ao) })
		},
	}
}

// logs prints one app's logs, each line prefixed host:port (and the app
// with apps:); with --follow, all the apps' at once.
func logs(c *cli.Context, cfg *deployer.Config, ao appOutput) error {
	o := deployer.LogsOptions{Ports: c.IntSlice("port"), Lines: c.Int("lines"), Since: c.String("since"), Follow: c.Bool("follow")}
	if err := o.Validate(cfg); err != nil {
		return usageError{err}
	}
	w := ao.stdout
	if ao.app != "" {
		w = &prefixWriter{prefix: ao.app + " ", w: ao.stdout}
	}
	out := deployer.NewLineWriter(w)
	connect, err := connector(cfg)
	if err != nil {
		return err
	}
	// A host that cannot be reached says so where its lines would be:
	// never an empty log.
	dial := func(ctx context.Context, host string) (deployer.Conn, error) {
		conn, err := connect(ctx, host)
		if err != nil {
			fmt.Fprintf(out.Prefixed(host+" "), "UNKNOWN: its logs could not be read: %v\n", err)
		}
		return conn, err
	}
	errs := deployer.EachHost(c.Context, cfg, dial, func(ctx context.Context, _ int, host string, conn deployer.Conn) error {
		s, ok := conn.(deployer.Streamer)
		if !ok {
			return errors.New("connection cannot stream")
		}
		err := deployer.Logs(ctx, cfg, host, conn, s, o, out)
		if err != nil && o.Follow {
			fmt.Fprintf(c.App.ErrWriter, "rollout: %s: stopped following: %v\n", host, err)
		}
		return err
	})
	if c.Context.Err() != nil {
		return nil // Ctrl-C ends --follow
	}
	return hostErrors(errs)
}

func historyCommand() *cli.Command {
	return &cli.Command{
		Name:  "history",
		Usage: "show the deploys recorded on every host: who, when, which version, how it ended",
		Description: `Every deploy appends one line to state_dir/APP/history.jsonl on each host.

Examples:
   rollout history
   rollout history --lines 5 --output json`,
		Flags:        append(connFlags(), &cli.IntFlag{Name: "lines", Aliases: []string{"n"}, Value: 20, Usage: "last entries"}),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			n := c.Int("lines")
			if n < 1 {
				return usageError{fmt.Errorf("--lines must be at least 1, got %d", n)}
			}
			pr, apps, err := loadApps(c)
			if err != nil {
				return err
			}
			return eachApp(c, pr, apps, 1, true, func(cfg *deployer.Config, out appOutput) error {
				per := make([][]deployer.HistoryEntry, len(cfg.Hosts))
				connect, err := connector(cfg)
				if err != nil {
					return err
				}
				errs := deployer.EachHost(c.Context, cfg, connect, func(ctx context.Context, i int, host string, conn deployer.Conn) (err error) {
					per[i], err = deployer.ReadHistory(ctx, cfg, host, conn, n)
					return err
				})
				entries := deployer.MergeHistory(per, n*len(cfg.Hosts))
				if c.String("output") == "json" {
					for _, e := range entries {
						if out.app != "" {
							e.App = out.app
						}
						writeJSONLine(out.stdout, e)
					}
					for i, err := range errs {
						if err != nil {
							writeJSONLine(out.stdout, out.doc(map[string]any{"host": cfg.Hosts[i], "state": "unknown", "error": err.Error()}))
						}
					}
				} else {
					tw := tabwriter.NewWriter(out.stdout, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "TIME\tHOST\tOP\tVERSION\tOUTCOME\tBY\tTOOK\tDETAIL")
					for _, e := range entries {
						by := e.User + "@" + e.From
						if e.RunURL != "" {
							by += " " + e.RunURL
						}
						detail := e.Error
						if len(e.Ports) > 0 { // rollout drain, undrain
							detail = strings.TrimSpace("instances " + strings.Trim(fmt.Sprint(e.Ports), "[]") + " " + detail)
						}
						if e.Command != "" { // rollout exec
							detail = "$ " + e.Command
							if e.Error != "" {
								detail += " (" + e.Error + ")"
							}
						}
						version := e.Version
						if version == "" {
							version = e.Release
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05"), e.Host, e.Op, version, e.Outcome, by, e.Duration.Round(time.Millisecond), detail)
					}
					for i, err := range errs {
						if err != nil {
							fmt.Fprintf(tw, "-\t%s\t\t\tUNKNOWN\t\t\t%s\n", cfg.Hosts[i], err)
						}
					}
					tw.Flush()
				}
				return hostErrors(errs)
			})
		},
	}
}

func lockCommand() *cli.Command {
	show := func(c *cli.Context, out appOutput, states []deployer.LockState) {
		if c.String("output") == "json" {
			writeJSONLine(out.stdout, out.doc(map[string]any{"locks": states}))
			return
		}
		tw := tabwriter.NewWriter(out.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tLOCK\tHOLDER\tREFRESHED")
		for _, s := range states {
			switch {
			case s.State == "unknown":
				fmt.Fprintf(tw, "%s\tUNKNOWN\t\t(%s)\n", s.Host, s.Error)
			case !s.Held:
				fmt.Fprintf(tw, "%s\tfree\t\t\n", s.Host)
			default:
				state := "held"
				if s.Stale {
					state = "STALE"
				}
				holder := "?"
				if s.Holder != nil {
					holder = s.Holder.String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\n", s.Host, state, holder, s.Age)
			}
		}
		tw.Flush()
	}
	run := func(c *cli.Context, fn func(ctx context.Context, cfg *deployer.Config, host string, conn deployer.Conn) (deployer.LockState, error)) error {
		pr, apps, err := loadApps(c)
		if err != nil {
			return err
		}
		return eachApp(c, pr, apps, 1, true, func(cfg *deployer.Config, out appOutput) error {
			states := make([]deployer.LockState, len(cfg.Hosts))
			connect, err := connector(cfg)
			if err != nil {
				return err
			}
			errs := deployer.EachHost(c.Context, cfg, connect, func(ctx context.Context, i int, host string, conn deployer.Conn) (err error) {
				states[i], err = fn(ctx, cfg, host, conn)
				return err
			})
			for i := range states {
				states[i].Host = cfg.Hosts[i]
				var locked *deployer.LockedError
				switch {
				case errs[i] == nil:
					states[i] = states[i].WithState()
				case errors.As(errs[i], &locked):
					// Read, and held by someone else: what it is is known.
					states[i] = states[i].WithState()
					states[i].Error = errs[i].Error()
				default:
					// Not read: never shown as free.
					states[i] = deployer.UnknownLock(cfg.Hosts[i], errs[i])
				}
			}
			show(c, out, states)
			return hostErrors(errs)
		})
	}
	return &cli.Command{
		Name:  "lock",
		Usage: "show or release the deploy lock on every host",
		Description: `A deploy takes a lock on each host before it changes anything and refreshes
it while it works; a second deploy fails at once and names the holder. A lock
whose holder stopped refreshing it for lock_stale_after (a crashed laptop, a
cancelled CI job) is stale.

Examples:
   rollout lock status
   rollout lock release                 # stale locks only
   rollout lock release --force         # also a lock that is still refreshed`,
		Subcommands: []*cli.Command{
			{
				Name: "status", Usage: "show each host's lock: free, held (by whom, refreshed when) or stale",
				Description: "Examples:\n   rollout lock status\n   rollout lock status --output json",
				Flags:       connFlags(), OnUsageError: onUsageError,
				Action: func(c *cli.Context) error { return run(c, deployer.LockStatus) },
			},
			{
				Name: "release", Usage: "remove the lock on every host: a stale one, or any with --force",
				Description:  "Examples:\n   rollout lock release\n   rollout lock release --force --hosts 10.0.0.5",
				Flags:        append(connFlags(), &cli.BoolFlag{Name: "force", Usage: "also release a lock whose holder is still refreshing it"}),
				OnUsageError: onUsageError,
				Action: func(c *cli.Context) error {
					force := c.Bool("force")
					err := run(c, func(ctx context.Context, cfg *deployer.Config, host string, conn deployer.Conn) (deployer.LockState, error) {
						st, err := deployer.ReleaseLock(ctx, cfg, host, conn, force)
						if err == nil && st.Held {
							fmt.Fprintf(c.App.ErrWriter, "released the lock on %s held by %s\n", host, holderName(st))
							st.Held, st.Holder, st.Stale, st.Age = false, nil, false, 0
						}
						return st, err
					})
					return err
				},
			},
		},
	}
}

func holderName(st deployer.LockState) string {
	if st.Holder == nil {
		return "an unknown holder"
	}
	return st.Holder.String()
}

func scaleCommand() *cli.Command {
	return &cli.Command{
		Name:  "scale",
		Usage: "run N instances per host (or one per CPU core), adding and removing instances without dropping requests",
		Description: `A missing instance is enabled, started, health-checked and only then added to
the Nginx upstream; a surplus one is drained (its requests finish), stopped,
disabled and removed from the upstream. Instances are base_port, base_port+1,
… Nothing else restarts. Set the same instances in rollout.yaml: every deploy
reconciles the hosts with it too.

Examples:
   rollout scale --instances 2
   rollout scale --instances auto        # one per CPU core of each host`,
		Flags: append(connFlags(),
			&cli.StringFlag{Name: "instances", Required: true, EnvVars: []string{"ROLLOUT_INSTANCES"}, Usage: "instances per host: a number, or auto (one per CPU core)"},
			breakStaleLockFlag()),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			n := 0 // auto
			if v := c.String("instances"); v != "auto" {
				var err error
				if n, err = strconv.Atoi(v); err != nil || n < 1 {
					return usageError{fmt.Errorf("--instances must be a number of at least 1, or auto; got %q", v)}
				}
			}
			pr, apps, err := loadApps(c)
			if err != nil {
				return err
			}
			for _, cfg := range apps {
				if err := cfg.SetInstances(n); err != nil {
					return usageError{fmt.Errorf("app %s: %w", cfg.App, err)}
				}
			}
			return eachApp(c, pr, apps, 1, false, func(cfg *deployer.Config, o appOutput) error {
				d, out, err := newDeployer(c, cfg, "", o)
				if err != nil {
					return err
				}
				rep, err := d.Scale(c.Context)
				out.report(rep, err)
				return err
			})
		},
	}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "no instance"
	}
	return strings.Join(s, ", ")
}

// orDash is s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
