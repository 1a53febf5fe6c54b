package deployer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

const surgeYAML = "base_port: 3000\ninstances: 3\nstrategy: {max_surge: 100%}\nrelease: {root: /srv/my-app, keep: 3}\n"

// A surge starts the new instances on the spare ports, puts them into
// service and removes the old ones in one change, then stops the old
// ones; the next deploy moves them back.
func TestSurgeMovesTheInstancesToTheSparePortsAndBack(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	d, events := fakeDeployer(t, surgeYAML, web1)
	d.Artifact = testArtifact("release v2")
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	id := rep.Release
	if got := serversIn(t, web1.upstream); fmt.Sprint(got) != "[3003 3004 3005]" {
		t.Errorf("servers %v, want the spare ports", got)
	}
	if len(web1.writes) != 1 || fmt.Sprint(web1.drained) != "[[3000 3001 3002]]" {
		t.Errorf("writes %d, drained %v: want one change that waited for the old instances", len(web1.writes), web1.drained)
	}
	if got := opsLike(web1, "restart 300"); len(got) != 3 || !slices.Contains(got, "restart 3003") || slices.Contains(got, "restart 3000") {
		t.Errorf("restarts %v, want only the new instances started", got)
	}
	for _, p := range []int{3000, 3001, 3002} {
		if u := web1.units[p]; u.active || u.enabled {
			t.Errorf("old instance %d still active or enabled", p)
		}
		if !hasEvent(*events, p, StepScale, StatusOK, fmt.Sprintf("%d serves in its place", p+3)) {
			t.Errorf("no stop event for %d", p)
		}
	}
	for _, p := range []int{3003, 3004, 3005} {
		if u := web1.units[p]; !u.active || !u.enabled || web1.links[p] != id || web1.runs[p] != id {
			t.Errorf("new instance %d: active %v enabled %v link %s runs %s", p, u.active, u.enabled, web1.links[p], web1.runs[p])
		}
	}
	if got := slices.Sorted(slices.Values(rep.Hosts[0].Restarted)); fmt.Sprint(got) != "[3003 3004 3005]" {
		t.Errorf("restarted %v", got)
	}
	// Capacity never dropped: the old instances served until the change.
	for _, w := range web1.writes[:1] {
		if got := serversIn(t, w); len(got) != 3 {
			t.Errorf("a write left %v in service", got)
		}
	}

	// The same release again: every instance runs it, nothing moves.
	web1.ops = nil
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := opsLike(web1, "restart", "start", "stop"); len(got) != 0 {
		t.Errorf("a rerun did %v", got)
	}

	// A new release goes back to the configured ports.
	d.Artifact = testArtifact("release v3")
	d.Version = "v3"
	rep, err = d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := serversIn(t, web1.upstream); fmt.Sprint(got) != "[3000 3001 3002]" {
		t.Errorf("servers %v after the second surge", got)
	}
	for _, p := range []int{3003, 3004, 3005} {
		if web1.units[p].active {
			t.Errorf("%d still active", p)
		}
	}
	if web1.links[3000] != rep.Release {
		t.Errorf("3000 links %s, want %s", web1.links[3000], rep.Release)
	}
}

// A new instance that does not come up is stopped with the others of its
// group; the old ones keep serving, untouched, and the release is BAD.
func TestSurgeFailedNewInstanceLeavesTheOldOnesServing(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	web1.bad, web1.badPort = "-v2", 3004
	d, _ := fakeDeployer(t, surgeYAML, web1)
	d.Artifact = testArtifact("release v2")
	rep, err := d.Deploy(testCtx(t))
	var se *StepError
	if !errors.As(err, &se) || se.Port != 3004 || !strings.Contains(se.Output, "FATAL") {
		t.Fatalf("err = %v, want 3004's failure with its output", err)
	}
	if got := serversIn(t, web1.upstream); fmt.Sprint(got) != "[3000 3001 3002]" || len(web1.writes) != 0 {
		t.Errorf("servers %v after %d writes, want the upstream untouched", got, len(web1.writes))
	}
	for _, p := range []int{3000, 3001, 3002} {
		if u := web1.units[p]; !u.active || web1.runs[p] != relV1 {
			t.Errorf("old instance %d: active %v runs %s", p, u.active, web1.runs[p])
		}
	}
	for _, p := range []int{3003, 3004, 3005} {
		if u := web1.units[p]; u.active || u.enabled {
			t.Errorf("new instance %d left active or enabled", p)
		}
	}
	if got := opsLike(web1, "restart 3000", "restart 3001", "restart 3002"); len(got) != 0 {
		t.Errorf("the old instances were restarted: %v (a revert of nothing)", got)
	}
	if web1.outcome(rep.Release) != ReleaseBad || web1.current != relV1 {
		t.Errorf("outcome %s, current %s", web1.outcome(rep.Release), web1.current)
	}
}

// A host that moved goes back when another host fails: the revert is a
// surge onto the ports it came from, on the release it ran.
func TestSurgeRevertMovesBack(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	web2 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	web2.bad = "-v2"
	d, _ := fakeDeployer(t, surgeYAML, web1, web2)
	d.Artifact = testArtifact("release v2")
	if _, err := d.Deploy(testCtx(t)); err == nil {
		t.Fatal("the deploy passed")
	}
	if got := serversIn(t, web1.upstream); fmt.Sprint(got) != "[3000 3001 3002]" || len(web1.writes) != 2 {
		t.Errorf("web1 servers %v after %d writes, want back on the configured ports after two", got, len(web1.writes))
	}
	for _, p := range []int{3000, 3001, 3002} {
		if u := web1.units[p]; !u.active || !u.enabled || web1.runs[p] != relV1 {
			t.Errorf("web1 %d: active %v enabled %v runs %s, want v1 again", p, u.active, u.enabled, web1.runs[p])
		}
	}
	for _, p := range []int{3003, 3004, 3005} {
		if web1.units[p].active {
			t.Errorf("web1 %d still active after the revert", p)
		}
	}
}

// max_surge below the count moves the slots a group at a time, each group
// in one change.
func TestSurgeInGroups(t *testing.T) {
	web1 := newFakeRemote(t, 3000, 3001, 3002, 3003)
	d, _ := fakeDeployer(t, "base_port: 3000\ninstances: 4\nstrategy: {max_surge: 2}\n", web1)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(web1.drained) != "[[3000 3001] [3002 3003]]" {
		t.Errorf("drained %v, want two groups", web1.drained)
	}
	if got := serversIn(t, web1.upstream); fmt.Sprint(got) != "[3004 3005 3006 3007]" {
		t.Errorf("servers %v", got)
	}
	for _, w := range web1.writes {
		if got := serversIn(t, w); len(got) != 4 {
			t.Errorf("a write left %v in service, want 4 always", got)
		}
	}
}

// The preflight refuses a spare port taken by another process, naming it,
// and a surge that would not fit in memory; nothing changes.
func TestSurgePreflightRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check surgeCheck
		want  []string
	}{
		{"taken", surgeCheck{listeners: map[int][]surgeListener{3004: {{name: "redis-server", pid: 77, unit: "redis.service"}}}},
			[]string{"spare port 3004", "redis-server (pid 77, redis.service)"}},
		{"unseen", surgeCheck{listeners: map[int][]surgeListener{3003: {{}}}}, []string{"spare port 3003", "cannot see"}},
		{"memory", surgeCheck{available: 100 << 20, rss: map[string]uint64{"my-app@3000.service": 60 << 20, "my-app@3001.service": 60 << 20, "my-app@3002.service": 60 << 20}},
			[]string{"3 more instances of about 60 MiB", "180 MiB", "100 MiB available: 80 MiB short"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
			web1.surge = tc.check
			d, _ := fakeDeployer(t, surgeYAML, web1)
			d.Artifact = testArtifact("release v2")
			_, err := d.Deploy(testCtx(t))
			var se *StepError
			if !errors.As(err, &se) || se.Step != StepPreflight {
				t.Fatalf("err = %v, want a preflight failure", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want %q", err, w)
				}
			}
			if got := opsLike(web1, "upload", "restart", "start", "stop"); len(got) != 0 || len(web1.writes) != 0 {
				t.Errorf("did %v and %d writes", got, len(web1.writes))
			}
		})
	}
	// Our own instance on a spare port (an interrupted surge's) is no
	// reason to refuse: the deploy stops it first.
	web1 := newFakeRemote(t, 3000, 3001, 3002).withReleases(relV1)
	web1.surge = surgeCheck{listeners: map[int][]surgeListener{3003: {{}}}, spareActive: map[string]string{"my-app@3003": "active"}}
	d, _ := fakeDeployer(t, surgeYAML, web1)
	d.Artifact = testArtifact("release v2")
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

// A surge interrupted after its new instances started (not yet in
// service) leaves them running; the next run stops them and starts over.
// Interrupted after its change, the next run serves from the spare ports
// and stops the old instances left running.
func TestSurgeInterruptedConverges(t *testing.T) {
	t.Run("before the change", func(t *testing.T) {
		web1 := newFakeRemote(t, 3000, 3001, 3002)
		for _, p := range []int{3003, 3004} {
			web1.unit(p).active, web1.unit(p).healthy = true, true
		}
		d, events := fakeDeployer(t, "base_port: 3000\ninstances: 3\nstrategy: {max_surge: 100%}\n", web1)
		if _, err := d.Deploy(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		if !hasEvent(*events, 3003, StepScale, StatusWarn, "left by an interrupted surge") {
			t.Errorf("no event for the leftover 3003: %v", *events)
		}
		if got := serversIn(t, web1.upstream); fmt.Sprint(got) != "[3003 3004 3005]" {
			t.Errorf("servers %v", got)
		}
	})
	t.Run("after the change", func(t *testing.T) {
		web1 := newFakeRemote(t, 3003, 3004, 3005)
		for _, p := range []int{3000, 3001, 3002} {
			web1.unit(p).active, web1.unit(p).healthy = true, true // not stopped yet
		}
		d, events := fakeDeployer(t, "base_port: 3000\ninstances: 3\nstrategy: {max_surge: 100%}\n", web1)
		if _, err := d.Deploy(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		for _, p := range []int{3000, 3001, 3002} {
			if !hasEvent(*events, p, StepScale, StatusWarn, "left by an interrupted surge") {
				t.Errorf("no event for the leftover %d", p)
			}
		}
		// Then it moved back: the leftovers were stopped first, started
		// again as the new instances.
		if got := serversIn(t, web1.upstream); fmt.Sprint(got) != "[3000 3001 3002]" {
			t.Errorf("servers %v", got)
		}
	})
}

// The live port of each slot comes from the balancer's servers.
func TestLiveSlots(t *testing.T) {
	home, spare := []int{3000, 3001}, []int{3002, 3003}
	for _, tc := range []struct {
		srv  servers
		want string
	}{
		{servers{3000: false, 3001: false}, "[3000 3001]"},
		{servers{3002: false, 3003: false}, "[3002 3003]"},
		{servers{3000: false, 3003: false}, "[3000 3003]"},             // half-way
		{servers{3000: true, 3002: false, 3001: false}, "[3002 3001]"}, // both listed: the one in service
		{servers{3000: false, 3002: false, 3001: false}, "[3000 3001]"},
		{servers{}, "[3000 3001]"},
	} {
		if got := fmt.Sprint(liveSlots(home, spare, tc.srv)); got != tc.want {
			t.Errorf("liveSlots(%v) = %s, want %s", tc.srv, got, tc.want)
		}
	}
	cfg := &Config{Instances: Instances{Base: 3000, Count: 2}, Strategy: StrategyConfig{MaxSurge: Amount{Percent: 100}}}
	moved := cfg.withLive([]int{3002, 3001})
	if fmt.Sprint(moved.Ports()) != "[3002 3001]" || moved.otherPort(3002) != 3000 || moved.otherPort(3001) != 3003 {
		t.Errorf("moved ports %v, other of 3002 %d", moved.Ports(), moved.otherPort(3002))
	}
	back := moved.withLive([]int{3000, 3001})
	if back.moved || back.Instances.Base != 3000 || fmt.Sprint(back.AllPorts()) != "[3000 3001 3002 3003]" {
		t.Errorf("back: %+v", back.Instances)
	}
}

func TestParseSurgeCheck(t *testing.T) {
	out := "spare my-app@3004.service inactive\n" +
		`listen 3004 LISTEN 0 511 0.0.0.0:3004 0.0.0.0:* users:(("node",pid=412,fd=18))` + "\n" +
		"cgroup 412 0::/system.slice/other.service\n" +
		"listen 3005 LISTEN 0 511 0.0.0.0:3005 0.0.0.0:*\n" +
		"mem 2048\nrss my-app@3000.service 1024\n"
	sc, err := parseSurgeCheck([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sc.listeners[3004]) != "[{node 412 other.service}]" || len(sc.listeners[3005]) != 1 || sc.listeners[3005][0].name != "" {
		t.Errorf("listeners %v", sc.listeners)
	}
	if sc.available != 2048<<10 || sc.rss["my-app@3000.service"] != 1024<<10 || sc.spareActive["my-app@3004.service"] != "inactive" {
		t.Errorf("%+v", sc)
	}
	if _, err := parseSurgeCheck([]byte("mem lots\n")); err == nil {
		t.Error("a bad mem line passed")
	}
}

func TestSurgeConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"strategy: {max_surge: 1, max_unavailable: 2}", "strategy.max_surge: replaces strategy.max_unavailable"},
		{"strategy: {max_surge: 0}", "strategy.max_surge"},
	} {
		_, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [web1]\nssh: {user: deploy}\nbase_port: 3000\ninstances: 2\n"+tc.yaml+"\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.yaml, err, tc.want)
		}
	}
	_, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [web1]\nssh: {user: deploy}\nports: [65534, 65535]\nstrategy: {max_surge: 1}\n"))
	if err == nil || !strings.Contains(err.Error(), "beyond 65535") {
		t.Errorf("err = %v, want the spare ports past 65535 refused", err)
	}
}

// The plan shows a surge's steps: the new instances on the spare ports,
// their enable, the one change, the old ones' stop; the preflight's check.
func TestPlanSurge(t *testing.T) {
	text := planScripts(t, "app: my-app\nhosts: [web1]\nssh: {user: deploy}\nnginx: {upstream_file: /etc/nginx/conf.d/my-app.conf, upstream: my_app}\nbase_port: 3000\ninstances: 4\nstrategy: {max_surge: 2}\n")
	for _, want := range []string{
		"instances 2 at a time, each new one started on a spare port beside the old one before the old one leaves (strategy.max_surge)",
		"the spare ports 3004, 3005, 3006, 3007 must be free",
		"rollout-surge-check '3004 3005 3006 3007' 'my-app@3004 my-app@3005 my-app@3006 my-app@3007' my-app@3000",
		"start a new instance my-app@3004 beside 3000, at the same time as the rest of its group 3004, 3005",
		"enable them all in one command",
		"sudo -n systemctl enable --no-reload -- my-app@3006 my-app@3007",
		"add 3004, 3005 to /etc/nginx/conf.d/my-app.conf and remove 3000, 3001 from it",
		"the file with \"server 127.0.0.1:3004 ...;\", \"server 127.0.0.1:3005 ...;\" and no line for 3000, 3001",
		"rollout-stop my-app@3002 my-app@3003",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the plan lacks %q:\n%s", want, text)
		}
	}
	// With HAProxy (on the host or on balancer hosts), the change is the
	// runtime API's: the idle servers readied from maintenance, the old
	// ones put there.
	for _, balancer := range []string{"haproxy: {backend: app}\n", "lb: {hosts: [lb1, lb2], driver: haproxy, backend: app}\n"} {
		text := planScripts(t, "app: my-app\nhosts: [10.0.0.5]\nports: [3000, 3001]\nstrategy: {max_surge: 100%}\n"+balancer)
		for _, want := range []string{
			"one at each spare port (strategy.max_surge), in maintenance while idle",
			"set server app/SERVER state ready for 3002, 3003 (in maintenance while idle) and state maint for 3000, 3001",
			"apply wake:SERVER maint:SERVER",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("%s: the plan lacks %q:\n%s", balancer, want, text)
			}
		}
		if strings.Contains(text, "SHA-256 of backend") {
			t.Errorf("%s: the plan writes a file to HAProxy:\n%s", balancer, text)
		}
	}
	if strings.Contains(text, "restart the instance") {
		t.Errorf("the plan still restarts an instance in place:\n%s", text)
	}
}

// rollout scale on a host serving from spare ports keeps each slot where
// it is and adds the new slots on their configured ports.
func TestSurgeScaleKeepsTheLivePorts(t *testing.T) {
	web1 := newFakeRemote(t, 3003, 3004, 3005) // 3 instances, moved
	d, _ := fakeDeployer(t, "base_port: 3000\ninstances: 4\nstrategy: {max_surge: 100%}\n", web1)
	if _, err := d.Scale(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	// Slots now: 3000|3004, 3001|3005, 3002|3006, 3003|3007.
	if got := serversIn(t, web1.upstream); fmt.Sprint(got) != "[3002 3003 3004 3005]" {
		t.Errorf("servers %v, want slot 2 added on 3002 and the others left where they serve", got)
	}
	if fmt.Sprint(web1.ops) != "[start 3002]" {
		t.Errorf("ops %v", web1.ops)
	}
}

// rollout restart --port of a slot's port it does not serve from is
// refused at the preflight, naming the one it serves from.
func TestSurgeRestartOnlyLivePorts(t *testing.T) {
	web1 := newFakeRemote(t, 3003, 3004, 3005)
	d, _ := fakeDeployer(t, "base_port: 3000\ninstances: 3\nstrategy: {max_surge: 100%}\n", web1)
	d.Only = []int{3001}
	_, err := d.Restart(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "--port 3001: that instance serves from 3004 now") {
		t.Fatalf("err = %v", err)
	}
	d.Only = []int{3004}
	if _, err := d.Restart(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := serversIn(t, web1.upstream); fmt.Sprint(got) != "[3001 3003 3005]" {
		t.Errorf("servers %v: want 3004's slot moved to 3001, the others left", got)
	}
}

// A process systemd could not place in its cgroup (219/CGROUP: the app
// never ran) and started again is waited for, with a warning; an app
// that exits is not (restart_test.go).
func TestWaitActiveWaitsThroughSystemdsCgroupFailure(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001)
	unit := func(active, sub string, pid, status, restarts int) unitState {
		return unitState{ID: "my-app@3001.service", Load: "loaded", Active: active, Sub: sub, MainPID: pid, StartedAt: uint64(pid), ExitStatus: status, Restarts: restarts}
	}
	var next []unitState // what systemd reports from 3001's restart on
	h.onRestart = func(port int) {
		if port == 3001 {
			h.units[port].states = next
		}
	}
	next = []unitState{unit("active", "running", 101, 0, 0), unit("activating", "auto-restart", 0, exitCgroup, 0), unit("active", "running", 5001, 0, 1)}
	d, events := fakeDeployer(t, "ports: [3000, 3001]\n", h)
	if _, err := d.Deploy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if !hasEvent(*events, 3001, StepActive, StatusWarn, "pid 5001 (systemd could not place the first process in the unit's cgroup, status 219/CGROUP") {
		t.Errorf("no warning for 3001's second start: %v", *events)
	}
	// The app's own exit (status 1) is a failure at once.
	next = []unitState{unit("active", "running", 5001, 0, 0), unit("activating", "auto-restart", 0, 1, 0), unit("failed", "failed", 0, 1, 1)}
	d.Force = true
	var se *StepError
	if _, err := d.Deploy(testCtx(t)); !errors.As(err, &se) || se.Step != StepActive || se.Port != 3001 {
		t.Errorf("err = %v, want 3001's wait-active failure", err)
	}
}

// A change that fails is read again: written (its reload's wait failed),
// the slots moved and the old instances stop; not written, the new
// instances stop and the old ones serve on.
func TestSurgeChangeFails(t *testing.T) {
	for _, after := range []bool{true, false} {
		t.Run(fmt.Sprintf("after the write %v", after), func(t *testing.T) {
			web1 := newFakeRemote(t, 3000, 3001)
			web1.writeErr, web1.writeErrAfter = errors.New("nginx workers still on the old config after 4s"), after
			d, _ := fakeDeployer(t, "base_port: 3000\ninstances: 2\nstrategy: {max_surge: 100%}\n", web1)
			_, err := d.Deploy(testCtx(t))
			if err == nil || !strings.Contains(err.Error(), "old config after 4s") {
				t.Fatalf("err = %v", err)
			}
			serving, stopped := []int{3002, 3003}, []int{3000, 3001}
			if !after {
				serving, stopped = stopped, serving
			}
			if got := serversIn(t, web1.upstream); fmt.Sprint(got) != fmt.Sprint(serving) {
				t.Errorf("servers %v, want %v", got, serving)
			}
			for _, p := range serving {
				if !web1.units[p].active {
					t.Errorf("%d serves but was stopped", p)
				}
			}
			for _, p := range stopped {
				if web1.units[p].active {
					t.Errorf("%d is out of service but still runs", p)
				}
			}
		})
	}
}

// status shows a unit running on a slot's idle port (an interrupted
// surge's) as a leftover: not OK, not health checked, naming the live
// port; an idle port whose unit is stopped is not shown.
func TestSurgeStatusShowsLeftovers(t *testing.T) {
	web1 := newFakeRemote(t, 3003, 3004, 3005)
	web1.unit(3000).active, web1.unit(3000).healthy = true, true
	d, _ := fakeDeployer(t, "base_port: 3000\ninstances: 3\nstrategy: {max_surge: 100%}\n", web1)
	hs := hostStatus(testCtx(t), d.Config, "web1", web1, nil)
	if hs.Error != "" {
		t.Fatal(hs.Error)
	}
	var ports []int
	for _, i := range hs.Instances {
		ports = append(ports, i.Port)
		if i.Leftover != (i.Port == 3000) {
			t.Errorf("%d: leftover %v", i.Port, i.Leftover)
		}
	}
	if fmt.Sprint(ports) != "[3003 3004 3005 3000]" {
		t.Fatalf("instances %v, want the live ports then the leftover 3000", ports)
	}
	left := hs.Instances[3]
	if left.OK() || hs.OK() || left.InNginx || !strings.Contains(left.Health, "serves from 3003") {
		t.Errorf("leftover %+v (host OK %v)", left, hs.OK())
	}
	tr := Transitions(nil, Snapshot{Hosts: []HostStatus{hs}})
	if !slices.ContainsFunc(tr, func(t Transition) bool { return t.Port == 3000 && t.Kind == "leftover" && t.Problem }) {
		t.Errorf("no leftover transition: %+v", tr)
	}
	if again := Transitions(&Snapshot{Hosts: []HostStatus{hs}}, Snapshot{Hosts: []HostStatus{hs}}); len(again) != 0 {
		t.Errorf("a leftover said again: %+v", again)
	}
	// Stopped, it is no longer shown.
	web1.unit(3000).active = false
	if hs := hostStatus(testCtx(t), d.Config, "web1", web1, nil); len(hs.Instances) != 3 || !hs.OK() {
		t.Errorf("after the stop: %+v", hs)
	}
}

// With max_surge the host's watch gets both ports of every slot, the same
// whichever range serves now.
func TestSurgeRenderWatch(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(minimal+"notify: {url_env: HOOK}\nwatch: {}\nstrategy: {max_surge: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	home, spare := cfg.slots()
	mixed := append([]int{spare[0]}, home[1:]...)
	words := func(ps []int) string { return strings.Trim(fmt.Sprint(ps), "[]") }
	for _, live := range [][]int{home, spare, mixed} {
		var script string
		for _, f := range Render(cfg, live) {
			if f.Path == cfg.watchScript() {
				script = f.Content
			}
		}
		if !strings.Contains(script, "PORTS='"+words(home)+"'\n") || !strings.Contains(script, "SPARE='"+words(spare)+"'\n") {
			t.Errorf("live %v: the watch's ports:\n%.400s", live, script)
		}
	}
}

// planScripts is the plan of v2 with every command (plan --scripts) for
// the config yaml.
func planScripts(t *testing.T, yaml string) string {
	t.Helper()
	cfg, err := ParseConfig("rollout.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := BuildPlan(cfg, "v2").WriteScripts(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
