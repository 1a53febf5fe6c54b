package deployer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ReleaseOutcome is what became of a release on a host, as its release log
// says.
type ReleaseOutcome string

// The outcomes in a release log. A release's latest line is its outcome.
const (
	// ReleaseNew: uploaded and prepared, not (yet) deployed.
	ReleaseNew ReleaseOutcome = "new"
	// ReleaseOK: every instance of the host runs it, after a deploy.
	ReleaseOK ReleaseOutcome = "ok"
	// ReleaseFailed: its deploy stopped (release.on_failure: halt, or
	// interrupted); a rerun resumes it.
	ReleaseFailed ReleaseOutcome = "failed"
	// ReleaseReverted: the fleet went back to it, by an automatic revert or
	// a rollback.
	ReleaseReverted ReleaseOutcome = "reverted"
	// ReleaseBad: it failed to come up and was reverted, or was rolled back
	// from; rollback never goes to it.
	ReleaseBad ReleaseOutcome = "BAD"
	// ReleaseCanary: a deploy paused after its first batch with some
	// instances on it (strategy.pause_after_canary); rollout promote
	// continues it, rollout rollback takes it back.
	ReleaseCanary ReleaseOutcome = "canary"
)

// ReleaseEntry is one line of a host's release log
// (release.root/.rollout/releases.jsonl).
type ReleaseEntry struct {
	ID      string         `json:"id"`
	Version string         `json:"version"`
	SHA256  string         `json:"sha256,omitempty"`
	User    string         `json:"user,omitempty"`
	Time    time.Time      `json:"time"`
	Outcome ReleaseOutcome `json:"outcome"`
	// Secrets is the digest of the release's sealed secrets (secrets:);
	// SecretsChanged, on the entry of a deploy that went through, the
	// names it added (+), removed (-) and changed (~), never values.
	Secrets        string   `json:"secrets,omitempty"`
	SecretsChanged []string `json:"secrets_changed,omitempty"`
}

// good reports whether rollback may go to a release with this outcome.
func (o ReleaseOutcome) good() bool { return o == ReleaseOK || o == ReleaseReverted }

// releaseState is a host's release layout as read at one moment.
type releaseState struct {
	present map[string]bool // directories in releases/
	log     []ReleaseEntry  // oldest first
	current string          // the release current names; "" if none
	links   map[int]string  // by port: the release instances/PORT names
	running map[int]string  // by port: the release its process runs in; "" if none or not a release
	runDir  map[int]string  // by port: the directory its process runs in
	workDir map[int]string  // by port: the unit's WorkingDirectory
	// workers are the same of the workers' units (instances/UNIT), by
	// unit.
	workers map[string]workerRelease
}

// workerRelease is a worker unit's release layout: the release its link
// names, the one its process runs in, and its WorkingDirectory.
type workerRelease struct{ link, running, workDir string }

// latest is each release's latest log entry, by ID.
func (st releaseState) latest() map[string]ReleaseEntry {
	out := map[string]ReleaseEntry{}
	for _, e := range st.log {
		prev, ok := out[e.ID]
		if ok && e.SHA256 == "" {
			e.SHA256 = prev.SHA256
		}
		if ok && e.Secrets == "" {
			e.Secrets = prev.Secrets
		}
		if ok && e.Version == "" {
			e.Version = prev.Version
		}
		out[e.ID] = e
	}
	return out
}

// withSum is the newest release present on the host whose artifact had
// sum, or "".
func (st releaseState) withSum(sum, secrets string) string {
	best := ""
	for id, e := range st.latest() {
		if e.SHA256 == sum && e.Secrets == secrets && st.present[id] && id > best {
			best = id
		}
	}
	return best
}

// parseReleaseState reads release-state.sh's output.
func parseReleaseState(out []byte, root string) (releaseState, error) {
	parts := sections(out)
	if _, ok := parts["instances"]; !ok {
		return releaseState{}, fmt.Errorf("release state: unexpected output %q", out)
	}
	st := releaseState{present: map[string]bool{}, links: map[int]string{}, running: map[int]string{},
		runDir: map[int]string{}, workDir: map[int]string{}, workers: map[string]workerRelease{}}
	for _, id := range strings.Fields(parts["releases"]) {
		if ValidReleaseID(id) == nil {
			st.present[id] = true
		}
	}
	for _, line := range strings.Split(parts["log"], "\n") {
		var e ReleaseEntry
		if strings.TrimSpace(line) != "" && json.Unmarshal([]byte(line), &e) == nil && ValidReleaseID(e.ID) == nil {
			st.log = append(st.log, e)
		}
	}
	st.current = releaseOf(strings.TrimSpace(parts["current"]), root)
	for _, line := range strings.Split(parts["instances"], "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) < 4 {
			continue
		}
		dash := func(s string) string {
			if s == "-" {
				return ""
			}
			return s
		}
		port, err := strconv.Atoi(f[0])
		if err != nil { // a worker's unit
			st.workers[f[0]] = workerRelease{link: releaseOf(dash(f[1]), root), running: releaseOf(dash(f[2]), root), workDir: dash(strings.TrimSpace(f[3]))}
			continue
		}
		st.links[port] = releaseOf(dash(f[1]), root)
		st.runDir[port] = dash(f[2])
		st.running[port] = releaseOf(dash(f[2]), root)
		st.workDir[port] = dash(strings.TrimSpace(f[3]))
	}
	return st, nil
}

// releaseOf is the release ID a link target or directory names:
// "../releases/ID", "releases/ID" or ROOT/releases/ID; "" for anything
// else.
func releaseOf(p, root string) string {
	if p == "" {
		return ""
	}
	dir, id := path.Split(path.Clean(p))
	dir = strings.TrimSuffix(dir, "/")
	if ValidReleaseID(id) != nil {
		return ""
	}
	if dir == "releases" || dir == "../releases" || dir == strings.TrimRight(root, "/")+"/releases" {
		return id
	}
	return ""
}

// checkLayout checks, before any change, that every instance's unit runs
// from its link under release.root, so that switching the link switches
// the instance: a host still in the seed's layout (the code in one
// directory the unit names) is refused, saying what to change.
func checkLayout(cfg *Config, st releaseState) error {
	root := strings.TrimRight(cfg.Release.Root, "/")
	var wrong []string
	for _, p := range cfg.Ports() {
		if want := fmt.Sprintf("%s/instances/%d", root, p); st.workDir[p] != want {
			wd := st.workDir[p]
			if wd == "" {
				wd = "no WorkingDirectory"
			}
			wrong = append(wrong, fmt.Sprintf("%s runs from %s, not %s", cfg.UnitName(p), wd, want))
		}
	}
	for _, u := range cfg.WorkerUnits() {
		if want := root + "/instances/" + u; st.workers[u].workDir != want {
			wd := st.workers[u].workDir
			if wd == "" {
				wd = "no WorkingDirectory"
			}
			wrong = append(wrong, fmt.Sprintf("%s runs from %s, not %s (a worker's template: WorkingDirectory=%s/instances/%%p@%%i)", u, wd, want, root))
		}
	}
	if len(wrong) == 0 {
		return nil
	}
	return fmt.Errorf("the host is not in the release layout: %s. With release: set, the unit must run each instance from its link: WorkingDirectory=%s/instances/%%i and ExecStart under it. Run `rollout setup` to write that unit and move the host's current code into a first release (see docs/releases.md, \"Moving a host to releases\")",
		strings.Join(wrong, "; "), root)
}

// rollbackTarget picks the release a rollback goes to: to if given (it
// must be on every host and not BAD), else the newest release older than
// every host's current one that is on every host and good on all of them.
func rollbackTarget(states []releaseState, to string) (string, error) {
	if len(states) == 0 {
		return "", fmt.Errorf("no host to roll back")
	}
	if to == "" {
		// A paused rollout goes back to the release its canary left.
		if _, err := pausedRelease(states); err == nil && states[0].current != "" && !slices.ContainsFunc(states, func(st releaseState) bool { return st.current != states[0].current }) {
			return states[0].current, nil
		}
	}
	if to != "" {
		for i, st := range states {
			if !st.present[to] {
				return "", fmt.Errorf("release %s is not on every host (not on host %d of the config)", to, i+1)
			}
			if st.latest()[to].Outcome == ReleaseBad {
				return "", fmt.Errorf("release %s is marked BAD; deploy it again to use it", to)
			}
		}
		return to, nil
	}
	var candidates []string
	for id := range states[0].present {
		candidates = append(candidates, id)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(candidates)))
	for _, id := range candidates {
		ok := true
		for _, st := range states {
			e := st.latest()[id]
			if !st.present[id] || !e.Outcome.good() || (st.current != "" && id >= st.current) {
				ok = false
				break
			}
		}
		if ok {
			return id, nil
		}
	}
	var cur []string
	for _, st := range states {
		if st.current != "" && !slices.Contains(cur, st.current) {
			cur = append(cur, st.current)
		}
	}
	return "", fmt.Errorf("nothing to roll back to: no release older than the current one (%s) is on every host and was deployed successfully", strings.Join(cur, ", "))
}

// cleanup is what a successful deploy of id removes on a host: every
// release beyond the newest keep good ones, except id and any release
// current or an instance still names.
func (st releaseState) cleanup(keep int, id string, links map[int]string) []string {
	latest := st.latest()
	var ids []string
	for r := range st.present {
		ids = append(ids, r)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))
	used := map[string]bool{id: true, st.current: true}
	for _, l := range links {
		used[l] = true
	}
	var remove []string
	kept := 0
	for _, r := range ids {
		if r == id {
			kept++
			continue
		}
		if latest[r].Outcome.good() && kept < keep {
			kept++
			continue
		}
		if !used[r] {
			remove = append(remove, r)
		}
	}
	return remove
}

// HostReleases is what `rollout releases` shows of one host.
type HostReleases struct {
	Host     string        `json:"host"`
	Current  string        `json:"current,omitempty"`
	Releases []ReleaseInfo `json:"releases"`
	// Instances not running a release of the layout, or whose link and
	// process disagree (switched, not yet restarted).
	Mismatched []InstanceRelease `json:"mismatched,omitempty"`
	Error      string            `json:"error,omitempty"`
}

// ReleaseInfo is one release on a host, newest first.
type ReleaseInfo struct {
	ReleaseEntry
	Present bool `json:"present"` // its directory is on the host
	Current bool `json:"current"`
	// Instances are the instances whose process runs it; Workers the
	// workers' units (workers:).
	Instances []int    `json:"instances,omitempty"`
	Workers   []string `json:"workers,omitempty"`
}

// InstanceRelease says what an instance's link names and what its
// process runs when the two differ.
type InstanceRelease struct {
	Port    int    `json:"port"`
	Link    string `json:"link"`
	Running string `json:"running"` // a release ID, or the directory it runs in
}

// Releases reads one host's releases: each with its latest outcome in the
// release log, whether it is current, and which instances run it.
func Releases(ctx context.Context, cfg *Config, host string, conn Conn) (HostReleases, error) {
	out := HostReleases{Host: host}
	if cfg.Release == nil {
		return out, errors.New("the config has no release: section")
	}
	r := newSSHRemote(cfg, conn)
	hc, err := resolveHost(ctx, cfg, host, r)
	if err != nil {
		return out, err
	}
	st, err := r.ReleaseState(ctx, hc.Ports(), hc.WorkerUnits())
	if err != nil {
		return out, err
	}
	return st.report(host, hc.Ports(), hc.WorkerUnits()), nil
}

// report is the host's releases for `rollout releases`.
func (st releaseState) report(host string, ports []int, workers []string) HostReleases {
	out := HostReleases{Host: host, Current: st.current}
	latest := st.latest()
	ids := map[string]bool{}
	for id := range latest {
		ids[id] = true
	}
	for id := range st.present {
		ids[id] = true
	}
	var sorted []string
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(sorted)))
	for _, id := range sorted {
		e := latest[id]
		e.ID = id
		info := ReleaseInfo{ReleaseEntry: e, Present: st.present[id], Current: id == st.current}
		for _, p := range ports {
			if st.running[p] == id {
				info.Instances = append(info.Instances, p)
			}
		}
		for _, u := range workers {
			if st.workers[u].running == id {
				info.Workers = append(info.Workers, u)
			}
		}
		out.Releases = append(out.Releases, info)
	}
	for _, p := range ports {
		if st.running[p] == "" || st.links[p] != st.running[p] {
			running := st.running[p]
			if running == "" {
				running = st.runDir[p]
			}
			out.Mismatched = append(out.Mismatched, InstanceRelease{Port: p, Link: st.links[p], Running: running})
		}
	}
	return out
}

// pausedRelease is the release of a paused rollout: the newest release on
// every host that each host's log says is a canary, newer than its
// current.
func pausedRelease(states []releaseState) (string, error) {
	best := ""
	for id, e := range states[0].latest() {
		if e.Outcome != ReleaseCanary || id <= best {
			continue
		}
		ok := true
		for _, st := range states {
			ok = ok && st.present[id] && st.latest()[id].Outcome == ReleaseCanary && id > st.current
		}
		if ok {
			best = id
		}
	}
	if best == "" {
		return "", errors.New("nothing to promote: no rollout is paused (no release is a canary on every host, newer than its current)")
	}
	return best, nil
}
