package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rollout-dev/rollout/sshexec"
)

// StepProbe events carry the availability probe's figures for a host.
const StepProbe StepName = "probe"

// ProbeResult is what the availability probe saw on one host during a
// deploy: requests sent through its Nginx, the failures by kind, the
// latency of the answers and the versions that answered.
type ProbeResult struct {
	Host   string `json:"host"`
	URL    string `json:"url"`
	Sent   int    `json:"requests"`
	Failed int    `json:"failed"`
	// Failures counts the failed requests by kind: "status 502",
	// "timeout", "connection refused", "reset", ...
	Failures map[string]int `json:"failures,omitempty"`
	// NotSent counts the ticks no request went out: the host's connection
	// was down, or maxProbeInFlight requests were still waiting.
	NotSent int           `json:"not_sent,omitempty"`
	P50     time.Duration `json:"p50_ns"`
	P99     time.Duration `json:"p99_ns"`
	// Versions counts the answers by probe.version_header's value.
	Versions map[string]int `json:"versions,omitempty"`
}

// String is the result on one line.
func (r ProbeResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests to %s, %d failed", r.Sent, r.URL, r.Failed)
	if r.Failed > 0 {
		b.WriteString(" (" + countsText(r.Failures) + ")")
	}
	if r.Sent > r.Failed {
		fmt.Fprintf(&b, "; p50 %s, p99 %s", roundLatency(r.P50), roundLatency(r.P99))
	}
	if len(r.Versions) > 0 {
		b.WriteString("; answered by " + countsText(r.Versions))
	}
	if r.NotSent > 0 {
		fmt.Fprintf(&b, "; %d not sent (connection down or requests still waiting)", r.NotSent)
	}
	return b.String()
}

// countsText is "a 3, b 1": the most frequent first.
func countsText(m map[string]int) string {
	keys := slices.Sorted(maps.Keys(m))
	sort.SliceStable(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func roundLatency(d time.Duration) time.Duration {
	if d < 10*time.Millisecond {
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

// Bounds of a probe: requests waiting at once, distinct versions and
// failure kinds counted (the rest count as "other"), and bytes of a
// version read.
const (
	maxProbeInFlight = 8
	maxProbeKinds    = 16
	maxVersionLen    = 64
	maxProbeBody     = 1 << 20
)

// dialer opens a TCP connection from a host: its SSH connection.
type dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// prober sends a request through one host's Nginx every probe.interval,
// whether or not the last one answered (up to maxProbeInFlight waiting),
// on a new connection each (what a new visitor sees), and counts what
// comes back.
type prober struct {
	cfg    ProbeConfig
	url    string
	client *http.Client

	mu     sync.Mutex
	res    ProbeResult
	answer []time.Duration // latency of each answer
	wg     sync.WaitGroup  // the requests in flight
	exited chan struct{}   // closed when run returns
}

func newProber(cfg *Config, host string, dial dialer) *prober {
	pc := cfg.Probe
	url := "http://" + cfg.ProbeAddress() + pc.Path
	return &prober{cfg: pc, url: url, res: ProbeResult{Host: host, URL: url}, exited: make(chan struct{}),
		client: &http.Client{
			Timeout: pc.Timeout,
			Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true,
				DisableCompression: true, MaxResponseHeaderBytes: 64 << 10},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}}
}

// get sends one request and returns its status, or why none came back.
func (p *prober) get(ctx context.Context) (*http.Response, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return nil, 0, err
	}
	if p.cfg.HostName != "" {
		req.Host = p.cfg.HostName
	}
	req.Header.Set("User-Agent", "rollout-probe")
	t0 := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, maxProbeBody))
	resp.Body.Close()
	return resp, time.Since(t0), err
}

// check is the preflight's probe: the target must answer at all (any
// status) before anything changes, or the deploy would blame the release
// for a site that was not reachable.
func (p *prober) check(ctx context.Context) error {
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
		// Any answer will do (a 5xx too): what it answers is for the
		// figures.
		if _, _, err = p.get(ctx); err == nil {
			return nil
		}
	}
	return fmt.Errorf("probe: GET %s through the SSH connection got no answer in 3 tries (%s): is Nginx listening there? Set probe.address (and probe.host), or turn the probe off with probe: false; the last try: %w", p.url, failureKind(err), err)
}

// run probes until ctx is done.
func (p *prober) run(ctx context.Context) {
	defer close(p.exited)
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	inFlight := make(chan struct{}, maxProbeInFlight)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case inFlight <- struct{}{}:
		default:
			p.note(func(r *ProbeResult) { r.NotSent++ })
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-inFlight }()
			// A request sent goes to its end (or its timeout), even once
			// the probe stops: the figures count every request sent.
			resp, took, err := p.get(context.WithoutCancel(ctx))
			p.record(resp, took, err)
		}()
	}
}

func (p *prober) note(f func(r *ProbeResult)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.res)
}

// record counts one request.
func (p *prober) record(resp *http.Response, took time.Duration, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := &p.res
	if err != nil && (errors.Is(err, ErrUnreachable) || errors.Is(err, sshexec.ErrConnectionLost)) {
		r.NotSent++ // the controller's connection, not the site
		return
	}
	r.Sent++
	switch {
	case err != nil:
		r.Failed++
		addCount(&r.Failures, failureKind(err))
	case resp.StatusCode >= 500:
		r.Failed++
		addCount(&r.Failures, "status "+strconv.Itoa(resp.StatusCode))
	default:
		p.answer = append(p.answer, took)
		if h := p.cfg.VersionHeader; h != "" {
			v := resp.Header.Get(h)
			if v == "" {
				v = "(no " + h + ")"
			}
			if len(v) > maxVersionLen {
				v = v[:maxVersionLen] + "…"
			}
			addCount(&r.Versions, v)
		}
	}
}

// addCount counts k in *m, in "other" past maxProbeKinds keys.
func addCount(m *map[string]int, k string) {
	if *m == nil {
		*m = map[string]int{}
	}
	if _, ok := (*m)[k]; !ok && len(*m) >= maxProbeKinds {
		k = "other"
	}
	(*m)[k]++
}

// result waits for run to return (its context done) and for the requests
// in flight, and returns the figures.
func (p *prober) result() ProbeResult {
	<-p.exited
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.res
	if len(p.answer) > 0 {
		lat := slices.Clone(p.answer)
		slices.Sort(lat)
		r.P50, r.P99 = percentile(lat, 50), percentile(lat, 99)
	}
	return r
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, pct int) time.Duration {
	i := (len(sorted)*pct + 99) / 100
	return sorted[max(i-1, 0)]
}

// failureKind names why a request got no answer, for counting.
func failureKind(err error) string {
	var ne net.Error
	s := strings.ToLower(err.Error())
	var oce *ssh.OpenChannelError
	if errors.As(err, &oce) {
		// The host's sshd could not connect: its message says why.
		s = strings.ToLower(oce.Message)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "timeout"
	case strings.Contains(s, "connection refused"):
		return "connection refused"
	case strings.Contains(s, "connection reset"):
		return "connection reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(s, "eof"):
		return "closed without an answer"
	}
	return "error"
}

// probes are the probers of a deploy, one per host.
type probes struct {
	cancel context.CancelFunc
	all    []*prober
}

// startProbes starts a prober per session (when the probe is on).
func (d *Deployer) startProbes(ctx context.Context, sessions []*session) *probes {
	ps := &probes{cancel: func() {}}
	if !d.Config.Probe.Enabled {
		return ps
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ps.cancel = cancel
	for _, s := range d.frontends(sessions) {
		p := newProber(s.cfg, s.host, s.link.dialCurrent)
		ps.all = append(ps.all, p)
		go p.run(pctx)
	}
	return ps
}

// stop stops the probers and reports each host's figures (an event each);
// with probe.fail_on_error, a host whose requests failed is an error.
func (ps *probes) stop(d *Deployer, rep *Report) error {
	ps.cancel()
	var errs []error
	for _, p := range ps.all {
		r := p.result()
		rep.Probe = append(rep.Probe, r)
		e := Event{Host: r.Host, Step: StepProbe, Status: StatusOK, Message: r.String()}
		if r.Failed > 0 {
			e.Status = StatusWarn
			if d.Config.Probe.FailOnError {
				e.Status = StatusFail
				errs = append(errs, &StepError{Host: r.Host, Step: StepProbe,
					Err: fmt.Errorf("%d of %d probe requests failed (probe.fail_on_error): %s", r.Failed, r.Sent, countsText(r.Failures))})
			}
		}
		d.emit(e)
	}
	return errors.Join(errs...)
}
