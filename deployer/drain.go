package deployer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// HandDrain is an instance taken out of every balancer by rollout drain,
// for maintenance. It stays out, through deploys and restarts, until
// rollout undrain puts it back; each host keeps its list in the app's
// state directory, beside the deploy lock.
type HandDrain struct {
	Port int       `json:"port"`
	User string    `json:"user"`
	From string    `json:"from"`
	Time time.Time `json:"time"`
}

// String says who drained it and when: "drained by hand by alice@laptop
// at 2026-12-06 13:04 UTC".
func (m HandDrain) String() string {
	return fmt.Sprintf("drained by hand by %s@%s at %s", m.User, m.From, m.Time.UTC().Format("2006-01-02 15:04 UTC"))
}

// The operations of rollout drain and undrain.
const (
	opDrain   = "drain"
	opUndrain = "undrain"
)

// Drain takes Targets out of every balancer that serves them, under each
// host's deploy lock, and records them as drained by hand so that deploys
// and restarts keep them out. It refuses what would leave a host fewer
// than min_serving instances serving (never its last one), and a whole
// host unless load balancers of their own (lb:) serve the fleet and the
// other hosts keep at least max(min_serving, 1) instances in service.
// Each drained instance's requests in flight are waited for.
func (d *Deployer) Drain(ctx context.Context) (*Report, error) {
	return d.hand(ctx, opDrain)
}

// Undrain puts Targets back into every balancer and removes them from the
// hosts' lists of instances drained by hand. An instance that fails its
// health check is not put back: the host's undrain changes nothing.
func (d *Deployer) Undrain(ctx context.Context) (*Report, error) {
	return d.hand(ctx, opUndrain)
}

// hand runs a drain or undrain on the targeted hosts only; the others
// (fleet) count for a whole host's capacity.
func (d *Deployer) hand(ctx context.Context, op string) (*Report, error) {
	cfg := d.Config
	if len(d.Targets) == 0 {
		return nil, fmt.Errorf("%s: name the instances (HOST:PORT) or hosts (HOST)", op)
	}
	var hosts []string
	for _, h := range cfg.Hosts {
		if _, ok := d.Targets[h]; ok {
			hosts = append(hosts, h)
		}
	}
	for h := range d.Targets {
		if !slices.Contains(hosts, h) {
			return nil, fmt.Errorf("%s: %s is not one of %s's hosts (%s)", op, h, cfg.App, strings.Join(cfg.Hosts, ", "))
		}
	}
	part := *cfg
	part.Hosts = hosts
	d.fleet = cfg.Hosts
	d.Config = &part
	defer func() { d.Config = cfg }()
	return d.run(ctx, op)
}

// checkTargets checks, at the preflight, that the instances named on a
// host are its own (with instances: auto, known once its cores are).
func (d *Deployer) checkTargets(s *session) error {
	for _, p := range d.Targets[s.host] {
		if !slices.Contains(s.cfg.Ports(), p) {
			return fmt.Errorf("%s:%d is not one of %s's instances there (ports %s)", s.host, p, s.cfg.App, portList(s.cfg.Ports()))
		}
	}
	return nil
}

// handTargets are the host's instances a drain or undrain changes, and
// whether they are all of them.
func (h *hostRun) handTargets() ([]int, bool) {
	ports := h.d.Targets[h.host]
	if len(ports) == 0 {
		return h.cfg.Ports(), true
	}
	return ports, false
}

// handDrain records the host's targets as drained by hand, then takes them
// out of service with the capacity check of a deploy (for a whole host
// behind lb:, the fleet's); if that fails, the record is put back as it
// was.
func (h *hostRun) handDrain(ctx context.Context) error {
	h.byHand = true
	ports, whole := h.handTargets()
	srv, err := h.bal.read(ctx)
	if err != nil {
		return &StepError{Host: h.host, Port: ports[0], Step: StepCapacity, Err: err}
	}
	h.servers = srv
	if whole {
		if err := h.wholeHostCapacity(ctx); err != nil {
			h.emit(ports[0], StepCapacity, StatusFail, time.Time{}, err.Error())
			return &StepError{Host: h.host, Port: ports[0], Step: StepCapacity, Err: err}
		}
	}
	before := h.handList()
	after := slices.Clone(before)
	now := time.Now().UTC()
	for _, p := range ports {
		if _, ok := h.handDrained[p]; !ok {
			after = append(after, HandDrain{Port: p, User: h.d.Holder.User, From: h.d.Holder.From, Time: now})
		}
	}
	sortByPort(after)
	if err := h.remote.SetHandDrained(ctx, after); err != nil {
		// The write may have landed before the error: put it back.
		return h.restoreHandList(ctx, before, &StepError{Host: h.host, Port: ports[0], Step: StepDrain, Err: err})
	}
	if whole {
		err = h.apply(ctx, upstreamChange{drain: ports})
		if err != nil {
			err = &StepError{Host: h.host, Port: ports[0], Step: StepDrain, Err: err}
		}
	} else {
		err = h.drain(ctx, ports)
	}
	if err != nil {
		return h.afterFailedDrain(ctx, before, after, ports, err)
	}
	h.handPorts = ports
	return nil
}

// afterFailedDrain keeps the record true after a drain that failed or was
// interrupted: the balancers may already have taken some of ports out
// (an interrupt during the wait for requests in flight). Those stay
// recorded as drained by hand, so no deploy puts them back unasked; the
// others are taken off the record. If the balancers cannot be read, the
// record stays as written (after), which errs on the side of keeping
// them out, and the error says so.
func (h *hostRun) afterFailedDrain(ctx context.Context, before, after []HandDrain, ports []int, err error) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	srv, rerr := h.bal.read(cctx)
	if rerr != nil {
		return errors.Join(err, fmt.Errorf("%s: whether %s left %s is unknown (%w): they stay recorded as drained by hand; `rollout status` shows where they are, `rollout undrain` puts them back", h.host, portList(ports), h.bal, rerr))
	}
	keep := slices.Clone(before)
	var out []int
	for _, m := range after {
		if slices.Contains(ports, m.Port) && !srv.in(m.Port) && !slices.ContainsFunc(keep, func(b HandDrain) bool { return b.Port == m.Port }) {
			keep = append(keep, m)
			out = append(out, m.Port)
		}
	}
	sortByPort(keep)
	err = h.restoreHandList(cctx, keep, err)
	if len(out) > 0 {
		err = errors.Join(err, fmt.Errorf("%s: %s out of service already, recorded as drained by hand (`rollout undrain` puts them back)", h.host, portList(out)))
	}
	return err
}

// handUndrain health-checks the host's targets, removes them from the
// record and puts them back into service; if that fails, the record is
// put back as it was. One that fails its check stops the host's undrain
// before anything changes.
func (h *hostRun) handUndrain(ctx context.Context) error {
	ports, whole := h.handTargets()
	t0 := time.Now()
	for _, p := range ports {
		h.emit(p, StepHealth, StatusStart, t0, "")
	}
	checks := checkAll(ctx, h.health, ports)
	var errs []error
	for _, p := range ports {
		if err := checks[p]; err != nil {
			how := "restarts it in service"
			if _, ok := h.handDrained[p]; ok {
				how = "restarts it (drained by hand, it stays out), then undrain it"
			}
			err = fmt.Errorf("not put back, it fails its health check: %w; `rollout restart --hosts %s --port %d` %s", err, h.host, p, how)
			h.emit(p, StepHealth, StatusFail, t0, err.Error())
			errs = append(errs, &StepError{Host: h.host, Port: p, Step: StepHealth, Err: err})
			continue
		}
		h.emit(p, StepHealth, StatusOK, t0, "")
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	srv, err := h.bal.read(ctx)
	if err != nil {
		return &StepError{Host: h.host, Port: ports[0], Step: StepUndrain, Err: err}
	}
	h.servers = srv
	before := h.handList()
	after := slices.DeleteFunc(slices.Clone(before), func(m HandDrain) bool {
		// A whole host's undrain also clears what a scale-in left of
		// instances the config no longer has.
		return slices.Contains(ports, m.Port) || whole && !slices.Contains(h.cfg.Ports(), m.Port)
	})
	if len(after) != len(before) {
		if err := h.remote.SetHandDrained(ctx, after); err != nil {
			return h.restoreHandList(ctx, before, &StepError{Host: h.host, Port: ports[0], Step: StepUndrain, Err: err})
		}
	}
	if err := h.apply(ctx, upstreamChange{undrain: ports}); err != nil {
		return h.restoreHandList(ctx, before, &StepError{Host: h.host, Port: ports[0], Step: StepUndrain, Err: err})
	}
	h.handPorts = ports
	return nil
}

// restoreHandList writes the record back as it was before a drain or
// undrain that failed (even if ctx was cancelled), and returns err, with
// what is known if the record could not be written.
func (h *hostRun) restoreHandList(ctx context.Context, before []HandDrain, err error) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if rerr := h.remote.SetHandDrained(cctx, before); rerr != nil {
		return errors.Join(err, fmt.Errorf("%s: and its list of instances drained by hand could not be put back as it was: %w", h.host, rerr))
	}
	return err
}

// handList is the host's record of instances drained by hand, by port.
func (h *hostRun) handList() []HandDrain {
	var out []HandDrain
	for _, m := range h.handDrained {
		out = append(out, m)
	}
	sortByPort(out)
	return out
}

// sortByPort puts a record of instances drained by hand in port order, as
// the host keeps it.
func sortByPort(list []HandDrain) {
	slices.SortFunc(list, func(a, b HandDrain) int { return a.Port - b.Port })
}

// wholeHostCapacity refuses to take every instance of the host out of
// service unless load balancers of their own (lb:) serve the fleet and
// the hosts not drained keep at least max(min_serving, 1) instances in
// service on them, as they say now.
func (h *hostRun) wholeHostCapacity(ctx context.Context) error {
	b := h.d.lbs
	if b == nil {
		return fmt.Errorf("%w: %s serves its instances through its own Nginx, and draining all of them would leave it nothing to send requests to: take the host out of what sends it traffic (DNS, a balancer) instead, or drain some of its instances", ErrCapacity, h.host)
	}
	var others []string
	for _, host := range h.d.fleet {
		if ports, ok := h.d.Targets[host]; !ok || len(ports) > 0 {
			others = append(others, host) // not drained whole by this run
		}
	}
	n, err := b.inService(ctx, others)
	if err != nil {
		return err
	}
	if need := max(h.cfg.MinServing(), 1); n < need {
		return fmt.Errorf("%w: draining every instance of %s would leave %d instance(s) of the other hosts in service on %s; it must leave at least %d (min_serving, and never none)", ErrCapacity, h.host, n, b, need)
	}
	return nil
}

// keepOut says whether an instance stays out of service after its
// restart, because it was drained by hand; it says so.
func (h *hostRun) keepOut(port int) bool {
	m, ok := h.handDrained[port]
	if ok {
		h.emit(port, StepUndrain, StatusSkip, time.Time{}, fmt.Sprintf("kept out: %s (`rollout undrain %s:%d` puts it back)", m, h.host, port))
	}
	return ok
}

// minServing is how many of the host's instances a drain must leave
// serving: min_serving. At its default (all but max_unavailable), a
// deploy, restart or revert counts only the instances not drained by
// hand, which are out by choice: the others still roll max_unavailable at
// a time. A min_serving set in the config or by a flag, and rollout drain
// itself, keep the configured figure.
func (h *hostRun) minServing() int {
	n := h.cfg.MinServing()
	if h.byHand || h.cfg.minServing != nil {
		return n
	}
	for _, p := range h.cfg.Ports() {
		if _, ok := h.handDrained[p]; ok {
			n--
		}
	}
	return max(n, 0)
}

// forgetHand takes an instance the scale step removed off the record of
// those drained by hand, so that a later scale-out does not find it
// there and keep it out.
func (h *hostRun) forgetHand(ctx context.Context, port int) error {
	if _, ok := h.handDrained[port]; !ok {
		return nil
	}
	delete(h.handDrained, port)
	if err := h.remote.SetHandDrained(ctx, h.handList()); err != nil {
		return fmt.Errorf("take %d off the record of instances drained by hand: %w", port, err)
	}
	return nil
}

// handArgs are a drain's or undrain's arguments for host: HOST:PORT for
// each port, or HOST for the whole host (no ports).
func handArgs(host string, ports []int) string {
	if len(ports) == 0 {
		return host
	}
	var args []string
	for _, p := range ports {
		args = append(args, fmt.Sprintf("%s:%d", host, p))
	}
	return strings.Join(args, " ")
}

// handNote is what a capacity failure adds when instances drained by
// hand are part of why.
func (h *hostRun) handNote() string {
	if len(h.handDrained) == 0 {
		return ""
	}
	var ports []int
	for p := range h.handDrained {
		if slices.Contains(h.cfg.Ports(), p) {
			ports = append(ports, p)
		}
	}
	if len(ports) == 0 {
		return ""
	}
	slices.Sort(ports)
	return fmt.Sprintf(" (%s drained by hand: `rollout undrain %s` puts them back, or lower --min-serving)", portList(ports), h.host)
}

// readHandDrained reads a host's instances drained by hand, by port.
func readHandDrained(ctx context.Context, r remote) (map[int]HandDrain, error) {
	list, err := r.HandDrained(ctx)
	if err != nil {
		return nil, err
	}
	out := map[int]HandDrain{}
	for _, m := range list {
		out[m.Port] = m
	}
	return out, nil
}
