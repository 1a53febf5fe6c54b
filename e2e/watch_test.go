package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

type watchLine struct {
	Type       string `json:"type"`
	Transition struct {
		Host    string `json:"host"`
		Port    int    `json:"port"`
		Kind    string `json:"kind"`
		Problem bool   `json:"problem"`
		During  string `json:"during"`
	} `json:"transition"`
}

// watcher is a running `rollout watch --output json`, its transitions in
// order, and the webhook posts it made.
type watcher struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan watchLine
	mu    sync.Mutex
	posts []string
}

func startWatch(t *testing.T, cfg string) *watcher {
	t.Helper()
	w := &watcher{t: t, lines: make(chan watchLine, 1000)}
	recv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var p struct{ Text string }
		_ = json.NewDecoder(r.Body).Decode(&p)
		w.mu.Lock()
		w.posts = append(w.posts, p.Text)
		w.mu.Unlock()
	}))
	t.Cleanup(recv.Close)
	w.cmd = exec.Command(rolloutBin, "watch", "-c", cfg, "--interval", "1s", "--output", "json")
	w.cmd.Env = append(os.Environ(), "ROLLOUT_NOTIFY_URL="+recv.URL+"/hook")
	w.cmd.Stderr = os.Stderr
	out, err := w.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var l watchLine
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Type == "transition" {
				t.Logf("watch: %s", sc.Text())
				w.lines <- l
			}
		}
		_, _ = io.Copy(io.Discard, out)
		close(w.lines)
	}()
	t.Cleanup(func() { _ = w.cmd.Process.Kill(); _ = w.cmd.Wait() })
	return w
}

// waitFor reads transitions until one of host (port 0: the host itself)
// of kind arrives, and returns those read before it.
func (w *watcher) waitFor(host string, port int, kind string, within time.Duration) []watchLine {
	w.t.Helper()
	var seen []watchLine
	deadline := time.After(within)
	for {
		select {
		case l, ok := <-w.lines:
			if !ok {
				w.t.Fatalf("watch ended before %s:%d %s", host, port, kind)
			}
			if l.Transition.Host == host && l.Transition.Port == port && l.Transition.Kind == kind {
				return seen
			}
			seen = append(seen, l)
		case <-deadline:
			w.t.Fatalf("no %s:%d %s within %s (saw %+v)", host, port, kind, within, seen)
		}
	}
}

func (w *watcher) posted() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.posts, "\n---\n")
}

// watch --once exits 0 on a healthy fleet and 1 while an instance is down;
// a running watch reports an instance going down and coming back, a host
// rebooting (unreachable once, then reachable) while it keeps polling the
// other, and posts each change to the webhook; a deploy's own drains are
// marked as during a deploy and not posted.
func TestWatch(t *testing.T) {
	resetFleet(t)
	cfg := ciConfig(t, "1s")
	h1, h2 := fleet.Hosts[0], fleet.Hosts[1]
	ctx := context.Background()

	if out, code := rollout(t, "watch", "--once", "-c", cfg); code != 0 || !strings.Contains(out, "every instance of 2 host(s) is running, in Nginx and healthy") {
		t.Fatalf("watch --once on a healthy fleet exited %d", code)
	}
	if out, err := fleet.Run(ctx, h1, "sudo -n systemctl stop my-app@3001"); err != nil {
		t.Fatalf("stop an instance: %v\n%s", err, out)
	}
	if out, code := rollout(t, "watch", "--once", "-c", cfg); code != 1 || !strings.Contains(out, "FAIL "+h1.Addr+":3001 down: inactive/dead") {
		t.Fatalf("watch --once with an instance down exited %d", code)
	}

	w := startWatch(t, cfg)
	w.waitFor(h1.Addr, 3001, "down", 30*time.Second)
	if out, err := fleet.Run(ctx, h1, "sudo -n systemctl start my-app@3001"); err != nil {
		t.Fatalf("start the instance: %v\n%s", err, out)
	}
	w.waitFor(h1.Addr, 3001, "up", 30*time.Second)

	// A host goes down and comes back (a reboot, held down until the
	// watcher has polled it: a reboot quicker than a poll is not seen):
	// said once, its recovery once, the other host polled throughout.
	rebootCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	fleet.Stop(h2)
	seen := w.waitFor(h2.Addr, 0, "unreachable", 60*time.Second)
	if err := fleet.Start(rebootCtx, h2); err != nil {
		t.Fatal(err)
	}
	if err := fleet.Provision(rebootCtx, h2, basePort, instances); err != nil {
		t.Fatal(err)
	}
	seen = append(seen, w.waitFor(h2.Addr, 0, "reachable", 60*time.Second)...)
	for _, l := range seen {
		if l.Transition.Host == h2.Addr && l.Transition.Kind == "unreachable" {
			t.Errorf("unreachable reported more than once: %+v", l)
		}
	}
	if out, code := rollout(t, "watch", "--once", "-c", cfg, "--hosts", h1.Addr); code != 0 {
		t.Fatalf("h1 is healthy throughout, watch --once says %d:\n%s", code, out)
	}

	// A deploy drains instances on purpose: whatever the watch sees of it
	// is marked as during the deploy and not posted.
	stageEverywhere(t, testbed.GoodRelease("v2"))
	time.Sleep(3 * time.Second) // the rebooted host's instances settle
	before := len(w.posted())
	if out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2", "--hosts", h1.Addr); code != 0 {
		t.Fatalf("deploy during the watch exited %d:\n%s", code, out)
	}
	time.Sleep(2 * time.Second)
	for done := false; !done; {
		select {
		case l := <-w.lines:
			if l.Transition.Host == h1.Addr && l.Transition.During == "" {
				t.Errorf("a change during the deploy not marked as such: %+v", l)
			}
		default:
			done = true
		}
	}
	if after := w.posted()[before:]; strings.Contains(after, h1.Addr+":") {
		t.Errorf("the deploy's own drains were posted:\n%s", after)
	}

	if err := w.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Wait(); err != nil {
		t.Errorf("watch stopped by Ctrl-C: %v, want exit 0", err)
	}
	posted := w.posted()
	for _, want := range []string{"rollout watch my-app:", "❌ " + h1.Addr + ":3001 down: inactive/dead", "✅ " + h1.Addr + ":3001 up", "❌ " + h2.Addr + " unreachable", "✅ " + h2.Addr + " reachable"} {
		if !strings.Contains(posted, want) {
			t.Errorf("the webhook did not get %q:\n%s", want, posted)
		}
	}
	if strings.Contains(posted, "/hook") {
		t.Error("the webhook URL leaked into a message")
	}
}
