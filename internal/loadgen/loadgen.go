// Package loadgen is the open-loop HTTP load generator that rollout's
// end-to-end tests and benchmarks run against Nginx on a test host while a
// deploy is in progress. It sends requests at a fixed rate whether or not
// earlier ones have finished, reads every response in full and counts every
// failure by kind, so a rolling restart that drops even one request shows up.
//
// It must only be pointed at loopback or the project's own test hosts:
// Start refuses any host that is not "localhost" or a loopback or private
// IP address.
package loadgen

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// KindOverload is the failure kind of a tick that found MaxInFlight requests
// already in flight.
const KindOverload = "overload: generator at max in flight"

// KindEchoMismatch is the failure kind of a 2xx POST /echo whose response
// does not contain the body that was sent.
const KindEchoMismatch = "echo mismatch"

// Config describes a load run. Zero values of the optional fields select
// the defaults noted on them.
type Config struct {
	URL         string        // base URL, e.g. "http://10.213.0.11"
	Rate        int           // requests per second, fixed (open loop)
	Duration    time.Duration // how long to send; 0 = until Stop or ctx done
	PostEvery   int           // every Nth request is a POST /echo; 0 = GETs only
	Path        string        // GET path, default "/"
	Timeout     time.Duration // per request, including the body; default 10s
	MaxInFlight int           // cap on concurrent requests, default 1000
}

// Result holds the totals of a run. Every tick counts in Requests, so after
// Stop, Requests == OK + Failed; ticks refused for MaxInFlight count as
// failures of kind KindOverload.
type Result struct {
	Requests       int            // started (one per tick)
	OK             int            // 2xx (and, for POSTs, body echoed back)
	Failed         int            // everything else
	Failures       map[string]int // by kind, e.g. "http 502", "transport: connection refused"
	Versions       map[string]int // X-App-Version of OK responses; "(none)" if absent
	ByMethod       map[string]int // started per method
	FailedByMethod map[string]int
	// Resent counts, by kind, requests that failed on a reused keep-alive
	// connection before any response byte and were sent once more on a
	// new connection, as browsers do (Nginx closes idle keep-alive connections
	// when it reloads). A resend that fails again counts in Failed.
	Resent  map[string]int
	Elapsed time.Duration // time spent sending (ticks), not draining
	// Latency of completed requests: those that got a full response, of
	// any status.
	Latency struct{ P50, P99, Max time.Duration }
}

// String renders r on one line.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "requests=%d ok=%d failed=%d", r.Requests, r.OK, r.Failed)
	if len(r.Failures) > 0 {
		b.WriteString(" (" + joinCounts(r.Failures, "=", ", ") + ")")
	}
	if len(r.Resent) > 0 {
		b.WriteString(" resent_on_closed_keepalive={" + joinCounts(r.Resent, "=", ", ") + "}")
	}
	fmt.Fprintf(&b, " versions={%s} p50=%v p99=%v max=%v elapsed=%v",
		joinCounts(r.Versions, ":", " "),
		r.Latency.P50.Round(time.Microsecond), r.Latency.P99.Round(time.Microsecond),
		r.Latency.Max.Round(time.Microsecond), r.Elapsed.Round(time.Millisecond))
	return b.String()
}

func joinCounts(m map[string]int, kv, sep string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s%s%d", k, kv, m[k]))
	}
	return strings.Join(parts, sep)
}

// Generator is a running load run. Its methods are safe for concurrent use.
type Generator struct {
	cfg     Config
	client  *http.Client
	fresh   *http.Client // new connection per request: for resends
	getURL  string
	echoURL string
	runID   string
	reqCtx  context.Context // parent of request contexts; never canceled
	sem     chan struct{}
	wg      sync.WaitGroup
	stop    chan struct{}
	done    chan struct{} // closed when the scheduler has stopped ticking
	once    sync.Once
	start   time.Time

	mu        sync.Mutex
	res       Result
	sendEnd   time.Time // zero while ticking
	latencies []time.Duration
}

// Start validates cfg and starts sending. Sending stops after cfg.Duration,
// on Stop, or when ctx is done; canceling ctx does not abort requests
// already in flight, which finish (or time out) and are counted.
func Start(ctx context.Context, cfg Config) (*Generator, error) {
	cfg, base, err := validate(cfg)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 6)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("loadgen: run id: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // test hosts are reached directly, whatever the environment says
	tr.MaxIdleConns = 0
	tr.MaxIdleConnsPerHost = 256
	tr.DisableKeepAlives = false
	tr.DialContext = (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext

	freshTr := tr.Clone()
	freshTr.DisableKeepAlives = true

	g := &Generator{
		cfg:     cfg,
		client:  &http.Client{Transport: tr},
		fresh:   &http.Client{Transport: freshTr},
		getURL:  base + cfg.Path,
		echoURL: base + "/echo",
		runID:   "lg-" + hex.EncodeToString(id),
		reqCtx:  context.WithoutCancel(ctx),
		sem:     make(chan struct{}, cfg.MaxInFlight),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		start:   time.Now(),
		res: Result{
			Failures:       map[string]int{},
			Versions:       map[string]int{},
			ByMethod:       map[string]int{},
			FailedByMethod: map[string]int{},
			Resent:         map[string]int{},
		},
	}
	go g.schedule(ctx)
	return g, nil
}

func validate(cfg Config) (Config, string, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return cfg, "", fmt.Errorf("loadgen: parse url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return cfg, "", fmt.Errorf("loadgen: url %q: scheme must be http or https", cfg.URL)
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return cfg, "", fmt.Errorf("loadgen: url %q: want scheme://host[:port][/prefix]", cfg.URL)
	}
	if host := u.Hostname(); host != "localhost" {
		ip, err := netip.ParseAddr(host)
		if err != nil || !(ip.IsLoopback() || ip.IsPrivate()) {
			return cfg, "", fmt.Errorf("loadgen: host %q is not loopback or a private test address", host)
		}
	}
	switch {
	case cfg.Rate <= 0:
		return cfg, "", fmt.Errorf("loadgen: rate must be > 0, got %d", cfg.Rate)
	case cfg.Duration < 0 || cfg.Timeout < 0 || cfg.PostEvery < 0 || cfg.MaxInFlight < 0:
		return cfg, "", errors.New("loadgen: duration, timeout, post every and max in flight must not be negative")
	case cfg.Path != "" && !strings.HasPrefix(cfg.Path, "/"):
		return cfg, "", fmt.Errorf("loadgen: path %q must start with /", cfg.Path)
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 1000
	}
	return cfg, strings.TrimSuffix(u.String(), "/"), nil
}

// Run starts a generator, waits for cfg.Duration to pass (or ctx to be
// done; with Duration 0 only ctx ends it) and returns the totals of Stop.
func Run(ctx context.Context, cfg Config) (Result, error) {
	g, err := Start(ctx, cfg)
	if err != nil {
		return Result{}, err
	}
	select {
	case <-g.done:
	case <-ctx.Done():
	}
	return g.Stop(), nil
}

// Stop stops starting new requests, waits for the in-flight ones (each is
// bounded by Timeout) and returns the totals. It is idempotent: later calls
// return the same totals.
func (g *Generator) Stop() Result {
	g.once.Do(func() {
		close(g.stop)
		<-g.done
		g.wg.Wait()
		g.client.CloseIdleConnections()
	})
	return g.Snapshot()
}

// Snapshot returns the totals so far without stopping. Counts only grow.
func (g *Generator) Snapshot() Result {
	g.mu.Lock()
	r := g.res
	r.Failures = maps.Clone(r.Failures)
	r.Versions = maps.Clone(r.Versions)
	r.ByMethod = maps.Clone(r.ByMethod)
	r.FailedByMethod = maps.Clone(r.FailedByMethod)
	r.Resent = maps.Clone(r.Resent)
	end := g.sendEnd
	lat := slices.Clone(g.latencies)
	g.mu.Unlock()

	if end.IsZero() {
		end = time.Now()
	}
	r.Elapsed = end.Sub(g.start)
	if n := len(lat); n > 0 {
		slices.Sort(lat)
		rank := func(p float64) time.Duration { return lat[max(0, int(math.Ceil(p*float64(n)))-1)] }
		r.Latency.P50, r.Latency.P99, r.Latency.Max = rank(0.50), rank(0.99), lat[n-1]
	}
	return r
}

// schedule fires request i at start + i/Rate, catching up after any stall
// so the average rate holds, and with a Duration ends at start + Duration.
func (g *Generator) schedule(ctx context.Context) {
	defer close(g.done)
	defer func() {
		g.mu.Lock()
		g.sendEnd = time.Now()
		g.mu.Unlock()
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := int64(0); ; i++ {
		due := time.Duration(i * int64(time.Second) / int64(g.cfg.Rate))
		last := g.cfg.Duration > 0 && due >= g.cfg.Duration
		if last {
			due = g.cfg.Duration
		}
		if wait := time.Until(g.start.Add(due)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-g.stop:
				return
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-g.stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		if last {
			return
		}
		g.fire(i)
	}
}

func (g *Generator) fire(seq int64) {
	method := http.MethodGet
	if g.cfg.PostEvery > 0 && (seq+1)%int64(g.cfg.PostEvery) == 0 {
		method = http.MethodPost
	}
	g.mu.Lock()
	g.res.Requests++
	g.res.ByMethod[method]++
	g.mu.Unlock()
	select {
	case g.sem <- struct{}{}:
	default:
		g.record(method, KindOverload, "", 0)
		return
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		defer func() { <-g.sem }()
		g.do(seq, method)
	}()
}

// do sends one request and records its outcome.
func (g *Generator) do(seq int64, method string) {
	ctx, cancel := context.WithTimeout(g.reqCtx, g.cfg.Timeout)
	defer cancel()
	id := fmt.Sprintf("%s-%d", g.runID, seq)
	target := g.getURL
	var sent []byte
	if method == http.MethodPost {
		target, sent = g.echoURL, fmt.Appendf(nil, `{"id":%q,"seq":%d}`, id, seq)
	}
	begin := time.Now()
	resp, err := g.send(ctx, method, target, id, sent, false)
	if err != nil {
		g.record(method, "transport: "+classify(err), "", 0)
		return
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		g.record(method, "transport: body: "+classify(err), "", 0)
		return
	}
	latency := time.Since(begin)
	switch {
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		g.record(method, fmt.Sprintf("http %d", resp.StatusCode), "", latency)
	case sent != nil && !echoed(got, sent):
		g.record(method, KindEchoMismatch, "", latency)
	default:
		version := resp.Header.Get("X-App-Version")
		if version == "" {
			version = "(none)"
		}
		g.record(method, "", version, latency)
	}
}

// send sends one request. If it fails on a reused keep-alive connection
// before any response byte arrived, the server cannot have answered it, and
// it is sent once more on a new connection, as browsers do; the resend is
// counted by the kind of the first failure.
func (g *Generator) send(ctx context.Context, method, target, id string, body []byte, resend bool) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	var reused, gotByte bool
	trace := &httptrace.ClientTrace{
		GotConn:              func(info httptrace.GotConnInfo) { reused = info.Reused },
		GotFirstResponseByte: func() { gotByte = true },
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, target, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Request-Id", id)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := g.client
	if resend {
		client = g.fresh
	}
	resp, err := client.Do(req)
	if err != nil && !resend && reused && !gotByte && ctx.Err() == nil {
		g.mu.Lock()
		g.res.Resent[classify(err)]++
		g.mu.Unlock()
		return g.send(ctx, method, target, id, body, true)
	}
	return resp, err
}

// record counts a finished request: a failure of kind if kind is set, else
// an OK response of version. latency 0 means no response was completed.
func (g *Generator) record(method, kind, version string, latency time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if latency > 0 {
		g.latencies = append(g.latencies, latency)
	}
	if kind != "" {
		g.res.Failed++
		g.res.Failures[kind]++
		g.res.FailedByMethod[method]++
		return
	}
	g.res.OK++
	g.res.Versions[version]++
}

// echoed reports whether got carries sent: either verbatim (surrounding
// whitespace aside) or, as the example app answers, as the "echo" field of
// a JSON object.
func echoed(got, sent []byte) bool {
	if bytes.Equal(bytes.TrimSpace(got), sent) {
		return true
	}
	var v struct {
		Echo *string `json:"echo"`
	}
	return json.Unmarshal(got, &v) == nil && v.Echo != nil && *v.Echo == string(sent)
}

// classify names a transport error's kind without the "transport: " prefix.
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other: " + short(err)
}

// short is the message of err's innermost error, which leaves out the
// method, URL and addresses, cut to keep failure kinds few and readable.
func short(err error) string {
	for next := errors.Unwrap(err); next != nil; next = errors.Unwrap(err) {
		err = next
	}
	msg := err.Error()
	if len(msg) > 60 {
		msg = msg[:60]
	}
	return msg
}
