package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func serverPort(t *testing.T, h http.Handler) int {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	_, p, _ := net.SplitHostPort(srv.Listener.Addr().String())
	port, _ := strconv.Atoi(p)
	return port
}

func TestCheck(t *testing.T) {
	ok := serverPort(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(200)
	}))
	unready := serverPort(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
		_, _ = w.Write([]byte("warming up"))
	}))
	h := HTTP{Path: "/healthz", Status: 200, AttemptTimeout: time.Second}
	if err := h.Check(context.Background(), ok); err != nil {
		t.Errorf("healthy instance: %v", err)
	}
	err := h.Check(context.Background(), unready)
	var se *StatusError
	if !errors.As(err, &se) || se.Got != 503 || se.Body != "warming up" {
		t.Errorf("503 instance: got %v", err)
	}
	if err := (HTTP{Path: "/other", Status: 200, AttemptTimeout: time.Second}).Check(context.Background(), ok); err == nil {
		t.Error("wrong path: want error")
	}
}

func TestWaitBecomesHealthy(t *testing.T) {
	var calls atomic.Int32
	port := serverPort(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 4 {
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(200)
	}))
	h := HTTP{Path: "/", Status: 200, AttemptTimeout: time.Second}
	if err := h.Wait(context.Background(), port, 5*time.Second, 10*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 4 {
		t.Errorf("attempts = %d, want 4", got)
	}
}

func TestWaitTimeoutReportsLastCause(t *testing.T) {
	port := serverPort(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	h := HTTP{Path: "/", Status: 200, AttemptTimeout: time.Second}
	err := h.Wait(context.Background(), port, 200*time.Millisecond, 20*time.Millisecond, nil)
	var se *StatusError
	if !errors.Is(err, ErrTimeout) || !errors.As(err, &se) || se.Got != 503 {
		t.Fatalf("got %v, want ErrTimeout holding the 503", err)
	}
}

func TestWaitStopsWhenProcessDies(t *testing.T) {
	// Nothing listens on a closed port; alive says the process is gone.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	died := errors.New("process exited")
	h := HTTP{Path: "/", Status: 200, AttemptTimeout: time.Second}
	start := time.Now()
	err := h.Wait(context.Background(), port, 10*time.Second, 10*time.Millisecond, func(context.Context) error { return died })
	if !errors.Is(err, died) {
		t.Fatalf("got %v, want the alive error", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("took %s: should stop at once", time.Since(start))
	}
}

func TestWaitCancelled(t *testing.T) {
	port := serverPort(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	err := HTTP{Path: "/", Status: 200, AttemptTimeout: time.Second}.Wait(ctx, port, 10*time.Second, 10*time.Millisecond, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// The last attempt, cut short by the deadline, must not hide the real cause
// seen before it.
func TestWaitKeepsRealCauseWhenLastAttemptIsCut(t *testing.T) {
	var calls atomic.Int32
	port := serverPort(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) > 2 {
			<-r.Context().Done() // hangs past the deadline
			return
		}
		w.WriteHeader(503)
	}))
	h := HTTP{Path: "/", Status: 200, AttemptTimeout: 5 * time.Second}
	err := h.Wait(context.Background(), port, 300*time.Millisecond, 10*time.Millisecond, nil)
	var se *StatusError
	if !errors.Is(err, ErrTimeout) || !errors.As(err, &se) || se.Got != 503 {
		t.Fatalf("got %v, want ErrTimeout holding the 503", err)
	}
}

// The check goes to Host (the address the balancer uses), 127.0.0.1 by
// default, and IPv6 addresses are bracketed.
func TestCheckDialsHost(t *testing.T) {
	port := serverPort(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for _, tt := range []struct{ host, want string }{
		{"", "127.0.0.1"}, {"10.0.0.5", "10.0.0.5"}, {"::1", "[::1]"}, {"localhost", "localhost"},
	} {
		var dialled string
		h := HTTP{Host: tt.host, Path: "/", Status: 200, AttemptTimeout: time.Second,
			Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				dialled = addr
				var d net.Dialer
				return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", port))
			}}
		if err := h.Check(context.Background(), port); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("%s:%d", tt.want, port); dialled != want {
			t.Errorf("Host %q dialled %q, want %q", tt.host, dialled, want)
		}
	}
}

// A failure that Permanent names ends the wait at once, with that error.
func TestWaitStopsOnPermanentFailure(t *testing.T) {
	gone := errors.New("the way to the instance is gone")
	h := HTTP{Path: "/", Status: 200, AttemptTimeout: time.Second,
		Dial:      func(context.Context, string, string) (net.Conn, error) { return nil, gone },
		Permanent: func(err error) bool { return errors.Is(err, gone) }}
	start := time.Now()
	err := h.Wait(context.Background(), 3000, 10*time.Second, 10*time.Millisecond, nil)
	if !errors.Is(err, gone) || errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want the permanent failure", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("took %s: should stop at once", time.Since(start))
	}
}
