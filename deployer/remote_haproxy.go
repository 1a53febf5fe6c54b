package deployer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
)

// haproxySessions are the HAProxy runtime API sessions a remote keeps
// open for a run, one per socket: a change of a backend's servers is then
// a few commands on an open session (a millisecond or two) instead of an
// SSH command, sudo and a socat per command (about 90 ms on the testbed).
// Only where the SSH user may run anything as root (sudo or root): with
// sudo: helper an open session would hand it the whole admin API, and
// every change goes through the helper's haproxy verb instead.
type haproxySessions struct {
	mu sync.Mutex
	// open are the sessions by socket; broken are the sockets a session
	// could not be opened on (the haproxy script, which says why, is used
	// for them from then on).
	open   map[string]*haproxySession
	broken map[string]bool
}

// errSessionUnusable: the session cannot say what happened (it could not
// be opened, ended, or did not answer in time); the caller makes the
// change with the haproxy script, which is idempotent, instead.
var errSessionUnusable = errors.New("haproxy runtime API session unusable")

// haproxySessionTimeout bounds one answer of HAProxy's runtime API.
const haproxySessionTimeout = 5 * time.Second

// applyHAProxy is haproxy.sh's apply over an open session: the state
// first when something is readied (a server in maintenance is refused
// before anything changes), each set server command, the wait until no
// drained server has a session, at most drainTimeout, and the state
// after; its output is the script's ("drained MS" or "busy MS N", then
// the state). errSessionUnusable when the session cannot be used.
func (r sshRemote) applyHAProxy(ctx context.Context, api haproxyAPI, items []string) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		s, err := r.haproxy.session(ctx, r, api.Socket)
		if err != nil {
			return nil, err
		}
		out, err := s.apply(ctx, api.Backend, items, r.cfg.DrainTimeout)
		switch {
		case errors.Is(err, errSessionStale) && attempt == 0:
			// Reloaded: the session still talks to the old process, which
			// stops once it is closed; the next one reaches the new process.
			r.haproxy.forget(api.Socket, s)
			continue
		case errors.Is(err, errSessionStale), errors.Is(err, errSessionUnusable):
			r.haproxy.drop(api.Socket, s)
			return nil, errSessionUnusable
		}
		return out, err
	}
}

// errSessionStale: the session's HAProxy process is stopping (HAProxy was
// reloaded; an open CLI session keeps the old process alive, and what it
// is told no longer matters).
var errSessionStale = errors.New("haproxy runtime API session on a stopping process")

// forget closes s, which ended or is stale, for the next change to open
// a new one.
func (hs *haproxySessions) forget(socket string, s *haproxySession) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.open[socket] == s {
		delete(hs.open, socket)
	}
	s.close()
}

// drop closes s, which failed. One that ended (HAProxy closed it after
// stats timeout idle, or restarted; the connection was lost) is opened
// again for the next change; one still open that did not answer in time
// is not trusted again in this run: the script makes the changes.
func (hs *haproxySessions) drop(socket string, s *haproxySession) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.open[socket] == s {
		delete(hs.open, socket)
	}
	if !s.ended() {
		hs.markBroken(socket)
	}
	s.close()
}

// markBroken: no session is opened on socket again in this run; hs.mu
// held.
func (hs *haproxySessions) markBroken(socket string) {
	if hs.broken == nil {
		hs.broken = map[string]bool{}
	}
	hs.broken[socket] = true
}

// cmdHAProxySession connects the session's stdin and stdout to the
// runtime API at socket.
func (r sshRemote) cmdHAProxySession(socket string) string {
	cmd := "socat -t 2 stdio " + sshexec.Quote("unix-connect:"+socket)
	if r.priv.sudo {
		cmd = "sudo -n " + cmd
	}
	return cmd
}

// session is the open session on socket, opened (again, when the last one
// ended) if need be.
func (hs *haproxySessions) session(ctx context.Context, r sshRemote, socket string) (*haproxySession, error) {
	if hs == nil || r.priv.helper != "" {
		return nil, errSessionUnusable
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.broken[socket] {
		return nil, errSessionUnusable
	}
	if s := hs.open[socket]; s != nil && !s.ended() {
		return s, nil
	}
	a, ok := r.conn.(Attacher)
	if !ok {
		return nil, errSessionUnusable
	}
	s, err := openHAProxySession(ctx, a, r.cmdHAProxySession(socket))
	if err != nil {
		hs.markBroken(socket)
		return nil, err
	}
	if hs.open == nil {
		hs.open = map[string]*haproxySession{}
	}
	hs.open[socket] = s
	return s, nil
}

// haproxySession is HAProxy's runtime API in interactive mode ("prompt":
// each answer ends with "\n> "), over one SSH session running socat.
type haproxySession struct {
	mu   sync.Mutex // one exchange at a time
	in   *io.PipeWriter
	out  *sessionOutput
	done chan struct{} // closed when the SSH session ended
}

// sessionOutput is what the session printed and not yet read.
type sessionOutput struct {
	mu   sync.Mutex
	buf  []byte
	more chan struct{} // signalled on each write
}

func (o *sessionOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	o.buf = append(o.buf, p...)
	o.mu.Unlock()
	select {
	case o.more <- struct{}{}:
	default:
	}
	return len(p), nil
}

// answer takes one answer, up to its prompt, if it has come.
func (o *sessionOutput) answer() (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	i := bytes.Index(o.buf, []byte("\n> "))
	if i < 0 {
		return "", false
	}
	a := string(o.buf[:i])
	o.buf = o.buf[i+3:]
	return a, true
}

func openHAProxySession(ctx context.Context, a Attacher, cmd string) (*haproxySession, error) {
	pr, pw := io.Pipe()
	s := &haproxySession{in: pw, out: &sessionOutput{more: make(chan struct{}, 1)}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		// Not the caller's context: the session outlives this change. It
		// ends when close closes its stdin (socat then exits), or with
		// the connection.
		_ = a.Attach(context.WithoutCancel(ctx), cmd, nil, pr, s.out, io.Discard)
		pr.Close()
	}()
	if _, err := s.do(ctx, "prompt"); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *haproxySession) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *haproxySession) close() { s.in.Close() }

// do sends the commands, one per line, and returns their answers.
func (s *haproxySession) do(ctx context.Context, cmds ...string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := io.WriteString(s.in, strings.Join(cmds, "\n")+"\n"); err != nil {
		return nil, errSessionUnusable
	}
	timer := time.NewTimer(haproxySessionTimeout)
	defer timer.Stop()
	answers := make([]string, 0, len(cmds))
	for len(answers) < len(cmds) {
		if a, ok := s.out.answer(); ok {
			answers = append(answers, a)
			continue
		}
		select {
		case <-s.out.more:
		case <-s.done:
			if a, ok := s.out.answer(); ok {
				answers = append(answers, a)
				continue
			}
			return nil, errSessionUnusable
		case <-timer.C:
			return nil, errSessionUnusable
		case <-ctx.Done():
			// What HAProxy did with the commands is unknown: this session
			// is not used again.
			return nil, errSessionUnusable
		}
	}
	return answers, nil
}

// apply makes the items (ready:SERVER, drain:SERVER, and for
// strategy.max_surge wake:SERVER and maint:SERVER) on backend; a first
// item pid:PID is the process rollout last read (haproxy.sh's apply).
func (s *haproxySession) apply(ctx context.Context, backend string, items []string, drainTimeout time.Duration) ([]byte, error) {
	var want string
	hasPid := false
	if len(items) > 0 {
		if want, hasPid = strings.CutPrefix(items[0], "pid:"); hasPid {
			items = items[1:]
		}
	}
	var sets, drained []string
	for _, item := range items {
		state, name, _ := strings.Cut(item, ":")
		switch state {
		case "drain", "maint":
			drained = append(drained, name)
		case "wake": // an idle slot's port, readied from maintenance
			state = "ready"
		}
		sets = append(sets, "set server "+backend+"/"+name+" state "+state)
	}
	a, err := s.do(ctx, "show info", "show servers state "+backend)
	if err != nil {
		return nil, err
	}
	info := infoFields(a[0])
	pid := info["Pid"]
	switch {
	case info["Stopping"] == "1":
		return nil, errSessionStale
	case pid == "":
		return nil, fmt.Errorf("show info: HAProxy gives no Pid: %s", strings.TrimSpace(a[0]))
	case hasPid && pid != want:
		return []byte("restarted\npid " + pid + "\n" + a[1]), nil
	}
	all, err := parseServersState([]byte(a[1]))
	if err != nil {
		return nil, fmt.Errorf("show servers state %s: HAProxy says: %s", backend, strings.TrimSpace(a[1]))
	}
	for _, item := range items {
		state, name, _ := strings.Cut(item, ":")
		if state != "ready" {
			continue
		}
		i := indexServer(all, name)
		switch {
		case i < 0:
			return nil, fmt.Errorf("HAProxy has no server %s/%s", backend, name)
		case all[i].maint():
			return nil, fmt.Errorf("server %s/%s is in maintenance (admin state %d), put there by someone: rollout never readies it", backend, name, all[i].admin)
		}
	}
	answers, err := s.do(ctx, sets...)
	if err != nil {
		return nil, err
	}
	for i, a := range answers {
		if strings.TrimSpace(a) != "" {
			return nil, fmt.Errorf("%s: HAProxy says: %s", sets[i], strings.TrimSpace(a))
		}
	}
	t0 := time.Now()
	status := ""
	for status == "" {
		open := 0
		if len(drained) > 0 {
			a, err := s.do(ctx, "show stat")
			if err != nil {
				return nil, err
			}
			if open, err = sessionsOn(a[0], backend, drained); err != nil {
				return nil, err
			}
		}
		waited := time.Since(t0)
		switch {
		case open == 0:
			status = fmt.Sprintf("drained %d", waited.Milliseconds())
		case waited >= drainTimeout:
			status = fmt.Sprintf("busy %d %d", waited.Milliseconds(), open)
		default:
			select {
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
				return nil, errSessionUnusable
			}
		}
	}
	a, err = s.do(ctx, "show servers state "+backend)
	if err != nil {
		return nil, err
	}
	return []byte(status + "\npid " + pid + "\n" + a[0]), nil
}

// infoFields are the "Name: value" lines of "show info".
func infoFields(info string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func indexServer(all []haproxyServer, name string) int {
	for i, s := range all {
		if s.name == name {
			return i
		}
	}
	return -1
}

// sessionsOn sums the current sessions (scur) of backend's servers named
// in "show stat"'s CSV, its columns found by name.
func sessionsOn(stat, backend string, names []string) (int, error) {
	lines := strings.Split(strings.TrimSpace(stat), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "# ") {
		return 0, fmt.Errorf("show stat: HAProxy says: %s", strings.TrimSpace(stat))
	}
	col := map[string]int{}
	for i, name := range strings.Split(strings.TrimPrefix(lines[0], "# "), ",") {
		col[name] = i
	}
	px, okP := col["pxname"]
	sv, okS := col["svname"]
	cur, okC := col["scur"]
	if !okP || !okS || !okC {
		return 0, fmt.Errorf("show stat: no pxname, svname or scur column in %q", lines[0])
	}
	n := 0
	for _, line := range lines[1:] {
		f := strings.Split(line, ",")
		if len(f) <= max(px, sv, cur) || f[px] != backend || !contains(names, f[sv]) {
			continue
		}
		var c int
		if _, err := fmt.Sscan(f[cur], &c); err != nil {
			return 0, fmt.Errorf("show stat: scur %q of %s/%s", f[cur], backend, f[sv])
		}
		n += c
	}
	return n, nil
}
