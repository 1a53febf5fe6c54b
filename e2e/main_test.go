// Package e2e holds rollout's real-host tests: they boot a testbed fleet
// (systemd-nspawn containers with real systemd, OpenSSH and Nginx), deploy
// examples/app to it and check what users would see. They need root: without
// it the package fails, saying so.
//
// One test process runs on one testbed. `make e2e` runs several at once,
// each on its own slot (ROLLOUT_E2E_SLOT: its own names and 10.213.N.0/24)
// with a share of the tests (ROLLOUT_E2E_SHARD=i/n, balanced by the times
// in testdata/durations.tsv), and the core tests (TestCore*) on every
// Debian release the testbed boots (ROLLOUT_E2E_SUITE).
package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// The fleet every test shares: hosts with instances on basePort..basePort+3,
// and two more hosts the load balancer tests make balancers of.
const (
	fleetHosts = 2
	lbCount    = 2
	basePort   = 3000
	instances  = 4
)

var (
	fleet      *testbed.Testbed
	balancers  []*testbed.Host // not in fleet.Hosts
	rolloutBin string          // the rollout binary under test
	suite      string          // the Debian release the hosts run
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: FAIL: the real-host tests need root (systemd-nspawn, network namespaces); run them with make e2e as root")
		return 1
	}
	slot, err := envInt("ROLLOUT_E2E_SLOT", 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	suite = os.Getenv("ROLLOUT_E2E_SUITE")
	if suite == "" {
		suite = testbed.Bookworm
	}
	if err := selectTests(suite, os.Getenv("ROLLOUT_E2E_SHARD")); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	// Generous: Up first waits for any other testbed of this slot to finish.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	bin, err := os.MkdirTemp("", "rollout-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(bin)
	rolloutBin = filepath.Join(bin, "rollout")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", rolloutBin, "../cmd/rollout").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build rollout: %v\n%s", err, out)
		return 1
	}
	var binds []string
	if bin := os.Getenv("ROLLOUT_TRAEFIK"); bin != "" { // tools/traefik.sh's
		binds = append(binds, bin+":/usr/local/bin/traefik")
	}
	tb, err := testbed.Up(ctx, testbed.Options{Hosts: fleetHosts + lbCount, Slot: slot, Suite: suite, Log: os.Stderr, Binds: binds})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer tb.Down(context.Background())
	balancers = tb.Hosts[fleetHosts:]
	tb.Hosts = tb.Hosts[:fleetHosts]
	fleet = tb
	for _, h := range tb.Hosts {
		if err := tb.Provision(ctx, h, basePort, instances); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
	}
	return m.Run()
}

// resetHost gives the test a freshly booted and provisioned host, whatever
// earlier tests did to it.
func resetHost(t testing.TB, h *testbed.Host) {
	t.Helper()
	resetHosts(t, h)
}

// resetHosts is resetHost for several hosts, all at once (a reset is
// mostly waiting: the boot, then the instances' own).
func resetHosts(t testing.TB, hosts ...*testbed.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fleet.Reboot(ctx, h); err != nil {
				errs[i] = fmt.Errorf("reboot %s: %w", h.Name, err)
				return
			}
			if err := fleet.Provision(ctx, h, basePort, instances); err != nil {
				errs[i] = fmt.Errorf("provision %s: %w", h.Name, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}
