package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rollout-dev/rollout/deployer"
)

func initCommand() *cli.Command {
	var flags []cli.Flag
	for _, f := range connFlags() {
		if n := f.Names()[0]; n != "hosts" && n != "output" && n != "app" {
			flags = append(flags, f)
		}
	}
	flags = append(flags,
		&cli.StringSliceFlag{Name: "host", Usage: "a host to read (repeat for each; comma-separated works too)"},
		&cli.StringFlag{Name: "app", Usage: "the app to write when a host runs several"},
		&cli.BoolFlag{Name: "force", Usage: "overwrite the config file"})
	return &cli.Command{
		Name:  "init",
		Usage: "write rollout.yaml from servers already running template instances behind Nginx (reads them, changes nothing)",
		Description: `Connects to each host (the same SSH rules as every command) and reads, changing
nothing: the systemd template instances running or enabled (NAME@PORT), the
Nginx upstream block whose server lines name their ports (nginx -T), the
site that proxies to it, whether the user is root or has passwordless sudo,
the instances' output files, the CPU cores, and what one instance answers on
/healthz, /health and /. It writes a commented config (-c, default
rollout.yaml; never over an existing one without --force) and says what it
could not decide. Hosts that disagree are reported, not guessed.

Examples:
   rollout init --host web1 --host web2 --user deploy
   rollout init --host 10.0.0.5 --app auth -c auth.yaml`,
		Flags:        flags,
		OnUsageError: onUsageError,
		Action:       initAction,
	}
}

func initAction(c *cli.Context) error {
	var hosts []string
	for _, h := range c.StringSlice("host") {
		for _, part := range strings.Split(h, ",") {
			if part = strings.TrimSpace(part); part != "" && !slices.Contains(hosts, part) {
				hosts = append(hosts, part)
			}
		}
	}
	if len(hosts) == 0 {
		return usageError{errors.New("--host is required: the servers to read (repeat it for each)")}
	}
	path := c.String("config")
	if !c.Bool("force") {
		if _, err := os.Stat(path); err == nil {
			return usageError{fmt.Errorf("%s exists: rollout init does not overwrite it without --force", path)}
		}
	}
	cfg := deployer.DefaultConfig()
	cfg.Hosts = hosts
	if err := applyConnFlags(c, cfg); err != nil {
		return err
	}
	connect, err := connector(cfg)
	if err != nil {
		return err
	}
	// Every host at once; any host that cannot be read fails the whole
	// init, naming it.
	ds := make([]*deployer.Discovery, len(hosts))
	errs := deployer.EachHost(c.Context, cfg, connect, func(ctx context.Context, i int, host string, conn deployer.Conn) (err error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		ds[i], err = deployer.Discover(ctx, conn, host)
		return err
	})
	if err := hostErrors(errs); err != nil {
		return err
	}
	w := c.App.Writer
	for _, d := range ds {
		printDiscovery(w, d)
	}
	r, err := deployer.InitConfig(ds, deployer.InitOptions{
		Hosts: hosts, User: c.String("user"), Key: c.String("key"), KnownHosts: c.String("known-hosts"),
		App: c.String("app"), Now: time.Now(),
	})
	switch {
	case errors.Is(err, deployer.ErrPickApp):
		return usageError{err}
	case errors.Is(err, deployer.ErrNoInstances):
		return fmt.Errorf("%w on %s: nothing to write", err, strings.Join(hosts, ", "))
	case err != nil:
		return err
	}
	flag := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if c.Bool("force") {
		flag = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flag, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return usageError{fmt.Errorf("%s exists: rollout init does not overwrite it without --force", path)}
	}
	if err != nil {
		return fmt.Errorf("write the config: %w", err)
	}
	if _, err := f.Write(r.YAML); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	fmt.Fprintf(w, "wrote %s for %s on %d host(s). Next: rollout plan -c %s --version V (changes nothing)\n", path, r.App, len(hosts), path)
	if len(r.Undecided) > 0 {
		fmt.Fprintln(w, "could not decide (check these in the file):")
		for _, u := range r.Undecided {
			fmt.Fprintf(w, "  - %s\n", u)
		}
	}
	return nil
}

func printDiscovery(w io.Writer, d *deployer.Discovery) {
	who := "root"
	switch {
	case !d.Root && d.Sudo:
		who = d.User + " (passwordless sudo)"
	case !d.Root:
		who = d.User + " (sudo -n refused: rollout needs passwordless sudo)"
	}
	mem := ""
	if d.MemAvailable > 0 {
		mem = ", " + deployer.MiB(d.MemAvailable) + " available"
	}
	fmt.Fprintf(w, "%s: %s, %d CPU cores%s\n", d.Host, who, d.Cores, mem)
	if len(d.Apps) == 0 {
		fmt.Fprintf(w, "  no template instances named by a port (NAME@PORT.service) running or enabled\n")
	}
	if d.NginxErr != "" {
		fmt.Fprintf(w, "  nginx -T failed: %s\n", d.NginxErr)
	}
	for _, wk := range d.Workers {
		fmt.Fprintf(w, "  worker %s: %s@.service, instances 1-%d (%d running)\n", wk.Unit, wk.Unit, wk.Count, wk.Running)
	}
	for _, a := range d.Apps {
		each := ""
		if a.MemoryEach > 0 {
			each = ", about " + deployer.MiB(a.MemoryEach) + " resident each"
		}
		fmt.Fprintf(w, "  app %s: %s@.service, instances %s (%d running%s)\n", a.Name, a.Name, ranges(a.Ports), len(a.Running), each)
		if len(a.Other) > 0 {
			fmt.Fprintf(w, "    also instances not named by a port: %s\n", strings.Join(a.Other, ", "))
		}
		for i, u := range a.Upstreams {
			mark := ""
			if i == 0 {
				mark = " (the one rollout drains)"
			}
			fmt.Fprintf(w, "    nginx upstream %s in %s: %s at %s%s\n", u.Name, u.File, ranges(u.Ports), u.Addr, mark)
		}
		if len(a.Upstreams) == 0 && d.NginxErr == "" {
			fmt.Fprintf(w, "    no nginx upstream names these ports\n")
		}
		if a.Listen != "" {
			fmt.Fprintf(w, "    site: %s\n", a.Listen)
		}
		if len(a.LogFiles) > 0 {
			fmt.Fprintf(w, "    output: %s\n", strings.Join(a.LogFiles, ", "))
		}
		var health []string
		for _, h := range a.Health {
			if h.Status != 0 {
				health = append(health, fmt.Sprintf("%s %d", h.Path, h.Status))
			} else {
				health = append(health, fmt.Sprintf("%s no answer", h.Path))
			}
		}
		if len(health) > 0 {
			fmt.Fprintf(w, "    health: %s\n", strings.Join(health, ", "))
		}
	}
}

// ranges is ports for people, runs joined (deployer.PortRanges), or "none".
func ranges(ports []int) string {
	if len(ports) == 0 {
		return "none"
	}
	return deployer.PortRanges(ports)
}
