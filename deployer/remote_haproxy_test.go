package deployer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
)

// cliConn is a host whose HAProxy runtime API answers over an attached
// session as HAProxy does in interactive mode (an answer, then "\n> "),
// from fake's backend; the sessions it ran and the commands (Run) it ran
// are recorded. Its scur gives each drained server's sessions at each
// "show stat" (then 0).
type cliConn struct {
	mu       sync.Mutex
	fake     *fakeHAProxy
	scur     []int
	attached []string // the session commands
	sent     []string // the runtime API commands, in order
	ran      []string // the commands run (the haproxy script)
	lost     []string // the commands a stopping process was sent
	// refuse makes a session end at once (sudo refused, no socat);
	// hangAfter makes it stop answering after that many commands, and
	// endAfter end (HAProxy closing it) after them.
	refuse              bool
	hangAfter, endAfter int
	// down makes the next runs of the script find HAProxy down.
	down int
}

func (c *cliConn) Run(_ context.Context, cmd string, _ io.Reader) (sshexec.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ran = append(c.ran, cmd)
	if c.down > 0 {
		c.down--
		return sshexec.Result{}, &sshexec.ExitError{Cmd: cmd, Code: exitHAProxyDown, Stderr: "/run/haproxy/admin.sock is not a socket"}
	}
	// The script's items follow "apply".
	if _, items, ok := strings.Cut(cmd, " apply "); ok {
		out, err := c.fake.run("apply", strings.Fields(items))
		return sshexec.Result{Stdout: out}, err
	}
	state, _ := c.fake.run("state", nil)
	return sshexec.Result{Stdout: state}, nil
}

func (c *cliConn) DialContext(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("no dials here")
}

func (c *cliConn) Close() error { return nil }

func (c *cliConn) Attach(ctx context.Context, cmd string, _ *sshexec.Terminal, stdin io.Reader, stdout, _ io.Writer) error {
	c.mu.Lock()
	c.attached = append(c.attached, cmd)
	refuse := c.refuse
	pid := c.fake.pid // the process this session talks to
	c.mu.Unlock()
	if refuse {
		return errors.New("sudo: a password is required")
	}
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		line := sc.Text()
		c.mu.Lock()
		c.sent = append(c.sent, line)
		hang := c.hangAfter > 0 && len(c.sent) > c.hangAfter
		end := c.endAfter > 0 && len(c.sent) > c.endAfter
		if end {
			c.endAfter = 0
			c.mu.Unlock()
			return nil
		}
		answer := c.answer(line, pid)
		c.mu.Unlock()
		if hang {
			continue
		}
		fmt.Fprint(stdout, answer+"\n> ")
	}
	return nil
}

// answer is HAProxy's answer to line from process pid: a process HAProxy
// replaced since (reload) is stopping, and what it is told is lost; c.mu
// held.
func (c *cliConn) answer(line string, pid int) string {
	f := strings.Fields(line)
	stale := pid != c.fake.pid
	switch {
	case line == "prompt":
		return ""
	case line == "show info":
		return fmt.Sprintf("Name: HAProxy\nPid: %d\nStopping: %d\n", pid, map[bool]int{false: 0, true: 1}[stale])
	case len(f) == 4 && f[0] == "show" && f[1] == "servers":
		state, _ := c.fake.run("state", nil)
		_, state = cutPid(state) // the CLI has no pid line
		return string(state) + "\n"
	case line == "show stat":
		var b strings.Builder
		b.WriteString("# pxname,svname,qcur,qmax,scur,smax\n")
		for _, s := range c.fake.servers {
			cur := 0
			if s.admin&0x08 != 0 && len(c.scur) > 0 {
				cur = c.scur[0]
			}
			fmt.Fprintf(&b, "app,%s,0,0,%d,9\n", s.name, cur)
		}
		if len(c.scur) > 0 {
			c.scur = c.scur[1:]
		}
		b.WriteString("app,BACKEND,0,0,0,9\n")
		return b.String() + "\n"
	case len(f) == 5 && f[0] == "set" && f[1] == "server" && f[3] == "state" && stale:
		c.lost = append(c.lost, line)
		return ""
	case len(f) == 5 && f[0] == "set" && f[1] == "server" && f[3] == "state":
		_, name, _ := strings.Cut(f[2], "/")
		if _, err := c.fake.run("apply", []string{f[4] + ":" + name}); err != nil {
			return "No such server.\n"
		}
		return ""
	}
	return "Unknown command.\n"
}

func cliRemote(t *testing.T, c *cliConn, yaml string) sshRemote {
	t.Helper()
	cfg, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [web1]\nports: [3000, 3001]\nhaproxy: {backend: app}\ndrain_timeout: 1s\n"+yaml))
	if err != nil {
		t.Fatal(err)
	}
	return newSSHRemote(cfg, c)
}

var appAPI = haproxyAPI{Socket: "/run/haproxy/admin.sock", Backend: "app"}

// A change goes over one runtime API session kept open for the run: the
// state when something is readied, every set server, show stat until the
// drained server has no session, the state after; the next change reuses
// the session. No script runs.
func TestHAProxySessionAppliesChanges(t *testing.T) {
	c := &cliConn{fake: newFakeHAProxy("127.0.0.1", 3000, 3001), scur: []int{2, 1}}
	r := cliRemote(t, c, "")
	out, err := r.HAProxy(testCtx(t), appAPI, "apply", []string{"drain:app3000"})
	if err != nil {
		t.Fatal(err)
	}
	first, state, _ := strings.Cut(string(out), "\n")
	var ms int
	if n, _ := fmt.Sscanf(first, "drained %d", &ms); n != 1 || ms < 20 {
		t.Errorf("first line %q: want drained after two polls of 10ms", first)
	}
	if s, err := parseServersState([]byte(state)); err != nil || s[0].admin != 0x08 {
		t.Errorf("state after: %v %v", s, err)
	}
	if _, err := r.HAProxy(testCtx(t), appAPI, "apply", []string{"ready:app3000", "drain:app3001"}); err != nil {
		t.Fatal(err)
	}
	want := []string{"prompt",
		"show info", "show servers state app", "set server app/app3000 state drain", "show stat", "show stat", "show stat", "show servers state app",
		"show info", "show servers state app", "set server app/app3000 state ready", "set server app/app3001 state drain", "show stat", "show servers state app"}
	if fmt.Sprint(c.sent) != fmt.Sprint(want) {
		t.Errorf("sent:\n%q\nwant:\n%q", c.sent, want)
	}
	if len(c.attached) != 1 || c.attached[0] != "sudo -n socat -t 2 stdio unix-connect:/run/haproxy/admin.sock" || len(c.ran) != 0 {
		t.Errorf("sessions %q, scripts %q", c.attached, c.ran)
	}
	if c.fake.servers[0].admin != 0 || c.fake.servers[1].admin != 0x08 {
		t.Errorf("servers %+v", c.fake.servers)
	}
}

// A server in maintenance is refused before anything changes, and an
// error HAProxy answers is the change's error; neither falls back to the
// script.
func TestHAProxySessionRefuses(t *testing.T) {
	c := &cliConn{fake: newFakeHAProxy("127.0.0.1", 3000, 3001)}
	c.fake.servers[1].admin = 0x01
	r := cliRemote(t, c, "")
	_, err := r.HAProxy(testCtx(t), appAPI, "apply", []string{"drain:app3000", "ready:app3001"})
	if err == nil || !strings.Contains(err.Error(), "server app/app3001 is in maintenance (admin state 1), put there by someone: rollout never readies it") {
		t.Fatalf("got %v", err)
	}
	if len(c.fake.ops) != 0 || len(c.ran) != 0 {
		t.Errorf("changed %v, scripts %q", c.fake.ops, c.ran)
	}
	if _, err := r.HAProxy(testCtx(t), appAPI, "apply", []string{"drain:nope"}); err == nil || !strings.Contains(err.Error(), "set server app/nope state drain: HAProxy says: No such server.") {
		t.Errorf("an unknown server: %v", err)
	}
}

// Where a session cannot be opened (sudo refused, no socat), or with sudo:
// helper (it would hand the SSH user the whole admin API), the script
// makes the change. A session that ended (HAProxy closed it) is opened
// again for the next change; one that stops answering is dropped, that
// change and every later one made by the script.
func TestHAProxySessionFallsBackToTheScript(t *testing.T) {
	c := &cliConn{fake: newFakeHAProxy("127.0.0.1", 3000, 3001), refuse: true}
	r := cliRemote(t, c, "")
	for range 2 {
		if _, err := r.HAProxy(testCtx(t), appAPI, "apply", []string{"drain:app3000"}); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.attached) != 1 || len(c.ran) != 2 || !strings.Contains(c.ran[0], "rollout-haproxy") {
		t.Errorf("refused session: sessions %q, scripts %q (want one session tried, the script twice)", c.attached, c.ran)
	}

	c = &cliConn{fake: newFakeHAProxy("127.0.0.1", 3000, 3001)}
	r = cliRemote(t, c, "sudo: helper\nssh: {user: deploy}\n")
	if _, err := r.HAProxy(testCtx(t), appAPI, "apply", []string{"drain:app3000"}); err != nil {
		t.Fatal(err)
	}
	if len(c.attached) != 0 || len(c.ran) != 1 {
		t.Errorf("with the helper: sessions %q, scripts %q", c.attached, c.ran)
	}

	// Ended after "prompt" and the first change's commands: the next
	// change's first command finds it gone.
	c = &cliConn{fake: newFakeHAProxy("127.0.0.1", 3000, 3001), endAfter: 6}
	r = cliRemote(t, c, "")
	for _, items := range [][]string{{"drain:app3000"}, {"ready:app3000"}, {"drain:app3001"}} {
		if _, err := r.HAProxy(testCtx(t), appAPI, "apply", items); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.attached) != 2 || len(c.ran) != 1 || c.fake.servers[0].admin != 0 || c.fake.servers[1].admin != 0x08 {
		t.Errorf("a session that ended: sessions %q, scripts %q, servers %+v (want a second session after one change by the script)", c.attached, c.ran, c.fake.servers)
	}

	if testing.Short() {
		return // the hung session waits haproxySessionTimeout
	}
	c = &cliConn{fake: newFakeHAProxy("127.0.0.1", 3000, 3001), hangAfter: 2}
	r = cliRemote(t, c, "")
	t0 := time.Now()
	for _, items := range [][]string{{"drain:app3000"}, {"ready:app3000"}} {
		if _, err := r.HAProxy(testCtx(t), appAPI, "apply", items); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.attached) != 1 || len(c.ran) != 2 || time.Since(t0) < haproxySessionTimeout {
		t.Errorf("a session that stopped answering: sessions %q, scripts %q after %s", c.attached, c.ran, time.Since(t0))
	}
}

func TestSessionsOn(t *testing.T) {
	stat := "# pxname,svname,qcur,qmax,scur\nweb,a,0,0,7\napp,a,0,0,2\napp,b,0,0,3\napp,c,0,0,5\napp,BACKEND,0,0,10\n"
	if n, err := sessionsOn(stat, "app", []string{"a", "b"}); err != nil || n != 5 {
		t.Errorf("got %d, %v", n, err)
	}
	if _, err := sessionsOn("# pxname,svname\napp,a\n", "app", []string{"a"}); err == nil || !strings.Contains(err.Error(), "no pxname, svname or scur column") {
		t.Errorf("no scur column: %v", err)
	}
	if _, err := sessionsOn("Permission denied\n", "app", []string{"a"}); err == nil || !strings.Contains(err.Error(), "HAProxy says: Permission denied") {
		t.Errorf("an error: %v", err)
	}
}

// HAProxy reloaded between two changes has a new process, which forgot
// the drains set through the API. The session, still on the old process
// (stopping, kept alive by it), is closed and one opened on the new one;
// the change then finds another process than the state it started from,
// changes nothing on it, and makes itself again from the new process's
// states: what rollout holds out is drained again, and a note says so.
// Through the script (sudo: helper) the same.
func TestHAProxyChangeAfterAReload(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		sessions   int
	}{{"session", "", 2}, {"script", "sudo: helper\nssh: {user: deploy}\n", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			c := &cliConn{fake: newFakeHAProxy("127.0.0.1", 3000, 3001, 3002)}
			r := cliRemote(t, c, tc.yaml)
			drv := haproxyDriver{api: appAPI}
			state, err := drv.read(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			all := servers{3000: false, 3001: false, 3002: false}
			if state, _, err = drv.apply(ctx, r, state, lbChange{addr: "127.0.0.1", from: all, to: all.with(true, 3000)}); err != nil {
				t.Fatal(err)
			}
			if pid, _ := cutPid(state); pid != "100" {
				t.Fatalf("state after the first change is from process %q:\n%s", pid, state)
			}
			c.fake.reload()
			// 3000 stays out and 3001 joins it (two at a time, or 3000 left
			// out of service).
			from := all.with(true, 3000)
			state, wait, err := drv.apply(ctx, r, state, lbChange{addr: "127.0.0.1", from: from, to: from.with(true, 3001)})
			if err != nil {
				t.Fatal(err)
			}
			if pid, _ := cutPid(state); pid != "101" {
				t.Errorf("state after the reload is from process %q", pid)
			}
			if a := c.fake.servers; a[0].admin != 0x08 || a[1].admin != 0x08 || a[2].admin != 0 {
				t.Errorf("new process's servers %+v: want 3000 and 3001 drained", a)
			}
			if len(wait.notes) != 1 || !strings.Contains(wait.notes[0], "reloaded or restarted since rollout's last change (process 100, now 101)") ||
				!strings.Contains(wait.notes[0], "127.0.0.1:3000 served again, drained again") {
				t.Errorf("notes %q", wait.notes)
			}
			if len(c.lost) != 0 || len(c.attached) != tc.sessions {
				t.Errorf("sent to the stopping process %q; sessions %q", c.lost, c.attached)
			}
			// The next change, on the same process, has nothing to say.
			if _, wait, err = drv.apply(ctx, r, state, lbChange{addr: "127.0.0.1", from: from.with(true, 3001), to: all}); err != nil || len(wait.notes) != 0 {
				t.Errorf("next change: %v, notes %q", err, wait.notes)
			}
		})
	}
}

// HAProxy down during a deploy (between the stop and the start of a
// restart): the change is tried again until it answers, within
// haproxyDownWait; past it, the error says how long it waited. The
// preflight's check is not tried again.
func TestHAProxyDownIsWaitedFor(t *testing.T) {
	c := &cliConn{fake: newFakeHAProxy("127.0.0.1", 3000, 3001), refuse: true, down: 3}
	r := cliRemote(t, c, "")
	t0 := time.Now()
	if _, err := r.HAProxy(testCtx(t), appAPI, "apply", []string{"drain:app3000"}); err != nil {
		t.Fatal(err)
	}
	if len(c.ran) != 4 || c.fake.servers[0].admin != 0x08 || time.Since(t0) < 600*time.Millisecond {
		t.Errorf("ran %d scripts in %s, servers %+v: want three found down, then the change", len(c.ran), time.Since(t0), c.fake.servers)
	}
	defer func(w time.Duration) { haproxyDownWait = w }(haproxyDownWait)
	haproxyDownWait = 300 * time.Millisecond
	c.down = 100
	if _, err := r.HAProxy(testCtx(t), appAPI, "apply", []string{"ready:app3000"}); err == nil || !strings.Contains(err.Error(), "(HAProxy down for 300ms)") {
		t.Errorf("HAProxy down for good: %v", err)
	}
	c.ran = nil
	if _, err := r.HAProxy(testCtx(t), appAPI, "check", nil); exitCode(err) != exitHAProxyDown || len(c.ran) != 1 {
		t.Errorf("check with HAProxy down: %v after %d runs", err, len(c.ran))
	}
}
