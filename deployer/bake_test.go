package deployer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestBatchQuotas(t *testing.T) {
	sessions := func(sizes ...int) []*session {
		var out []*session
		for i, n := range sizes {
			cfg := DefaultConfig()
			cfg.Instances = Instances{Base: 3000, Count: n}
			out = append(out, &session{index: i, cfg: cfg})
		}
		return out
	}
	amounts := func(s ...string) []Amount {
		var out []Amount
		for _, a := range s {
			v, err := ParseAmount(a)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
		return out
	}
	tests := []struct {
		sizes   []int
		batches []string
		want    string
	}{
		{[]int{4, 4}, []string{"1", "25%", "100%"}, "[[1 0] [1 1] [4 4]]"},
		{[]int{4, 4}, []string{"1", "50%", "100%"}, "[[1 0] [2 2] [4 4]]"},
		{[]int{3, 5}, []string{"1", "50%", "100%"}, "[[1 0] [2 2] [3 5]]"},
		{[]int{4}, []string{"1", "2", "100%"}, "[[1] [2] [4]]"},
		{[]int{2, 2, 2}, []string{"10%", "100%"}, "[[1 0 0] [2 2 2]]"},
		{[]int{1, 1}, []string{"1", "9", "100%"}, "[[1 0] [1 1] [1 1]]"},
	}
	for _, tt := range tests {
		if got := fmt.Sprint(batchQuotas(amounts(tt.batches...), sessions(tt.sizes...))); got != tt.want {
			t.Errorf("%v of %v: %s, want %s", tt.batches, tt.sizes, got, tt.want)
		}
	}
}

const batchYAML = fourInstances + "strategy: {batches: [1, 50%, 100%], bake: 1s, min_requests: 10}\nhooks: {host_before: [\"true\"], host_after: [\"true\"]}\n"

func twoHostsWithTraffic(t *testing.T) (*fakeRemote, *fakeRemote) {
	a, b := newFakeRemote(t, 3000, 3001, 3002, 3003), newFakeRemote(t, 3000, 3001, 3002, 3003)
	a.traffic, b.traffic = 5, 5
	return a, b
}

// A good release goes through its batches: the canary (one instance of
// the first host), half the fleet, the rest; a bake after each batch but
// the last; each host's hooks run once and it is stable between batches.
func TestDeployBatches(t *testing.T) {
	a, b := twoHostsWithTraffic(t)
	d, events := fakeDeployer(t, batchYAML, a, b)
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	// The canary on web1 alone; then two on each; then the rest.
	var order []string
	for _, e := range *events {
		if e.Step == StepRestart && e.Status == StatusOK || e.Step == StepBake && e.Status == StatusOK {
			order = append(order, fmt.Sprintf("%s%s:%d", e.Step, e.Host, e.Port))
		}
	}
	want := "[restartweb1:3000 bake:0 restartweb1:3001 restartweb2:3000 restartweb2:3001 bake:0 restartweb1:3002 restartweb1:3003 restartweb2:3002 restartweb2:3003]"
	if fmt.Sprint(order) != want {
		t.Errorf("order %v\nwant  %s", order, want)
	}
	if len(rep.Bakes) != 2 || rep.Bakes[0].Verdict != "ok" || rep.Bakes[0].New.Requests == 0 || rep.Bakes[0].Old.Requests == 0 || rep.Bakes[0].New.Errors != 0 {
		t.Errorf("bakes %+v", rep.Bakes)
	}
	for _, h := range []*fakeRemote{a, b} {
		if len(h.hooks) != 2 || len(h.history) != 1 || h.history[0].Outcome != HostOK || strings.Contains(h.upstream, "down") {
			t.Errorf("hooks %d, history %+v, upstream:\n%s", len(h.hooks), h.history, h.upstream)
		}
	}
	if rep.Hosts[0].Outcome != HostOK || rep.Hosts[1].Outcome != HostOK || len(rep.Hosts[1].Restarted) != 4 {
		t.Errorf("report %+v", rep.Hosts)
	}
}

// A canary that answers 5xx to real traffic is caught by the first bake:
// nothing else restarts.
func TestBakeCatchesBadCanary(t *testing.T) {
	a, b := twoHostsWithTraffic(t)
	a.fails5xx = func(p int) bool { return slices.Contains(a.ops, fmt.Sprintf("restart %d", p)) }
	d, _ := fakeDeployer(t, batchYAML, a, b)
	rep, err := d.Deploy(testCtx(t))
	var se *StepError
	if !errors.Is(err, ErrBake) || !errors.As(err, &se) || se.Step != StepBake {
		t.Fatalf("err = %v, want the bake's", err)
	}
	if fmt.Sprint(restartsIn(a.ops)) != "[restart 3000]" || len(restartsIn(b.ops)) != 0 {
		t.Errorf("restarted past the canary: %v %v", a.ops, b.ops)
	}
	bk := rep.Bakes[0]
	if bk.Verdict != "breach" || bk.New.Errors == 0 || bk.Old.Errors != 0 || !strings.Contains(bk.Reason, "over max_error_ratio 0.01") {
		t.Errorf("bake %+v", bk)
	}
	if rep.Hosts[0].Outcome != HostStopped || rep.Hosts[1].Outcome != HostNotStarted || strings.Contains(a.upstream, "down") {
		t.Errorf("report %+v; upstream:\n%s", rep.Hosts, a.upstream)
	}
	if len(a.hooks) != 1 { // before ran, after did not
		t.Errorf("hooks %v", a.hooks)
	}
}

// A new instance restarted by systemd during the bake is a breach.
func TestBakeCatchesRestarts(t *testing.T) {
	a, b := twoHostsWithTraffic(t)
	d, _ := fakeDeployer(t, batchYAML, a, b)
	a.restarts = map[int]int{}
	d.Events = func(e Event) {
		if e.Step == StepBake && e.Status == StatusStart {
			// After the bake's first read.
			time.AfterFunc(300*time.Millisecond, func() {
				a.mu.Lock()
				a.restarts[3000] = 2
				a.mu.Unlock()
			})
		}
	}
	_, err := d.Deploy(testCtx(t))
	if !errors.Is(err, ErrBake) || !strings.Contains(err.Error(), "systemd restarted web1:3000 +2 during the bake") {
		t.Fatalf("err = %v", err)
	}
}

// Fewer requests than min_requests: wait bakes again, up to three bakes,
// then stops; proceed goes on with a warning.
func TestBakeSmallSample(t *testing.T) {
	for _, choice := range []string{SmallSampleProceed, SmallSampleWait} {
		a, b := twoHostsWithTraffic(t)
		a.traffic, b.traffic = 0, 0
		d, events := fakeDeployer(t, strings.Replace(batchYAML, "min_requests: 10", "min_requests: 10, small_sample: "+choice, 1), a, b)
		t0 := time.Now()
		rep, err := d.Deploy(testCtx(t))
		switch choice {
		case SmallSampleProceed:
			if err != nil || !hasEvent(*events, 0, StepBake, StatusWarn, "too few to judge; going on") || rep.Bakes[0].Verdict != "too few requests" {
				t.Errorf("proceed: err %v, bakes %+v", err, rep.Bakes)
			}
		case SmallSampleWait:
			if !errors.Is(err, ErrBake) || !strings.Contains(err.Error(), "0 requests reached the new instances, fewer than min_requests 10: too few to judge after 3 bakes") || time.Since(t0) < 3*time.Second {
				t.Errorf("wait: err %v after %s", err, time.Since(t0))
			}
		}
	}
}

// An interrupt during a bake leaves every instance in Nginx, on the
// release it runs, and the lock released.
func TestBakeInterrupted(t *testing.T) {
	a, b := twoHostsWithTraffic(t)
	d, _ := fakeDeployer(t, batchYAML, a, b)
	ctx, cancel := context.WithCancel(testCtx(t))
	d.Events = func(e Event) {
		if e.Step == StepBake && e.Status == StatusStart {
			cancel()
		}
	}
	rep, err := d.Deploy(ctx)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrBake) {
		t.Fatalf("err = %v, want the interrupt", err)
	}
	if strings.Contains(a.upstream, "down") || a.locked || b.locked || rep.Hosts[0].Outcome != HostInterrupted || len(restartsIn(b.ops)) != 0 {
		t.Errorf("upstream:\n%s\nlocked %v %v, report %+v", a.upstream, a.locked, b.locked, rep.Hosts)
	}
}

// A log that cannot be read, or whose lines lack rollout's fields, is
// refused in the preflight, before anything changes.
func TestBakePreflight(t *testing.T) {
	for _, tt := range []struct {
		set  func(h *fakeRemote)
		want string
	}{
		{func(h *fakeRemote) { h.noLog = true }, "strategy.bake reads /var/log/nginx/my-app-access.log: cannot read the access log"},
		{func(h *fakeRemote) { h.plain = true }, "whose last lines lack rollout's fields: rollout setup's site logs them; or add to Nginx's http block `log_format rollout "},
	} {
		a, b := twoHostsWithTraffic(t)
		tt.set(b)
		d, _ := fakeDeployer(t, batchYAML, a, b)
		_, err := d.Deploy(testCtx(t))
		var se *StepError
		if !errors.As(err, &se) || se.Step != StepPreflight || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("err = %v, want %q", err, tt.want)
		}
		if len(restartsIn(a.ops))+len(restartsIn(b.ops)) != 0 {
			t.Errorf("changed: %v %v", a.ops, b.ops)
		}
	}
}

func TestParseLogRead(t *testing.T) {
	out := "@@rollout@@ pos\n77 300 100 1700000000\n@@rollout@@ restarts\nId=my-app@3000.service\nNRestarts=1\n\n" +
		"@@rollout@@ errors\nNov 28 x my-app@3000[1]: boom\n@@rollout@@ rotated\nold line\n\n@@rollout@@ log\nline one\nline two\npartial"
	r, err := parseLogRead([]byte(out), logPos{inode: "76", offset: 250})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range r.lines {
		lines = append(lines, string(l))
	}
	if r.pos.inode != "77" || r.pos.offset != 100+int64(len("line one\nline two\n")) || r.restarts[3000] != 1 || len(r.errors) != 1 ||
		fmt.Sprint(lines) != "[old line line one line two]" || len(r.notes) != 1 {
		t.Errorf("%+v lines %q", r, lines)
	}
	if fmt.Sprint(splitUpstream("127.0.0.1:3000, 127.0.0.1:3001 : 127.0.0.1:3002")) != "[127.0.0.1:3000 127.0.0.1:3001 127.0.0.1:3002]" {
		t.Errorf("split %v", splitUpstream("127.0.0.1:3000, 127.0.0.1:3001 : 127.0.0.1:3002"))
	}
}

// restartsIn are the restarts among a fake host's operations.
func restartsIn(ops []string) []string {
	var out []string
	for _, op := range ops {
		if strings.HasPrefix(op, "restart ") {
			out = append(out, op)
		}
	}
	return out
}

// A canary that starts failing half-way through the bake is caught then,
// before the bake's end.
func TestBakeCatchesACanaryFailingHalfWay(t *testing.T) {
	a, b := twoHostsWithTraffic(t)
	reads := 0
	a.fails5xx = func(p int) bool {
		if p == 3000 {
			reads++ // called once a line of 3000's: 5 lines a read
		}
		return reads > 10 && slices.Contains(a.ops, fmt.Sprintf("restart %d", p))
	}
	d, _ := fakeDeployer(t, strings.Replace(batchYAML, "bake: 1s", "bake: 30s", 1), a, b)
	t0 := time.Now()
	rep, err := d.Deploy(testCtx(t))
	if !errors.Is(err, ErrBake) || rep.Bakes[0].Verdict != "breach" {
		t.Fatalf("err %v, bakes %+v", err, rep.Bakes)
	}
	if took := rep.Bakes[0].Duration; took >= 30*time.Second || time.Since(t0) >= 30*time.Second {
		t.Errorf("caught after %s: at the bake's end, not when it began failing", took)
	}
	// Failing, one answer in 5 is a 502; the good answers before count too.
	if rep.Bakes[0].New.Requests <= rep.Bakes[0].New.Errors*5 {
		t.Errorf("the bake saw %s: it should have seen the good answers before the bad", rep.Bakes[0].New)
	}
}

// access-read.sh, run here: it reads from where it stopped, follows a
// rotation (the rest of FILE.1), waits through the moment the file is
// missing, reads the new file from its start, and refuses a file missing at
// the first read.
func TestAccessReadScript(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "access.log")
	line := func(port int) string {
		return fmt.Sprintf("10.0.0.9 [x] \"GET / HTTP/1.1\" 200 2 upstream=\"127.0.0.1:%d\" upstream_status=\"200\" rt=0.001\n", port)
	}
	appendTo := func(name, s string) {
		f, err := os.OpenFile(name, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	read := func(from logPos) logRead {
		t.Helper()
		out, code := runScript(t, "access-read", "", file, from.inode, strconv.FormatInt(from.offset, 10), "1000000", "0")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		r, err := parseLogRead([]byte(out), from)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if out, code := runScript(t, "access-read", "", file, "", "-1", "1000000", "0"); code != exitLogUnreadable {
		t.Fatalf("a missing log at the first read: exit %d: %s", code, out)
	}
	appendTo(file, line(3000)+line(3000))
	r := read(logPos{offset: -1}) // the bake's start: nothing yet
	if len(r.lines) != 0 || r.pos.offset != int64(2*len(line(3000))) {
		t.Fatalf("first read %+v", r)
	}
	appendTo(file, line(3001)+"partial")
	r = read(r.pos)
	if len(r.lines) != 1 || !strings.Contains(string(r.lines[0]), ":3001") {
		t.Fatalf("second read %q", r.lines)
	}
	// logrotate: moved to .1 (the partial line completed there), not
	// reopened yet.
	if err := os.Rename(file, file+".1"); err != nil {
		t.Fatal(err)
	}
	appendTo(file+".1", " line\n"+line(3002))
	r = read(r.pos)
	if r.pos.inode != "-" || len(r.lines) != 2 || len(r.notes) != 1 || !strings.Contains(r.notes[0], "missing") {
		t.Fatalf("while missing: %+v %q", r, r.lines)
	}
	// Reopened: the new file from its start.
	appendTo(file, line(3003))
	r = read(r.pos)
	if len(r.lines) != 1 || !strings.Contains(string(r.lines[0]), ":3003") || r.pos.inode == "-" {
		t.Fatalf("after the reopen: %+v %q", r, r.lines)
	}
	// Rotated and reopened between two reads.
	if err := os.Rename(file, file+".1"); err != nil {
		t.Fatal(err)
	}
	appendTo(file+".1", line(3000))
	appendTo(file, line(3001))
	r = read(r.pos)
	if len(r.lines) != 2 || len(r.notes) != 1 || !strings.Contains(r.notes[0], "rotated") {
		t.Fatalf("after a rotation: %+v %q", r, r.lines)
	}
}
