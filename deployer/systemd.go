package deployer

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// unitState is what systemd says about one instance.
type unitState struct {
	ID        string
	Load      string // LoadState: loaded, not-found, ...
	Active    string // ActiveState: active, activating, failed, inactive, ...
	Sub       string // SubState: running, auto-restart, dead, ...
	MainPID   int
	StartedAt uint64 // ExecMainStartTimestampMonotonic, µs
	Restarts  int    // NRestarts
	Memory    uint64 // MemoryCurrent, bytes; 0 when systemd does not say
	FileState string // UnitFileState: enabled, disabled, ... (read for workers)
	// ExitStatus is the main process's last exit status (ExecMainStatus).
	ExitStatus int
	// setupRetried: waitActive waited through a start systemd itself
	// failed (exitCgroup) and made again.
	setupRetried bool
	Result       string // Result: success, exit-code, start-limit-hit, ...
	// StartLimitBurst starts within StartLimitInterval make systemd give
	// up on the unit (Result start-limit-hit).
	StartLimitBurst    int
	StartLimitInterval time.Duration
}

// hitStartLimit says so when systemd gave up on the unit because it
// crashed too often: its Result says so, or (as systemd 252 reports an
// automatic restart refused by the limit) it failed after as many starts
// as StartLimitBurst allows.
func (u unitState) hitStartLimit() string {
	limit := u.Result == "start-limit-hit" ||
		(u.Active == "failed" && u.StartLimitBurst > 0 && u.Restarts > 0 && u.Restarts+1 >= u.StartLimitBurst)
	if !limit {
		return ""
	}
	return fmt.Sprintf("hit the start limit (StartLimitBurst=%d in %s): systemd will not start it again until reset", u.StartLimitBurst, u.StartLimitInterval)
}

// uptime is how long its process has run, the host's monotonic clock
// being now (µs); 0 when it does not run or the clocks do not tell.
func (u unitState) uptime(now uint64) time.Duration {
	if !u.running() || u.StartedAt == 0 || now <= u.StartedAt {
		return 0
	}
	return time.Duration(now-u.StartedAt) * time.Microsecond
}

// running reports whether systemd considers the instance up.
func (u unitState) running() bool { return u.Active == "active" && u.MainPID > 0 }

func (u unitState) String() string {
	s := fmt.Sprintf("%s/%s", u.Active, u.Sub)
	if u.MainPID > 0 {
		s += fmt.Sprintf(" pid %d", u.MainPID)
	}
	if u.Restarts > 0 {
		s += fmt.Sprintf(", restarted %d times by systemd", u.Restarts)
	}
	if limit := u.hitStartLimit(); limit != "" {
		s += ", " + limit
	}
	return s
}

// exitCgroup is systemd's exit status (219, EXIT_CGROUP) for a process it
// could not place in the unit's cgroup: the app never ran. Seen on loaded
// hosts (and containers) when several units start at once; systemd's
// Restart= starts it again.
const exitCgroup = 219

// activeNote is what the wait-active step says of the process it found.
func activeNote(u unitState) string {
	s := fmt.Sprintf("pid %d", u.MainPID)
	if u.setupRetried {
		s += fmt.Sprintf(" (systemd could not place the first process in the unit's cgroup, status %d/CGROUP, before the app ran, and started it again)", exitCgroup)
	}
	return s
}

// statusOf is the wait-active step's status: a warning when systemd had to
// start the process again (activeNote says why).
func statusOf(u unitState) StepStatus {
	if u.setupRetried {
		return StatusWarn
	}
	return StatusOK
}

const unitProps = "Id,LoadState,ActiveState,SubState,MainPID,ExecMainStartTimestampMonotonic,NRestarts,Result,StartLimitBurst,StartLimitIntervalUSec,ExecMainStatus"

// parseUnitStates parses `systemctl show -p unitProps UNIT...` output:
// KEY=VALUE lines, one block per unit, blocks separated by blank lines.
func parseUnitStates(out string) (map[string]unitState, error) {
	states := map[string]unitState{}
	var cur unitState
	flush := func() {
		if cur.ID != "" {
			states[strings.TrimSuffix(cur.ID, ".service")] = cur
		}
		cur = unitState{}
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			flush()
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("unexpected systemctl show line %q", line)
		}
		var err error
		switch k {
		case "Id":
			cur.ID = v
		case "LoadState":
			cur.Load = v
		case "ActiveState":
			cur.Active = v
		case "SubState":
			cur.Sub = v
		case "MainPID":
			cur.MainPID, err = strconv.Atoi(v)
		case "ExecMainStartTimestampMonotonic":
			cur.StartedAt, err = strconv.ParseUint(v, 10, 64)
		case "NRestarts":
			cur.Restarts, err = strconv.Atoi(v)
		case "Result":
			cur.Result = v
		case "StartLimitBurst":
			cur.StartLimitBurst, _ = strconv.Atoi(v)
		case "StartLimitIntervalUSec":
			cur.StartLimitInterval = parseSystemdSpan(v)
		case "UnitFileState":
			cur.FileState = v
		case "ExecMainStatus":
			cur.ExitStatus, _ = strconv.Atoi(v)
		case "MemoryCurrent":
			cur.Memory, _ = strconv.ParseUint(v, 10, 64) // "[not set]" without accounting
		}
		if err != nil {
			return nil, fmt.Errorf("systemctl show %s: %w", k, err)
		}
	}
	flush()
	return states, sc.Err()
}

// unitLogFiles finds where a unit writes its stdout and stderr from its
// unit file (`systemctl cat` output): StandardOutput= and StandardError=
// with file:, append: or truncate: paths, the specifiers %i, %I, %n, %N, %p
// and %% expanded for the instance. The last assignment of each wins, as in
// systemd.
func unitLogFiles(catOutput, unit string) []string {
	prefix, instance, _ := strings.Cut(unit, "@")
	expand := strings.NewReplacer("%%", "%", "%i", instance, "%I", instance,
		"%n", unit+".service", "%N", unit, "%p", prefix)
	last := map[string]string{}
	inService := false
	for _, line := range strings.Split(catOutput, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			inService = line == "[Service]"
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !inService || !ok || (k != "StandardOutput" && k != "StandardError") {
			continue
		}
		last[k] = ""
		for _, kind := range []string{"file:", "append:", "truncate:"} {
			if p, ok := strings.CutPrefix(v, kind); ok {
				last[k] = expand.Replace(p)
			}
		}
	}
	var files []string
	for _, k := range []string{"StandardError", "StandardOutput"} {
		if f := last[k]; f != "" && (len(files) == 0 || files[0] != f) {
			files = append(files, f)
		}
	}
	return files
}

// parseSystemdSpan reads a time span as systemctl show prints it ("1min",
// "10s", "1min 30s", "500ms", "infinity"); 0 when it cannot.
func parseSystemdSpan(v string) time.Duration {
	var total time.Duration
	for _, f := range strings.Fields(v) {
		f = strings.Replace(f, "min", "m", 1)
		d, err := time.ParseDuration(f)
		if err != nil {
			return 0
		}
		total += d
	}
	return total
}
