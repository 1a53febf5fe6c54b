package notify

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/rollout-dev/rollout/deployer"
)

// receiver is a webhook on loopback that records what it gets.
type receiver struct {
	srv    *httptest.Server
	bodies chan string
}

func newReceiver(t *testing.T, h http.HandlerFunc) *receiver {
	r := &receiver{bodies: make(chan string, 10)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.bodies <- req.Method + " " + req.URL.Path + " " + req.Header.Get("Content-Type") + " " + string(b)
		if h != nil {
			h(w, req)
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func TestPayloads(t *testing.T) {
	tests := []struct {
		format, chat, path, want string
	}{
		{Slack, "", "/services/T000/B000/XXXXSECRET", `POST /services/T000/B000/XXXXSECRET application/json {"text":"deployed \"v2\"\nline 2"}`},
		{Telegram, "-100123", "/bot123456:SECRETTOKEN/sendMessage", `POST /bot123456:SECRETTOKEN/sendMessage application/json {"chat_id":"-100123","text":"deployed \"v2\"\nline 2","disable_web_page_preview":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			r := newReceiver(t, nil)
			w := Webhook{URL: r.srv.URL + tt.path, Format: tt.format, ChatID: tt.chat, Timeout: 5 * time.Second}
			if err := w.Send(context.Background(), "deployed \"v2\"\nline 2"); err != nil {
				t.Fatal(err)
			}
			if got := <-r.bodies; got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// A receiver that never answers holds the sender no longer than Timeout,
// and the error says so without the URL.
func TestHangingReceiver(t *testing.T) {
	release := make(chan struct{})
	r := newReceiver(t, func(http.ResponseWriter, *http.Request) { <-release })
	t.Cleanup(func() { close(release) }) // runs before the server closes
	w := Webhook{URL: r.srv.URL + "/services/SECRETPATH", Timeout: 200 * time.Millisecond}
	err := w.Send(context.Background(), "hi")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	if want := "notify slack webhook: no answer within 200ms: context deadline exceeded"; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	if strings.Contains(err.Error(), "SECRETPATH") {
		t.Errorf("secret in %q", err)
	}
}

func TestErrorStatus(t *testing.T) {
	r := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "oops\nsomething broke", http.StatusInternalServerError)
	})
	err := Webhook{URL: r.srv.URL + "/hook", Timeout: 5 * time.Second}.Send(context.Background(), "hi")
	if err == nil || err.Error() != "notify slack webhook: answered 500 Internal Server Error: oops something broke" {
		t.Errorf("got %v", err)
	}
}

// The payload goes only where it was told to: a redirect is an error.
func TestNoRedirect(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	r := newReceiver(t, func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, other.URL, http.StatusTemporaryRedirect)
	})
	err := Webhook{URL: r.srv.URL + "/hook", Timeout: 5 * time.Second}.Send(context.Background(), "hi")
	if err == nil || !strings.Contains(err.Error(), "answered 307 Temporary Redirect") || elsewhere.Load() != 0 {
		t.Errorf("got %v, redirect target hit %d times", err, elsewhere.Load())
	}
}

// net/http's errors hold the whole URL; ours do not.
func TestRedaction(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	for _, u := range []string{
		"http://" + addr + "/bot123456:AAH-SECRET_token/sendMessage",
		"http://user:pa55word@" + addr + "/services/T1/B2/SECRETkey?token=SECRETquery",
	} {
		err := Webhook{URL: u, Timeout: 5 * time.Second}.Send(context.Background(), "hi")
		if err == nil {
			t.Fatalf("%s: no error", addr)
		}
		msg := err.Error()
		for _, secret := range []string{"SECRET", "pa55word", "123456"} {
			if strings.Contains(msg, secret) {
				t.Errorf("%q leaks %q", msg, secret)
			}
		}
		if !strings.Contains(msg, "notify slack webhook: Post \"[redacted]") || !strings.Contains(msg, "connection refused") {
			t.Errorf("unhelpful error %q", msg)
		}
	}
	if got := Redact("a https://hooks.slack.com/services/T/B/KEYKEYKEY b", "https://hooks.slack.com/services/T/B/KEYKEYKEY"); got != "a [redacted] b" {
		t.Errorf("Redact: %q", got)
	}
	if got := Redact("token KEYKEYKEY seen", "https://hooks.slack.com/services/T/B/KEYKEYKEY"); got != "token [redacted] seen" {
		t.Errorf("Redact part: %q", got)
	}
}

func TestMessage(t *testing.T) {
	good := &deployer.Report{Version: "v2", Duration: 5300 * time.Millisecond, Hosts: []deployer.HostReport{
		{Host: "10.213.0.11", Outcome: deployer.HostOK, Restarted: []int{3000, 3001}, Duration: 2500 * time.Millisecond},
		{Host: "10.213.0.12", Outcome: deployer.HostOK, Restarted: []int{3000, 3001}, Duration: 2800 * time.Millisecond},
	}}
	want := "✅ my-app v2 deployed to 2 hosts in 5.3s\n10.213.0.11: ok, restarted 3000,3001 (2.5s)\n10.213.0.12: ok, restarted 3000,3001 (2.8s)\nhttps://github.com/o/r/actions/runs/7"
	if got := Message("my-app", good, nil, "https://github.com/o/r/actions/runs/7"); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}

	// The probe's figures, per host.
	probed := *good
	probed.Hosts = good.Hosts[:1]
	probed.Probe = []deployer.ProbeResult{{Host: "10.213.0.11", URL: "http://127.0.0.1:80/", Sent: 52, P50: 3 * time.Millisecond, P99: 11 * time.Millisecond}}
	want = "✅ my-app v2 deployed to 1 host in 5.3s\nprobe 10.213.0.11: 52 requests to http://127.0.0.1:80/, 0 failed; p50 3ms, p99 11ms\n10.213.0.11: ok, restarted 3000,3001 (2.5s)"
	if got := Message("my-app", &probed, nil, ""); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}

	serr := &deployer.StepError{Host: "10.213.0.12", Port: 3000, Step: deployer.StepHealth, Err: deployer.ErrRestarted, LeftOut: true}
	failed := &deployer.Report{Version: "v3", Duration: 802 * time.Millisecond, Hosts: []deployer.HostReport{
		{Host: "10.213.0.11", Outcome: deployer.HostStopped, Restarted: []int{3000}, Duration: 690 * time.Millisecond, Error: "capacity 10.213.0.11:3001: stopped before the next instance"},
		{Host: "10.213.0.12", Outcome: deployer.HostFailed, Restarted: []int{3000}, LeftOut: []int{3000}, Duration: 589 * time.Millisecond, Error: serr.Error()},
	}}
	want = "❌ my-app v3 deploy FAILED after 802ms\n10.213.0.11: stopped, restarted 3000 (690ms): capacity 10.213.0.11:3001: stopped before the next instance\n" +
		"10.213.0.12: failed, restarted 3000, left out of service 3000 (589ms): health 10.213.0.12:3000: instance was restarted by systemd (instance left out of service)"
	if got := Message("my-app", failed, multierror.Append(nil, serr), ""); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}

	// Preflight failed: no host says why, the error does.
	pre := &deployer.Report{Version: "v3", Duration: time.Second, Hosts: []deployer.HostReport{{Host: "h1", Outcome: deployer.HostNotStarted}}}
	want = "❌ my-app v3 deploy FAILED after 1s\nh1: not started\nerror: preflight h1: host key mismatch"
	if got := Message("my-app", pre, errors.New("preflight h1:\nhost key mismatch"), ""); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if got := Message("a", &deployer.Report{Version: strings.Repeat("v", 5000)}, nil, ""); len(got) > maxText+len("…") {
		t.Errorf("message of %d bytes", len(got))
	}
}
