package deployer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
)

// fakeHost answers the engine's remote commands the way a host would, from
// in-memory state: units, the upstream file, and one HTTP server per
// instance on loopback for the health checks. It records every upstream
// file it was given.
type fakeHost struct {
	t        *testing.T
	mu       sync.Mutex
	ports    []int
	upstream string
	pid      map[int]int
	healthy  map[int]bool
	servers  map[int]*httptest.Server
	writes   []string // the upstream file after each write
	locked   bool
	history  []string
	// failAfterRestart: the instance answers 503 once restarted.
	failAfterRestart int
	// onWrite runs before a write is checked (to change the file under
	// rollout).
	onWrite func(n int)
}

func newFakeHost(t *testing.T, ports []int) *fakeHost {
	h := &fakeHost{t: t, ports: ports, pid: map[int]int{}, healthy: map[int]bool{}, servers: map[int]*httptest.Server{}}
	var b strings.Builder
	b.WriteString("# managed by hand, and by rollout\nupstream my_app {\n")
	for i, p := range ports {
		fmt.Fprintf(&b, "    server 127.0.0.1:%d;\n", p)
		h.pid[p] = 100 + i
		h.healthy[p] = true
		h.servers[p] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.mu.Lock()
			ok := h.healthy[p]
			h.mu.Unlock()
			if !ok {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
			}
		}))
		t.Cleanup(h.servers[p].Close)
	}
	b.WriteString("}\n")
	h.upstream = b.String()
	return h
}

func (h *fakeHost) show(port int) string {
	return fmt.Sprintf("Id=my-app@%d.service\nLoadState=loaded\nActiveState=active\nSubState=running\nMainPID=%d\nExecMainStartTimestampMonotonic=%d\nNRestarts=0\n\n", port, h.pid[port], h.pid[port])
}

var (
	sportRE = regexp.MustCompile(`sport = :(\d+)`)
	unitRE  = regexp.MustCompile(`my-app@(\d+)`)
)

func (h *fakeHost) Run(_ context.Context, cmd string, stdin io.Reader) (sshexec.Result, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := func(s string) (sshexec.Result, error) { return sshexec.Result{Stdout: []byte(s)}, nil }
	switch {
	case strings.Contains(cmd, "nginx config test fails before any change"): // preflight
		return out("")
	case strings.Contains(cmd, "take() { mkdir"): // lock
		if h.locked {
			return out("held 1\n{}")
		}
		h.locked = true
		io.Copy(io.Discard, stdin)
		return out("acquired\n")
	case strings.Contains(cmd, "lock.released"):
		h.locked = false
		return out("")
	case strings.Contains(cmd, "history.jsonl"):
		b, _ := io.ReadAll(stdin)
		h.history = append(h.history, string(b))
		return out("")
	case strings.Contains(cmd, inspectSep):
		var b strings.Builder
		for _, p := range h.ports {
			b.WriteString(h.show(p))
		}
		return out(b.String() + inspectSep + "\n" + h.upstream)
	case strings.Contains(cmd, "IFS= read -r want"):
		if h.onWrite != nil {
			h.onWrite(len(h.writes))
		}
		r := bufio.NewReader(stdin)
		want, _ := r.ReadString('\n')
		sum := sha256.Sum256([]byte(h.upstream))
		if strings.TrimSpace(want) != hex.EncodeToString(sum[:]) {
			return sshexec.Result{ExitCode: 67}, &sshexec.ExitError{Cmd: "write", Code: 67, Stderr: "changed"}
		}
		next, _ := io.ReadAll(r)
		h.upstream = string(next)
		h.writes = append(h.writes, h.upstream)
		if sportRE.MatchString(cmd) {
			return out("drained 0\n")
		}
		return out("")
	case strings.HasPrefix(cmd, "cat -- "):
		return out(h.upstream)
	case strings.Contains(cmd, unitSep):
		return out(strings.Repeat("[Service]\nExecStart=/usr/bin/node server.js\n"+unitSep+"\n", len(h.ports)))
	case strings.Contains(cmd, restartSep):
		port, _ := strconv.Atoi(unitRE.FindStringSubmatch(cmd)[1])
		before := h.show(port)
		h.pid[port] += 1000
		if port == h.failAfterRestart {
			h.healthy[port] = false
		}
		return out("1700000000000000\n" + restartSep + "\n" + before + restartSep + "\n" + h.show(port))
	case strings.HasPrefix(cmd, "systemctl show"):
		port, _ := strconv.Atoi(unitRE.FindStringSubmatch(cmd)[1])
		return out(h.show(port))
	case strings.Contains(cmd, "journalctl"):
		return out("==> journal <==\nnot ready\n")
	}
	h.t.Errorf("fake host: unexpected command %q", cmd)
	return sshexec.Result{ExitCode: 127}, &sshexec.ExitError{Cmd: cmd, Code: 127}
}

func (h *fakeHost) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	srv, ok := h.servers[port]
	if !ok {
		return nil, fmt.Errorf("connection refused: %s", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, srv.Listener.Addr().String())
}

func (h *fakeHost) Close() error { return nil }

// downIn returns the ports marked down in an upstream file.
func downIn(t *testing.T, content string) []int {
	t.Helper()
	servers, err := upstreamServers([]byte(content), "my_app", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	var down []int
	for p, d := range servers {
		if d {
			down = append(down, p)
		}
	}
	sort.Ints(down)
	return down
}

func fakeDeploy(t *testing.T, h *fakeHost) (*Report, error) {
	t.Helper()
	cfg, err := ParseConfig("rollout.yaml", []byte(`app: my-app
hosts: [web1]
ssh: {user: deploy}
base_port: 3000
instances: 4
nginx: {upstream_file: /etc/nginx/conf.d/my-app.conf, upstream: my_app}
health: {timeout: 1s, attempt_timeout: 200ms, interval: 10ms, min_healthy: 0s}
drain_timeout: 1s
`))
	if err != nil {
		t.Fatal(err)
	}
	d := &Deployer{Config: cfg, Version: "v2",
		Connect: func(context.Context, string) (Conn, error) { return h, nil },
		Stdout:  io.Discard, Stderr: io.Discard}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.Deploy(ctx)
}

func TestDeployOneReloadPerInstance(t *testing.T) {
	h := newFakeHost(t, []int{3000, 3001, 3002, 3003})
	rep, err := fakeDeploy(t, h)
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Hosts[0].Restarted; fmt.Sprint(got) != "[3000 3001 3002 3003]" {
		t.Errorf("restarted %v", got)
	}
	// 4 instances: a drain, 3 undrain+drain writes, the last undrain.
	want := [][]int{{3000}, {3001}, {3002}, {3003}, nil}
	if len(h.writes) != len(want) {
		t.Fatalf("%d upstream writes, want %d", len(h.writes), len(want))
	}
	for i, w := range h.writes {
		if got := downIn(t, w); fmt.Sprint(got) != fmt.Sprint(want[i]) {
			t.Errorf("after write %d, down %v, want %v", i+1, got, want[i])
		}
	}
	if !strings.HasPrefix(h.upstream, "# managed by hand, and by rollout\n") {
		t.Errorf("the rest of the file was not kept:\n%s", h.upstream)
	}
	if h.locked || len(h.history) != 1 || !strings.Contains(h.history[0], `"outcome":"ok"`) {
		t.Errorf("locked after the deploy: %v; history %q", h.locked, h.history)
	}
}

func TestDeployFailureKeepsPendingInstanceServing(t *testing.T) {
	h := newFakeHost(t, []int{3000, 3001, 3002, 3003})
	h.failAfterRestart = 3002
	_, err := fakeDeploy(t, h)
	var se *StepError
	if !errors.As(err, &se) || se.Port != 3002 || se.Step != StepHealth || !se.LeftOut {
		t.Fatalf("err = %v, want a health failure of 3002, left out", err)
	}
	// 3001 came back healthy and went back in with 3002's drain; 3002
	// stays out; 3003 was never touched.
	if got := downIn(t, h.upstream); fmt.Sprint(got) != "[3002]" {
		t.Errorf("down at the end: %v, want [3002]", got)
	}
	if !strings.Contains(se.Output, "not ready") {
		t.Errorf("the app's output is missing: %q", se.Output)
	}
	if h.locked || len(h.history) != 1 || !strings.Contains(h.history[0], `"outcome":"failed"`) {
		t.Errorf("locked after the deploy: %v; history %q", h.locked, h.history)
	}
}

func TestDeployUpstreamChangedByOthers(t *testing.T) {
	h := newFakeHost(t, []int{3000, 3001, 3002, 3003})
	// Before rollout's third write, someone marks 3003 down by hand: that
	// write must be refused, the file read again, capacity checked again
	// (3003 no longer serves, so 3002 may not be drained with all others
	// required), and the hand edit kept.
	h.onWrite = func(n int) {
		if n == 2 {
			h.upstream = strings.Replace(h.upstream, "127.0.0.1:3003;", "127.0.0.1:3003 down;", 1)
		}
	}
	_, err := fakeDeploy(t, h)
	if !errors.Is(err, ErrCapacity) {
		t.Fatalf("err = %v, want a capacity failure", err)
	}
	if got := downIn(t, h.upstream); fmt.Sprint(got) != "[3003]" {
		t.Errorf("down at the end: %v, want [3003] (the hand edit, and 3001 back in)", got)
	}
}

func TestDeployRefusedWhileLocked(t *testing.T) {
	h := newFakeHost(t, []int{3000, 3001})
	h.locked = true
	_, err := fakeDeploy(t, h)
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepLock || !errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v, want a lock failure", err)
	}
	if len(h.writes) != 0 || !h.locked {
		t.Errorf("a locked host was changed (%d writes) or unlocked", len(h.writes))
	}
}
