package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// server starts an httptest server on 127.0.0.1 and closes it with the test.
func server(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func run(t *testing.T, cfg Config) Result {
	t.Helper()
	r, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("%v", r)
	if r.Requests != r.OK+r.Failed {
		t.Errorf("requests %d != ok %d + failed %d", r.Requests, r.OK, r.Failed)
	}
	return r
}

func TestRateAccuracy(t *testing.T) {
	var mu sync.Mutex
	ids := map[string]bool{}
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ids[r.Header.Get("X-Request-Id")] = true
		mu.Unlock()
		w.Header().Set("X-App-Version", "v1")
		io.WriteString(w, "hello\n")
	})
	r := run(t, Config{URL: s.URL, Rate: 200, Duration: time.Second})

	if r.Requests < 190 || r.Requests > 210 {
		t.Errorf("requests = %d, want 200 ±5%%", r.Requests)
	}
	if r.OK != r.Requests || r.ByMethod["GET"] != r.Requests || r.Versions["v1"] != r.OK {
		t.Errorf("want every request an OK GET of v1, got %v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ids) != r.Requests || ids[""] {
		t.Errorf("server saw %d distinct X-Request-Id values for %d requests", len(ids), r.Requests)
	}
	if r.Elapsed < 950*time.Millisecond || r.Elapsed > 1200*time.Millisecond {
		t.Errorf("elapsed = %v, want about 1s", r.Elapsed)
	}
	if r.Latency.P50 <= 0 || r.Latency.P50 > r.Latency.P99 || r.Latency.P99 > r.Latency.Max {
		t.Errorf("latency percentiles out of order: %+v", r.Latency)
	}
}

func TestPostEcho(t *testing.T) {
	var bad atomic.Int32 // POST bodies that are not {"id": <X-Request-Id>, ...}
	check := func(r *http.Request) []byte {
		body, _ := io.ReadAll(r.Body)
		var v struct{ ID string }
		if r.URL.Path != "/echo" || json.Unmarshal(body, &v) != nil || v.ID != r.Header.Get("X-Request-Id") {
			bad.Add(1)
		}
		return body
	}
	raw := func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.Write(check(r))
		}
	}
	// Like examples/app/server.js: the body comes back as a JSON field.
	app := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-App-Version", "v1")
		if r.Method == http.MethodPost {
			json.NewEncoder(w).Encode(map[string]any{"version": "v1", "echo": string(check(r))})
		}
	}
	wrong := func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			check(r)
			io.WriteString(w, `{"echo":"something else"}`)
		}
	}
	for _, tc := range []struct {
		name    string
		h       http.HandlerFunc
		version string
		wantOK  bool
	}{
		{"raw", raw, "(none)", true},
		{"app", app, "v1", true},
		{"wrong", wrong, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad.Store(0)
			s := server(t, tc.h)
			r := run(t, Config{URL: s.URL + "/", Rate: 200, Duration: 400 * time.Millisecond, PostEvery: 4})

			posts := r.ByMethod["POST"]
			if d := posts - r.Requests/4; d < -1 || d > 1 || posts == 0 {
				t.Errorf("POSTs = %d of %d requests, want a quarter", posts, r.Requests)
			}
			if r.ByMethod["GET"]+posts != r.Requests {
				t.Errorf("by method %v does not add up to %d", r.ByMethod, r.Requests)
			}
			if n := bad.Load(); n != 0 {
				t.Errorf("server got %d malformed POST bodies", n)
			}
			if tc.wantOK {
				if r.OK != r.Requests || r.Versions[tc.version] != r.OK {
					t.Errorf("want all OK with version %q, got %v", tc.version, r)
				}
			} else if r.Failures[KindEchoMismatch] != posts || r.FailedByMethod["POST"] != posts || r.OK != r.ByMethod["GET"] {
				t.Errorf("want every POST an echo mismatch, got %v", r)
			}
		})
	}
}

func TestFailureKinds(t *testing.T) {
	hijack := func(t *testing.T, raw string) string {
		return server(t, func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			io.WriteString(conn, raw)
			conn.Close()
		}).URL
	}
	for _, tc := range []struct {
		name    string
		url     func(t *testing.T) string
		timeout time.Duration
		kinds   []string // each failure must be one of these
	}{
		{"502", func(t *testing.T) string {
			return server(t, func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "bad gateway", http.StatusBadGateway)
			}).URL
		}, 0, []string{"http 502"}},
		{"closed conn", func(t *testing.T) string { return hijack(t, "") },
			0, []string{"transport: EOF", "transport: connection reset"}},
		{"truncated body", func(t *testing.T) string {
			return hijack(t, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
		}, 0, []string{"transport: body: EOF"}},
		{"refused", func(t *testing.T) string {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l.Close()
			return "http://" + l.Addr().String()
		}, 0, []string{"transport: connection refused"}},
		{"timeout", func(t *testing.T) string {
			return server(t, func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
			}).URL
		}, 100 * time.Millisecond, []string{"transport: timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, Config{URL: tc.url(t), Rate: 50, Duration: 200 * time.Millisecond, Timeout: tc.timeout})
			if r.Requests < 9 || r.Failed != r.Requests || r.OK != 0 {
				t.Fatalf("want every one of ~10 requests failed, got %v", r)
			}
			n := 0
			for _, k := range tc.kinds {
				n += r.Failures[k]
			}
			if n != r.Failed {
				t.Errorf("failures %v, want only kinds %q", r.Failures, tc.kinds)
			}
			if r.FailedByMethod["GET"] != r.Failed {
				t.Errorf("failed by method %v, want all GET", r.FailedByMethod)
			}
		})
	}
}

func TestVersionSwitch(t *testing.T) {
	var served atomic.Int32
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		v := "v1"
		if served.Add(1) > 20 {
			v = "v2"
		}
		w.Header().Set("X-App-Version", v)
	})
	r := run(t, Config{URL: s.URL, Rate: 100, Duration: 400 * time.Millisecond})
	if r.Requests < 38 || r.OK != r.Requests {
		t.Fatalf("want ~40 OK requests, got %v", r)
	}
	want := map[string]int{"v1": 20, "v2": r.OK - 20}
	if !reflect.DeepEqual(r.Versions, want) {
		t.Errorf("versions = %v, want %v", r.Versions, want)
	}
	if !strings.Contains(r.String(), fmt.Sprintf("versions={v1:20 v2:%d}", r.OK-20)) {
		t.Errorf("String() = %q lacks the versions", r)
	}
}

func TestMaxInFlightOverload(t *testing.T) {
	release := make(chan struct{})
	s := server(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	g, err := Start(context.Background(), Config{URL: s.URL, Rate: 100, Duration: 200 * time.Millisecond, MaxInFlight: 5})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); g.Snapshot().Requests < 20 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	r := g.Stop()
	t.Logf("%v", r)
	if r.Requests != 20 || r.OK != 5 || r.Failures[KindOverload] != 15 || r.Failed != 15 {
		t.Errorf("want 20 requests: 5 OK, 15 %q; got %v", KindOverload, r)
	}
}

func TestStopIdempotentSnapshotMonotonic(t *testing.T) {
	s := server(t, func(w http.ResponseWriter, r *http.Request) {})
	g, err := Start(context.Background(), Config{URL: s.URL, Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	var prev Result
	for range 10 {
		time.Sleep(20 * time.Millisecond)
		cur := g.Snapshot()
		if cur.Requests < prev.Requests || cur.OK < prev.OK || cur.Failed < prev.Failed || cur.Elapsed < prev.Elapsed {
			t.Fatalf("snapshot went backwards: %v then %v", prev, cur)
		}
		if cur.OK+cur.Failed > cur.Requests {
			t.Fatalf("more finished than started: %v", cur)
		}
		prev = cur
	}
	if prev.Requests < 20 {
		t.Errorf("after 200ms at 200/s only %d requests started", prev.Requests)
	}

	first := g.Stop()
	var wg sync.WaitGroup
	results := make([]Result, 3)
	for i := range results {
		wg.Go(func() { results[i] = g.Stop() })
	}
	wg.Wait()
	time.Sleep(20 * time.Millisecond)
	results = append(results, g.Snapshot())
	for _, r := range results {
		if !reflect.DeepEqual(r, first) {
			t.Errorf("after Stop got %v, want %v", r, first)
		}
	}
	if first.Requests < prev.Requests || first.Requests != first.OK {
		t.Errorf("final %v, want all OK and at least %d", first, prev.Requests)
	}
}

func TestRunEndsWithContext(t *testing.T) {
	s := server(t, func(w http.ResponseWriter, r *http.Request) {})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	r, err := Run(ctx, Config{URL: s.URL, Rate: 100})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > time.Second {
		t.Errorf("Run took %v after a 300ms context", took)
	}
	if r.Requests < 25 || r.Requests > 35 || r.OK != r.Requests {
		t.Errorf("want ~30 OK requests, got %v", r)
	}
}

func TestStartValidates(t *testing.T) {
	ok := Config{URL: "http://127.0.0.1:1", Rate: 1}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"unparsable url", func(c *Config) { c.URL = "http://[::1" }, "parse url"},
		{"ftp scheme", func(c *Config) { c.URL = "ftp://127.0.0.1" }, "scheme"},
		{"no host", func(c *Config) { c.URL = "http:///x" }, "want scheme://host"},
		{"public address", func(c *Config) { c.URL = "http://8.8.8.8" }, "not loopback"},
		{"public name", func(c *Config) { c.URL = "https://example.com" }, "not loopback"},
		{"zero rate", func(c *Config) { c.Rate = 0 }, "rate"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "negative"},
		{"relative path", func(c *Config) { c.Path = "x" }, "path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mutate(&cfg)
			g, err := Start(context.Background(), cfg)
			if err == nil {
				g.Stop()
				t.Fatalf("Start(%+v) succeeded", cfg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	// Accepted addresses: checked with validate alone, so nothing is sent.
	for _, tc := range []struct{ url, base string }{
		{"http://localhost:1", "http://localhost:1"},
		{"https://10.213.0.11/", "https://10.213.0.11"},
		{"http://[::1]:1/app/", "http://[::1]:1/app"},
	} {
		cfg, base, err := validate(Config{URL: tc.url, Rate: 1})
		if err != nil || base != tc.base || cfg.Path != "/" || cfg.Timeout != 10*time.Second || cfg.MaxInFlight != 1000 {
			t.Errorf("validate(%q) = %+v, %q, %v; want base %q and defaults", tc.url, cfg, base, err, tc.base)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, "connection reset"},
		{fmt.Errorf("get: %w", io.ErrUnexpectedEOF), "EOF"},
		{fmt.Errorf("get: %w", context.DeadlineExceeded), "timeout"},
		{fmt.Errorf("dial tcp 10.0.0.1:80: %w", syscall.EHOSTUNREACH), "other: no route to host"},
		{errors.New(strings.Repeat("x", 100)), "other: " + strings.Repeat("x", 60)},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
