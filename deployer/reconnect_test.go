package deployer

import (
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

// A connection lost in the middle of an instance is not the app's fault:
// rollout reconnects, carries on, and the deploy ends as if nothing broke.
func TestDeployReconnectsAfterLostConnection(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002)
	h.lose["UnitState"] = 1   // while waiting for the new process
	h.lose["DialContext"] = 1 // during a health check
	h.lose["WriteUpstream"] = 1
	d, events := fakeDeployer(t, "ports: [3000, 3001, 3002]\nssh: {user: deploy, reconnect: 5s}\n", h)
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Hosts[0]; got.Outcome != HostOK || fmt.Sprint(got.Restarted) != "[3000 3001 3002]" || len(got.LeftOut) != 0 {
		t.Errorf("report %+v", got)
	}
	if h.connects < 2 || !hasEvent(*events, 0, StepSSH, StatusWarn, "lost the connection") || !hasEvent(*events, 0, StepSSH, StatusOK, "reconnected") {
		t.Errorf("%d connections; the loss and the reconnect were not told", h.connects)
	}
	if got := downIn(t, h.upstream); len(got) != 0 || h.locked || len(h.history) != 1 {
		t.Errorf("down %v, locked %v, history %d", got, h.locked, len(h.history))
	}
}

// A host that stays unreachable stops the deploy with its own error, not
// the app's, and the report says what may be left out and what to run.
func TestDeployUnreachableHost(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002)
	d, events := fakeDeployer(t, "ports: [3000, 3001, 3002]\nssh: {user: deploy, reconnect: 300ms}\n", h)
	emit := d.Events
	d.Events = func(e Event) {
		emit(e)
		if e.Port == 3001 && e.Step == StepRestart && e.Status == StatusOK {
			h.mu.Lock()
			h.unreachable = true
			h.mu.Unlock()
		}
	}
	rep, err := d.Deploy(testCtx(t))
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	var se *StepError
	if !errors.As(err, &se) || se.Output != "" || se.Port != 3001 {
		t.Errorf("step error %+v: want 3001's, without app output", se)
	}
	r := rep.Hosts[0]
	if r.Outcome != HostFailed || fmt.Sprint(r.LeftOut) != "[3001]" {
		t.Errorf("report %+v", r)
	}
	for _, want := range []string{"web1 could not be reached again", "instances [3001] may be marked down", "lock is still held", "rollout deploy --version v2"} {
		if !strings.Contains(r.Next, want) {
			t.Errorf("next step %q lacks %q", r.Next, want)
		}
	}
	if !hasEvent(*events, 0, StepSSH, StatusFail, "could not reconnect within 300ms") {
		t.Error("giving up on the host was not told")
	}
	if strings.Contains(err.Error(), "unhealthy") || strings.Contains(err.Error(), "not healthy") {
		t.Errorf("the lost host is blamed on the app: %v", err)
	}
}

// scriptedConn is a connection whose commands fail as lost while lose
// says so, and that records what ran on it.
type scriptedConn struct {
	mu   *sync.Mutex
	lose *int // commands still to lose
	ran  *[]string
	gen  int
}

func (c scriptedConn) Run(_ context.Context, cmd string, stdin io.Reader) (sshexec.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	in := ""
	if stdin != nil {
		b, _ := io.ReadAll(stdin)
		in = " <" + string(b)
	}
	*c.ran = append(*c.ran, fmt.Sprintf("%d:%s%s", c.gen, cmd, in))
	if *c.lose > 0 {
		*c.lose--
		return sshexec.Result{}, fmt.Errorf("run: %w", sshexec.ErrConnectionLost)
	}
	return sshexec.Result{Stdout: []byte("ok")}, nil
}

func (c scriptedConn) DialContext(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("no dials here")
}

func (scriptedConn) Close() error { return nil }

func newScriptedLink(t *testing.T, lose int, connectFails bool) (*link, *[]string, *[]Event) {
	var mu sync.Mutex
	ran, events := &[]string{}, &[]Event{}
	gen := 0
	l := &link{host: "web1", budget: 300 * time.Millisecond,
		emit: func(e Event) { mu.Lock(); *events = append(*events, e); mu.Unlock() },
		connect: func(context.Context) (Conn, error) {
			if connectFails {
				return nil, errors.New("dial web1: connection refused")
			}
			gen++
			return scriptedConn{mu: &mu, lose: &lose, ran: ran, gen: gen}, nil
		}}
	l.conn = scriptedConn{mu: &mu, lose: &lose, ran: ran}
	return l, ran, events
}

func TestLinkRunsAgainOnANewConnection(t *testing.T) {
	ctx := testCtx(t)
	tests := []struct {
		name  string
		run   func(l *link) (sshexec.Result, error)
		want  []string
		again bool
	}{
		{"no stdin", func(l *link) (sshexec.Result, error) { return l.Run(ctx, "inspect", nil) },
			[]string{"0:inspect", "1:inspect"}, true},
		{"stdin it can rewind", func(l *link) (sshexec.Result, error) {
			return l.Run(ctx, "write", strings.NewReader("next"))
		}, []string{"0:write <next", "1:write <next"}, true},
		{"stdin it cannot rewind", func(l *link) (sshexec.Result, error) {
			return l.Run(ctx, "upload", io.MultiReader(strings.NewReader("body")))
		}, []string{"0:upload <body"}, false},
		{"a hook", func(l *link) (sshexec.Result, error) { return l.RunOnce(ctx, "hook", nil) },
			[]string{"0:hook"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, ran, events := newScriptedLink(t, 1, false)
			res, err := tc.run(l)
			if got := *ran; fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("ran %q, want %q", got, tc.want)
			}
			if tc.again && (err != nil || string(res.Stdout) != "ok") {
				t.Errorf("run again: %q, %v", res.Stdout, err)
			}
			if !tc.again && !errors.Is(err, sshexec.ErrConnectionLost) {
				t.Errorf("err = %v, want the lost connection", err)
			}
			if tc.name == "a hook" && !strings.Contains(fmt.Sprint(err), "whether it ran to its end is unknown") {
				t.Errorf("a hook cut short does not say it may have run: %v", err)
			}
			// Whether run again or not, the link is back for what follows.
			if l.gen != 1 || !hasEvent(*events, 0, StepSSH, StatusOK, "reconnected") {
				t.Errorf("gen %d, events %v", l.gen, *events)
			}
			if _, err := l.Run(ctx, "next", nil); err != nil {
				t.Errorf("the next command: %v", err)
			}
		})
	}
}

// A host that does not come back within ssh.reconnect is given up on: the
// error says so, and every later command fails at once with it.
func TestLinkGivesUp(t *testing.T) {
	ctx := testCtx(t)
	l, ran, events := newScriptedLink(t, 1, true)
	_, err := l.Run(withOp(ctx, "read the upstream"), "inspect", nil)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "could not reconnect within 300ms") || !strings.Contains(err.Error(), "connection refused") ||
		!strings.Contains(err.Error(), "read the upstream: run: lost the SSH connection") {
		t.Fatalf("err = %v", err)
	}
	if !l.givenUp() || !hasEvent(*events, 0, StepSSH, StatusFail, "could not reconnect") {
		t.Errorf("given up %v, events %v", l.givenUp(), *events)
	}
	_, err2 := l.Run(ctx, "history", nil)
	if _, derr := l.dialCurrent(ctx, "tcp", "127.0.0.1:3000"); err2 != err || derr != err {
		t.Errorf("later: %v, %v; want %v", err2, derr, err)
	}
	if len(*ran) != 1 {
		t.Errorf("ran %q after giving up", *ran)
	}
}

// Alive says whether the link had to reconnect.
func TestLinkAlive(t *testing.T) {
	ctx := testCtx(t)
	l, _, _ := newScriptedLink(t, 0, false)
	if again, err := l.Alive(ctx); again || err != nil {
		t.Errorf("Alive = %v, %v on a live link", again, err)
	}
	l.conn = aliveFails{l.conn}
	if again, err := l.Alive(ctx); !again || err != nil {
		t.Errorf("Alive = %v, %v after a silent connection", again, err)
	}
}

type aliveFails struct{ Conn }

func (aliveFails) Alive(context.Context) error {
	return fmt.Errorf("keepalive: %w", sshexec.ErrConnectionLost)
}
