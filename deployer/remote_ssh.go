package deployer

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
)

// sshRemote is a remote over one SSH connection. Its cmd* methods build
// every command it runs, and the plan prints exactly those.
type sshRemote struct {
	cfg  *Config
	conn Conn
	priv privilege
	// haproxy are the HAProxy runtime API sessions kept open for the run
	// (remote_haproxy.go).
	haproxy *haproxySessions
}

var _ remote = sshRemote{}

func newSSHRemote(cfg *Config, conn Conn) sshRemote {
	return sshRemote{cfg: cfg, conn: conn, priv: cfg.privilege(), haproxy: &haproxySessions{}}
}

func (r sshRemote) units(ports []int) []string {
	units := make([]string, len(ports))
	for i, p := range ports {
		units[i] = r.cfg.UnitName(p)
	}
	return units
}

func (r sshRemote) cmdCores() string { return "nproc" }

func (r sshRemote) cmdPreflight(ports []int) string {
	return script("preflight", true, r.priv, append([]string{"", ""}, r.units(ports)...)...)
}

func (r sshRemote) cmdNginxCheck(n NginxConfig) string {
	return script("preflight", true, r.priv, n.TestCommand, n.UpstreamFile)
}

func (r sshRemote) cmdInspect(ports []int) string {
	return script("inspect", false, r.priv, append([]string{unitProps + ",MemoryCurrent", ""}, r.units(ports)...)...)
}

// cmdSurgeCheck reads what a surge onto spare would meet; as root unless
// privileged commands go through the helper (then ss shows only the
// deploy user's processes).
func (r sshRemote) cmdSurgeCheck(spare, live []int) string {
	return script("surge-check", r.priv.helper == "", r.priv, append([]string{portWords(spare), strings.Join(r.units(spare), " ")}, r.units(live)...)...)
}

func (r sshRemote) cmdReadUpstream(n NginxConfig) string {
	return "cat -- " + sshexec.Quote(n.UpstreamFile)
}

// cmdWriteUpstream writes n's upstream file; with waitHere it then waits
// for the drained ports' connections on this host ("-": they are counted
// on their own host, WaitIdle).
func (r sshRemote) cmdWriteUpstream(n NginxConfig, drained []int, waitHere bool) string {
	timeout := "-"
	if waitHere {
		timeout = strconv.FormatInt(r.cfg.DrainTimeout.Milliseconds(), 10)
	}
	args := []string{n.UpstreamFile, n.TestCommand, n.ReloadCommand, n.PIDFile, timeout}
	for _, p := range drained {
		args = append(args, strconv.Itoa(p))
	}
	return script("write-upstream", true, r.priv, args...)
}

// cmdWaitIdle counts the ports' connections (write-upstream.sh without a
// file), which needs no root.
func (r sshRemote) cmdWaitIdle(ports []int) string {
	args := []string{"", "", "", "", strconv.FormatInt(r.cfg.DrainTimeout.Milliseconds(), 10)}
	for _, p := range ports {
		args = append(args, strconv.Itoa(p))
	}
	return script("write-upstream", false, r.priv, args...)
}

func (r sshRemote) cmdUnitState(port int) string {
	return sshexec.QuoteCommand("systemctl", "show", "-p", unitProps, "--", r.cfg.UnitName(port))
}

func (r sshRemote) cmdRestart(port int, logs []string, release string) string {
	return r.cmdRestartUnit(r.cfg.UnitName(port), strconv.Itoa(port), logs, release)
}

// cmdRestartUnit restarts unit, first pointing its link (instances/LINK)
// at release when one is given.
func (r sshRemote) cmdRestartUnit(unit, link string, logs []string, release string) string {
	args := []string{unit, unitProps, "", "", ""}
	if release != "" {
		args[2], args[3], args[4] = r.releaseRoot(), link, release
	}
	return script("restart", true, r.priv, append(args, logs...)...)
}

func (r sshRemote) cmdWorkerStates(units []string) string {
	return sshexec.QuoteCommand(append([]string{"systemctl", "show", "-p", unitProps + ",UnitFileState", "--"}, units...)...)
}

func (r sshRemote) cmdUnitFiles(units []string) string {
	return script("unit-files", false, r.priv, units...)
}

func (r sshRemote) cmdDiscover() string { return script("discover", false, privilege{}) }

func (r sshRemote) DiscoverHost(ctx context.Context) ([]byte, error) {
	res, err := r.run(ctx, "discover", r.cmdDiscover(), nil)
	return res.Stdout, err
}

// UnitFiles reads each unit's file, by unit.
func (r sshRemote) UnitFiles(ctx context.Context, units []string) (map[string]string, error) {
	res, err := r.run(ctx, "read unit files", r.cmdUnitFiles(units), nil)
	if err != nil {
		return nil, err
	}
	parts := sections(res.Stdout)
	out := map[string]string{}
	for _, u := range units {
		out[u] = parts[u]
	}
	return out, nil
}

func (r sshRemote) cmdAppOutput(unit string, mark restartMark, lines int) string {
	since := ""
	if mark.clock > 0 {
		since = fmt.Sprintf("%d.%06d", mark.clock/1e6, mark.clock%1e6)
	}
	files := make([]string, 0, len(mark.offsets))
	for f := range mark.offsets {
		files = append(files, f)
	}
	sort.Strings(files)
	var offsets []string
	for _, f := range files {
		offsets = append(offsets, strconv.FormatInt(mark.offsets[f], 10), f)
	}
	return r.appOutputCommand(unit, lines, since, offsets)
}

// appOutputCommand runs app-output.sh; offsets are pairs of a byte offset
// and a log file.
func (r sshRemote) appOutputCommand(unit string, lines int, since string, offsets []string) string {
	args := append([]string{unit, strconv.Itoa(lines), since}, offsets...)
	return script("app-output", true, r.priv, args...)
}

func (r sshRemote) cmdIsInstance(port int) string {
	return script("is-instance", false, r.priv, r.cfg.UnitName(port))
}

func (r sshRemote) cmdStart(ports ...int) string {
	units := r.units(ports)
	return r.priv.command("start", units, append([]string{"systemctl", "enable", "--no-reload", "--now", "--"}, units...))
}

func (r sshRemote) cmdEnable(ports ...int) string {
	units := r.units(ports)
	return r.priv.command("enable", units, append([]string{"systemctl", "enable", "--no-reload", "--"}, units...))
}

func (r sshRemote) cmdStop(ports ...int) string {
	units := r.units(ports)
	// A unit stopped after it failed (a new instance that crashed) would
	// stay "failed" in systemctl --failed: its failure was reported.
	return r.priv.command("stop", units, append([]string{"sh", "-c", stopUnits, "rollout-stop"}, units...))
}

// stopUnits stops and disables the units "$@" (at once) and clears their
// failed states. Enabling and disabling a template's instance only adds
// or removes its link in the target's .wants: systemd reads those at
// boot, and no daemon-reload is needed (--no-reload; a reload costs
// hundreds of milliseconds of systemd's CPU, and blocks its other jobs).
const stopUnits = `systemctl disable --no-reload --now -- "$@" && { systemctl reset-failed -- "$@" 2>/dev/null || true; }`

func (r sshRemote) cmdHook(command string, env []string) string {
	return "env " + sshexec.QuoteCommand(env...) + " sh -c " + sshexec.Quote(command)
}

func (r sshRemote) lockDir() string {
	return strings.TrimRight(r.cfg.StateDir, "/") + "/" + r.cfg.App
}

func (r sshRemote) historyFile() string { return r.lockDir() + "/history.jsonl" }

func (r sshRemote) cmdAcquireLock(breakStale bool, takeOver string) string {
	args := []string{r.lockDir(), strconv.Itoa(int(r.cfg.LockStaleAfter / time.Second)), strconv.FormatBool(breakStale)}
	if takeOver != "" {
		args = append(args, takeOver)
	}
	return script("lock-acquire", true, r.priv, args...)
}

func (r sshRemote) cmdRefreshLock(token string) string {
	return script("lock-refresh", true, r.priv, r.lockDir(), token)
}

func (r sshRemote) cmdReleaseLock(token string) string {
	return script("lock-release", true, r.priv, r.lockDir(), token)
}

func (r sshRemote) cmdLockStatus() string {
	return script("lock-status", true, r.priv, r.lockDir())
}

func (r sshRemote) cmdAppendHistory() string {
	return script("history-append", true, r.priv, r.historyFile())
}

func (r sshRemote) cmdReadHistory(n int) string {
	return script("history-read", true, r.priv, r.historyFile(), strconv.Itoa(n))
}

// run runs a command. A failure names what it was doing (not the whole
// script) and, when sudo refused, says what to do.
func (r sshRemote) run(ctx context.Context, what, cmd string, stdin io.Reader) (sshexec.Result, error) {
	res, err := r.conn.Run(withOp(ctx, what), cmd, stdin)
	var ee *sshexec.ExitError
	switch {
	case errors.As(err, &ee) && r.priv.helper != "" && (ee.Code == exitHelperStale || ee.Code == exitRefused):
		err = fmt.Errorf("%s: %s", what, scriptMessage(err))
	case errors.As(err, &ee):
		short := *ee
		short.Cmd = what
		err = explainRemote(&short, r.cfg)
	case err != nil:
		err = fmt.Errorf("%s: %w", what, err)
	}
	return res, err
}

// exitCode is the remote exit code of err, or -1.
func exitCode(err error) int {
	var ee *sshexec.ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return -1
}

// sudoRefusals are what sudo -n says when it will not run a command; its
// warnings ("unable to resolve host") are not refusals.
var sudoRefusals = []string{"a password is required", "a terminal is required", "no tty present",
	"is not in the sudoers file", "is not allowed to execute", "you must have a tty", "not allowed to run sudo"}

// explainRemote turns a sudo refusal into a message that says what to do.
func explainRemote(err error, cfg *Config) error {
	var ee *sshexec.ExitError
	if errors.As(err, &ee) && ee.Code == 1 && strings.Contains(ee.Stderr, "sudo") &&
		slices.ContainsFunc(sudoRefusals, func(s string) bool { return strings.Contains(ee.Stderr, s) }) {
		switch {
		case cfg.UsesHelper() && cfg.rootSetup:
			return fmt.Errorf("sudo -n refused for user %q: rollout setup installs the helper and needs root; with sudo: helper the deploy user may run only the helper: run setup as root or an admin (rollout setup --user root): %w", cfg.SSH.User, err)
		case cfg.UsesHelper():
			return fmt.Errorf("sudo -n refused %s for user %q: install the helper and its sudoers file with rollout setup (as root: rollout setup --user root): %w", cfg.HelperPath(), cfg.SSH.User, err)
		}
		return fmt.Errorf("sudo -n refused for user %q (rollout needs passwordless sudo for systemctl, nginx and the upstream file, or connect as root with sudo: false): %w", cfg.SSH.User, err)
	}
	return err
}

func (r sshRemote) Cores(ctx context.Context) (int, error) {
	res, err := r.run(ctx, "nproc", r.cmdCores(), nil)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
	if err != nil || n < 1 {
		return 0, fmt.Errorf("nproc said %q", res.Stdout)
	}
	return n, nil
}

func (r sshRemote) Preflight(ctx context.Context, ports []int) error {
	_, err := r.run(ctx, "preflight", r.cmdPreflight(ports), nil)
	return scriptError(err)
}

func (r sshRemote) NginxCheck(ctx context.Context, n NginxConfig) ([]byte, error) {
	res, err := r.run(ctx, "check nginx", r.cmdNginxCheck(n), nil)
	return res.Stdout, scriptError(err)
}

// scriptError is preflight.sh's error: its own words are the headline;
// sudo's warnings before them (e.g. "unable to resolve host") are not.
func scriptError(err error) error {
	switch exitCode(err) {
	case exitUnitMissing, exitNginxBroken, exitUpstreamUnreadable:
		return errors.New(scriptMessage(err))
	}
	return err
}

// scriptMessage is what a script said on stderr: its last lines, after
// whatever sudo printed before it ran.
func scriptMessage(err error) string {
	var ee *sshexec.ExitError
	if !errors.As(err, &ee) {
		return err.Error()
	}
	var lines []string
	for _, l := range strings.Split(ee.Stderr, "\n") {
		if !strings.HasPrefix(l, "sudo: ") {
			lines = append(lines, l)
		}
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

func (r sshRemote) SurgeCheck(ctx context.Context, spare, live []int) (surgeCheck, error) {
	res, err := r.run(ctx, "read the spare ports and the memory", r.cmdSurgeCheck(spare, live), nil)
	if err != nil {
		return surgeCheck{}, err
	}
	return parseSurgeCheck(res.Stdout)
}

func (r sshRemote) Inspect(ctx context.Context, ports []int) (hostState, error) {
	res, err := r.run(ctx, "inspect", r.cmdInspect(ports), nil)
	if err != nil {
		return hostState{}, err
	}
	parts := sections(res.Stdout)
	if _, ok := parts["units"]; !ok {
		return hostState{}, fmt.Errorf("inspect: unexpected output %q", res.Stdout)
	}
	var st hostState
	if f := strings.Fields(parts["uptime"]); len(f) > 0 {
		if secs, err := strconv.ParseFloat(f[0], 64); err == nil {
			st.uptime = uint64(secs * 1e6)
		}
	}
	units, err := parseUnitStates(parts["units"])
	if err != nil {
		return st, fmt.Errorf("inspect: %w", err)
	}
	st.units = map[int]unitState{}
	for _, p := range ports {
		st.units[p] = units[r.cfg.UnitName(p)]
	}
	return st, nil
}

func (r sshRemote) cmdHAProxy(api haproxyAPI, op string, servers []string) string {
	args := []string{api.Socket, api.Backend, strconv.FormatInt(r.cfg.DrainTimeout.Milliseconds(), 10), op}
	return script("haproxy", true, r.priv, append(args, servers...)...)
}

// HAProxy runs op; a change (apply) goes over the runtime API session
// kept open for the run when there can be one, else (or when it fails to
// say what happened) through the script, which does the same.
func (r sshRemote) HAProxy(ctx context.Context, api haproxyAPI, op string, servers []string) ([]byte, error) {
	if op == "apply" {
		out, err := r.applyHAProxy(ctx, api, servers)
		if !errors.Is(err, errSessionUnusable) {
			if err != nil {
				err = fmt.Errorf("haproxy apply: %w", err)
			}
			return out, err
		}
	}
	// HAProxy down (stopped, or restarting: between its stop and its
	// start) during a deploy: tried again for a while. Not at the
	// preflight: nothing has changed yet, and the deploy stops there.
	deadline := time.Now().Add(haproxyDownWait)
	for {
		res, err := r.run(ctx, "haproxy "+op, r.cmdHAProxy(api, op, servers), nil)
		if op == "check" || exitCode(err) != exitHAProxyDown || time.Now().After(deadline) {
			if exitCode(err) == exitHAProxyDown && op != "check" {
				err = fmt.Errorf("%w (HAProxy down for %s)", err, haproxyDownWait)
			}
			return res.Stdout, err
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return res.Stdout, err
		}
	}
}

// haproxyDownWait is how long a change waits for HAProxy to answer again.
var haproxyDownWait = 5 * time.Second

func (r sshRemote) ReadUpstream(ctx context.Context, n NginxConfig) ([]byte, error) {
	res, err := r.run(ctx, "read "+n.UpstreamFile, r.cmdReadUpstream(n), nil)
	return res.Stdout, err
}

func (r sshRemote) WriteUpstream(ctx context.Context, n NginxConfig, have, next []byte, drained []int, waitHere bool) (drainWait, error) {
	sum := sha256.Sum256(have)
	stdin := bytes.NewReader(append([]byte(hex.EncodeToString(sum[:])+"\n"), next...))
	what := "update " + n.UpstreamFile
	res, err := r.run(ctx, "write-upstream", r.cmdWriteUpstream(n, drained, waitHere), stdin)
	if exitCode(err) == exitChanged {
		return drainWait{}, errUpstreamChanged
	}
	if err != nil {
		return drainWait{}, fmt.Errorf("%s: %w", what, err)
	}
	if len(drained) == 0 {
		return drainWait{}, nil
	}
	return parseDrainWait(what, res.Stdout)
}

func (r sshRemote) WaitIdle(ctx context.Context, ports []int) (drainWait, error) {
	const what = "wait for the requests in flight"
	res, err := r.run(ctx, what, r.cmdWaitIdle(ports), nil)
	if err != nil {
		return drainWait{}, fmt.Errorf("%s: %w", what, err)
	}
	return parseDrainWait(what, res.Stdout)
}

// parseDrainWait reads "drained MS" or "busy MS OPEN".
func parseDrainWait(what string, out []byte) (drainWait, error) {
	var status string
	var ms, open int
	fmt.Sscan(strings.TrimSpace(string(out)), &status, &ms, &open)
	if status != "drained" && status != "busy" {
		return drainWait{}, fmt.Errorf("%s: unexpected output %q", what, out)
	}
	return drainWait{waited: time.Duration(ms) * time.Millisecond, open: open}, nil
}

func (r sshRemote) UnitState(ctx context.Context, port int) (unitState, error) {
	res, err := r.run(ctx, "state of "+r.cfg.UnitName(port), r.cmdUnitState(port), nil)
	if err != nil {
		return unitState{}, err
	}
	states, err := parseUnitStates(string(res.Stdout))
	if err != nil {
		return unitState{}, err
	}
	return states[r.cfg.UnitName(port)], nil
}

func (r sshRemote) Restart(ctx context.Context, port int, logs []string, release string) (restartMark, error) {
	return r.restart(ctx, r.cfg.UnitName(port), r.cmdRestart(port, logs, release), logs)
}

func (r sshRemote) RestartWorker(ctx context.Context, unit string, logs []string, release string) (restartMark, error) {
	return r.restart(ctx, unit, r.cmdRestartUnit(unit, unit, logs, release), logs)
}

func (r sshRemote) WorkerStates(ctx context.Context, units []string) (map[string]unitState, error) {
	res, err := r.run(ctx, "state of the workers", r.cmdWorkerStates(units), nil)
	if err != nil {
		return nil, err
	}
	return parseUnitStates(string(res.Stdout))
}

// WorkerLogFiles reads the log files any units' unit files name (LogFiles
// too, by port).
func (r sshRemote) WorkerLogFiles(ctx context.Context, units []string) (map[string][]string, error) {
	parts, err := r.UnitFiles(ctx, units)
	if err != nil {
		return nil, err
	}
	logs := map[string][]string{}
	for _, u := range units {
		logs[u] = unitLogFiles(parts[u], u)
	}
	return logs, nil
}

// WorkerOutput is what any unit said since mark (AppOutput too, by port).
func (r sshRemote) WorkerOutput(ctx context.Context, unit string, mark restartMark, lines int) (string, error) {
	res, err := r.run(ctx, "app output", r.cmdAppOutput(unit, mark, lines), nil)
	if err != nil && len(res.Stdout) == 0 {
		return "", err
	}
	return string(res.Stdout), nil
}

// restart runs cmd, restart.sh for unit, and reads where its output starts
// and its state before and after.
func (r sshRemote) restart(ctx context.Context, unit, cmd string, logs []string) (restartMark, error) {
	res, err := r.run(ctx, "restart "+unit, cmd, nil)
	if exitCode(err) == exitNoRelease {
		return restartMark{}, errors.New(scriptMessage(err))
	}
	parts := sections(res.Stdout)
	mark := restartMark{offsets: map[string]int64{}}
	mark.clock, _ = strconv.ParseUint(strings.TrimSpace(parts["clock"]), 10, 64)
	for _, line := range strings.Split(parts["sizes"], "\n") {
		size, file, ok := strings.Cut(line, " ")
		if n, perr := strconv.ParseInt(size, 10, 64); ok && perr == nil {
			mark.offsets[file] = n
		}
	}
	for _, f := range logs {
		if _, ok := mark.offsets[f]; !ok {
			mark.offsets[f] = 0
		}
	}
	if err != nil {
		return mark, err
	}
	before, bok := parts["before"]
	after, aok := parts["after"]
	if !bok || !aok {
		return mark, fmt.Errorf("restart: unexpected output %q", res.Stdout)
	}
	b, berr := parseUnitStates(before)
	a, aerr := parseUnitStates(after)
	if err := errors.Join(berr, aerr); err != nil {
		return mark, fmt.Errorf("restart: %w", err)
	}
	mark.before, mark.after = b[unit], a[unit]
	return mark, nil
}

func (r sshRemote) LogFiles(ctx context.Context, ports []int) (map[int][]string, error) {
	byUnit, err := r.WorkerLogFiles(ctx, r.units(ports))
	if err != nil {
		return nil, err
	}
	logs := map[int][]string{}
	for _, p := range ports {
		logs[p] = byUnit[r.cfg.UnitName(p)]
	}
	return logs, nil
}

func (r sshRemote) AppOutput(ctx context.Context, port int, mark restartMark, lines int) (string, error) {
	return r.WorkerOutput(ctx, r.cfg.UnitName(port), mark, lines)
}

func (r sshRemote) IsInstance(ctx context.Context, port int) (bool, error) {
	res, err := r.run(ctx, "state of "+r.cfg.UnitName(port), r.cmdIsInstance(port), nil)
	if err != nil {
		return false, err
	}
	f := strings.Fields(string(res.Stdout))
	active := len(f) > 0 && f[0] != "inactive" && f[0] != "unknown"
	enabled := len(f) > 1 && f[1] == "enabled"
	return active || enabled, nil
}

func (r sshRemote) Start(ctx context.Context, ports ...int) error {
	_, err := r.run(ctx, "enable and start "+strings.Join(r.units(ports), " "), r.cmdStart(ports...), nil)
	return err
}

func (r sshRemote) Enable(ctx context.Context, ports ...int) error {
	_, err := r.run(ctx, "enable "+strings.Join(r.units(ports), " "), r.cmdEnable(ports...), nil)
	return err
}

func (r sshRemote) Stop(ctx context.Context, ports ...int) error {
	_, err := r.run(ctx, "stop and disable "+strings.Join(r.units(ports), " "), r.cmdStop(ports...), nil)
	return err
}

// Hook runs the user's command once, even over a link that reconnects:
// whether a command cut short ran is unknown.
func (r sshRemote) Hook(ctx context.Context, command string, env []string) (string, error) {
	run := r.conn.Run
	if o, ok := r.conn.(interface {
		RunOnce(context.Context, string, io.Reader) (sshexec.Result, error)
	}); ok {
		run = o.RunOnce
	}
	res, err := run(ctx, r.cmdHook(command, env), nil) // the user's command: its own words
	return string(res.Stdout) + string(res.Stderr), err
}

func (r sshRemote) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return r.conn.DialContext(ctx, network, addr)
}

// Alive asks the connection, when it can tell: a link says whether it
// reconnected; an *sshexec.Client only whether it is up.
func (r sshRemote) Alive(ctx context.Context) (bool, error) {
	switch c := r.conn.(type) {
	case interface {
		Alive(context.Context) (bool, error)
	}:
		return c.Alive(ctx)
	case interface{ Alive(context.Context) error }:
		return false, c.Alive(ctx)
	}
	return false, nil
}

func (r sshRemote) AcquireLock(ctx context.Context, info LockInfo, breakStale bool, takeOver string) (LockState, bool, error) {
	b, err := json.Marshal(info)
	if err != nil {
		return LockState{}, false, err
	}
	res, err := r.run(ctx, "lock-acquire", r.cmdAcquireLock(breakStale, takeOver), bytes.NewReader(append(b, '\n')))
	if err != nil {
		return LockState{}, false, fmt.Errorf("take the deploy lock in %s: %w", r.lockDir(), err)
	}
	st, ok, err := parseLockState(string(res.Stdout), r.cfg.LockStaleAfter)
	if err == nil && !ok && st.Holder != nil && st.Holder.Token == info.Token {
		// Taken by this holder before a lost connection hid it, and
		// asked again on the new one.
		return LockState{}, true, nil
	}
	return st, ok, err
}

func (r sshRemote) RefreshLock(ctx context.Context, token string) error {
	_, err := r.run(ctx, "lock-refresh", r.cmdRefreshLock(token), nil)
	if exitCode(err) == exitLockLost {
		return errLockLost
	}
	return err
}

func (r sshRemote) ReleaseLock(ctx context.Context, token string) error {
	_, err := r.run(ctx, "lock-release", r.cmdReleaseLock(token), nil)
	return err
}

func (r sshRemote) LockStatus(ctx context.Context) (LockState, error) {
	res, err := r.run(ctx, "lock-status", r.cmdLockStatus(), nil)
	if err != nil {
		return LockState{}, fmt.Errorf("read the deploy lock: %w", err)
	}
	st, _, err := parseLockState(string(res.Stdout), r.cfg.LockStaleAfter)
	return st, err
}

func (r sshRemote) AppendHistory(ctx context.Context, e HistoryEntry) error {
	e.Host = ""
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := r.run(ctx, "history-append", r.cmdAppendHistory(), bytes.NewReader(append(b, '\n'))); err != nil {
		return fmt.Errorf("append to the history %s: %w", r.historyFile(), err)
	}
	return nil
}

func (r sshRemote) ReadHistory(ctx context.Context, n int) ([]HistoryEntry, error) {
	res, err := r.run(ctx, "history-read", r.cmdReadHistory(n), nil)
	if err != nil {
		return nil, fmt.Errorf("read the history %s: %w", r.historyFile(), err)
	}
	var out []HistoryEntry
	for _, line := range strings.Split(string(res.Stdout), "\n") {
		var e HistoryEntry
		if strings.TrimSpace(line) == "" || json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

func (r sshRemote) drainedFile() string { return r.lockDir() + "/drained.json" }

func (r sshRemote) cmdDrained(op string) string {
	return script("drained", true, r.priv, r.drainedFile(), op)
}

func (r sshRemote) HandDrained(ctx context.Context) ([]HandDrain, error) {
	res, err := r.run(ctx, "drained", r.cmdDrained("read"), nil)
	if err != nil {
		return nil, fmt.Errorf("read the instances drained by hand, %s: %w", r.drainedFile(), err)
	}
	var list []HandDrain
	if len(bytes.TrimSpace(res.Stdout)) == 0 {
		return nil, nil
	}
	if err := json.Unmarshal(res.Stdout, &list); err != nil {
		return nil, fmt.Errorf("read the instances drained by hand: %s is not rollout's JSON list: %w", r.drainedFile(), err)
	}
	return list, nil
}

func (r sshRemote) SetHandDrained(ctx context.Context, list []HandDrain) error {
	b, err := json.Marshal(list)
	if err != nil {
		return err
	}
	if _, err := r.run(ctx, "drained", r.cmdDrained("write"), bytes.NewReader(append(b, '\n'))); err != nil {
		return fmt.Errorf("record the instances drained by hand in %s: %w", r.drainedFile(), err)
	}
	return nil
}

func (r sshRemote) releaseRoot() string { return strings.TrimRight(r.cfg.Release.Root, "/") }

func (r sshRemote) cmdReleaseState(ports []int, workers []string) string {
	args := []string{r.releaseRoot()}
	for _, p := range ports {
		args = append(args, strconv.Itoa(p), r.cfg.UnitName(p))
	}
	for _, u := range workers {
		args = append(args, u, u) // its link is instances/UNIT
	}
	return script("release-state", true, r.priv, args...)
}

func (r sshRemote) cmdUpload(e ReleaseEntry) string {
	rel := r.cfg.Release
	s := r.cfg.setupDefaults()
	line, _ := json.Marshal(e)
	args := []string{r.releaseRoot(), e.ID, e.SHA256, s.User, s.Group,
		strconv.Itoa(int(rel.PrepareTimeout / time.Second)), rel.Prepare, string(line)}
	return script("release-upload", true, r.priv, append(args, rel.Shared...)...)
}

func (r sshRemote) cmdSwitch(port int, id string) string {
	return script("release-switch", true, r.priv, r.releaseRoot(), strconv.Itoa(port), id)
}

func (r sshRemote) cmdRecordRelease(entries []ReleaseEntry, current string, remove []string) string {
	var lines []string
	for _, e := range entries {
		b, _ := json.Marshal(e)
		lines = append(lines, string(b))
	}
	line := strings.Join(lines, "\n")
	return script("release-record", true, r.priv, append([]string{r.releaseRoot(), line, current}, remove...)...)
}

func (r sshRemote) cmdReadAccessLog(file string, from logPos, since int64, ports []int) string {
	args := []string{file, from.inode, strconv.FormatInt(from.offset, 10), strconv.Itoa(maxLogRead), strconv.FormatInt(since, 10)}
	return script("access-read", true, r.priv, append(args, r.units(ports)...)...)
}

func (r sshRemote) ReadAccessLog(ctx context.Context, file string, from logPos, since int64, ports []int) (logRead, error) {
	res, err := r.run(ctx, "read "+file, r.cmdReadAccessLog(file, from, since, ports), nil)
	if exitCode(err) == exitLogUnreadable {
		return logRead{}, errors.New(scriptMessage(err))
	}
	if err != nil {
		return logRead{}, err
	}
	return parseLogRead(res.Stdout, from)
}

func (r sshRemote) ReleaseState(ctx context.Context, ports []int, workers []string) (releaseState, error) {
	res, err := r.run(ctx, "read the releases in "+r.releaseRoot(), r.cmdReleaseState(ports, workers), nil)
	if err != nil {
		return releaseState{}, err
	}
	return parseReleaseState(res.Stdout, r.releaseRoot())
}

// Upload sends the release from its start again after a lost connection
// (open opens it again): the upload script removes what an interrupted
// one left.
func (r sshRemote) Upload(ctx context.Context, e ReleaseEntry, open func() (io.ReadCloser, error)) error {
	body := &reopener{open: open}
	if err := body.open1(); err != nil {
		return err
	}
	defer body.Close()
	_, err := r.run(ctx, "upload release "+e.ID, r.cmdUpload(e), body)
	switch exitCode(err) {
	case exitPrepare:
		return fmt.Errorf("%w in release %s:\n%s", ErrPrepare, e.ID, scriptMessage(err))
	case exitChecksum, exitShared, exitSpecial:
		return fmt.Errorf("upload release %s: %s", e.ID, scriptMessage(err))
	}
	return err
}

func (r sshRemote) SwitchInstance(ctx context.Context, port int, id string) error {
	_, err := r.run(ctx, fmt.Sprintf("switch %s to release %s", r.cfg.UnitName(port), id), r.cmdSwitch(port, id), nil)
	if exitCode(err) == exitNoRelease {
		return errors.New(scriptMessage(err))
	}
	return err
}

func (r sshRemote) RecordRelease(ctx context.Context, entries []ReleaseEntry, current string, remove []string) error {
	_, err := r.run(ctx, "record the release in "+r.releaseRoot(), r.cmdRecordRelease(entries, current, remove), nil)
	return err
}

func (r sshRemote) cmdWriteSecrets(id string) string {
	// The first instance's unit says whether the units read the release's
	// env (they share their template).
	first := r.cfg.Instances.Base
	if ports := r.cfg.Ports(); len(ports) > 0 {
		first = ports[0]
	}
	return script("release-secrets", true, r.priv, r.releaseRoot(), id, r.cfg.UnitName(first))
}

func (r sshRemote) WriteSecrets(ctx context.Context, id string, env, sealed []byte) ([]byte, error) {
	body, err := secretsTar(env, sealed)
	if err != nil {
		return nil, err
	}
	res, err := r.run(ctx, "store the secrets of release "+id, r.cmdWriteSecrets(id), bytes.NewReader(body))
	switch exitCode(err) {
	case exitNoEnvFile, exitNoRelease:
		return nil, errors.New(scriptMessage(err))
	}
	if err != nil {
		return nil, err
	}
	return res.Stdout, nil
}

func (r sshRemote) cmdReadSecrets() string {
	return script("secrets-read", true, r.priv, r.releaseRoot())
}

func (r sshRemote) ReadSecrets(ctx context.Context) (string, []byte, error) {
	res, err := r.run(ctx, "read the current release's secrets in "+r.releaseRoot(), r.cmdReadSecrets(), nil)
	if err != nil {
		return "", nil, err
	}
	cur, sealed, _ := bytes.Cut(res.Stdout, []byte("\n"))
	if len(sealed) == 0 {
		sealed = nil
	}
	return string(cur), sealed, nil
}

// secretsTar is what release-secrets.sh reads: a tar of env and
// secrets.age.
func secretsTar(env, sealed []byte) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, f := range []struct {
		name string
		body []byte
	}{{"env", env}, {"secrets.age", sealed}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o600, Size: int64(len(f.body)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// reopener is a stream a link can send again from its start: seeking to
// the start opens it again.
type reopener struct {
	open func() (io.ReadCloser, error)
	rc   io.ReadCloser
}

func (o *reopener) open1() (err error) {
	o.rc, err = o.open()
	return err
}

func (o *reopener) Read(p []byte) (int, error) { return o.rc.Read(p) }

func (o *reopener) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || whence != io.SeekStart {
		return 0, errors.New("reopener: only seeks to the start")
	}
	o.rc.Close()
	return 0, o.open1()
}

func (o *reopener) Close() error {
	if o.rc == nil {
		return nil
	}
	return o.rc.Close()
}

func (r sshRemote) cmdSetupInspect(w setupWant) string {
	args := []string{w.User, w.AppDir, w.ReleaseRoot, w.Timer, w.LogTimer, strconv.Itoa(len(w.WatchFiles))}
	args = append(args, w.WatchFiles...)
	args = append(args, strconv.Itoa(len(w.Dirs)))
	for _, d := range w.Dirs {
		args = append(args, d.path)
	}
	args = append(args, strconv.Itoa(len(w.Files)))
	for _, f := range w.Files {
		args = append(args, f.Path)
	}
	return script("setup-inspect", true, r.priv, append(args, w.Units...)...)
}

func (r sshRemote) SetupInspect(ctx context.Context, w setupWant) (setupFound, error) {
	res, err := r.run(ctx, "setup-inspect", r.cmdSetupInspect(w), nil)
	if err != nil {
		return setupFound{}, err
	}
	return parseSetupFound(res.Stdout, w)
}

// parseSetupFound reads setup-inspect.sh's output.
func parseSetupFound(out []byte, w setupWant) (setupFound, error) {
	parts := sections(out)
	for _, name := range []string{"user", "enabled", "watch", "code"} {
		if _, ok := parts[name]; !ok {
			return setupFound{}, fmt.Errorf("setup-inspect: no %s in %q", name, quoteValue(string(out)))
		}
	}
	lines := func(s string) []string {
		if s = strings.TrimSpace(s); s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}
	f := setupFound{Dirs: map[string]string{}, Files: map[string]foundFile{}, Enabled: lines(parts["enabled"]),
		Watch: lines(parts["watch"]), LogRotate: lines(parts["logrotate"]), Code: strings.TrimSpace(parts["code"])}
	if user := strings.Fields(parts["user"]); len(user) > 0 && user[0] != "none" {
		f.UserExists = true
		if len(user) > 1 {
			f.Groups = strings.Split(user[1], ",")
		}
	}
	for _, d := range w.Dirs {
		if have := strings.TrimSpace(parts["dir "+d.path]); have != "missing" && have != "" {
			f.Dirs[d.path] = have
		}
	}
	for _, mf := range w.Files {
		have := lines(parts["file "+mf.Path])
		if len(have) == 0 || have[0] == "missing" {
			continue
		}
		var content []byte
		if len(have) > 1 {
			var err error
			if content, err = base64.StdEncoding.DecodeString(have[1]); err != nil {
				return setupFound{}, fmt.Errorf("setup-inspect %s: %w", mf.Path, err)
			}
		}
		f.Files[mf.Path] = foundFile{Meta: have[0], Content: content}
	}
	return f, nil
}

func (r sshRemote) cmdSetupApply(actions []setupAction) string {
	var args []string
	for _, a := range actions {
		args = append(args, a...)
	}
	return script("setup-apply", true, r.priv, args...)
}

func (r sshRemote) SetupApply(ctx context.Context, actions []setupAction, stdin []byte) error {
	_, err := r.run(ctx, "setup-apply", r.cmdSetupApply(actions), bytes.NewReader(stdin))
	switch exitCode(err) {
	case exitNginxTest:
		return fmt.Errorf("%w:\n%s", errNginxTest, strings.TrimPrefix(scriptMessage(err), errNginxTest.Error()+"\n"))
	case exitSudoers:
		return errors.New(scriptMessage(err))
	}
	return err
}

func (r sshRemote) cmdMigrate(id string) string {
	rel, s := r.cfg.Release, r.cfg.setupDefaults()
	return script("release-migrate", true, r.priv, r.releaseRoot(), id, s.User, s.Group,
		strconv.Itoa(int(rel.MigrateTimeout/time.Second)), s.EnvFile, rel.Migrate)
}

func (r sshRemote) Migrate(ctx context.Context, id string, out io.Writer) (bool, error) {
	var stderr bytes.Buffer
	err := streamOnce(ctx, r.conn, r.cmdMigrate(id), out, &stderr)
	switch exitCode(err) {
	case exitMigrate, exitNoRelease:
		return false, errors.New(strings.TrimSpace(stderr.String()))
	case -1:
	default:
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return false, fmt.Errorf("release.migrate: %s: %w", msg, err)
		}
	}
	if err != nil {
		return false, fmt.Errorf("release.migrate: %w", err)
	}
	return strings.HasPrefix(strings.TrimSpace(stderr.String()), "already migrated"), nil
}
