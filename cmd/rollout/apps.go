package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/rollout-dev/rollout/deployer"
)

// A config with apps: holds several apps; every command runs on those
// --app picks (all by default) and deploy and plan also on those
// --changed-since picks, one after another (deploy: apps_parallel at once).

// appFlag picks apps by name.
func appFlag() cli.Flag {
	return &cli.StringSliceFlag{Name: "app", EnvVars: []string{"ROLLOUT_APPS"}, Usage: "with apps: in the config, only these apps (comma-separated; default: all)"}
}

// changedSinceFlag picks the apps whose paths changed.
func changedSinceFlag() cli.Flag {
	return &cli.StringFlag{Name: "changed-since", EnvVars: []string{"ROLLOUT_CHANGED_SINCE"}, Usage: "only the apps whose paths: match a file changed in git diff REF...HEAD (run in the repository; empty: every app)"}
}

// loadConfig loads a config of one app, or picks one with --app.
func loadConfig(c *cli.Context) (*deployer.Config, error) {
	_, apps, err := loadApps(c)
	if err != nil {
		return nil, err
	}
	if len(apps) != 1 {
		var names []string
		for _, a := range apps {
			names = append(names, a.App)
		}
		return nil, usageError{fmt.Errorf("%s has apps %s: pick one with --app", c.String("config"), strings.Join(names, ", "))}
	}
	return apps[0], nil
}

// loadApps reads the config file, picks the apps (--app, --changed-since)
// and applies flags and ROLLOUT_* variables to each. None picked by
// --changed-since is no error: it says so on stderr.
func loadApps(c *cli.Context) (*deployer.Project, []*deployer.Config, error) {
	pr, err := loadProject(c)
	if err != nil {
		return nil, nil, err
	}
	apps := pr.Apps
	if names := splitList(c.StringSlice("app")); len(names) > 0 {
		if apps, err = pr.Select(names); err != nil {
			return nil, nil, usageError{fmt.Errorf("--app: %w", err)}
		}
	}
	// An empty ref (a CI variable with no base: a new branch's first push)
	// picks every app.
	if ref := c.String("changed-since"); ref != "" {
		files, err := changedFiles(c.Context, ref)
		if err != nil {
			return nil, nil, usageError{fmt.Errorf("--changed-since: %w", err)}
		}
		picked, why, err := deployer.Changed(apps, files)
		if err != nil {
			return nil, nil, usageError{fmt.Errorf("--changed-since: %w", err)}
		}
		var said []string
		for _, a := range picked {
			said = append(said, fmt.Sprintf("%s (%s)", a.App, why[a.App]))
		}
		if len(picked) == 0 {
			fmt.Fprintf(c.App.ErrWriter, "rollout: no app changed since %s (%d file(s) changed, none in an app's paths): nothing to do\n", ref, len(files))
		} else {
			fmt.Fprintf(c.App.ErrWriter, "rollout: changed since %s: %s\n", ref, strings.Join(said, ", "))
		}
		apps = picked
	}
	for _, cfg := range apps {
		if err := applyFlags(c, cfg); err != nil {
			if pr.Multi {
				err = usageError{fmt.Errorf("app %s: %w", cfg.App, err)}
			}
			return nil, nil, err
		}
	}
	if err := checkOutputFlag(c); err != nil {
		return nil, nil, err
	}
	return pr, apps, nil
}

// splitList splits comma-separated values and drops empty ones.
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}

// changedFiles are the files changed in git diff REF...HEAD (since the
// merge base of ref and HEAD), relative to the repository's top, the old
// and new names of a renamed file both. It runs git in the current
// directory.
func changedFiles(ctx context.Context, ref string) ([]string, error) {
	if ref == "" || strings.HasPrefix(ref, "-") || strings.ContainsAny(ref, "\x00\n\r") || len(ref) > 256 {
		return nil, fmt.Errorf("%q is not a git revision", ref)
	}
	git := func(args ...string) ([]byte, error) {
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			if msg := strings.TrimSpace(stderr.String()); msg != "" {
				return nil, fmt.Errorf("git %s: %s", args[0], msg)
			}
			return nil, fmt.Errorf("git %s: %w", args[0], err)
		}
		return out, nil
	}
	if _, err := git("rev-parse", "--is-inside-work-tree"); err != nil {
		return nil, fmt.Errorf("needs a git work tree (run rollout in the repository): %w", err)
	}
	if _, err := git("rev-parse", "--verify", "--quiet", "--end-of-options", ref+"^{commit}"); err != nil {
		return nil, fmt.Errorf("%q is no commit in this repository (in CI, fetch the history: actions/checkout with fetch-depth: 0)", ref)
	}
	out, err := git("diff", "--name-only", "-z", "--no-renames", "--no-relative", "--no-ext-diff", ref+"...HEAD", "--")
	if err != nil {
		return nil, fmt.Errorf("files changed since %q: %w", ref, err)
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f != "" {
			files = append(files, f)
		}
	}
	return files, nil
}

// appOutput is where one app's output goes; app is its name when the
// config has apps: ("" otherwise), for prefixes and JSON.
type appOutput struct {
	stdout, stderr io.Writer
	app            string
}

// doc is a JSON document of the app's, naming it with apps: in the config.
func (o appOutput) doc(m map[string]any) map[string]any {
	if o.app != "" {
		m["app"] = o.app
	}
	return m
}

// eachApp runs fn for each app in order, or with parallel > 1 that many at
// once. With keepGoing a failed app does not stop the others (read-only
// commands); otherwise no app starts after one failed. With apps: in the
// config, text output on stdout comes under a header per app (whole, when
// apps run at once), and errors name their app.
func eachApp(c *cli.Context, pr *deployer.Project, apps []*deployer.Config, parallel int, keepGoing bool, fn func(cfg *deployer.Config, out appOutput) error) error {
	return runApps(c, pr, apps, parallel, keepGoing, true, fn)
}

// streamApps runs fn for every app at once, each writing lines it names
// its app in (out.app), with no header: logs --follow.
func streamApps(c *cli.Context, pr *deployer.Project, apps []*deployer.Config, fn func(cfg *deployer.Config, out appOutput) error) error {
	return runApps(c, pr, apps, len(apps), true, false, fn)
}

func runApps(c *cli.Context, pr *deployer.Project, apps []*deployer.Config, parallel int, keepGoing, headers bool, fn func(cfg *deployer.Config, out appOutput) error) error {
	text := c.String("output") != "json" && headers
	stdout, stderr := &lockedWriter{w: c.App.Writer}, &lockedWriter{w: c.App.ErrWriter}
	var (
		mu     sync.Mutex
		errs   []error
		failed bool
		wg     sync.WaitGroup
		sem    = make(chan struct{}, max(parallel, 1))
	)
	var notRun []string
	for i, cfg := range apps {
		mu.Lock()
		stop := failed && !keepGoing
		mu.Unlock()
		if stop || c.Context.Err() != nil {
			for _, a := range apps[i:] {
				notRun = append(notRun, a.App)
			}
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out := appOutput{stdout: stdout, stderr: stderr}
			var buf bytes.Buffer
			if pr.Multi {
				out.app = cfg.App
				switch {
				case text && parallel > 1:
					// The app's text comes out whole, under its header.
					fmt.Fprintf(&buf, "== app %s ==\n", cfg.App)
					out.stdout = &buf
				case text:
					fmt.Fprintf(stdout, "== app %s ==\n", cfg.App)
				}
			}
			err := fn(cfg, out)
			if buf.Len() > 0 {
				stdout.Write(buf.Bytes())
			}
			if err == nil {
				return
			}
			if pr.Multi {
				err = appError{app: cfg.App, err: err}
			}
			mu.Lock()
			errs, failed = append(errs, err), true
			mu.Unlock()
		}()
		if parallel <= 1 {
			wg.Wait()
		}
	}
	wg.Wait()
	if len(notRun) > 0 && c.Context.Err() == nil {
		fmt.Fprintf(stderr, "rollout: not run, after a failed app: %s\n", strings.Join(notRun, ", "))
	}
	return errors.Join(errs...)
}

// appError is an error of one app of several.
type appError struct {
	app string
	err error
}

func (e appError) Error() string { return "app " + e.app + ": " + e.err.Error() }
func (e appError) Unwrap() error { return e.err }

// prefixWriter starts each Write (a whole line, from a
// deployer.LineWriter) with prefix.
type prefixWriter struct {
	prefix string
	w      io.Writer
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if _, err := p.w.Write(append([]byte(p.prefix), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// lockedWriter serializes writes from apps run at once: each Write (a
// line, a JSON line, an app's whole text) comes out whole.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
