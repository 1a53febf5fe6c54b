package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rollout-dev/rollout/deployer"
	"github.com/rollout-dev/rollout/internal/notify"
)

func watchCommand() *cli.Command {
	return &cli.Command{
		Name:  "watch",
		Usage: "poll every host and print (and post) each change: instance down/up, restarts, health, in or out of Nginx, host unreachable",
		Description: `One SSH connection per host, kept open between polls (a host that drops it, or
reboots, is connected again at the next poll; meanwhile it is reported
unreachable once, then reachable again). With a notify: section, each poll's
changes are posted to the webhook, recoveries included; changes on a host
whose deploy lock is held are printed, marked as during a deploy, and not
posted. Ctrl-C stops it (exit 0).

With --once it polls once, prints every problem, and exits 1 when there is
one: for a scheduled CI job (see examples/github-actions/watch.yml).

Examples:
   rollout watch
   rollout watch --interval 10s --output json
   rollout watch --once`,
		Flags: append(connFlags(),
			&cli.DurationFlag{Name: "interval", Value: 30 * time.Second, EnvVars: []string{"ROLLOUT_WATCH_INTERVAL"}, Usage: "time between polls"},
			&cli.BoolFlag{Name: "once", Usage: "poll once, print the problems, exit 1 if there is one"}),
		OnUsageError: onUsageError,
		Action:       watchAction,
	}
}

func watchAction(c *cli.Context) error {
	w, interval, err := newWatcher(c, 0)
	if err != nil {
		return err
	}
	defer w.Close()
	cfg := w.Config
	out := c.App.Writer
	jsonOut := c.String("output") == "json"
	show := func(ts []deployer.Transition, at time.Time) {
		for _, t := range ts {
			if jsonOut {
				writeJSONLine(out, map[string]any{"type": "transition", "time": at, "transition": t})
				continue
			}
			mark := "ok  "
			if t.Problem {
				mark = "FAIL"
			}
			fmt.Fprintf(out, "%s %s %s\n", at.Format("15:04:05"), mark, t)
		}
	}
	if c.Bool("once") {
		snap := w.Poll(c.Context)
		show(deployer.Transitions(nil, snap), snap.Time)
		if n := snap.Problems(); n > 0 {
			return fmt.Errorf("%w: %d problem(s)", errNotServing, n)
		}
		if !jsonOut {
			fmt.Fprintf(out, "%s ok   every instance of %d host(s) is running, in Nginx and healthy\n", snap.Time.Format("15:04:05"), len(cfg.Hosts))
		}
		return nil
	}
	var prev *deployer.Snapshot
	for {
		snap := w.Poll(c.Context)
		if c.Context.Err() != nil {
			return nil
		}
		ts := deployer.Transitions(prev, snap)
		if prev == nil && len(ts) == 0 && !jsonOut {
			fmt.Fprintf(out, "%s ok   every instance of %d host(s) is running, in Nginx and healthy; watching every %s\n", snap.Time.Format("15:04:05"), len(cfg.Hosts), interval)
		}
		show(ts, snap.Time)
		notifyTransitions(c.Context, cfg, ts, os.Getenv, c.App.ErrWriter)
		prev = &snap
		select {
		case <-c.Context.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// newWatcher is the Watcher of watch and dashboard: the config, and the
// --interval between polls (at least 1s); history is how many of each
// host's last deploys a poll reads.
func newWatcher(c *cli.Context, history int) (*deployer.Watcher, time.Duration, error) {
	cfg, err := loadConfig(c)
	if err != nil {
		return nil, 0, err
	}
	interval := c.Duration("interval")
	if interval < time.Second {
		return nil, 0, usageError{fmt.Errorf("--interval must be at least 1s, got %s", interval)}
	}
	connect, err := connector(cfg)
	if err != nil {
		return nil, 0, err
	}
	return &deployer.Watcher{Config: cfg, Connect: connect, PollTimeout: max(interval, 10*time.Second), History: history}, interval, nil
}

// notifyTransitions posts one message with a poll's changes (those outside
// a deploy) when the config has a notify: section; a failed post is a
// warning and the watch goes on.
func notifyTransitions(ctx context.Context, cfg *deployer.Config, ts []deployer.Transition, getenv func(string) string, stderr io.Writer) {
	if cfg.Notify == nil {
		return
	}
	var lines []string
	for _, t := range ts {
		if t.During != "" {
			continue
		}
		mark := "✅"
		if t.Problem {
			mark = "❌"
		}
		lines = append(lines, mark+" "+t.String())
	}
	if len(lines) == 0 {
		return
	}
	w, ok := webhook(cfg, getenv, stderr)
	if !ok {
		return
	}
	text := notify.Redact(fmt.Sprintf("rollout watch %s:\n%s", cfg.App, strings.Join(lines, "\n")), w.URL)
	if err := w.Send(context.WithoutCancel(ctx), text); err != nil {
		fmt.Fprintf(stderr, "rollout: warning: %v (watching goes on)\n", err)
	}
}
