package deployer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Steps of a batched deploy: each batch, and the bake after it.
const (
	StepBatch StepName = "batch"
	StepBake  StepName = "bake"
)

// ErrBake: a bake saw the new instances do worse than allowed, or could
// not judge them.
var ErrBake = errors.New("the bake stopped the rollout")

// LogFormat is the Nginx log format rollout's bake reads (rollout setup's
// site uses it); a format of one's own needs only its two quoted fields.
const LogFormat = `'$remote_addr [$time_local] "$request" $status $body_bytes_sent upstream="$upstream_addr" upstream_status="$upstream_status" rt=$request_time'`

// upstreamFieldsRE finds rollout's fields in an access log line.
var upstreamFieldsRE = regexp.MustCompile(`upstream="([^"]*)" upstream_status="([^"]*)"`)

// maxLogRead bounds the bytes of access log read from a host at once.
const maxLogRead = 16 << 20

// logPos is where a bake stopped reading a host's access log.
type logPos struct {
	inode  string
	offset int64 // -1: at its end
}

// logRead is one read of a host's access log and instances.
type logRead struct {
	pos      logPos
	now      int64       // the host's clock, epoch seconds
	restarts map[int]int // NRestarts per port
	errors   []string    // journal lines at priority err
	lines    [][]byte    // whole new lines of the log (and of the rotated one)
	notes    []string    // what the read noticed: a rotation
}

// Tally is requests and 5xx answers.
type Tally struct {
	Requests int `json:"requests"`
	Errors   int `json:"errors"`
}

// Ratio is the share of errors, 0 without requests.
func (t Tally) Ratio() float64 {
	if t.Requests == 0 {
		return 0
	}
	return float64(t.Errors) / float64(t.Requests)
}

func (t Tally) String() string {
	return fmt.Sprintf("%d requests, %d 5xx (%.1f%%)", t.Requests, t.Errors, 100*t.Ratio())
}

// BakeResult is what a bake saw after one batch: the answers of the
// instances on the release (New) and of the others (Old), read from each
// host's access log, and the new instances' restarts by systemd.
type BakeResult struct {
	Batch    int           `json:"batch"` // from 1
	Duration time.Duration `json:"duration_ns"`
	New      Tally         `json:"new"`
	Old      Tally         `json:"old"`
	// Restarts are new instances restarted by systemd during the bake,
	// "HOST:PORT +N".
	Restarts []string `json:"restarts,omitempty"`
	// ErrorLines counts the instances' journal lines at priority err
	// during the bake (at most 20 a host).
	ErrorLines int `json:"error_lines,omitempty"`
	// Verdict is "ok", "breach", "too few requests", "could not read",
	// "interrupted" or "stopped" (the lock was taken over);
	// Reason says why.
	Verdict string `json:"verdict"`
	Reason  string `json:"reason,omitempty"`
}

func (b BakeResult) String() string {
	s := fmt.Sprintf("bake after batch %d (%s): %s: new instances %s; old %s", b.Batch, b.Duration.Round(time.Second), b.Verdict, b.New, b.Old)
	if len(b.Restarts) > 0 {
		s += "; restarted by systemd: " + strings.Join(b.Restarts, ", ")
	}
	if b.ErrorLines > 0 {
		s += fmt.Sprintf("; %d journal lines at priority err", b.ErrorLines)
	}
	if b.Reason != "" {
		s += "; " + b.Reason
	}
	return s
}

// hostBake is one host's part of a bake.
type hostBake struct {
	s        *session
	pos      logPos
	since    int64
	restarts map[int]int // at the bake's start
	byPort   map[int]*Tally
	other    int // lines without rollout's fields
	errLines int
	now      map[int]int // restarts now
}

// newPorts are the host's instances on the release: restarted (or
// skipped as already on it) by this run.
func newPorts(s *session) map[int]bool {
	out := map[int]bool{}
	if s.run == nil {
		return out
	}
	for _, p := range append(slices.Clone(s.run.restarted), s.run.skipped...) {
		out[p] = true
	}
	return out
}

// bake watches real traffic for strategy.bake after batch b (from 0): it
// reads each host's access log from the bake's start, every few seconds,
// and stops the rollout (ErrBake) as soon as the new instances' share of
// 5xx answers is over strategy.max_error_ratio (and over the old ones' by
// as much), or systemd restarted one of them. With fewer than
// strategy.min_requests answers from the new instances it bakes again (at
// most three bakes in all, then ErrBake) or goes on
// (strategy.small_sample). An interrupt is ErrStopped: every instance is
// in Nginx, healthy, and stays on the release it runs.
func (d *Deployer) bake(ctx context.Context, stop <-chan struct{}, sessions []*session, b int, rep *Report) error {
	st := d.Config.Strategy
	t0 := time.Now()
	res := BakeResult{Batch: b + 1, Verdict: "ok"}
	defer func() { rep.Bakes = append(rep.Bakes, res) }()
	d.emit(Event{Step: StepBake, Status: StatusStart, Message: fmt.Sprintf("watching real traffic for %s (max_error_ratio %g, min_requests %d)", st.Bake, st.MaxErrorRatio, st.MinRequests)})
	hosts := make([]*hostBake, len(sessions))
	if err := d.eachHost(ctx, sessions, func(i int, s *session) error {
		hb := &hostBake{s: s, pos: logPos{offset: -1}, byPort: map[int]*Tally{}}
		r, err := s.r.ReadAccessLog(ctx, d.Config.AccessLogFile(), hb.pos, 0, s.cfg.Ports())
		if err != nil {
			return &StepError{Host: s.host, Step: StepBake, Err: err}
		}
		hb.pos, hb.since, hb.restarts, hb.now = r.pos, r.now, r.restarts, r.restarts
		hosts[i] = hb
		return nil
	}); err != nil {
		if ctx.Err() != nil {
			return d.bakeInterrupted(b, t0, &res)
		}
		res.Verdict, res.Reason = "could not read", err.Error()
		return d.bakeFailed(err, &res, t0)
	}
	tick := min(max(st.Bake/6, time.Second), 10*time.Second)
	end := t0.Add(st.Bake)
	for round := 1; ; {
		select {
		case <-ctx.Done():
			return d.bakeInterrupted(b, t0, &res)
		case <-stop: // the lock was taken over
			res.Verdict, res.Duration = "stopped", time.Since(t0)
			return &StepError{Step: StepBake, Err: ErrStopped}
		case <-time.After(min(tick, max(time.Until(end), 0))):
		}
		if err := d.eachHost(ctx, sessions, func(i int, s *session) error { return hosts[i].read(ctx, d) }); err != nil {
			if ctx.Err() != nil {
				continue // the interrupt, at the top
			}
			res.Verdict, res.Reason = "could not read", err.Error()
			return d.bakeFailed(err, &res, t0)
		}
		res.New, res.Old, res.Restarts, res.ErrorLines = tally(hosts)
		if why := d.breach(res); why != "" {
			res.Verdict, res.Reason = "breach", why
			return d.bakeFailed(fmt.Errorf("%w: %s", ErrBake, why), &res, t0)
		}
		if time.Now().Before(end) {
			continue
		}
		if other := unreadable(hosts); other != "" {
			res.Verdict, res.Reason = "could not read", other
			return d.bakeFailed(fmt.Errorf("%w: %s", ErrBake, other), &res, t0)
		}
		res.Duration = time.Since(t0)
		if res.New.Requests >= st.MinRequests {
			d.emit(Event{Step: StepBake, Status: StatusOK, Duration: res.Duration, Message: res.String()})
			return nil
		}
		few := fmt.Sprintf("%d requests reached the new instances, fewer than min_requests %d: too few to judge", res.New.Requests, st.MinRequests)
		if st.SmallSample == SmallSampleProceed {
			res.Verdict, res.Reason = "too few requests", few+"; going on (small_sample: proceed)"
			d.emit(Event{Step: StepBake, Status: StatusWarn, Duration: res.Duration, Message: res.String()})
			return nil
		}
		if round == 3 {
			res.Verdict, res.Reason = "too few requests", few+" after 3 bakes (small_sample: wait)"
			return d.bakeFailed(fmt.Errorf("%w: %s", ErrBake, res.Reason), &res, t0)
		}
		round++
		end = time.Now().Add(st.Bake)
		d.emit(Event{Step: StepBake, Status: StatusWarn, Message: fmt.Sprintf("%s; baking %s more (%d of 3)", few, st.Bake, round)})
	}
}

// bakeInterrupted reports a bake cut by an interrupt: ErrStopped.
func (d *Deployer) bakeInterrupted(b int, t0 time.Time, res *BakeResult) error {
	res.Verdict, res.Duration = "interrupted", time.Since(t0)
	d.emit(Event{Step: StepBake, Status: StatusSkip, Duration: res.Duration, Message: "interrupted: every instance stays in service on the release it runs"})
	return &StepError{Step: StepBake, Err: fmt.Errorf("interrupted during the bake after batch %d: %w", b+1, ErrStopped)}
}

// bakeFailed reports a bake that stops the rollout.
func (d *Deployer) bakeFailed(err error, res *BakeResult, t0 time.Time) error {
	res.Duration = time.Since(t0)
	d.emit(Event{Step: StepBake, Status: StatusFail, Duration: res.Duration, Message: res.String()})
	var se *StepError
	if errors.As(err, &se) {
		return err
	}
	return &StepError{Step: StepBake, Err: fmt.Errorf("after batch %d: %w", res.Batch, err)}
}

// breach says why the new instances fail the bake so far, or "".
func (d *Deployer) breach(res BakeResult) string {
	st := d.Config.Strategy
	if len(res.Restarts) > 0 {
		return "systemd restarted " + strings.Join(res.Restarts, ", ") + " during the bake"
	}
	if res.New.Requests < max(st.MinRequests, 1) {
		return ""
	}
	n, o := res.New.Ratio(), res.Old.Ratio()
	if n > st.MaxErrorRatio && n > o+st.MaxErrorRatio {
		return fmt.Sprintf("the new instances answered %.1f%% 5xx (%d of %d), over max_error_ratio %g and over the old ones' %.1f%% by more than that",
			100*n, res.New.Errors, res.New.Requests, st.MaxErrorRatio, 100*o)
	}
	return ""
}

// tally sums what the hosts saw.
func tally(hosts []*hostBake) (fresh, old Tally, restarts []string, errLines int) {
	for _, hb := range hosts {
		isNew := newPorts(hb.s)
		for port, t := range hb.byPort {
			dst := &old
			if isNew[port] {
				dst = &fresh
			}
			dst.Requests += t.Requests
			dst.Errors += t.Errors
		}
		for _, port := range hb.s.cfg.Ports() {
			if n := hb.now[port] - hb.restarts[port]; isNew[port] && n > 0 {
				restarts = append(restarts, fmt.Sprintf("%s:%d +%d", hb.s.host, port, n))
			}
		}
		errLines += hb.errLines
	}
	return fresh, old, restarts, errLines
}

// unreadable says how to make the access log readable when the hosts
// logged requests without rollout's fields and none with them.
func unreadable(hosts []*hostBake) string {
	other, counted := 0, 0
	for _, hb := range hosts {
		other += hb.other
		for _, t := range hb.byPort {
			counted += t.Requests
		}
	}
	if other == 0 || counted > 0 {
		return ""
	}
	return fmt.Sprintf("%d access log lines, none with rollout's fields: %s", other, logFormatHint(hosts[0].s.cfg))
}

// logFormatHint says how to give the access log rollout's fields.
func logFormatHint(cfg *Config) string {
	return fmt.Sprintf("rollout setup's site logs them; or add to Nginx's http block `log_format rollout %s;` and `access_log %s rollout;` (a format of your own needs only its upstream=\"$upstream_addr\" upstream_status=\"$upstream_status\" fields), or set strategy.access_log",
		LogFormat, cfg.AccessLogFile())
}

// checkAccessLog checks, before a deploy that bakes, that the host's
// access log can be read and that its last lines (if any) carry rollout's
// fields.
func checkAccessLog(ctx context.Context, s *session) error {
	file := s.cfg.AccessLogFile()
	end, err := s.r.ReadAccessLog(ctx, file, logPos{offset: -1}, 0, nil)
	if err != nil {
		return fmt.Errorf("strategy.bake reads %s: %w", file, err)
	}
	from := logPos{inode: end.pos.inode, offset: max(end.pos.offset-8192, 0)}
	tail, err := s.r.ReadAccessLog(ctx, file, from, 0, nil)
	if err != nil {
		return fmt.Errorf("strategy.bake reads %s: %w", file, err)
	}
	lines := tail.lines
	if from.offset > 0 && len(lines) > 0 {
		lines = lines[1:] // the first may be cut
	}
	for _, l := range lines {
		if upstreamFieldsRE.Match(l) {
			return nil
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return fmt.Errorf("strategy.bake reads %s, whose last lines lack rollout's fields: %s", file, logFormatHint(s.cfg))
}

// read reads the host's new access log lines and its instances' restarts.
func (hb *hostBake) read(ctx context.Context, d *Deployer) error {
	s := hb.s
	r, err := s.r.ReadAccessLog(ctx, d.Config.AccessLogFile(), hb.pos, hb.since, s.cfg.Ports())
	if err != nil {
		return &StepError{Host: s.host, Step: StepBake, Err: err}
	}
	hb.pos, hb.now = r.pos, r.restarts
	hb.errLines = len(r.errors)
	for _, n := range r.notes {
		d.emit(Event{Host: s.host, Step: StepBake, Status: StatusWarn, Message: n})
	}
	addr := s.cfg.Nginx.ServerAddress
	for _, line := range r.lines {
		m := upstreamFieldsRE.FindSubmatch(line)
		if m == nil {
			hb.other++
			continue
		}
		addrs, statuses := splitUpstream(string(m[1])), splitUpstream(string(m[2]))
		for i, a := range addrs {
			host, p, err := net.SplitHostPort(a)
			port, perr := strconv.Atoi(p)
			if err != nil || perr != nil || host != addr || i >= len(statuses) {
				continue // another upstream's, or no upstream (a static file)
			}
			t := hb.byPort[port]
			if t == nil {
				t = &Tally{}
				hb.byPort[port] = t
			}
			t.Requests++
			if code, err := strconv.Atoi(statuses[i]); err == nil && code >= 500 {
				t.Errors++
			}
		}
	}
	return nil
}

// splitUpstream splits $upstream_addr or $upstream_status: attempts are
// separated by ", " and internal redirects by " : ".
func splitUpstream(s string) []string {
	return strings.FieldsFunc(strings.ReplaceAll(s, " : ", ", "), func(r rune) bool { return r == ',' || r == ' ' })
}

// parseLogRead reads access-read.sh's output.
func parseLogRead(out []byte, from logPos) (logRead, error) {
	r := logRead{restarts: map[int]int{}}
	head, log, ok := bytes.Cut(out, []byte(sectionMark+"log\n"))
	if !ok {
		return r, fmt.Errorf("read the access log: unexpected output %q", truncate(out, 200))
	}
	parts := sections(head)
	var size, start int64
	if _, err := fmt.Sscan(parts["pos"], &r.pos.inode, &size, &start, &r.now); err != nil {
		return r, fmt.Errorf("read the access log: unexpected position %q", parts["pos"])
	}
	states, err := parseUnitStates(parts["restarts"])
	if err != nil {
		return r, err
	}
	for id, u := range states {
		if i := strings.LastIndexByte(id, '@'); i >= 0 {
			if port, err := strconv.Atoi(id[i+1:]); err == nil {
				r.restarts[port] = u.Restarts
			}
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(parts["errors"]), "\n") {
		if l != "" {
			r.errors = append(r.errors, l)
		}
	}
	if rot, ok := parts["rotated"]; ok {
		r.lines = append(r.lines, bytes.Split(bytes.TrimRight([]byte(rot), "\n"), []byte("\n"))...)
	}
	switch {
	case r.pos.inode == "-" && from.inode != "-":
		r.notes = append(r.notes, "the access log is missing (rotated, and not reopened by Nginx yet): read the rest of the old one, waiting for the new one")
	case r.pos.inode == "-":
	case from.offset >= 0 && from.inode != "" && from.inode != "-" && from.inode != r.pos.inode:
		r.notes = append(r.notes, "the access log was rotated during the bake: reading the new file from its start")
	case from.offset >= 0 && start < from.offset:
		r.notes = append(r.notes, "the access log was truncated during the bake: reading it from its start")
	}
	// Whole lines only: a line being written is read next time.
	whole := bytes.LastIndexByte(log, '\n') + 1
	for _, l := range bytes.Split(log[:whole], []byte("\n")) {
		if len(l) > 0 {
			r.lines = append(r.lines, l)
		}
	}
	r.pos.offset = start + int64(whole)
	return r, nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
