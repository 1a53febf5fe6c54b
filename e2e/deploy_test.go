package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
	"github.com/rollout-dev/rollout/internal/loadgen"
)

// testMinHealthy is health.min_healthy in the tests whose subject is not
// how long an instance must stay healthy (releases, balancers, secrets,
// …): a crashing test release exits before its first health check
// passes, so a shorter wait catches it as well, and the suite spends
// about 0.7s less per instance restarted. The deploys under load of the
// product itself (TestDeployUnderLoadDropsNothing and its like) keep 1s,
// and the fault tests 2s.
const testMinHealthy = "300ms"

// fleetConfig writes a rollout.yaml for the fleet, with the given
// health.min_healthy, and returns its path.
func fleetConfig(t testing.TB, minHealthy string) string {
	t.Helper()
	var hosts []string
	for _, h := range fleet.Hosts {
		hosts = append(hosts, "  - "+h.Addr)
	}
	cfg := fmt.Sprintf(`app: my-app
unit: my-app@{port}
hosts:
%s
ssh:
  user: deploy
  key: %s
  known_hosts: %s
base_port: %d
instances: %d
nginx:
  upstream_file: /etc/nginx/conf.d/my-app-upstream.conf
  upstream: my_app
health:
  path: /healthz
  timeout: 10s
  min_healthy: %s
drain_timeout: 10s
hooks:
  host_before:
    - sudo -n /usr/local/sbin/my-app-activate "$ROLLOUT_VERSION"
`, strings.Join(hosts, "\n"), fleet.KeyFile, fleet.KnownHosts, basePort, instances, minHealthy)
	path := filepath.Join(t.TempDir(), "rollout.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rollout runs the rollout binary and returns its combined output and exit
// code.
func rollout(t testing.TB, args ...string) (string, int) {
	t.Helper()
	return rolloutEnv(t, nil, args...)
}

// instanceState is what a host says about one instance.
type instanceState struct {
	MainPID, StartedAt, Restarts string
}

func instanceStates(t *testing.T, h *testbed.Host) map[int]instanceState {
	t.Helper()
	states := map[int]instanceState{}
	for i := 0; i < instances; i++ {
		port := basePort + i
		out, err := fleet.Run(context.Background(), h, fmt.Sprintf("systemctl show -p MainPID,ExecMainStartTimestampMonotonic,NRestarts my-app@%d", port))
		if err != nil {
			t.Fatal(err)
		}
		var st instanceState
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			k, v, _ := strings.Cut(line, "=")
			switch k {
			case "MainPID":
				st.MainPID = v
			case "ExecMainStartTimestampMonotonic":
				st.StartedAt = v
			case "NRestarts":
				st.Restarts = v
			}
		}
		if st.MainPID == "" || st.StartedAt == "" || st.Restarts == "" {
			t.Fatalf("systemctl show: %q", out)
		}
		states[port] = st
	}
	return states
}

func upstreamFile(t *testing.T, h *testbed.Host) string {
	t.Helper()
	out, err := fleet.Run(context.Background(), h, "cat /etc/nginx/conf.d/my-app-upstream.conf")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func nginxTestPasses(t *testing.T, h *testbed.Host) {
	t.Helper()
	if out, err := fleet.RunRoot(context.Background(), h, "nginx -t 2>&1"); err != nil {
		t.Errorf("%s: nginx -t fails after the deploy: %v\n%s", h.Name, err, out)
	}
}

// versionsServed asks every instance of h directly (through SSH) for its
// version.
func versionsServed(t *testing.T, h *testbed.Host) map[int]string {
	t.Helper()
	return servedOn(t, h, portRange(basePort, instances))
}

// underLoad runs fn while hosts take 400 req/s of mixed GET and POST
// through their Nginx, split evenly, and returns each host's load results.
func underLoad(t testing.TB, hosts []*testbed.Host, fn func()) []loadgen.Result {
	t.Helper()
	ctx := context.Background()
	var gens []*loadgen.Generator
	for _, h := range hosts {
		g, err := loadgen.Start(ctx, loadgen.Config{URL: "http://" + h.Addr, Rate: 400 / len(hosts), PostEvery: 4, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		gens = append(gens, g)
	}
	time.Sleep(500 * time.Millisecond)
	fn()
	time.Sleep(500 * time.Millisecond)
	var results []loadgen.Result
	for i, g := range gens {
		r := g.Stop()
		t.Logf("load on %s: %s", hosts[i].Name, r)
		results = append(results, r)
	}
	return results
}

// servedThroughout checks the load of a deploy to v2: no request failed,
// v2 answered some, and enough were sent to cover the deploy.
func servedThroughout(t *testing.T, results []loadgen.Result) {
	t.Helper()
	total := 0
	for _, r := range results {
		total += r.Requests
		if r.Failed != 0 {
			t.Errorf("failed requests during the deploy: %d (%v)", r.Failed, r.Failures)
		}
		if r.Versions["v2"] == 0 {
			t.Errorf("no request was served by v2 during the load: %v", r.Versions)
		}
	}
	if total < 1000 {
		t.Errorf("only %d requests sent: the load did not cover the deploy", total)
	}
}

func stageEverywhere(t testing.TB, r testbed.Release) {
	t.Helper()
	for _, h := range fleet.Hosts {
		if err := fleet.StageRelease(context.Background(), h, r); err != nil {
			t.Fatal(err)
		}
	}
}

func resetFleet(t testing.TB) {
	t.Helper()
	resetHosts(t, fleet.Hosts...)
}

// The product: v1 to v2 across every host under load, without one failed
// request.
func TestDeployUnderLoadDropsNothing(t *testing.T) {
	resetFleet(t)
	stageEverywhere(t, testbed.GoodRelease("v2"))
	cfg := fleetConfig(t, "1s")
	before := map[string]map[int]instanceState{}
	for _, h := range fleet.Hosts {
		before[h.Name] = instanceStates(t, h)
	}

	var out string
	var code int
	results := underLoad(t, fleet.Hosts, func() { out, code = rollout(t, "deploy", "-c", cfg, "--version", "v2") })
	if code != 0 {
		t.Fatalf("deploy exited %d", code)
	}
	servedThroughout(t, results)
	for _, h := range fleet.Hosts {
		for port, v := range versionsServed(t, h) {
			if v != "v2" {
				t.Errorf("%s:%d serves %q after the deploy, want v2", h.Name, port, v)
			}
		}
		after := instanceStates(t, h)
		for port, b := range before[h.Name] {
			a := after[port]
			if a.MainPID == b.MainPID || a.StartedAt == b.StartedAt {
				t.Errorf("%s:%d was not restarted: %+v", h.Name, port, a)
			}
			if a.Restarts != "0" {
				t.Errorf("%s:%d was restarted by systemd %s times", h.Name, port, a.Restarts)
			}
		}
		// Restarted exactly once: one v2 start line per instance.
		for i := 0; i < instances; i++ {
			port := basePort + i
			log, err := fleet.Run(context.Background(), h, fmt.Sprintf("cat /var/log/my-app/stdout-%d.log", port))
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(log, "my-app v2 listening"); n != 1 {
				t.Errorf("%s:%d started v2 %d times, want once:\n%s", h.Name, port, n, log)
			}
		}
		if up := upstreamFile(t, h); strings.Contains(up, "down") {
			t.Errorf("%s: upstream not back to all up:\n%s", h.Name, up)
		}
		nginxTestPasses(t, h)
	}
	for _, want := range []string{"drain", "wait-drain", "restart", "health", "undrain", "deploy v2: ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// failedRelease deploys a release that must fail on the first instance and
// checks rollout stops there, under load, without a failed request, shows
// wantOutput, and leaves everything else on v1 with a valid Nginx config.
func failedRelease(t *testing.T, r testbed.Release, wantOutput string) {
	resetFleet(t)
	stageEverywhere(t, r)
	cfg := fleetConfig(t, "1s")
	first := fleet.Hosts[0]
	before := instanceStates(t, first)

	var out string
	var code int
	results := underLoad(t, fleet.Hosts, func() { out, code = rollout(t, "deploy", "-c", cfg, "--version", r.Version) })
	if code != 1 {
		t.Errorf("deploy exited %d, want 1", code)
	}
	if !strings.Contains(out, wantOutput) {
		t.Errorf("output lacks the app's own error %q", wantOutput)
	}
	for _, res := range results {
		if res.Failed != 0 {
			t.Errorf("failed requests: %d (%v)", res.Failed, res.Failures)
		}
	}
	after := instanceStates(t, first)
	if after[basePort] == before[basePort] {
		t.Errorf("the first instance was not restarted")
	}
	for port := basePort + 1; port < basePort+instances; port++ {
		if after[port] != before[port] {
			t.Errorf("instance %d was touched after the first failed: %+v -> %+v", port, before[port], after[port])
		}
	}
	served := versionsServed(t, first)
	for port := basePort + 1; port < basePort+instances; port++ {
		if served[port] != "v1" {
			t.Errorf("%s:%d serves %q, want v1", first.Name, port, served[port])
		}
	}
	up := upstreamFile(t, first)
	if !strings.Contains(up, fmt.Sprintf("server 127.0.0.1:%d down;", basePort)) || strings.Count(up, "down") != 1 {
		t.Errorf("the failed instance must stay out of nginx, and only it:\n%s", up)
	}
	nginxTestPasses(t, first)
	// No other host was touched.
	for _, h := range fleet.Hosts[1:] {
		if up := upstreamFile(t, h); strings.Contains(up, "down") {
			t.Errorf("%s was touched:\n%s", h.Name, up)
		}
		for port, v := range versionsServed(t, h) {
			if v != "v1" {
				t.Errorf("%s:%d serves %q, want v1", h.Name, port, v)
			}
		}
	}
}

// The "silent death": a release missing an environment variable. PM2 says
// "online"; rollout stops and shows the app's own line.
func TestDeployReleaseThatCannotStart(t *testing.T) {
	r := testbed.GoodRelease("v3")
	r.RequiredEnv = []string{"DATABASE_URL", "PAYMENT_API_KEY"}
	failedRelease(t, r, "FATAL: required environment variable PAYMENT_API_KEY is not set")
}

// A release that starts but never passes its health check.
func TestDeployReleaseNeverHealthy(t *testing.T) {
	r := testbed.GoodRelease("v4")
	r.Healthy = false
	failedRelease(t, r, "health check answered 503, want 200")
}

// A long request in flight to an instance being drained completes; the
// drain waits for it.
func TestDrainWaitsForLongRequest(t *testing.T) {
	resetFleet(t)
	stageEverywhere(t, testbed.GoodRelease("v2"))
	h := fleet.Hosts[0]
	c, err := fleet.Dial(context.Background(), h, "deploy")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := &http.Client{Transport: &http.Transport{DialContext: c.DialContext}, Timeout: 30 * time.Second}
	type result struct {
		status  int
		version string
		err     error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/slow?ms=3000", basePort))
		if err != nil {
			done <- result{err: err}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- result{status: resp.StatusCode, version: resp.Header.Get("X-App-Version")}
	}()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	out, code := rollout(t, "deploy", "-c", fleetConfig(t, "1s"), "--version", "v2", "--hosts", h.Addr)
	if code != 0 {
		t.Fatalf("deploy exited %d", code)
	}
	r := <-done
	if r.err != nil || r.status != 200 || r.version != "v1" {
		t.Fatalf("long request: %+v, want 200 from v1", r)
	}
	if !strings.Contains(out, "wait-drain") || time.Since(start) < 2*time.Second {
		t.Errorf("deploy did not wait for the long request (took %s)", time.Since(start))
	}
}

// plan and deploy --dry-run print every step and change nothing.
func TestDryRunChangesNothing(t *testing.T) {
	cfg := fleetConfig(t, "1s")
	h := fleet.Hosts[0]
	resetHost(t, h) // a host left crash-looping by an earlier test changes by itself
	before, upBefore := instanceStates(t, h), sha256.Sum256([]byte(upstreamFile(t, h)))
	for _, args := range [][]string{{"deploy", "--dry-run", "--scripts"}, {"plan", "--scripts"}} {
		out, code := rollout(t, append(args, "-c", cfg, "--version", "v9")...)
		if code != 0 {
			t.Fatalf("%v exited %d", args, code)
		}
		for _, want := range []string{"rollout-restart my-app@3003", "nothing below has been run", "host " + h.Addr, "instance 3000 (my-app@3000)", "my-app-activate"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v output lacks %q", args, want)
			}
		}
	}
	if after := instanceStates(t, h); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("units changed: %v -> %v", before, after)
	}
	if sha256.Sum256([]byte(upstreamFile(t, h))) != upBefore {
		t.Error("upstream file changed")
	}
}

// A user without passwordless sudo fails at preflight, at once, with a
// message that says so, and nothing changes.
func TestDeployWithoutSudoFailsFast(t *testing.T) {
	cfg := fleetConfig(t, "1s")
	h := fleet.Hosts[0]
	resetHost(t, h) // a host left crash-looping by an earlier test changes by itself
	before := instanceStates(t, h)
	start := time.Now()
	out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2", "--user", "nosudo")
	if code != 3 {
		t.Errorf("exit %d, want 3 (preflight)", code)
	}
	if !strings.Contains(out, "sudo -n refused for user \"nosudo\"") {
		t.Errorf("output does not explain the sudo failure")
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("took %s: must fail at once, not wait for a password", time.Since(start))
	}
	if after := instanceStates(t, h); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("units changed: %v -> %v", before, after)
	}
}
