package deployer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
)

// ExecOptions are what `rollout exec` runs on a host and how.
type ExecOptions struct {
	// Release is the release to run in (with release:); "" is the
	// host's current one.
	Release string
	// Command is the program and its arguments, given to it as they are
	// (no shell reads them on the host).
	Command []string
	// Terminal, if not nil, gives the command a terminal on the host.
	Terminal *sshexec.Terminal
	Stdin    io.Reader // nil: none
	Stdout   io.Writer
	Stderr   io.Writer
	// Holder says who runs it, for the host's history.
	Holder LockInfo
}

// ExecResult is how a command Exec ran ended.
type ExecResult struct {
	Release string // the release it ran in; "" without release:
	Code    int    // its exit status
}

// Attacher runs a command with stdin and, if asked, a terminal
// (*sshexec.Client does).
type Attacher interface {
	Attach(ctx context.Context, cmd string, t *sshexec.Terminal, stdin io.Reader, stdout, stderr io.Writer) error
}

// maxExecArgs bounds a command's length: what one SSH exec request holds
// with room to spare.
const maxExecArgs = 64 << 10

// Validate checks the options against cfg, before anything connects.
func (o ExecOptions) Validate(cfg *Config) error {
	if len(o.Command) == 0 || o.Command[0] == "" {
		return errors.New("no command: give it after --, e.g. rollout exec -- node -v")
	}
	n := 0
	for _, a := range o.Command {
		if strings.ContainsRune(a, 0) {
			return errors.New("the command holds a NUL byte")
		}
		n += len(a) + 1
	}
	if n > maxExecArgs {
		return fmt.Errorf("the command is %d bytes long; at most %d", n, maxExecArgs)
	}
	if o.Release != "" {
		if cfg.Release == nil {
			return errors.New("--release needs the release: section (without it the app has one directory, and exec runs there)")
		}
		if err := ValidReleaseID(o.Release); err != nil {
			return fmt.Errorf("--release: %w", err)
		}
	}
	return nil
}

// Exec runs o.Command once on host, as the app's user, in the release (or
// the app's directory) with the app's env, and records it in the host's
// history (who, when, the command; never the env). The command's exit
// status is in the result; an error means it could not run, or was cut
// short (ctx ended: it is then stopped on the host, not left running).
func Exec(ctx context.Context, cfg *Config, host string, conn Conn, o ExecOptions) (ExecResult, error) {
	a, ok := conn.(Attacher)
	if !ok {
		return ExecResult{}, fmt.Errorf("%s: this connection cannot run a command with input", host)
	}
	r := newSSHRemote(cfg, conn)
	s := cfg.setupDefaults()
	dir := strings.TrimRight(s.workDir, "/")
	var res ExecResult
	if cfg.Release != nil {
		id, err := execRelease(ctx, r, o.Release)
		if err != nil {
			return res, &StepError{Host: host, Step: StepPreflight, Err: err}
		}
		res.Release, dir = id, r.releaseRoot()+"/releases/"+id
	}
	unit := "rollout-exec-" + cfg.App + "-" + execToken()
	mode := "pipe"
	if o.Terminal != nil {
		mode = "tty"
	}
	cmd := func(mode string) string { return r.cmdExec(dir, res.Release, unit, mode, o.Command) }
	// What could keep the command from running (sudo, the helper, the
	// directory) is found first, apart from the command's own output and
	// exit status.
	if _, err := r.run(ctx, "exec", cmd("check"), nil); err != nil {
		if exitCode(err) == exitNoRelease {
			err = errors.New(scriptMessage(err))
		}
		return res, &StepError{Host: host, Step: StepPreflight, Err: err}
	}
	t0 := time.Now()
	err := a.Attach(ctx, cmd(mode), o.Terminal, o.Stdin, o.Stdout, o.Stderr)
	var ee *sshexec.ExitError
	switch {
	case ctx.Err() != nil:
		// Interrupted: stop the command on the host, with time of its own.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		defer cancel()
		if _, serr := r.run(sctx, "stop "+unit, r.cmdExecStop(unit), nil); serr != nil {
			err = fmt.Errorf("%w; stopping it on the host failed (systemctl stop %s there): %v", ctx.Err(), unit, serr)
		} else {
			err = fmt.Errorf("%w: stopped it on the host", ctx.Err())
		}
		res.Code = -1
	case errors.As(err, &ee) && ee.Signal == "":
		res.Code, err = ee.Code, nil
	case errors.As(err, &ee):
		// Its output was shown as it came: not again, nor the script.
		res.Code, err = -1, fmt.Errorf("the command was killed by signal %s", ee.Signal)
	case err != nil:
		res.Code = -1
	}
	e := HistoryEntry{Time: t0.UTC(), User: o.Holder.User, From: o.Holder.From, RunURL: o.Holder.RunURL,
		Op: "exec", Release: res.Release, Outcome: HostOK, Duration: time.Since(t0), Command: sshexec.QuoteCommand(o.Command...)}
	switch {
	case ctx.Err() != nil:
		e.Outcome, e.Error = HostInterrupted, err.Error()
	case err != nil:
		e.Outcome, e.Error = HostFailed, err.Error()
	case res.Code != 0:
		e.Outcome, e.Error = HostFailed, fmt.Sprintf("exit %d", res.Code)
	}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	if herr := r.AppendHistory(hctx, e); herr != nil && err == nil {
		err = fmt.Errorf("the command ran (exit %d), but %w", res.Code, herr)
	}
	if err != nil {
		return res, fmt.Errorf("%s: %w", host, err)
	}
	return res, nil
}

// cmdExec runs command in dir (release id's, or the app's: id "") as
// the app's user, as the transient unit unit; mode is pipe, tty or check.
func (r sshRemote) cmdExec(dir, id, unit, mode string, command []string) string {
	s := r.cfg.setupDefaults()
	return script("exec", true, r.priv, append([]string{dir, id, s.User, s.Group, s.EnvFile, unit, mode}, command...)...)
}

func (r sshRemote) cmdExecStop(unit string) string { return script("exec-stop", true, r.priv, unit) }

// execRelease is the release exec runs in: want if the host has it, else
// the host's current one.
func execRelease(ctx context.Context, r sshRemote, want string) (string, error) {
	st, err := r.ReleaseState(ctx, nil, nil)
	if err != nil {
		return "", err
	}
	if want == "" {
		if st.current == "" {
			return "", fmt.Errorf("no current release in %s (nothing deployed there yet)", r.releaseRoot())
		}
		return st.current, nil
	}
	if !st.present[want] {
		have := make([]string, 0, len(st.present))
		for id := range st.present {
			have = append(have, id)
		}
		slices.Sort(have)
		return "", fmt.Errorf("release %s is not in %s/releases (there: %s)", want, r.releaseRoot(), orNone(have))
	}
	return want, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// execToken names one exec's unit.
func execToken() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
