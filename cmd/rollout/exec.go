package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/rollout-dev/rollout/deployer"
	"github.com/rollout-dev/rollout/sshexec"
)

// commandExit is a command rollout exec ran that did not exit 0: rollout
// exits with its status (on one host, saying nothing of its own).
type commandExit struct {
	host string
	code int
}

func (e commandExit) Error() string { return fmt.Sprintf("%s: the command exited %d", e.host, e.code) }

// hostFailures are exec --all's failures, a line each; the first one, in
// the hosts' order, gives the exit code.
type hostFailures []error

func (f hostFailures) Error() string {
	lines := make([]string, len(f))
	for i, err := range f {
		lines[i] = err.Error()
	}
	return strings.Join(lines, "\n")
}
func (f hostFailures) Unwrap() error { return f[0] }

// execCommand runs a one-off command in the current release.
func execCommand() *cli.Command {
	flags := slices.DeleteFunc(connFlags(), func(f cli.Flag) bool { return f.Names()[0] == "output" })
	return &cli.Command{
		Name:      "exec",
		Usage:     "run a command once in the current release, as the app's user, with the app's env (a console with -t)",
		ArgsUsage: "-- COMMAND [ARG...]",
		Description: `Runs COMMAND on one host (the first, or --host), or with --all on each host
in turn, as setup.user in the current release's directory (--release ID
for another; without release: the app's directory), with the env its
instances get: setup.env_file, then the release's secrets. The command's
arguments reach it as given (no shell reads them on the host: for one, run
sh -c '...'). Its output is its own; rollout exits with its exit status
(127: no such command), or 2 or 3 (and says why) when it could not run it.
With -t it gets a terminal (a console, a REPL): Ctrl-C goes to it, and the
window's size follows yours. If rollout is interrupted (Ctrl-C without -t,
SIGTERM), the command is stopped on the host, not left running. Each run
is recorded in the host's history (who, when, the command; never the env).
The deploy lock is not taken: a console during a deploy is fine.

Examples:
   rollout exec -- node -v
   rollout exec -t -- node            # a REPL in the app's env
   rollout exec --all -- sh -c 'df -h /srv'
   rollout exec --host 10.0.0.5 --release 20240501120000-v1.2.3 -- cat VERSION`,
		Flags: append(flags,
			&cli.StringFlag{Name: "host", Usage: "the host to run on (one of the config's; default: the first)"},
			&cli.BoolFlag{Name: "all", Usage: "run on every host, one after another, each line of output prefixed with its host"},
			&cli.StringFlag{Name: "release", Usage: "the release to run in (an ID from rollout releases; default: the host's current one)"},
			&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}, Usage: "give the command a terminal (needs one here), for a console or a REPL"}),
		OnUsageError: onUsageError,
		Action:       execAction,
	}
}

func execAction(c *cli.Context) error {
	_, apps, err := loadApps(c)
	if err != nil {
		return err
	}
	if len(apps) != 1 {
		return usageError{fmt.Errorf("exec runs in one app: pick it with --app (%s has %d)", c.String("config"), len(apps))}
	}
	cfg := apps[0]
	o := deployer.ExecOptions{Release: c.String("release"), Command: c.Args().Slice(), Holder: deployer.NewLockInfo("exec", "")}
	if err := o.Validate(cfg); err != nil {
		return usageError{err}
	}
	hosts := cfg.Hosts[:1]
	switch h := c.String("host"); {
	case h != "" && c.Bool("all"):
		return usageError{errors.New("--host and --all: give one")}
	case h != "":
		if !slices.Contains(cfg.Hosts, h) {
			return usageError{fmt.Errorf("--host %s is not one of the hosts (%s)", h, strings.Join(cfg.Hosts, ", "))}
		}
		hosts = []string{h}
	case c.Bool("all"):
		hosts = cfg.Hosts
	}
	stdin, _ := c.App.Reader.(*os.File)
	if stdin == nil {
		stdin = os.Stdin
	}
	if c.Bool("tty") {
		if len(hosts) > 1 {
			return usageError{errors.New("--tty runs on one host: drop --all or pick one with --host")}
		}
		if !term.IsTerminal(int(stdin.Fd())) {
			return usageError{errors.New("--tty needs a terminal on stdin (run it from one, or drop -t)")}
		}
	}
	connect, err := connector(cfg)
	if err != nil {
		return err
	}
	var in io.Reader
	if c.Bool("tty") || !term.IsTerminal(int(stdin.Fd())) {
		in = stdin // a terminal's input goes to a command only with -t
	}
	var all []byte // with --all, stdin read once for every host
	if in != nil && len(hosts) > 1 {
		if all, err = io.ReadAll(io.LimitReader(in, maxAllStdin+1)); err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
		if len(all) > maxAllStdin {
			return usageError{fmt.Errorf("--all sends stdin to every host, read to its end first: at most %d MiB of it (run it host by host with --host)", maxAllStdin>>20)}
		}
	}
	var failed hostFailures
	for _, host := range hosts {
		o := o
		o.Stdin, o.Stdout, o.Stderr = in, c.App.Writer, c.App.ErrWriter
		if all != nil {
			o.Stdin = bytes.NewReader(all)
		}
		var flush []*deployer.PrefixWriter
		if len(hosts) > 1 {
			out, errOut := deployer.NewLineWriter(c.App.Writer).Prefixed(host+" | "), deployer.NewLineWriter(c.App.ErrWriter).Prefixed(host+" | ")
			o.Stdout, o.Stderr, flush = out, errOut, []*deployer.PrefixWriter{out, errOut}
		}
		code, err := execOn(c, cfg, connect, host, o)
		for _, f := range flush {
			f.Flush()
		}
		switch {
		case err != nil && c.Context.Err() != nil:
			return err
		case err != nil:
			failed = append(failed, err)
		case code != 0:
			failed = append(failed, commandExit{host, code})
		}
	}
	switch {
	case len(failed) == 0:
		return nil
	case len(hosts) == 1:
		return failed[0]
	}
	return failed
}

// maxAllStdin bounds the stdin exec --all reads into memory to send it to
// every host.
const maxAllStdin = 64 << 20

// execOn runs o on one host, with the local terminal in raw mode for -t.
func execOn(c *cli.Context, cfg *deployer.Config, connect func(context.Context, string) (deployer.Conn, error), host string, o deployer.ExecOptions) (int, error) {
	conn, err := connect(c.Context, host)
	if err != nil {
		return 0, &deployer.UnreachableError{Host: host, Err: err}
	}
	defer conn.Close()
	if c.Bool("tty") {
		f := o.Stdin.(*os.File)
		t, restore, err := rawTerminal(f)
		if err != nil {
			return 0, err
		}
		defer restore()
		o.Terminal = t
	}
	res, err := deployer.Exec(c.Context, cfg, host, conn, o)
	return res.Code, err
}

// rawTerminal puts the terminal f in raw mode (so Ctrl-C and every key
// reach the remote command) and follows its window's size.
func rawTerminal(f *os.File) (*sshexec.Terminal, func(), error) {
	fd := int(f.Fd())
	w, h, err := term.GetSize(fd)
	if err != nil {
		w, h = 80, 24
	}
	t := &sshexec.Terminal{Term: os.Getenv("TERM"), Width: w, Height: h}
	if t.Term == "" {
		t.Term = "xterm"
	}
	state, err := term.MakeRaw(fd)
	if err != nil {
		return nil, nil, fmt.Errorf("--tty: %w", err)
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	resize := make(chan [2]int, 1)
	done := make(chan struct{})
	go func() {
		defer close(resize)
		for {
			select {
			case <-done:
				return
			case <-winch:
				if w, h, err := term.GetSize(fd); err == nil {
					select {
					case resize <- [2]int{w, h}:
					default: // the last size wins
					}
				}
			}
		}
	}()
	t.Resize = resize
	return t, func() {
		signal.Stop(winch)
		close(done)
		_ = term.Restore(fd, state)
	}, nil
}
