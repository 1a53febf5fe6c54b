package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/xrash/smetrics"

	"github.com/rollout-dev/rollout/deployer"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "rollout",
		Usage: "zero-downtime rolling restarts of systemd instances behind Nginx, over SSH",
		Description: `rollout rolls a release through a fleet of systemd template instances,
one instance at a time: drain it from the balancer, wait for its requests,
restart it, wait until it is active and healthy, put it back. It installs
nothing resident on the servers. Start with rollout init; rollout plan
prints every step without touching anything.

` + exitCodesText(),
		Version:   version,
		Writer:    stdout,
		ErrWriter: stderr,
		// Never let urfave/cli call os.Exit: deferred cleanup must run.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   onUsageError,
		// Completion asks the binary itself: see completion.go.
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			{
				Name:  "deploy",
				Usage: "roll a release through every host, one instance at a time",
				Description: `Examples:
   rollout deploy --version v2
   rollout deploy --version "$GITHUB_SHA" --parallel 2
   rollout deploy --dry-run --version v2     # print every step, change nothing
   rollout deploy --version v2 --artifact build/   # with release: ship build/ first`,
				Flags: append(append(overrideFlags(), releaseFlags()...), changedSinceFlag(),
					&cli.BoolFlag{Name: "dry-run", Usage: "print the plan and change nothing"}, scriptsFlag(),
					breakStaleLockFlag()),
				Action:       deployAction,
				OnUsageError: onUsageError,
			},
			{
				Name:  "plan",
				Usage: "print every step a deploy would take, with the exact remote commands; changes nothing",
				Description: `Examples:
   rollout plan --version v2
   rollout plan --version v2 --scripts       # every remote command in full
   rollout plan --version v2 --output json`,
				Flags: append(append(overrideFlags(), releaseFlags()...), changedSinceFlag(), scriptsFlag(),
					&cli.BoolFlag{Name: "live", Usage: "with release: also read every host (changing nothing): the release it would use, whether it uploads, the instances it would skip, what cleanup would remove"}),
				Action:       planAction,
				OnUsageError: onUsageError,
			},
			checkCommand(),
			initCommand(),
			rollbackCommand(),
			promoteCommand(),
			releasesCommand(),
			secretsCommand(),
			scaleCommand(),
			restartCommand(),
			drainCommand(),
			undrainCommand(),
			execCommand(),
			configCommand(),
			setupCommand(),
			renderCommand(),
			statusCommand(),
			watchCommand(),
			dashboardCommand(),
			logsCommand(),
			historyCommand(),
			lockCommand(),
			versionCommand(),
			completionCommand(),
			manCommand(),
		},
		Action: unknownCommand,
	}
	refuseExtraArgs(app.Commands)
	return app
}

// unknownCommand runs for "rollout WORD" when WORD is no command; plain
// "rollout" prints the help.
func unknownCommand(c *cli.Context) error {
	sub := c.Command != nil && len(c.Command.Subcommands) > 0 && c.Command.Name != c.App.Name
	if !c.Args().Present() {
		if sub {
			return cli.ShowSubcommandHelp(c)
		}
		return cli.ShowAppHelp(c)
	}
	name, cmds, where := c.Args().First(), c.App.Commands, "rollout"
	if sub {
		cmds, where = c.Command.Subcommands, c.Command.FullName()
		if !strings.HasPrefix(where, "rollout") {
			where = "rollout " + where
		}
	}
	var names []string
	for _, cmd := range cmds {
		names = append(names, cmd.Names()...)
	}
	return usageError{fmt.Errorf("unknown command %q%s (%s --help lists them)", name, didYouMean(name, names, ""), where)}
}

// didYouMean is `: did you mean "X"?` for the candidate closest to name,
// or "" when none is close.
func didYouMean(name string, candidates []string, prefix string) string {
	best, score := "", 0.0
	for _, c := range candidates {
		if s := smetrics.JaroWinkler(name, c, 0.7, 4); s > score {
			best, score = c, s
		}
	}
	if score < 0.8 {
		return ""
	}
	return fmt.Sprintf(": did you mean %q?", prefix+best)
}

// refuseExtraArgs makes every command that takes no arguments refuse
// them (a flag after an argument is one: urfave/cli stops parsing flags
// at the first argument).
func refuseExtraArgs(cmds []*cli.Command) {
	for _, cmd := range cmds {
		refuseExtraArgs(cmd.Subcommands)
		if len(cmd.Subcommands) > 0 && cmd.Action == nil {
			cmd.Action = unknownCommand
		}
		if len(cmd.Subcommands) == 0 && cmd.BashComplete == nil {
			cmd.BashComplete = completeFlags
		}
		if cmd.ArgsUsage != "" || cmd.Action == nil || len(cmd.Subcommands) > 0 {
			continue
		}
		action := cmd.Action
		cmd.Action = func(c *cli.Context) error {
			if c.NArg() > 0 {
				hint := ""
				if strings.HasPrefix(c.Args().Get(1), "-") || strings.HasPrefix(c.Args().First(), "-") {
					hint = " (flags go before any argument)"
				}
				return usageError{fmt.Errorf("%s takes no arguments, got %q%s", c.Command.FullName(), strings.Join(c.Args().Slice(), " "), hint)}
			}
			return action(c)
		}
	}
}

// completeFlags offers a command's flags (urfave/cli's default offers
// them only once a "-" is typed).
func completeFlags(c *cli.Context) {
	for _, f := range c.Command.Flags {
		if name := f.Names()[0]; len(name) > 1 {
			fmt.Fprintln(c.App.Writer, "--"+name)
		}
	}
}

// scriptsFlag makes the plan print every instance's steps and every remote
// command in full.
func scriptsFlag() cli.Flag {
	return &cli.BoolFlag{Name: "scripts", Usage: "print every instance's steps with the exact remote command each runs (the plan is short without it; --output json always has them)"}
}

// breakStaleLockFlag lets a command that takes the deploy lock take over a
// stale one.
func breakStaleLockFlag() cli.Flag {
	return &cli.BoolFlag{Name: "break-stale-lock", EnvVars: []string{"ROLLOUT_BREAK_STALE_LOCK"}, Usage: "take over a deploy lock whose holder stopped refreshing it"}
}

// onUsageError marks a flag error as a usage error, with the closest flag
// for an unknown one.
func onUsageError(c *cli.Context, err error, _ bool) error {
	const undefined = "flag provided but not defined: "
	if rest, ok := strings.CutPrefix(err.Error(), undefined); ok {
		name := strings.TrimLeft(rest, "-")
		var names []string
		flags := c.App.Flags
		if c.Command != nil && len(c.Command.Flags) > 0 {
			flags = c.Command.Flags
		}
		for _, f := range flags {
			names = append(names, f.Names()...)
		}
		names = append(names, "help")
		return usageError{fmt.Errorf("unknown flag --%s%s", name, didYouMean(name, names, "--"))}
	}
	return usageError{err}
}

// overrideFlags override the config file; each has a ROLLOUT_* variable.
func overrideFlags() []cli.Flag {
	return append(connFlags(),
		&cli.StringFlag{Name: "version", EnvVars: []string{"ROLLOUT_VERSION"}, Usage: "release version (passed to hooks as ROLLOUT_VERSION)"},
		&cli.IntFlag{Name: "parallel", EnvVars: []string{"ROLLOUT_PARALLEL"}, DefaultText: fromConfig("parallel", deployer.DefaultConfig().Parallel), Usage: "hosts deployed at once"},
		&cli.IntFlag{Name: "min-serving", EnvVars: []string{"ROLLOUT_MIN_SERVING"}, DefaultText: fromConfig("min_serving", "all others"), Usage: "instances per host that must keep serving"},
		&cli.StringFlag{Name: "max-unavailable", EnvVars: []string{"ROLLOUT_MAX_UNAVAILABLE"}, Usage: "instances per host restarted together: N or P% (strategy.max_unavailable)"},
		&cli.StringFlag{Name: "max-surge", EnvVars: []string{"ROLLOUT_MAX_SURGE"}, Usage: "new instances per host started beside the old ones on spare ports, before the old ones leave: N or P% (strategy.max_surge)"},
		&cli.BoolFlag{Name: "no-probe", EnvVars: []string{"ROLLOUT_NO_PROBE"}, Usage: "do not probe the site through each host's Nginx during the deploy (probe: false)"},
		&cli.DurationFlag{Name: "drain-timeout", EnvVars: []string{"ROLLOUT_DRAIN_TIMEOUT"}, DefaultText: fromConfig("drain_timeout", deployer.DefaultConfig().DrainTimeout), Usage: "longest wait for in-flight requests"},
		&cli.DurationFlag{Name: "health-timeout", EnvVars: []string{"ROLLOUT_HEALTH_TIMEOUT"}, DefaultText: fromConfig("health.timeout", deployer.DefaultConfig().Health.Timeout), Usage: "longest wait for a restarted instance to be healthy"},
	)
}

// connFlags say where the config is, which of its apps, and how to reach
// the hosts.
func connFlags() []cli.Flag {
	return []cli.Flag{
		appFlag(),
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: "rollout.yaml", EnvVars: []string{"ROLLOUT_CONFIG"}, Usage: "config file"},
		envFlag(),
		&cli.StringSliceFlag{Name: "hosts", EnvVars: []string{"ROLLOUT_HOSTS"}, Usage: "hosts, replacing the config's (comma-separated)"},
		&cli.StringFlag{Name: "user", EnvVars: []string{"ROLLOUT_SSH_USER"}, Usage: "SSH user"},
		&cli.IntFlag{Name: "ssh-port", EnvVars: []string{"ROLLOUT_SSH_PORT"}, DefaultText: fromConfig("ssh.port", deployer.DefaultConfig().SSH.Port), Usage: "SSH port"},
		&cli.StringFlag{Name: "key", EnvVars: []string{"ROLLOUT_SSH_KEY_FILE"}, Usage: "SSH private key file"},
		&cli.StringFlag{Name: "known-hosts", EnvVars: []string{"ROLLOUT_KNOWN_HOSTS_FILE"}, Usage: "known_hosts file"},
		&cli.BoolFlag{Name: "accept-new", EnvVars: []string{"ROLLOUT_ACCEPT_NEW"}, Usage: "trust and record unknown host keys (a changed key is still refused)"},
		&cli.StringFlag{Name: "ssh-config", EnvVars: []string{"ROLLOUT_SSH_CONFIG"}, Usage: "OpenSSH client config for host aliases (default ~/.ssh/config)"},
		&cli.StringFlag{Name: "jump", EnvVars: []string{"ROLLOUT_SSH_JUMP"}, Usage: "bastion(s) to reach every host through: [user@]host[:port][,...]"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", EnvVars: []string{"ROLLOUT_OUTPUT"}, Usage: "text or json"},
	}
}

// applyFlags applies flags and ROLLOUT_* variables to one app's config
// and checks it again.
func applyFlags(c *cli.Context, cfg *deployer.Config) error {
	if c.IsSet("hosts") {
		cfg.Hosts = splitList(c.StringSlice("hosts"))
	}
	if err := applyConnFlags(c, cfg); err != nil {
		return err
	}
	if c.IsSet("parallel") {
		cfg.Parallel = c.Int("parallel")
	}
	if c.IsSet("min-serving") {
		cfg.SetMinServing(c.Int("min-serving"))
	}
	if c.IsSet("max-unavailable") {
		a, err := deployer.ParseAmount(c.String("max-unavailable"))
		if err != nil {
			return usageError{fmt.Errorf("--max-unavailable: %w", err)}
		}
		cfg.Strategy.MaxUnavailable = a
	}
	if c.IsSet("max-surge") {
		a, err := deployer.ParseAmount(c.String("max-surge"))
		if err != nil {
			return usageError{fmt.Errorf("--max-surge: %w", err)}
		}
		cfg.Strategy.MaxSurge = a
	}
	if c.Bool("pause") {
		cfg.Strategy.PauseAfterCanary = true
		if len(cfg.Strategy.Batches) == 0 {
			cfg.Strategy.Batches = pauseBatches
		}
	}
	if c.Bool("no-probe") {
		cfg.Probe.Enabled = false
	}
	if c.IsSet("drain-timeout") {
		cfg.DrainTimeout = c.Duration("drain-timeout")
	}
	if c.IsSet("health-timeout") {
		cfg.Health.Timeout = c.Duration("health-timeout")
	}
	if err := cfg.ValidateSet(c.String("config"), func(key string) string { return flagFor(c, key) }); err != nil {
		return usageError{err}
	}
	return nil
}

// fromConfig is a flag's default: the config's key, or what rollout uses
// without it.
func fromConfig(key string, def any) string {
	return fmt.Sprintf("%s in the config, else %v", key, def)
}

// flagKeys are the config keys the override flags set.
var flagKeys = map[string]string{
	"hosts":                    "hosts",
	"parallel":                 "parallel",
	"min_serving":              "min-serving",
	"strategy.max_unavailable": "max-unavailable",
	"strategy.max_surge":       "max-surge",
	"drain_timeout":            "drain-timeout",
	"health.timeout":           "health-timeout",
	"ssh.user":                 "user",
	"ssh.port":                 "ssh-port",
	"ssh.key":                  "key",
	"ssh.known_hosts":          "known-hosts",
	"ssh.config":               "ssh-config",
	"ssh.jump":                 "jump",
}

// flagFor names the flag (and its variable) that set key, "" when the
// config file did.
func flagFor(c *cli.Context, key string) string {
	name, ok := flagKeys[key]
	if !ok || !c.IsSet(name) {
		return ""
	}
	for _, f := range c.Command.Flags {
		if f.Names()[0] != name {
			continue
		}
		if ev, ok := f.(interface{ GetEnvVars() []string }); ok && len(ev.GetEnvVars()) > 0 {
			return fmt.Sprintf("--%s (or %s)", name, ev.GetEnvVars()[0])
		}
	}
	return "--" + name
}

// checkOutputFlag checks --output.
func checkOutputFlag(c *cli.Context) error {
	if !slices.ContainsFunc(c.Command.Flags, func(f cli.Flag) bool { return f.Names()[0] == "output" }) {
		return nil // exec: the command's output is its own
	}
	switch c.String("output") {
	case "text", "json":
		return nil
	}
	return usageError{fmt.Errorf("--output must be text or json, got %q", c.String("output"))}
}

// applyConnFlags applies the flags and ROLLOUT_* variables that say how to
// reach the hosts, and resolves the SSH user as ssh does.
func applyConnFlags(c *cli.Context, cfg *deployer.Config) error {
	if c.IsSet("user") {
		if cfg.Setup.DeployUser == "" {
			// The helper stays the file's user's (rollout setup --user root).
			cfg.Setup.DeployUser = cfg.SSH.User
		}
		cfg.SSH.User = c.String("user")
	}
	if c.IsSet("ssh-config") {
		cfg.SSH.ConfigFile = c.String("ssh-config")
	}
	if c.IsSet("jump") {
		cfg.SSH.Jump = c.String("jump")
	}
	if cfg.SSH.User == "" {
		// As ssh does: the ssh config's User for the hosts, or the current
		// user. Hosts with different users leave it unset (sudo: auto then
		// uses sudo -n, which works for root too).
		d, err := newSSHDialer(cfg)
		if err != nil {
			return usageError{err}
		}
		users := map[string]bool{}
		for _, h := range cfg.Hosts {
			u := d.get(h, "User")
			if u == "" {
				u = currentUser()
			}
			users[u] = true
		}
		if len(users) == 1 {
			for u := range users {
				cfg.SSH.User = u
			}
		}
	}
	if c.IsSet("ssh-port") {
		cfg.SSH.Port = c.Int("ssh-port")
	}
	if c.IsSet("key") {
		cfg.SSH.Key = c.String("key")
	}
	if c.IsSet("known-hosts") {
		cfg.SSH.KnownHosts = c.String("known-hosts")
	}
	if c.IsSet("accept-new") {
		cfg.SSH.AcceptNew = c.Bool("accept-new")
	}
	return nil
}

func releaseVersion(c *cli.Context) (string, error) {
	v := c.String("version")
	if v == "" {
		return "", usageError{errors.New("--version (or ROLLOUT_VERSION) is required: the release being deployed")}
	}
	if strings.ContainsAny(v, "\x00\n") || len(v) > 200 {
		return "", usageError{fmt.Errorf("--version %q: must be one line of at most 200 bytes", v)}
	}
	return v, nil
}

func planAction(c *cli.Context) error {
	pr, apps, err := loadApps(c)
	if err != nil {
		return err
	}
	v, err := releaseVersion(c)
	if err != nil {
		return err
	}
	if err := checkArtifactFlag(c, apps); err != nil {
		return err
	}
	return eachApp(c, pr, apps, 1, true, func(cfg *deployer.Config, out appOutput) error {
		// The artifact is checked (and packed) as the deploy would: a plan
		// of a release that cannot ship is refused, not printed.
		art, cleanup, err := packArtifact(c, cfg)
		if err != nil {
			return err
		}
		defer cleanup()
		var preview []deployer.Preview
		if c.Bool("live") {
			sum := ""
			if art != nil {
				sum = art.SHA256
			}
			if preview, err = previewHosts(c, cfg, v, sum); err != nil {
				return err
			}
		}
		p := deployer.BuildPlanFor(cfg, v, preview)
		switch {
		case c.String("output") == "json":
			err = p.WriteJSON(out.stdout)
		case c.Bool("scripts"):
			err = p.WriteScripts(out.stdout)
		default:
			err = p.WriteText(out.stdout)
		}
		if err != nil {
			return err
		}
		// Hosts --live could not read: what the deploy would do there is
		// unknown (exit 3, as the deploy's preflight would).
		var unread []error
		for _, h := range preview {
			if err := h.Err(); err != nil {
				unread = append(unread, err)
			}
		}
		if len(unread) > 0 {
			return fmt.Errorf("plan --live: what the deploy would do is unknown on %d host(s):\n%w", len(unread), errors.Join(unread...))
		}
		return nil
	})
}

func deployAction(c *cli.Context) error {
	if c.Bool("dry-run") {
		return planAction(c)
	}
	pr, apps, err := loadApps(c)
	if err != nil {
		return err
	}
	v, err := releaseVersion(c)
	if err != nil {
		return err
	}
	if err := checkArtifactFlag(c, apps); err != nil {
		return err
	}
	return eachApp(c, pr, apps, pr.AppsParallel, false, func(cfg *deployer.Config, o appOutput) error {
		art, sec, cleanup, err := releaseInputs(c, cfg)
		if err != nil {
			return err
		}
		defer cleanup()
		return runNotified(c, cfg, v, o, func(d *deployer.Deployer) (*deployer.Report, error) {
			d.Artifact, d.Force, d.Secrets = art, c.Bool("force"), sec
			return d.Deploy(c.Context)
		})
	})
}

// releaseInputs are what a deploy ships, checked before anything connects:
// the artifact, packed (release:), and the secrets, opened with their
// required names (and the artifact's .env.example's) present; the caller
// removes the packed artifact.
func releaseInputs(c *cli.Context, cfg *deployer.Config) (*deployer.Artifact, *deployer.Secrets, func(), error) {
	art, cleanup, err := packArtifact(c, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	var example []byte
	if art != nil {
		example = art.EnvExample
	}
	sec, err := deploySecrets(c, cfg, example)
	if err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	return art, sec, cleanup, nil
}

// runNotified runs one operation that changes what the fleet runs
// (deploy, rollback, promote) with a Deployer for cfg, prints its report
// and posts it to the chat webhook (notify:).
func runNotified(c *cli.Context, cfg *deployer.Config, version string, o appOutput, run func(d *deployer.Deployer) (*deployer.Report, error)) error {
	d, out, err := newDeployer(c, cfg, version, o)
	if err != nil {
		return err
	}
	rep, err := run(d)
	out.report(rep, err)
	notifyDeploy(c.Context, cfg, rep, err, os.Getenv, o.stderr)
	return err
}

// newDeployer is a Deployer for cfg whose events go to a printer.
func newDeployer(c *cli.Context, cfg *deployer.Config, version string, o appOutput) (*deployer.Deployer, *printer, error) {
	out := newPrinter(o.stdout, o.stderr, outputOptionsFor(c.String("output"), cfg.Parallel, c.App.ErrWriter, os.Getenv))
	out.app = o.app
	connect, err := connector(cfg)
	if err != nil {
		return nil, nil, err
	}
	return &deployer.Deployer{
		Config:         cfg,
		Version:        version,
		Connect:        connect,
		Events:         out.event,
		Stdout:         o.stderr,
		Stderr:         o.stderr,
		BreakStaleLock: c.Bool("break-stale-lock"),
	}, out, nil
}
