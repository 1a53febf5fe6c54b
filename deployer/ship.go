package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Artifact is a release to ship: a gzipped tar (see internal/artifact).
type Artifact struct {
	SHA256 string
	Size   int64
	// Open opens it from its start; each host's upload (and each try of
	// one) opens it once.
	Open func() (io.ReadCloser, error)
	// EnvExample is its top-level .env.example, if any: the names it
	// lists are required secrets (secrets:).
	EnvExample []byte
}

// progressEvery is how often an upload reports its progress.
const progressEvery = time.Second

// chooseRelease picks the release this run rolls out (release: set): for
// a deploy, the release already on some host with the artifact's SHA-256
// (a rerun resumes it, and nothing is uploaded again where it is), else a
// new ID for every host; for a rollback, rollbackTarget.
func (d *Deployer) chooseRelease(op string, sessions []*session) (string, error) {
	states := make([]releaseState, len(sessions))
	for i, s := range sessions {
		states[i] = s.rel
	}
	switch op {
	case opRollback:
		return rollbackTarget(states, d.RollbackTo)
	case opPromote:
		return pausedRelease(states)
	}
	if d.Artifact == nil {
		return "", errors.New("release: is set: the deploy needs the release to ship (--artifact PATH)")
	}
	id := ""
	for _, s := range sessions {
		if have := s.rel.withSum(d.Artifact.SHA256, d.Secrets.Digest()); have > id {
			id = have
		}
	}
	if id == "" {
		id = newReleaseID(time.Now(), d.Version, states)
	}
	return id, nil
}

// newReleaseID is a new release's ID: from now, a second later while a
// host has (or logged) a release of that ID, as a deploy of the same
// version with other secrets within the same second would.
func newReleaseID(now time.Time, version string, states []releaseState) string {
	for {
		id := ReleaseID(now, version)
		taken := false
		for _, st := range states {
			_, logged := st.latest()[id]
			taken = taken || st.present[id] || logged
		}
		if !taken {
			return id
		}
		now = now.Add(time.Second)
	}
}

// ship puts release id on every host that lacks it, all hosts at once:
// uploaded, checked, prepared. Nothing restarts unless every host has it.
func (d *Deployer) ship(ctx context.Context, id string, sessions []*session) error {
	errs := make([]error, len(sessions))
	var wg sync.WaitGroup
	for i, s := range sessions {
		if s.rel.present[id] {
			d.emit(Event{Host: s.host, Step: StepUpload, Status: StatusSkip, Message: "release " + id + " is already on the host"})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.upload(ctx, s, id)
		}()
	}
	wg.Wait()
	return joinErrors(errs)
}

// upload sends the artifact to one host, reporting its progress.
func (d *Deployer) upload(ctx context.Context, s *session, id string) error {
	a := d.Artifact
	t0 := time.Now()
	d.emit(Event{Host: s.host, Step: StepUpload, Status: StatusStart, Message: fmt.Sprintf("release %s, %s", id, bytesString(a.Size))})
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(progressEvery)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				n := sent.Load()
				d.emit(Event{Host: s.host, Step: StepUpload, Status: StatusProgress, Duration: time.Since(t0),
					Message: fmt.Sprintf("%s of %s, %s/s", bytesString(n), bytesString(a.Size), bytesString(int64(float64(n)/time.Since(t0).Seconds())))})
			}
		}
	}()
	open := func() (io.ReadCloser, error) {
		r, err := a.Open()
		if err != nil {
			return nil, fmt.Errorf("open the artifact: %w", err)
		}
		sent.Store(0)
		return countingReader{r, &sent}, nil
	}
	e := ReleaseEntry{ID: id, Version: d.Version, SHA256: a.SHA256, Secrets: d.Secrets.Digest(), User: d.Holder.User, Time: time.Now().UTC(), Outcome: ReleaseNew}
	err := s.r.Upload(ctx, e, open)
	close(done)
	if err != nil {
		d.emit(Event{Host: s.host, Step: StepUpload, Status: StatusFail, Duration: time.Since(t0), Message: err.Error()})
		return &StepError{Host: s.host, Step: StepUpload, Err: err}
	}
	took := time.Since(t0)
	msg := fmt.Sprintf("release %s: %s in %s (%s/s), checked and in place", id, bytesString(a.Size), took.Round(time.Millisecond), bytesString(int64(float64(a.Size)/took.Seconds())))
	if s.cfg.Release.Prepare != "" {
		msg += "; prepared"
	}
	d.emit(Event{Host: s.host, Step: StepUpload, Status: StatusOK, Duration: took, Message: msg})
	s.rel.present[id] = true
	return nil
}

type countingReader struct {
	r io.ReadCloser
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c countingReader) Close() error { return c.r.Close() }

// bytesString is n bytes for humans: 512 B, 3.4 MB.
func bytesString(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

// revert puts every instance this run switched (the failed one too) back
// on the release it ran before, host after host in reverse order, each
// with the same drain, health and undrain gates as a deploy. It returns
// the releases they went back to, and an error if any could not.
func (d *Deployer) revert(ctx context.Context, id string, sessions []*session) ([]string, error) {
	var errs []error
	var to []string
	stop := make(chan struct{}) // never closed: only ctx stops a revert
	for _, s := range slices.Backward(sessions) {
		if s.run == nil {
			continue
		}
		ports := slices.Clone(s.run.switched)
		if hr := s.run; len(hr.skipped) > 0 && s.rel.current != id {
			// A promote: the canary an earlier run switched goes back too.
			ports = append(slices.Clone(hr.skipped), ports...)
		}
		workers := slices.Clone(s.run.workersSwitched)
		if hr := s.run; len(hr.workersSkipped) > 0 && s.rel.current != id {
			// A resumed run: the workers an earlier run switched go back too.
			workers = append(slices.Clone(hr.workersSkipped), workers...)
		}
		if len(ports) == 0 && len(workers) == 0 {
			continue
		}
		slices.Reverse(ports)
		slices.Reverse(workers)
		var back []string // this host's
		before := func(link string) string {
			prev := link
			if prev == id {
				prev = s.rel.current // switched before this run: back to current
			}
			if prev != "" && !slices.Contains(back, prev) {
				back = append(back, prev)
			}
			if prev != "" && !slices.Contains(to, prev) {
				to = append(to, prev)
			}
			return prev
		}
		targets := map[int]string{}
		for _, p := range ports {
			targets[p] = before(s.rel.links[p])
		}
		workerTargets := map[string]string{}
		for _, u := range workers {
			workerTargets[u] = before(s.rel.workers[u].link)
		}
		t0 := time.Now()
		d.emit(Event{Host: s.host, Step: StepRevert, Status: StatusStart, Message: fmt.Sprintf("%s back from %s", revertWhat(ports, workers), id)})
		h := newHostRun(d, s, stop)
		h.targets, h.workerTargets = targets, workerTargets
		// The workers went last: they go back first; the instances go
		// back whatever became of them.
		err := h.revertWorkers(ctx, workers)
		if len(ports) > 0 {
			err = errors.Join(err, h.revert(ctx, ports))
		}
		if err != nil {
			errs = append(errs, err)
			d.emit(Event{Host: s.host, Step: StepRevert, Status: StatusFail, Duration: time.Since(t0), Message: err.Error()})
			continue
		}
		d.emit(Event{Host: s.host, Step: StepRevert, Status: StatusOK, Duration: time.Since(t0), Message: fmt.Sprintf("%s back on %s", revertWhat(ports, workers), strings.Join(back, ", "))})
	}
	slices.Sort(to)
	return to, errors.Join(errs...)
}

// revertWhat names what a revert puts back: "instances [3001 3000]",
// and the workers' units.
func revertWhat(ports []int, workers []string) string {
	var parts []string
	if len(ports) > 0 {
		parts = append(parts, fmt.Sprintf("instances %v", ports))
	}
	if len(workers) > 0 {
		parts = append(parts, "workers "+strings.Join(workers, " "))
	}
	return strings.Join(parts, " and ")
}

// runningSummary says which release each instance runs now, host by host.
func (d *Deployer) runningSummary(ctx context.Context, sessions []*session) string {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	var parts []string
	for _, s := range sessions {
		st, err := s.r.ReleaseState(cctx, s.cfg.Ports(), nil)
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s: unknown (%v)", s.host, err))
			continue
		}
		var inst []string
		for _, p := range s.cfg.Ports() {
			r := st.running[p]
			if r == "" {
				r = "nothing"
			}
			inst = append(inst, fmt.Sprintf("%d runs %s", p, r))
		}
		parts = append(parts, s.host+": "+strings.Join(inst, ", "))
	}
	return strings.Join(parts, "; ")
}

// record writes, on every host, how the run ended for the release: the
// release log, the current link, and after a successful deploy the
// releases beyond release.keep.
func (d *Deployer) record(ctx context.Context, op, id string, sessions []*session, err error, rv *revertResult, paused bool) {
	now := time.Now().UTC()
	entry := func(id string, o ReleaseOutcome) ReleaseEntry {
		return ReleaseEntry{ID: id, Version: d.versionOf(sessions, id, op), User: d.Holder.User, Time: now, Outcome: o}
	}
	// Every host at once, each with its own 30s.
	_ = d.eachHost(ctx, sessions, func(_ int, s *session) error {
		if s.link.givenUp() {
			return nil
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		var entries []ReleaseEntry
		current := ""
		var remove []string
		switch {
		case err == nil && paused:
			// Every host: its log says a rollout is paused on id.
			entries = append(entries, entry(id, ReleaseCanary))
		case err == nil && op == opRollback:
			if s.rel.current != "" && s.rel.current != id {
				entries = append(entries, entry(s.rel.current, ReleaseBad))
			}
			// A paused rollout taken back: its canary's release is BAD.
			for rid, e := range s.rel.latest() {
				if e.Outcome == ReleaseCanary && rid > id {
					entries = append(entries, entry(rid, ReleaseBad))
				}
			}
			entries = append(entries, entry(id, ReleaseReverted))
			current = id
		case err == nil:
			ok := entry(id, ReleaseOK)
			if s.secrets != nil && op == opDeploy {
				ok.SecretsChanged = s.secrets.Strings()
			}
			entries = append(entries, ok)
			current = id
			links := map[int]string{}
			for _, p := range s.cfg.Ports() {
				links[p] = id
			}
			remove = s.rel.cleanup(s.cfg.Release.Keep, id, links)
		case rv != nil && rv.err == nil:
			entries = append(entries, entry(id, ReleaseBad))
			current = s.rel.current
			for _, r := range rv.to {
				if s.rel.present[r] {
					entries = append(entries, entry(r, ReleaseReverted))
				}
			}
		case rv != nil:
			entries = append(entries, entry(id, ReleaseBad))
		case (op == opDeploy || op == opPromote) && s.run != nil && len(s.run.switched)+len(s.run.workersSwitched) > 0:
			entries = append(entries, entry(id, ReleaseFailed))
		}
		if len(entries) == 0 && current == "" {
			return nil
		}
		t0 := time.Now()
		if rerr := s.r.RecordRelease(cctx, entries, current, remove); rerr != nil {
			d.emit(Event{Host: s.host, Step: StepRelease, Status: StatusFail, Duration: time.Since(t0), Message: rerr.Error()})
			return nil
		}
		var said []string
		for _, e := range entries {
			said = append(said, fmt.Sprintf("%s %s", e.ID, e.Outcome))
		}
		msg := strings.Join(said, ", ")
		if current != "" {
			msg += "; current -> " + current
		}
		if len(remove) > 0 {
			msg += "; removed " + strings.Join(remove, ", ")
		}
		d.emit(Event{Host: s.host, Step: StepRelease, Status: StatusOK, Duration: time.Since(t0), Message: msg})
		return nil
	})
}

// versionOf is the version of release id, as a host's log says.
func (d *Deployer) versionOf(sessions []*session, id, op string) string {
	for _, s := range sessions {
		if e, ok := s.rel.latest()[id]; ok && e.Version != "" {
			return e.Version
		}
	}
	if op == opDeploy {
		return d.Version
	}
	return ""
}

// revertResult is how an automatic revert ended.
type revertResult struct {
	to  []string // the releases the instances went back to
	err error
}

// summary is what the report says of it.
func (rv *revertResult) summary(ctx context.Context, d *Deployer, sessions []*session) string {
	switch {
	case rv.err != nil:
		return "revert FAILED (unhealthy instances are left out of service): " + d.runningSummary(ctx, sessions)
	case len(rv.to) == 0:
		return "nothing to revert: no instance had been switched"
	}
	return "reverted to " + strings.Join(rv.to, ", ")
}
