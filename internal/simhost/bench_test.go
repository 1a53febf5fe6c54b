package simhost

import (
	"fmt"
	"testing"
	"time"
)

// Simulated hosts' latencies: the network's round trip, an instance's
// boot to healthy, and Nginx's config test and reload.
const (
	benchRTT    = 50 * time.Millisecond
	benchBoot   = 300 * time.Millisecond
	benchReload = 50 * time.Millisecond
	benchPar    = 20
)

// BenchmarkFleet deploys fleets of simulated hosts (one host of 4
// instances for reference, 50 and 200 hosts of 4, and 50 of 8) with
// parallel 20, the rollout command running as it would from a laptop, and
// prints its wall time, CPU time, peak RSS and goroutines, and the wall
// time per "slot": one instance on each of parallel hosts at once, wall /
// (ceil(hosts/parallel) × instances). A controller that scales keeps that
// figure near the one host's as hosts and instances grow (the simulated
// hosts share this machine's cores with it). Run it with `make bench`.
func BenchmarkFleet(b *testing.B) {
	bin := buildRollout(b)
	for _, c := range []struct{ hosts, instances int }{{1, 4}, {50, 4}, {50, 8}, {200, 4}} {
		b.Run(fmt.Sprintf("hosts=%d/instances=%d", c.hosts, c.instances), func(b *testing.B) {
			f := startFleet(b, c.hosts, c.instances, benchRTT, benchBoot, benchReload)
			for b.Loop() {
				r := f.deploy(b, bin, c.instances, benchPar)
				if r.code != 0 {
					b.Fatalf("deploy exited %d:\n%s", r.code, r.out)
				}
				restarts := 0
				for _, h := range f.hosts {
					restarts += h.Restarts()
				}
				waves := (c.hosts + benchPar - 1) / benchPar
				slot := r.wall / time.Duration(waves*c.instances)
				b.ReportMetric(r.wall.Seconds(), "wall_s")
				b.ReportMetric(float64(r.maxRSS)/1024, "peak_rss_MiB")
				b.ReportMetric(float64(r.peakGoroutines), "peak_goroutines")
				b.ReportMetric(r.cpu.Seconds(), "cpu_s")
				if restarts != c.hosts*c.instances {
					b.Fatalf("%d restarts, want %d", restarts, c.hosts*c.instances)
				}
				fmt.Printf("fleet: hosts=%d instances_per_host=%d parallel=%d rtt=%s boot=%s: wall=%.1fs per_slot=%s controller_cpu=%.1fs peak_rss=%.1fMiB peak_goroutines=%d restarts=%d\n",
					c.hosts, c.instances, benchPar, benchRTT, benchBoot, r.wall.Seconds(), slot.Round(time.Millisecond), r.cpu.Seconds(), float64(r.maxRSS)/1024, r.peakGoroutines, restarts)
			}
		})
	}
}
