package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/deployer"
	"github.com/rollout-dev/rollout/e2e/testbed"
)

// The alert receiver: a webhook on the test host's loopback that appends
// each post's body to a file.
const receiverUnit = `sudo -n systemd-run --quiet --unit=alert-receiver /usr/bin/node -e "require('http').createServer((q,s)=>{let b='';q.on('data',d=>b+=d);q.on('end',()=>{require('fs').appendFileSync('/tmp/alerts.jsonl',b.replace(/\n/g,' ')+'\n');s.end('ok')})}).listen(9099,'127.0.0.1')"`

// alerts are the texts the host's receiver got so far.
func alerts(t *testing.T, h *testbed.Host) []string {
	t.Helper()
	out, err := fleet.Run(context.Background(), h, "cat /tmp/alerts.jsonl 2>/dev/null || true")
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var p struct{ Text string }
		if line != "" && json.Unmarshal([]byte(line), &p) == nil {
			texts = append(texts, p.Text)
		}
	}
	return texts
}

// waitTimerRuns waits until the host's status timer (watch:) ran n more
// times, each run seen by its service's exit time changing.
func waitTimerRuns(t *testing.T, h *testbed.Host, n int) {
	t.Helper()
	ctx := context.Background()
	read := func() string {
		out, err := fleet.Run(ctx, h, "systemctl show -p ExecMainExitTimestampMonotonic --value rollout-status-my-app.service")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	last, runs := read(), 0
	deadline := time.Now().Add(time.Duration(n)*10*time.Second + 10*time.Second)
	for runs < n {
		if time.Now().After(deadline) {
			t.Fatalf("the status timer ran %d time(s), want %d", runs, n)
		}
		time.Sleep(200 * time.Millisecond)
		if now := read(); now != last && now != "0" {
			last, runs = now, runs+1
		}
	}
}

// waitAlerts waits until the receiver holds n texts and returns them.
func waitAlerts(t *testing.T, h *testbed.Host, n int, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := alerts(t, h)
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) < n {
				t.Fatalf("the receiver got %d alert(s) within %s, want %d: %q", len(got), within, n, got)
			}
			return got
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// rollout setup with a watch: section makes the host alert on its own: an
// instance in a crash loop produces exactly one alert within the debounce
// window and a recovery once fixed; a deploy produces none; a webhook
// that is down does not hold up an instance's restart; status.json,
// served by the host's Nginx to loopback only, says what rollout status
// says; the URL stays in a root-only file and out of every diff.
func TestWatchAlertsFromTheHost(t *testing.T) {
	h := fleet.Hosts[0]
	hosts := []*testbed.Host{h}
	ctx := context.Background()
	const hook = "http://127.0.0.1:9099/hook-SECRETPATH"
	t.Setenv("ROLLOUT_NOTIFY_URL", hook)
	cfg := releaseConfig(t, hosts, "")
	appendConfig(t, cfg, "notify: {url_env: ROLLOUT_NOTIFY_URL, format: slack, timeout: 5s}\nwatch: {min_interval: 1m, interval: 5s}\n"+
		"workers:\n  - {unit: my-app-worker, count: 1, exec_start: /bin/sleep 100000}\n")
	moveToReleases(t, cfg, hosts) // resets h and runs rollout setup
	if out, err := fleet.Run(ctx, h, receiverUnit); err != nil {
		t.Fatalf("start the receiver: %v\n%s", err, out)
	}

	// The URL: a root-only file, in no unit.
	out, err := fleet.Run(ctx, h, "sudo -n stat -c '%a %U' /etc/rollout/my-app/webhook.env; systemctl cat my-app@3000 rollout-status-my-app.service rollout-alert-my-app@3000; systemctl is-active rollout-status-my-app.timer")
	if err != nil || !strings.HasPrefix(out, "600 root\n") || strings.Contains(out, "SECRETPATH") || !strings.Contains(out, "ExecStopPost=-+/usr/local/lib/rollout/my-app-watch stop %i") || !strings.HasSuffix(out, "active\n") {
		t.Fatalf("the watch's files: %v\n%s", err, out)
	}
	t.Setenv("ROLLOUT_NOTIFY_URL", "http://127.0.0.1:9099/OTHER-SECRET")
	if out, code := rollout(t, "setup", "-c", cfg, "--dry-run"); code != 0 || !strings.Contains(out, "update /etc/rollout/my-app/webhook.env") ||
		!strings.Contains(out, "(a secret: it changes, the content is not shown)") || strings.Contains(out, "OTHER-SECRET") || strings.Contains(out, "SECRETPATH") {
		t.Fatalf("setup --dry-run with a new webhook exited %d", code)
	}
	t.Setenv("ROLLOUT_NOTIFY_URL", hook)
	if out, code := rollout(t, "setup", "-c", cfg); code != 0 || !strings.Contains(out, h.Addr+": no changes") {
		t.Fatalf("a second setup exited %d or changed something", code)
	}

	// status.json: what rollout status says, to loopback only.
	waitTimerRuns(t, h, 1)
	hostJSON, err := fleet.Run(ctx, h, "curl -sf -H 'Host: "+h.Addr+"' http://127.0.0.1/.rollout/status.json")
	if err != nil {
		t.Fatalf("status.json from the host: %v\n%s", err, hostJSON)
	}
	statusOut, code := rollout(t, "status", "-c", cfg, "--output", "json")
	if code != 0 {
		t.Fatalf("rollout status exited %d", code)
	}
	var fromHost, fromStatus statusJSON
	if err := json.Unmarshal([]byte(hostJSON), &fromHost); err != nil {
		t.Fatalf("status.json: %v\n%s", err, hostJSON)
	}
	if err := json.Unmarshal([]byte(statusOut), &fromStatus); err != nil {
		t.Fatal(err)
	}
	if len(fromHost.Hosts) != 1 || len(fromStatus.Hosts) != 1 || len(fromHost.Hosts[0].Instances) != instances {
		t.Fatalf("status.json: %s", hostJSON)
	}
	var workers struct {
		Hosts []struct{ Workers []deployer.WorkerStatus }
	}
	if err := json.Unmarshal([]byte(hostJSON), &workers); err != nil || len(workers.Hosts[0].Workers) != 1 ||
		workers.Hosts[0].Workers[0].Unit != "my-app-worker@1" || workers.Hosts[0].Workers[0].State != "active" || workers.Hosts[0].Workers[0].PID == 0 {
		t.Errorf("status.json's workers (%v): %s", err, hostJSON)
	}
	for i, a := range fromHost.Hosts[0].Instances {
		b := fromStatus.Hosts[0].Instances[i]
		if a.Port != b.Port || a.State != b.State || a.PID != b.PID || a.Restarts != b.Restarts || a.InNginx != b.InNginx || a.Healthy != b.Healthy || a.Uptime <= 0 {
			t.Errorf("status.json says %+v, rollout status %+v", a, b)
		}
	}
	resp, err := http.Get("http://" + h.Addr + "/.rollout/status.json")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("status.json from outside watch.allow: HTTP %d, want 403", resp.StatusCode)
	}

	// A crash loop: one alert in the debounce window, the rest counted.
	crash := `sudo -n sh -c 'mkdir -p /etc/systemd/system/my-app@3001.service.d && printf "[Service]\nExecStart=\nExecStart=/usr/bin/node -e \"console.error(1); process.exit(3)\"\n" >/etc/systemd/system/my-app@3001.service.d/crash.conf && systemctl daemon-reload && systemctl restart my-app@3001'`
	if out, err := fleet.Run(ctx, h, crash); err != nil {
		t.Fatalf("make 3001 crash: %v\n%s", err, out)
	}
	got := waitAlerts(t, h, 1, 30*time.Second)
	if !strings.Contains(got[0], "my-app@3001") || !strings.HasPrefix(got[0], "❌") {
		t.Errorf("the first alert: %q", got[0])
	}
	// Until systemd gives up (3 starts in a minute), and a timer run after.
	deadline := time.Now().Add(40 * time.Second)
	for {
		out, _ := fleet.Run(ctx, h, "systemctl is-failed my-app@3001; sudo -n cat /var/lib/rollout/my-app/watch/3001.last")
		if strings.HasPrefix(out, "failed\n") {
			if f := strings.Fields(out); len(f) < 3 || f[2] == "0" {
				t.Errorf("no alert held back after the crash loop: %q", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("my-app@3001 did not hit its start limit: %q", out)
		}
		time.Sleep(time.Second)
	}
	waitTimerRuns(t, h, 2) // its status runs see the instance down: still one alert
	if got := alerts(t, h); len(got) != 1 {
		t.Fatalf("a crash loop produced %d alerts within the debounce window, want 1: %q", len(got), got)
	}
	fix := `sudo -n sh -c 'rm -rf /etc/systemd/system/my-app@3001.service.d && systemctl daemon-reload && systemctl reset-failed my-app@3001 && systemctl start my-app@3001'`
	if out, err := fleet.Run(ctx, h, fix); err != nil {
		t.Fatalf("fix 3001: %v\n%s", err, out)
	}
	got = waitAlerts(t, h, 2, 30*time.Second)
	if !strings.HasPrefix(got[1], "✅") || !strings.Contains(got[1], "my-app@3001") || !strings.Contains(got[1], "healthy again") {
		t.Errorf("the recovery: %q", got[1])
	}

	// A deploy with strategy.max_surge moves every instance to the spare
	// ports (setup gives the watch both ranges): no alert, and status.json
	// shows the ports that serve.
	appendConfig(t, cfg, "strategy: {max_surge: 100%}\n")
	if out, code := rollout(t, "setup", "-c", cfg); code != 0 || !strings.Contains(out, "/usr/local/lib/rollout/my-app-watch") {
		t.Fatalf("setup with max_surge exited %d, or left the watch as it was:\n%s", code, out)
	}
	if out, code := rollout(t, "deploy", "-c", cfg, "--version", "v2", "--artifact", artifactDir(t, testbed.GoodRelease("v2"))); code != 0 {
		t.Fatalf("deploy exited %d:\n%s", code, out)
	}
	waitTimerRuns(t, h, 2)
	if got := alerts(t, h); len(got) != 2 {
		t.Errorf("alerts after a deploy: %q, want only the two before it", got)
	}
	hostJSON, err = fleet.Run(ctx, h, "curl -sf -H 'Host: "+h.Addr+"' http://127.0.0.1/.rollout/status.json")
	if err != nil {
		t.Fatalf("status.json from the host: %v\n%s", err, hostJSON)
	}
	fromHost = statusJSON{}
	if err := json.Unmarshal([]byte(hostJSON), &fromHost); err != nil {
		t.Fatalf("status.json: %v\n%s", err, hostJSON)
	}
	var ports []int
	for _, i := range fromHost.Hosts[0].Instances {
		ports = append(ports, i.Port)
		if !i.InNginx || !i.Healthy || i.State != "active" || i.Leftover {
			t.Errorf("status.json after the surge: %+v", i)
		}
	}
	if fmt.Sprint(ports) != fmt.Sprint(portRange(basePort+instances, instances)) {
		t.Errorf("status.json shows %v after the surge, want the spare ports:\n%s", ports, hostJSON)
	}
	// An instance started by hand on an idle port: a leftover, one alert.
	if out, err := fleet.Run(ctx, h, fmt.Sprintf("sudo -n systemctl start my-app@%d", basePort)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got = waitAlerts(t, h, 3, 30*time.Second)
	if want := fmt.Sprintf("❌ my-app@%d on ", basePort); !strings.HasPrefix(got[2], want) || !strings.Contains(got[2], fmt.Sprintf("but its slot serves from %d (strategy.max_surge)", basePort+instances)) {
		t.Errorf("the leftover's alert: %q", got[2])
	}
	if out, err := fleet.Run(ctx, h, fmt.Sprintf("sudo -n systemctl stop my-app@%d", basePort)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	// A worker killed: an alert, and once systemd has restarted it, the
	// timer says it runs again.
	if out, err := fleet.Run(ctx, h, "sudo -n systemctl kill -s KILL my-app-worker@1"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got = waitAlerts(t, h, 5, 30*time.Second)
	if len(got) != 5 || !strings.HasPrefix(got[3], "❌ worker my-app-worker@1 on ") || !strings.Contains(got[3], "stopped: signal (killed KILL)") ||
		!strings.HasPrefix(got[4], "✅ worker my-app-worker@1 on ") || !strings.Contains(got[4], "is running again") {
		t.Errorf("alerts for the worker killed: %q", got)
	}

	// The webhook down: an instance killed still restarts at once, and the
	// failed post is a line in the journal.
	killed := basePort + instances + 2 // serving since the surge
	if out, err := fleet.Run(ctx, h, fmt.Sprintf("sudo -n systemctl stop alert-receiver && sudo -n kill -KILL \"$(systemctl show -p MainPID --value my-app@%d)\"", killed)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	deadline = time.Now().Add(15 * time.Second) // RestartSec=2s
	for {
		out, _ := fleet.Run(ctx, h, fmt.Sprintf("systemctl show -p NRestarts,ActiveState my-app@%d", killed))
		if strings.Contains(out, "NRestarts=1") && strings.Contains(out, "ActiveState=active") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("my-app@%d did not restart with the webhook down: %s", killed, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		out, _ := fleet.Run(ctx, h, "sudo -n journalctl --no-pager -q --since '-2min' | grep -c 'rollout watch: the webhook post failed' || true")
		if strings.TrimSpace(out) != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no journal line for the failed post")
		}
		time.Sleep(time.Second)
	}

	// The section gone: setup takes the watch away, then has nothing to do.
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), "watch: {min_interval: 1m, interval: 5s}\n", "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := rollout(t, "setup", "-c", cfg); code != 0 || !strings.Contains(out, "remove the watch an earlier setup installed") {
		t.Fatalf("setup without the watch: section exited %d", code)
	}
	if out, err := fleet.Run(ctx, h, "! systemctl is-active -q rollout-status-my-app.timer && ! test -e /etc/systemd/system/my-app@.service.d/rollout-watch.conf && ! sudo -n test -e /etc/rollout/my-app/webhook.env && ! test -e /usr/local/lib/rollout/my-app-watch && ! systemctl show -p ExecStopPost --value my-app@3000 | grep -q my-app-watch"); err != nil {
		t.Fatalf("the watch is still installed: %v\n%s", err, out)
	}
	if out, code := rollout(t, "setup", "-c", cfg); code != 0 || !strings.Contains(out, h.Addr+": no changes") {
		t.Fatalf("setup again exited %d or changed something", code)
	}
}

// appendConfig adds lines to a config file.
func appendConfig(t *testing.T, path, lines string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, lines...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// setup refuses to install the watch on a host without curl.
func TestWatchSetupNeedsCurl(t *testing.T) {
	h := fleet.Hosts[1]
	hosts := []*testbed.Host{h}
	t.Setenv("ROLLOUT_NOTIFY_URL", "http://127.0.0.1:9099/hook")
	cfg := releaseConfig(t, hosts, "")
	appendConfig(t, cfg, "notify: {url_env: ROLLOUT_NOTIFY_URL}\nwatch: {}\n")
	resetHost(t, h)
	t.Cleanup(func() { resetHost(t, h) })
	if out, err := fleet.Run(context.Background(), h, "sudo -n mv /usr/bin/curl /usr/bin/curl.off"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, code := rollout(t, "setup", "-c", cfg)
	if code != 1 || !strings.Contains(out, "watch: the host has no curl, which its alerts post with (apt install curl)") {
		t.Fatalf("setup without curl exited %d", code)
	}
	t.Setenv("ROLLOUT_NOTIFY_URL", "")
	out, code = rollout(t, "setup", "-c", cfg)
	if code != 1 || !strings.Contains(out, fmt.Sprintf("watch: $%s is empty", "ROLLOUT_NOTIFY_URL")) {
		t.Fatalf("setup without the webhook's URL exited %d", code)
	}
}
