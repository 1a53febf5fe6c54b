package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
	"github.com/rollout-dev/rollout/internal/loadgen"
)

// The seed article's deploy script, run over SSH as its users run it.
const seedScript = `for port in 3000 3001 3002 3003; do
  echo "Deploying to port $port..."
  sudo systemctl restart my-app@$port
  sleep 2
done`

// BenchmarkDeploy compares, on the same host under 400 req/s of GETs and
// POSTs through its Nginx, the ways to deploy v2 to its 4 instances: the
// seed's restart-and-sleep script, a careful hand-written drain loop, PM2's
// cluster reload, and rollout (one at a time, two at a time, every
// instance at once beside the old ones with max_surge 100%, and one at a
// time through an HAProxy, a Caddy, then a Traefik, on the host in Nginx's
// place, and with max_surge 100% through that Traefik). It
// prints requests, failures and seconds for each, the floor measured on
// the same host (one bare balancer change; the app's own boot-to-healthy
// time), rollout's overhead per instance against that floor, and the
// ratios. Run it with `make bench` (-benchtime 1x: one deploy of each).
func BenchmarkDeploy(b *testing.B) {
	h := fleet.Hosts[0]
	for b.Loop() {
		seed := benchSeedScript(b, h)
		loop := benchHandLoop(b, h)
		pm2, pm2MB := benchPM2(b, h)
		floor := benchFloor(b, h)
		roll, span, n, bootSum := benchRollout(b, h)
		perInstance, boot := span/time.Duration(n), bootSum/time.Duration(n)
		overhead := perInstance - boot
		two, twoSpan, _, _ := benchRollout(b, h, "--max-unavailable", "2")
		ha, haSpan, haN, haBoot := benchRolloutWith(b, h, "haproxy on the host", func() string {
			useAppHostHAProxy(b, h)
			return appHostHAProxyConfig(b, "0s")
		})
		haOverhead := haSpan/time.Duration(haN) - haBoot/time.Duration(haN)
		cd, cdSpan, cdN, cdBoot := benchRolloutWith(b, h, "caddy on the host", func() string {
			useAppHostCaddy(b, h)
			return caddyConfig(b, "0s")
		})
		cdOverhead := cdSpan/time.Duration(cdN) - cdBoot/time.Duration(cdN)
		traefikHost := func() string {
			cfg := fleetConfigWith(b, "0s", "traefik: {}\n")
			useAppHostTraefik(b, cfg, h)
			return cfg
		}
		tf, tfSpan, tfN, tfBoot := benchRolloutWith(b, h, "traefik on the host", traefikHost)
		tfOverhead := tfSpan/time.Duration(tfN) - tfBoot/time.Duration(tfN)
		sg, sgEvents := benchRolloutEvents(b, h, func() string { return fleetConfig(b, "0s") }, "--max-surge", "100%")
		sgSpan, sgBoot := surgeFigures(b, sgEvents, "max_surge=100%")
		ts, tsEvents := benchRolloutEvents(b, h, traefikHost, "--max-surge", "100%")
		tsSpan, _ := surgeFigures(b, tsEvents, "max_surge=100%, Traefik on the host")
		// The goal's boot-to-healthy: the app's own, one instance alone
		// (the one-at-a-time run's); the new instances boot at once, and
		// on a host with fewer cores than instances each takes longer.
		sgGoal := boot*3/2 + 2*floor
		sgGoalParallel := sgBoot*3/2 + 2*floor
		b.ReportMetric(float64(sg.res.Failed), "rollout_surge_failed")
		b.ReportMetric(sgSpan.Seconds(), "surge_seconds/host")
		b.ReportMetric(float64(ts.res.Failed), "rollout_traefik_surge_failed")
		b.ReportMetric(tsSpan.Seconds(), "traefik_surge_seconds/host")
		b.ReportMetric(float64(ha.res.Failed), "rollout_haproxy_failed")
		b.ReportMetric(float64(haOverhead.Milliseconds()), "haproxy_overhead_ms/instance")
		b.ReportMetric(float64(cd.res.Failed), "rollout_caddy_failed")
		b.ReportMetric(float64(cdOverhead.Milliseconds()), "caddy_overhead_ms/instance")
		b.ReportMetric(float64(tf.res.Failed), "rollout_traefik_failed")
		b.ReportMetric(float64(tfOverhead.Milliseconds()), "traefik_overhead_ms/instance")
		b.ReportMetric(float64(two.res.Failed), "rollout_mu2_failed")
		b.ReportMetric(float64(roll.res.Failed), "rollout_failed")
		b.ReportMetric(float64(seed.res.Failed), "seed_failed")
		b.ReportMetric(float64(loop.res.Failed), "hand_loop_failed")
		b.ReportMetric(float64(pm2.res.Failed), "pm2_failed")
		b.ReportMetric(float64(overhead.Milliseconds()), "overhead_ms/instance")
		b.ReportMetric(float64(floor.Milliseconds()), "floor_ms/change")
		fmt.Printf("seed script:       requests=%d failed=%d seconds=%.1f nginx_no_live_upstreams=%d (%s)\n",
			seed.res.Requests, seed.res.Failed, seed.seconds, seed.noLive, seed.res)
		fmt.Printf("hand-written loop: requests=%d failed=%d seconds=%.1f (%s)\n", loop.res.Requests, loop.res.Failed, loop.seconds, loop.res)
		fmt.Printf("pm2 %s reload:    requests=%d failed=%d seconds=%.1f daemon_rss_mb=%d (%s)\n", pm2Version, pm2.res.Requests, pm2.res.Failed, pm2.seconds, pm2MB, pm2.res)
		fmt.Printf("rollout:           requests=%d failed=%d seconds=%.1f (%s)\n", roll.res.Requests, roll.res.Failed, roll.seconds, roll.res)
		fmt.Printf("rollout max_unavailable=2: requests=%d failed=%d seconds=%.1f (%s)\n", two.res.Requests, two.res.Failed, two.seconds, two.res)
		fmt.Printf("rollout max_surge=100%%: requests=%d failed=%d resent=%d seconds=%.1f (%s)\n", sg.res.Requests, sg.res.Failed, resent(sg.res), sg.seconds, sg.res)
		fmt.Printf("rollout max_surge=100%%, a host of 4: %s; goal 1.5 x the app's boot-to-healthy (%s, one instance alone) + 2 balancer changes (floor %s) = %s: ratio %.2f; with the boot of the 4 new instances at once (%s, the slowest) in its place = %s: ratio %.2f\n",
			sgSpan.Round(time.Millisecond), boot.Round(time.Millisecond), floor.Round(time.Millisecond), sgGoal.Round(time.Millisecond), float64(sgSpan)/float64(sgGoal),
			sgBoot.Round(time.Millisecond), sgGoalParallel.Round(time.Millisecond), float64(sgSpan)/float64(sgGoalParallel))
		fmt.Printf("rollout max_surge=100%%, Traefik on the host: requests=%d failed=%d resent=%d seconds=%.1f (%s)\n", ts.res.Requests, ts.res.Failed, resent(ts.res), ts.seconds, ts.res)
		fmt.Printf("rollout max_surge=100%%, Traefik on the host, a host of 4: %s; goal (as above) %s: ratio %.2f; with the boot of the 4 at once: ratio %.2f\n",
			tsSpan.Round(time.Millisecond), sgGoal.Round(time.Millisecond), float64(tsSpan)/float64(sgGoal), float64(tsSpan)/float64(sgGoalParallel))
		fmt.Printf("rollout, HAProxy on the host: requests=%d failed=%d resent=%d seconds=%.1f (%s)\n", ha.res.Requests, ha.res.Failed, resent(ha.res), ha.seconds, ha.res)
		fmt.Printf("rollout, HAProxy on the host, per instance: %s; boot-to-healthy: %s; overhead: %s (goal for a balancer without reload: at most 100ms)\n",
			(haSpan / time.Duration(haN)).Round(time.Millisecond), (haBoot / time.Duration(haN)).Round(time.Millisecond), haOverhead.Round(time.Millisecond))
		fmt.Printf("rollout, Caddy on the host: requests=%d failed=%d resent=%d seconds=%.1f (%s)\n", cd.res.Requests, cd.res.Failed, resent(cd.res), cd.seconds, cd.res)
		fmt.Printf("rollout, Caddy on the host, per instance: %s; boot-to-healthy: %s; overhead: %s (goal: at most 100ms)\n",
			(cdSpan / time.Duration(cdN)).Round(time.Millisecond), (cdBoot / time.Duration(cdN)).Round(time.Millisecond), cdOverhead.Round(time.Millisecond))
		fmt.Printf("rollout, Traefik on the host: requests=%d failed=%d resent=%d seconds=%.1f (%s)\n", tf.res.Requests, tf.res.Failed, resent(tf.res), tf.seconds, tf.res)
		fmt.Printf("rollout, Traefik on the host, per instance: %s; boot-to-healthy: %s; overhead: %s (goal: at most 100ms)\n",
			(tfSpan / time.Duration(tfN)).Round(time.Millisecond), (tfBoot / time.Duration(tfN)).Round(time.Millisecond), tfOverhead.Round(time.Millisecond))
		fmt.Printf("rollout per instance: %s; the app's own boot-to-healthy: %s; overhead: %s (min_healthy 0 in this run); the floor, one bare balancer change: %s\n",
			perInstance.Round(time.Millisecond), boot.Round(time.Millisecond), overhead.Round(time.Millisecond), floor.Round(time.Millisecond))
		fmt.Printf("bench: seconds_per_host_of_4 one_at_a_time=%.2f max_unavailable_2=%.2f (first capacity check to last undrain)\n", span.Seconds(), twoSpan.Seconds())
		fmt.Printf("bench: seconds (the whole command) seed=%.1f hand_loop=%.1f pm2=%.1f rollout=%.1f rollout_mu2=%.1f; failed seed=%d hand_loop=%d pm2=%d rollout=%d rollout_mu2=%d\n",
			seed.seconds, loop.seconds, pm2.seconds, roll.seconds, two.seconds, seed.res.Failed, loop.res.Failed, pm2.res.Failed, roll.res.Failed, two.res.Failed)
		fmt.Printf("bench: ratios rollout/hand_loop=%.2f rollout/pm2=%.2f rollout_mu2/pm2=%.2f rollout_haproxy/pm2=%.2f rollout_caddy/pm2=%.2f rollout_traefik/pm2=%.2f rollout_surge/pm2=%.2f rollout_traefik_surge/pm2=%.2f surge/goal=%.2f surge/goal_parallel_boot=%.2f overhead/floor=%.2f (overhead_ms_per_instance=%d floor_ms=%d haproxy_overhead_ms_per_instance=%d caddy_overhead_ms_per_instance=%d traefik_overhead_ms_per_instance=%d)\n",
			roll.seconds/loop.seconds, roll.seconds/pm2.seconds, two.seconds/pm2.seconds, ha.seconds/pm2.seconds, cd.seconds/pm2.seconds, tf.seconds/pm2.seconds, sg.seconds/pm2.seconds, ts.seconds/pm2.seconds, float64(sgSpan)/float64(sgGoal), float64(sgSpan)/float64(sgGoalParallel), float64(overhead)/float64(floor), overhead.Milliseconds(), floor.Milliseconds(), haOverhead.Milliseconds(), cdOverhead.Milliseconds(), tfOverhead.Milliseconds())
	}
}

type benchRun struct {
	res     loadgen.Result
	seconds float64
	noLive  int
}

// timedLoad runs fn under 400 req/s through h's Nginx, timing fn.
func timedLoad(b *testing.B, h *testbed.Host, fn func()) benchRun {
	var secs float64
	res := underLoad(b, []*testbed.Host{h}, func() {
		t0 := time.Now()
		fn()
		secs = time.Since(t0).Seconds()
	})
	return benchRun{res: res[0], seconds: secs}
}

func noLiveUpstreams(b *testing.B, h *testbed.Host) int {
	out, _ := fleet.Run(context.Background(), h, "sudo -n grep -c 'no live upstreams' /var/log/nginx/error.log || true")
	n, _ := strconv.Atoi(strings.TrimSpace(out))
	return n
}

func benchSeedScript(b *testing.B, h *testbed.Host) benchRun {
	resetHost(b, h)
	before := noLiveUpstreams(b, h)
	// The script checks nothing: that it restarted every instance is
	// checked here (their PIDs), or its figures would mean nothing.
	const pids = "systemctl show -p MainPID --value my-app@3000 my-app@3001 my-app@3002 my-app@3003"
	was, err := fleet.Run(context.Background(), h, pids)
	if err != nil {
		b.Fatal(err)
	}
	var out string
	r := timedLoad(b, h, func() {
		if out, err = fleet.Run(context.Background(), h, seedScript); err != nil {
			b.Fatalf("seed script: %v\n%s", err, out)
		}
	})
	now, err := fleet.Run(context.Background(), h, pids)
	if err != nil {
		b.Fatal(err)
	}
	for i, p := range strings.Fields(was) {
		if f := strings.Fields(now); len(f) != 4 || f[i] == p {
			b.Fatalf("the seed script did not restart every instance (MainPIDs %q, then %q):\n%s", was, now, out)
		}
	}
	r.noLive = noLiveUpstreams(b, h) - before
	return r
}

// benchRollout deploys v2 to h under load (with args): the load's
// figures, the span from the first capacity check to the last undrain,
// the instances, and their summed boot-to-healthy time.
func benchRollout(b *testing.B, h *testbed.Host, args ...string) (benchRun, time.Duration, int, time.Duration) {
	return benchRolloutWith(b, h, fmt.Sprint(args), func() string { return fleetConfig(b, "0s") }, args...)
}

// resent counts a load's requests resent on a closed keep-alive
// connection.
func resent(r loadgen.Result) int {
	n := 0
	for _, c := range r.Resent {
		n += c
	}
	return n
}

// benchRolloutWith is benchRollout with the config config writes (after
// the host's reset: it may change the host), its figures labelled what.
func benchRolloutWith(b *testing.B, h *testbed.Host, what string, config func() string, args ...string) (benchRun, time.Duration, int, time.Duration) {
	r, events := benchRolloutEvents(b, h, config, args...)
	span, n, boot := stepFigures(b, events, what)
	return r, span, n, boot
}

// benchRolloutEvents deploys v2 to h under load with the config config
// writes (after the host's reset), and returns the load's figures and
// rollout's JSON events.
func benchRolloutEvents(b *testing.B, h *testbed.Host, config func() string, args ...string) (benchRun, []byte) {
	resetHost(b, h)
	if err := fleet.StageRelease(context.Background(), h, testbed.GoodRelease("v2")); err != nil {
		b.Fatal(err)
	}
	cfg := config()
	var events []byte
	r := timedLoad(b, h, func() {
		cmd := exec.Command(rolloutBin, append([]string{"deploy", "-c", cfg, "--version", "v2", "--hosts", h.Addr, "--output", "json"}, args...)...)
		var err error
		if events, err = cmd.Output(); err != nil {
			b.Fatalf("rollout: %v\n%s", err, events)
		}
	})
	return r, events
}

// benchEvent is one step event of rollout's --output json.
type benchEvent struct {
	Port     int       `json:"port"`
	Step     string    `json:"step"`
	Status   string    `json:"status"`
	Message  string    `json:"message"`
	Time     time.Time `json:"time"`
	Duration int64     `json:"duration_ns"`
}

// benchEvents are the step events of a deploy's --output json, in order.
func benchEvents(out []byte) []benchEvent {
	var evs []benchEvent
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Type  string     `json:"type"`
			Event benchEvent `json:"event"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Type == "step" {
			evs = append(evs, line.Event)
		}
	}
	return evs
}

// surgeFigures reads a surge deploy's JSON events: the span from the
// first new instance's start to the last old one's stop, and the slowest
// new instance's boot-to-healthy (restart, wait-active, health: they boot
// at once).
func surgeFigures(b *testing.B, events []byte, what string) (span, boot time.Duration) {
	var start, first, last time.Time
	var before []string // the steps before the first start, when each ended
	perPort := map[int]time.Duration{}
	steps := map[string]time.Duration{}
	for _, ev := range benchEvents(events) {
		if start.IsZero() {
			start = ev.Time
		}
		if first.IsZero() && ev.Status != "start" {
			before = append(before, fmt.Sprintf("%s@%s", ev.Step, ev.Time.Sub(start).Round(time.Millisecond)))
		}
		if ev.Port == 0 {
			continue
		}
		switch {
		case ev.Step == "restart" && ev.Status == "start" && first.IsZero():
			first = ev.Time
		case (ev.Step == "restart" || ev.Step == "wait-active" || ev.Step == "health") && ev.Status == "ok":
			perPort[ev.Port] += time.Duration(ev.Duration)
		case ev.Step == "scale" && ev.Status == "ok" && strings.Contains(ev.Message, "serves in its place"):
			last = ev.Time
			steps["stop"] = time.Duration(ev.Duration)
		}
		if ev.Status == "ok" && (ev.Step == "capacity" || ev.Step == "undrain" || ev.Step == "wait-drain") {
			steps[ev.Step] = max(steps[ev.Step], time.Duration(ev.Duration))
		}
	}
	if first.IsZero() || last.IsZero() || len(perPort) == 0 {
		b.Fatalf("no surge in the events:\n%s", events)
	}
	for _, d := range perPort {
		boot = max(boot, d)
	}
	fmt.Printf("rollout %s: before the first start: %s\n", what, strings.Join(before, " "))
	fmt.Printf("rollout %s: first event to first start=%s; first start to last old stop=%s; slowest new boot-to-healthy=%s; capacity=%s change=%s wait-drain=%s stop of the old=%s\n",
		what, first.Sub(start).Round(time.Millisecond), last.Sub(first).Round(time.Millisecond), boot.Round(time.Millisecond), steps["capacity"].Round(time.Millisecond), steps["undrain"].Round(time.Millisecond), steps["wait-drain"].Round(time.Millisecond), steps["stop"].Round(time.Millisecond))
	return last.Sub(first), boot
}

// stepFigures reads a deploy's JSON events: the span from the first
// capacity check to the last undrain, the instances, and their summed
// boot-to-healthy time; it prints where the time per instance goes,
// labelled what.
func stepFigures(b *testing.B, events []byte, what string) (time.Duration, int, time.Duration) {
	// An instance's undrain shares one reload with the next one's drain,
	// so the time per instance is the whole span, from the first capacity
	// check to the last undrain, over the instances.
	var first, last time.Time
	var boot time.Duration
	steps := map[string]time.Duration{}
	n := 0
	for _, ev := range benchEvents(events) {
		if ev.Port == 0 {
			continue
		}
		if ev.Status == "ok" {
			steps[ev.Step] += time.Duration(ev.Duration)
		}
		switch {
		case ev.Step == "capacity" && ev.Status == "start" && first.IsZero():
			first = ev.Time
		case (ev.Step == "restart" || ev.Step == "wait-active" || ev.Step == "health") && ev.Status == "ok":
			boot += time.Duration(ev.Duration)
		case ev.Step == "undrain" && ev.Status == "ok":
			last = ev.Time
			n++
		}
	}
	if n == 0 || first.IsZero() {
		b.Fatalf("no instance finished:\n%s", events)
	}
	// Where the time per instance goes (drains and undrains share writes:
	// each write is counted once per instance it names).
	var where []string
	accounted := time.Duration(0)
	for _, st := range []string{"capacity", "drain", "wait-drain", "restart", "wait-active", "health", "stable"} {
		where = append(where, fmt.Sprintf("%s=%s", st, (steps[st]/time.Duration(n)).Round(time.Millisecond)))
		accounted += steps[st]
	}
	fmt.Printf("rollout %s per instance: %s; the rest (the last undrain, gaps between steps)=%s\n", what, strings.Join(where, " "), ((last.Sub(first) - accounted) / time.Duration(n)).Round(time.Millisecond))
	return last.Sub(first), n, boot
}

// BenchmarkRelease ships examples/app (v2) as a directory artifact to a
// host moved to releases and deploys it, then rolls its 4 instances back,
// both under 400 req/s (min_healthy 0, as BenchmarkDeploy), and prints the
// upload's time (the upload step: stream, check, unpack, rename) and the
// rollback's wall time (the whole command: connect, preflight, 4
// instances, record).
func BenchmarkRelease(b *testing.B) {
	h := fleet.Hosts[0]
	hosts := []*testbed.Host{h}
	for b.Loop() {
		cfg := releaseConfig(b, hosts, "")
		moveToReleases(b, cfg, hosts)
		data, err := os.ReadFile(cfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(cfg, []byte(strings.Replace(string(data), "min_healthy: 1s", "min_healthy: 0s", 1)), 0o600); err != nil {
			b.Fatal(err)
		}
		var events []byte
		dep := timedLoad(b, h, func() {
			cmd := exec.Command(rolloutBin, "deploy", "-c", cfg, "--version", "v2", "--artifact", artifactDir(b, testbed.GoodRelease("v2")), "--output", "json")
			if events, err = cmd.Output(); err != nil {
				b.Fatalf("rollout: %v\n%s", err, events)
			}
		})
		var upload time.Duration
		sc := bufio.NewScanner(strings.NewReader(string(events)))
		for sc.Scan() {
			var e struct {
				Type  string `json:"type"`
				Event struct {
					Step, Status string
					Duration     int64 `json:"duration_ns"`
				} `json:"event"`
			}
			if json.Unmarshal(sc.Bytes(), &e) == nil && e.Type == "step" && e.Event.Step == "upload" && e.Event.Status == "ok" {
				upload = time.Duration(e.Event.Duration)
			}
		}
		if upload == 0 {
			b.Fatalf("no upload step:\n%s", events)
		}
		rb := timedLoad(b, h, func() {
			if out, code := rollout(b, "rollback", "-c", cfg); code != 0 {
				b.Fatalf("rollback exited %d:\n%s", code, out)
			}
		})
		b.ReportMetric(float64(upload.Milliseconds()), "upload_ms")
		b.ReportMetric(rb.seconds, "rollback_s")
		fmt.Printf("bench: release upload_ms=%d (examples/app, one host) deploy failed=%d seconds=%.1f; rollback of 4 instances seconds=%.1f failed=%d requests=%d\n",
			upload.Milliseconds(), dep.res.Failed, dep.seconds, rb.seconds, rb.res.Failed, rb.res.Requests)
	}
}

// BenchmarkDeployLB deploys both app hosts (4 instances each) behind the
// two balancer hosts under 400 req/s sent to the balancers, once with
// Nginx there and once with HAProxy (its runtime API: no reload), and
// prints the failed requests, the resends on closed keep-alive
// connections, and where the time per instance goes.
func BenchmarkDeployLB(b *testing.B) {
	for b.Loop() {
		for _, driver := range []string{"nginx", "haproxy"} {
			setUpBalancers(b)
			cfg := lbConfigHealthy(b, "0s", balancerAddrs(), "")
			if driver == "haproxy" {
				useHAProxy(b, "admin")
				cfg = haproxyConfig(b, "0s")
			}
			stageEverywhere(b, testbed.GoodRelease("v2"))
			var events []byte
			var secs float64
			res := underLoad(b, balancers, func() {
				t0 := time.Now()
				var err error
				if events, err = exec.Command(rolloutBin, "deploy", "-c", cfg, "--version", "v2", "--output", "json").Output(); err != nil {
					b.Fatalf("rollout: %v\n%s", err, events)
				}
				secs = time.Since(t0).Seconds()
			})
			span, n, boot := stepFigures(b, events, "lb "+driver)
			failed, resends, requests := 0, 0, 0
			for _, r := range res {
				failed, requests, resends = failed+r.Failed, requests+r.Requests, resends+resent(r)
			}
			perInstance := span / time.Duration(n)
			b.ReportMetric(float64(failed), "lb_"+driver+"_failed")
			b.ReportMetric(float64(resends), "lb_"+driver+"_resent")
			fmt.Printf("bench: lb %s: requests=%d failed=%d resent=%d seconds=%.1f per_instance=%s overhead_per_instance=%s (2 app hosts x 4, one at a time, 2 balancers)\n",
				driver, requests, failed, resends, secs, perInstance.Round(time.Millisecond), (perInstance - boot/time.Duration(n)).Round(time.Millisecond))

			// The same with max_surge: 100% (HAProxy's backends hold the
			// spare servers, in maintenance): each host's 4 new
			// instances beside the old ones, one change on both
			// balancers per host.
			if driver == "haproxy" {
				reloadHAProxy(b, haproxySurgeCfg("admin"))
			}
			res = underLoad(b, balancers, func() {
				t0 := time.Now()
				var err error
				if events, err = exec.Command(rolloutBin, "deploy", "-c", cfg, "--version", "v2", "--force", "--max-surge", "100%", "--output", "json").Output(); err != nil {
					b.Fatalf("rollout: %v\n%s", err, events)
				}
				secs = time.Since(t0).Seconds()
			})
			failed, resends, requests = 0, 0, 0
			for _, r := range res {
				failed, requests, resends = failed+r.Failed, requests+r.Requests, resends+resent(r)
			}
			var change time.Duration
			for _, ev := range benchEvents(events) {
				if ev.Step == "undrain" && ev.Status == "ok" {
					change = max(change, time.Duration(ev.Duration))
				}
			}
			b.ReportMetric(float64(failed), "lb_"+driver+"_surge_failed")
			b.ReportMetric(float64(resends), "lb_"+driver+"_surge_resent")
			fmt.Printf("bench: lb %s max_surge=100%%: requests=%d failed=%d resent=%d seconds=%.1f slowest_change=%s (2 app hosts x 4, 2 balancers)\n",
				driver, requests, failed, resends, secs, change.Round(time.Millisecond))
		}
	}
}
