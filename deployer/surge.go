package deployer

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Surge (strategy.max_surge): instead of draining an instance before its
// replacement exists, a deploy starts the new instances on spare ports
// beside the old ones, waits until they are healthy, puts them into
// service and takes the old ones out in one balancer change, then stops
// the old ones. Each instance has a slot: its configured port (home) and
// a spare port, the i-th port after the highest home port. Every deploy
// moves each slot to its other port, so the ports alternate between the
// two ranges from one deploy to the next. Which port of a slot is live is
// read from the balancer (liveConfig): the one it serves from (Nginx: in
// its server lines; HAProxy: out of maintenance).

// surging reports whether deploys start new instances beside the old ones.
func (c *Config) surging() bool { return c.Strategy.MaxSurge != (Amount{}) }

// Surge is how many new instances of a host of n start at once.
func (c *Config) Surge(n int) int { return c.Strategy.MaxSurge.Of(n) }

// slots returns the configured ports (home) and their spare ports.
func (c *Config) slots() (home, spare []int) {
	home = c.Ports()
	if c.moved {
		home = c.homeIn.Resolve(1)
	}
	if len(home) == 0 {
		return nil, nil
	}
	top := slices.Max(home)
	for i := range home {
		spare = append(spare, top+1+i)
	}
	return home, spare
}

// otherPort is the port that port's slot moves to at the next surge; 0
// when port is not one of the slots.
func (c *Config) otherPort(port int) int {
	home, spare := c.slots()
	if i := slices.Index(home, port); i >= 0 {
		return spare[i]
	}
	if i := slices.Index(spare, port); i >= 0 {
		return home[i]
	}
	return 0
}

// AllPorts are every port an instance may have: its ports and, with
// strategy.max_surge, their spare ones.
func (c *Config) AllPorts() []int {
	if !c.surging() {
		return c.Ports()
	}
	home, spare := c.slots()
	return append(slices.Clone(home), spare...)
}

// withLive is the host's config serving from the ports live, one per
// slot (c itself when they are its ports already).
func (c *Config) withLive(live []int) *Config {
	if slices.Equal(live, c.Ports()) {
		return c
	}
	orig := c.Instances
	if c.moved {
		orig = c.homeIn
	}
	hc := *c
	if slices.Equal(live, orig.Resolve(1)) {
		hc.Instances, hc.homeIn, hc.moved = orig, Instances{}, false
		return &hc
	}
	hc.homeIn, hc.moved = orig, true
	hc.Instances = Instances{List: slices.Clone(live)}
	return &hc
}

// checkSurge checks strategy.max_surge against the rest of the config.
func (c *Config) checkSurge(cs *checks) {
	if !c.surging() {
		return
	}
	const key = "strategy.max_surge"
	if c.Strategy.MaxUnavailable != (Amount{N: 1}) {
		cs.add(key, errors.New("replaces strategy.max_unavailable (the new instances start beside the old ones, so none is out of service first): give one of them"), "strategy.max_unavailable")
	}
	if _, spare := c.slots(); len(spare) > 0 && spare[len(spare)-1] > maxPort {
		cs.add(key, fmt.Errorf("needs a spare port for each instance after the highest (%d..%d), beyond %d", spare[0], spare[len(spare)-1], maxPort), "ports", "base_port")
	}
	if c.Instances.Auto && c.Instances.Base > 0 && c.Instances.Base+2*MaxInstances-1 > maxPort {
		cs.add(key, fmt.Errorf("with instances: auto needs twice as many ports as the host has cores from base_port %d: base_port must be at most %d", c.Instances.Base, maxPort+1-2*MaxInstances), "base_port")
	}
}

// liveSlots picks each slot's live port from the balancer's servers.
func liveSlots(home, spare []int, srv servers) []int {
	live := make([]int, len(home))
	for i := range home {
		h, s := home[i], spare[i]
		_, hListed := srv[h]
		_, sListed := srv[s]
		live[i] = h
		if sListed && (!hListed || (srv.in(s) && !srv.in(h))) {
			live[i] = s
		}
	}
	return live
}

// surgeCheck is what the preflight reads before a surge.
type surgeCheck struct {
	// listeners are what listens on each spare port: "NAME (pid N)" per
	// process; "" for a process the deploy user cannot see.
	listeners map[int][]surgeListener
	// spareActive are the spare ports' units' states (systemctl
	// is-active), by unit.
	spareActive map[string]string
	// available is the host's MemAvailable, bytes; rss each live unit's
	// main process's resident memory, bytes (0: not running).
	available uint64
	rss       map[string]uint64
}

// surgeListener is one process listening on a spare port.
type surgeListener struct {
	name string // "" when the deploy user cannot see it
	pid  int
	unit string // the systemd unit its cgroup names, "" if none
}

// checkSurgeRoom refuses a surge whose spare ports something else listens
// on (an instance of the app itself is a leftover the deploy stops), or
// that would not fit in the host's available memory: k new instances,
// each taking what the running ones take on average.
func checkSurgeRoom(cfg *Config, sc surgeCheck) error {
	var errs []error
	for _, p := range cfg.idlePorts() {
		if unitUp(sc.spareActive[cfg.UnitName(p)]) {
			continue // ours, left by an interrupted surge: stopped first
		}
		for _, l := range sc.listeners[p] {
			if l.unit != "" && strings.TrimSuffix(l.unit, ".service") == strings.TrimSuffix(cfg.UnitName(p), ".service") {
				continue // ours
			}
			who := "a process the deploy user cannot see (sudo ss -ltnp shows it)"
			if l.name != "" {
				who = fmt.Sprintf("%s (pid %d", l.name, l.pid)
				if l.unit != "" {
					who += ", " + l.unit
				}
				who += ")"
			}
			errs = append(errs, fmt.Errorf("spare port %d (for max_surge) is taken by %s: free it, or move the instances (ports, base_port)", p, who))
			break
		}
	}
	var sum uint64
	n := 0
	for _, rss := range sc.rss {
		if rss > 0 {
			sum += rss
			n++
		}
	}
	if n > 0 && sc.available > 0 {
		k := uint64(cfg.Surge(len(cfg.Ports())))
		each := sum / uint64(n)
		if need := each * k; need > sc.available {
			errs = append(errs, fmt.Errorf("strategy.max_surge %s would start %d more instances of about %s each (%s, as the running ones use) but the host has %s available: %s short; lower max_surge or use max_unavailable",
				cfg.Strategy.MaxSurge, k, MiB(each), MiB(need), MiB(sc.available), MiB(need-sc.available)))
		}
	}
	return errors.Join(errs...)
}

// MiB is a size in bytes in MiB, rounded: "48 MiB".
func MiB(b uint64) string { return strconv.FormatUint((b+1<<19)>>20, 10) + " MiB" }

// slotsOf are the slots of the live ports: each one's home port and,
// with strategy.max_surge, its spare port, in the same order (spare is
// nil without it, or when a port is none of the slots').
func (c *Config) slotsOf(live []int) (home, spare []int) {
	if !c.surging() {
		return live, nil
	}
	for _, p := range live {
		o := c.otherPort(p)
		if o == 0 {
			return live, nil
		}
		home, spare = append(home, min(p, o)), append(spare, max(p, o))
	}
	return home, spare
}

// idleOf are, with strategy.max_surge, the idle ports of a host serving
// from live (with instances: auto, as many slots as live ports); nil
// without it.
func (c *Config) idleOf(live []int) []int {
	if !c.surging() {
		return nil
	}
	hc := c.ForCores(len(live))
	var out []int
	for _, p := range live {
		if o := hc.otherPort(p); o != 0 {
			out = append(out, o)
		}
	}
	return out
}

// idlePorts are, with strategy.max_surge, the ports the host's slots do
// not serve from now (where the next surge moves them); nil without it.
func (c *Config) idlePorts() []int { return c.idleOf(c.Ports()) }

// unitUp reports whether a unit in ActiveState active runs, or is on its
// way up or down.
func unitUp(active string) bool { return active != "" && active != "inactive" && active != "failed" }

var ssUserRE = regexp.MustCompile(`\("([^"]*)",pid=([0-9]+),`)

// parseSurgeCheck reads surge-check.sh's output: "spare UNIT STATE",
// "listen PORT SS-LINE", "cgroup PID PATH", "mem KB" and "rss UNIT KB"
// lines.
func parseSurgeCheck(out []byte) (surgeCheck, error) {
	sc := surgeCheck{listeners: map[int][]surgeListener{}, rss: map[string]uint64{}, spareActive: map[string]string{}}
	cgroups := map[int]string{}
	type pending struct {
		port int
		line string
	}
	var listens []pending
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "listen":
			port, err := strconv.Atoi(f[1])
			if err != nil {
				return sc, fmt.Errorf("surge check: bad line %q", line)
			}
			listens = append(listens, pending{port, line})
		case "spare":
			if len(f) > 2 {
				sc.spareActive[f[1]] = f[2]
			}
		case "cgroup":
			if pid, err := strconv.Atoi(f[1]); err == nil && len(f) > 2 {
				cgroups[pid] = f[2]
			}
		case "mem":
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return sc, fmt.Errorf("surge check: bad line %q", line)
			}
			sc.available = kb << 10
		case "rss":
			if len(f) < 3 {
				return sc, fmt.Errorf("surge check: bad line %q", line)
			}
			kb, err := strconv.ParseUint(f[2], 10, 64)
			if err != nil {
				return sc, fmt.Errorf("surge check: bad line %q", line)
			}
			sc.rss[f[1]] = kb << 10
		}
	}
	for _, l := range listens {
		ms := ssUserRE.FindAllStringSubmatch(l.line, -1)
		if len(ms) == 0 {
			sc.listeners[l.port] = append(sc.listeners[l.port], surgeListener{})
		}
		for _, m := range ms {
			pid, _ := strconv.Atoi(m[2])
			sc.listeners[l.port] = append(sc.listeners[l.port], surgeListener{name: m[1], pid: pid, unit: cgroupUnit(cgroups[pid])})
		}
	}
	return sc, nil
}

// cgroupUnit is the unit a cgroup path ("0::/system.slice/my-app@3000.service")
// names, "" if none.
func cgroupUnit(path string) string {
	_, p, _ := strings.Cut(path, "::")
	for _, part := range slices.Backward(strings.Split(p, "/")) {
		if strings.HasSuffix(part, ".service") {
			return part
		}
	}
	return ""
}

// surgeGroup starts a new instance beside each of old on its slot's other
// port (on the target release), waits until all are active, healthy and
// stable, then, in one change of the balancer, puts them into service and
// removes the old ones, waits for the old ones' requests, and stops and
// disables them. A new instance that does not come up is stopped with
// the others of its group, and the old ones keep serving, untouched.
func (h *hostRun) surgeGroup(ctx context.Context, old []int) error {
	spares := make([]int, len(old))
	for i, p := range old {
		spares[i] = h.cfg.otherPort(p)
		if h.targets != nil {
			h.targets[spares[i]] = h.targets[p]
		}
	}
	if err := errors.Join(h.instances(ctx, spares)...); err != nil {
		return h.dropSpares(ctx, spares, err)
	}
	// Enabled once they are stable, before the change: from then on they
	// start at boot (and, were the run cut short here, the next one stops
	// them: they are not in service).
	t0 := time.Now()
	if err := h.remote.Enable(ctx, spares...); err != nil {
		h.emit(spares[0], StepScale, StatusFail, t0, err.Error())
		return h.dropSpares(ctx, spares, &StepError{Host: h.host, Port: spares[0], Step: StepScale, Err: fmt.Errorf("enable the new instances: %w", err)})
	}
	for i, s := range spares {
		h.emit(s, StepScale, StatusOK, t0, fmt.Sprintf("new instance beside %d (strategy.max_surge): healthy, enabled", old[i]))
	}
	t0 = time.Now()
	h.emit(old[0], StepCapacity, StatusStart, t0, "")
	serving, _ := h.serving(ctx)
	left := 0
	for p := range serving {
		if !slices.Contains(old, p) {
			left++
		}
	}
	if need := max(h.minServing(), 1); left+len(spares) < need {
		err := fmt.Errorf("%w: replacing %s by %s would leave %d serving; it must leave %s",
			ErrCapacity, portList(old), portList(spares), left+len(spares), servingFloor(h.minServing()))
		h.emit(old[0], StepCapacity, StatusFail, t0, err.Error())
		return h.dropSpares(ctx, spares, &StepError{Host: h.host, Port: old[0], Step: StepCapacity, Err: err})
	}
	h.emit(old[0], StepCapacity, StatusOK, t0, fmt.Sprintf("%d serving after the change", left+len(spares)))
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = h.apply(ctx, upstreamChange{undrain: spares, remove: old}); !errors.Is(err, errUpstreamChanged) {
			break
		}
	}
	if err != nil {
		return h.changeFailed(ctx, old, spares, &StepError{Host: h.host, Port: old[0], Step: StepDrain, Err: err})
	}
	h.move(old, spares)
	return h.stopOld(ctx, old, spares)
}

// changeFailed decides what a change that failed (err) leaves: a change
// can fail after its write took effect (Nginx's old workers slow to stop,
// a connection lost after the reload), so the balancer is read again. The
// new instances in service: the slots moved, the old instances are
// stopped. Not in service: they are stopped. Unknown (it cannot be read):
// nothing is stopped; the next run finds the ports in the balancer and
// stops what is not in it.
func (h *hostRun) changeFailed(ctx context.Context, old, spares []int, err error) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	cur, rerr := h.bal.read(cctx)
	if rerr != nil {
		return errors.Join(err, fmt.Errorf("read %s again after the failed change: %w; the new instances %s are left running (the next deploy keeps or stops them, as the balancer says)", h.bal, rerr, portList(spares)))
	}
	h.servers = cur
	for _, s := range spares {
		if !cur.in(s) {
			return h.dropSpares(ctx, spares, err)
		}
	}
	h.move(old, spares)
	return errors.Join(err, h.stopOld(cctx, old, spares))
}

// dropSpares stops and disables the new instances of a group that does
// not go on (err: why), and forgets them: nothing of the host changed.
func (h *hostRun) dropSpares(ctx context.Context, spares []int, err error) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var serrs []error
	t0 := time.Now()
	if serr := h.remote.Stop(cctx, spares...); serr != nil {
		h.emit(spares[0], StepScale, StatusFail, t0, "stop the new instances: "+serr.Error())
		serrs = append(serrs, fmt.Errorf("stop and disable the new instances %s: %w", portList(spares), serr))
	} else {
		for _, s := range spares {
			h.emit(s, StepScale, StatusOK, t0, "new instance stopped and disabled: the old one keeps serving")
		}
	}
	h.mu.Lock()
	h.switched = slices.DeleteFunc(h.switched, func(p int) bool { return slices.Contains(spares, p) })
	h.restarted = slices.DeleteFunc(h.restarted, func(p int) bool { return slices.Contains(spares, p) })
	h.mu.Unlock()
	return errors.Join(append([]error{err}, serrs...)...)
}

// move makes the host's live ports the spares in place of old: its
// config (the session's too, for a revert and the history), and, with
// releases, what each slot ran before the run.
func (h *hostRun) move(old, spares []int) {
	live := h.cfg.Ports()
	for i, p := range old {
		if j := slices.Index(live, p); j >= 0 {
			live[j] = spares[i]
		}
		if h.rel.links != nil {
			h.rel.links[spares[i]] = h.rel.links[p]
		}
		if h.rel.running != nil {
			h.rel.running[spares[i]] = h.rel.running[p]
		}
	}
	h.cfg = h.cfg.withLive(live)
	if h.sess != nil {
		h.sess.cfg = h.cfg
	}
}

// stopOld stops and disables the old instances, out of service now.
func (h *hostRun) stopOld(ctx context.Context, old, spares []int) error {
	t0 := time.Now()
	if err := h.remote.Stop(ctx, old...); err != nil {
		h.emit(old[0], StepScale, StatusFail, t0, err.Error())
		return &StepError{Host: h.host, Port: old[0], Step: StepScale, Err: fmt.Errorf("stop and disable the old instances %s (%s serve in their place; the next deploy stops them): %w", portList(old), portList(spares), err)}
	}
	for i, p := range old {
		h.emit(p, StepScale, StatusOK, t0, fmt.Sprintf("old instance stopped and disabled: %d serves in its place", spares[i]))
	}
	return nil
}

// beginSurge prepares the host's surge, once its servers are read: an
// instance drained by hand would be replaced by one in service, so the
// deploy stops; leftovers of an interrupted surge are stopped.
func (h *hostRun) beginSurge(ctx context.Context) error {
	for _, p := range h.cfg.Ports() {
		if m, ok := h.handDrained[p]; ok {
			return fmt.Errorf("%d is drained by hand (%s), and strategy.max_surge would put its replacement into service: rollout undrain %s:%d first, or deploy with max_unavailable", p, m, h.host, p)
		}
	}
	return h.stopLeftovers(ctx)
}

// stopLeftovers stops the instances on the other ports of the host's
// slots that run but are not the balancer's servers:
// left by a surge that was interrupted before or after its change.
func (h *hostRun) stopLeftovers(ctx context.Context) error {
	var others []int
	for _, p := range h.cfg.Ports() {
		o := h.cfg.otherPort(p)
		if _, listed := h.servers[o]; o != 0 && !listed {
			others = append(others, o)
		}
	}
	if len(others) == 0 {
		return nil
	}
	st, err := h.remote.Inspect(ctx, others)
	if err != nil {
		return fmt.Errorf("read the spare ports' units: %w", err)
	}
	var left []int
	for _, p := range others {
		if unitUp(st.units[p].Active) {
			left = append(left, p)
		}
	}
	if len(left) == 0 {
		return nil
	}
	t0 := time.Now()
	if err := h.remote.Stop(ctx, left...); err != nil {
		return fmt.Errorf("stop %s, left by an interrupted surge: %w", portList(left), err)
	}
	for _, p := range left {
		h.emit(p, StepScale, StatusWarn, t0, fmt.Sprintf("%s was %s but not in service (left by an interrupted surge): stopped and disabled", h.cfg.UnitName(p), st.units[p]))
	}
	return nil
}

// checkOnlyLive refuses a restart of ports (rollout restart --port) one of
// which its slot does not serve from now: it would restart nothing.
func checkOnlyLive(cfg *Config, ports []int) error {
	for _, p := range ports {
		if o := cfg.otherPort(p); o != 0 && !slices.Contains(cfg.Ports(), p) {
			return fmt.Errorf("--port %d: that instance serves from %d now (strategy.max_surge moves it between the two at each deploy); the instances: %s", p, o, portList(cfg.Ports()))
		}
	}
	return nil
}
