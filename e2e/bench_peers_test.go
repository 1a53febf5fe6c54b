package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
	"github.com/rollout-dev/rollout/sshexec"
)

// The peers BenchmarkDeploy measures rollout against, besides the seed
// script: what a careful team writes by hand, and PM2.

// handLoop is a careful hand-written drain loop, as a team writes it after
// the seed script dropped requests, run over one SSH connection: release
// v2 goes live, then for each instance: mark it down in the upstream, test
// and reload Nginx, wait until its connections are closed, restart it,
// wait until it answers its health check, put it back, test and reload.
const handLoop = `set -eu
f=/etc/nginx/conf.d/my-app-upstream.conf
sudo -n /usr/local/sbin/my-app-activate v2 >/dev/null
for port in 3000 3001 3002 3003; do
  sudo -n sed -i "s/server 127.0.0.1:$port;/server 127.0.0.1:$port down;/" "$f"
  sudo -n nginx -t -q && sudo -n systemctl reload nginx
  i=0
  while [ -n "$(ss -Htn state established "( sport = :$port )")" ] && [ $i -lt 200 ]; do
    sleep 0.05; i=$((i + 1))
  done
  sudo -n systemctl restart "my-app@$port"
  i=0
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 400 ] || { echo "my-app@$port is not healthy after 20s" >&2; exit 1; }
    sleep 0.05
  done
  sudo -n sed -i "s/server 127.0.0.1:$port down;/server 127.0.0.1:$port;/" "$f"
  sudo -n nginx -t -q && sudo -n systemctl reload nginx
done`

// benchHandLoop deploys v2 to h with handLoop under load.
func benchHandLoop(b *testing.B, h *testbed.Host) benchRun {
	resetHost(b, h)
	if err := fleet.StageRelease(context.Background(), h, testbed.GoodRelease("v2")); err != nil {
		b.Fatal(err)
	}
	r := timedLoad(b, h, func() {
		if out, err := fleet.Run(context.Background(), h, handLoop); err != nil {
			b.Fatalf("hand-written loop: %v\n%s", err, out)
		}
	})
	servesOnly(b, h, 3000, 4, "v2")
	return r
}

// drainCycle is the floor of a balancer change: the instance's line in the
// upstream flipped (down, or back up), the config tested, the master
// signalled, and the wait until every worker of the old config is shutting
// down (from then on no new request reaches a drained instance). As root.
const drainCycle = `set -eu
f=/etc/nginx/conf.d/my-app-upstream.conf
if grep -q "server 127.0.0.1:3000;" "$f"; then
  sed -i "s/server 127.0.0.1:3000;/server 127.0.0.1:3000 down;/" "$f"
else
  sed -i "s/server 127.0.0.1:3000 down;/server 127.0.0.1:3000;/" "$f"
fi
nginx -t -q
read -r m </run/nginx.pid
read -r old </proc/"$m"/task/"$m"/children || true
kill -HUP "$m"
for p in $old; do
  while [ -r "/proc/$p/cmdline" ] && ! grep -q 'shutting down' "/proc/$p/cmdline" 2>/dev/null; do sleep 0.005; done
done`

// benchFloor measures, under load on h, what one balancer change costs at
// the least: drainCycle over an open SSH connection (sudo included), four
// times; it returns the median.
func benchFloor(b *testing.B, h *testbed.Host) time.Duration {
	resetHost(b, h)
	ctx := context.Background()
	c, err := fleet.Dial(ctx, h, "deploy")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var cycles []time.Duration
	timedLoad(b, h, func() {
		for range 4 {
			t0 := time.Now()
			res, err := c.Run(ctx, "sudo -n sh -c "+sshexec.Quote(drainCycle), nil)
			if err != nil {
				b.Fatalf("drain cycle: %v\n%s", err, res.Stderr)
			}
			cycles = append(cycles, time.Since(t0))
		}
	})
	slices.Sort(cycles)
	return (cycles[1] + cycles[2]) / 2
}

// pm2Version is the PM2 the bench installs from npm (on the machine
// running it; the hosts have no network) into build/bench.
const pm2Version = "7.0.4"

// pm2Archive is PM2 and its modules as a tar stream, installed with npm
// once and kept in build/bench.
func pm2Archive(b *testing.B) []byte {
	dir, err := filepath.Abs(filepath.Join("..", "build", "bench", "pm2-"+pm2Version))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "pm2", "bin", "pm2")); err != nil {
		if _, err := exec.LookPath("npm"); err != nil {
			b.Fatalf("the PM2 peer needs npm to install pm2@%s (make bench installs it): %v", pm2Version, err)
		}
		tmp := dir + ".tmp"
		_ = os.RemoveAll(tmp)
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command("npm", "install", "--no-audit", "--no-fund", "--omit=dev", "--prefix", tmp, "pm2@"+pm2Version)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("npm install pm2@%s: %v\n%s", pm2Version, err, out)
		}
		_ = os.RemoveAll(dir)
		if err := os.Rename(tmp, dir); err != nil {
			b.Fatal(err)
		}
	}
	out, err := exec.Command("tar", "-C", dir, "-cf", "-", "node_modules").Output()
	if err != nil {
		b.Fatalf("tar pm2: %v", err)
	}
	return out
}

// pm2Start replaces h's four systemd instances with PM2's cluster of 4 on
// port 3000 (one port: PM2's master shares it), as root, and points the
// upstream at it once it answers.
const pm2Start = `set -eu
export PM2_HOME=/var/lib/pm2
pm2() { node /opt/pm2/node_modules/pm2/bin/pm2 "$@"; }
systemctl stop my-app@3000 my-app@3001 my-app@3002 my-app@3003
set -a; . /etc/my-app/.env; set +a
cd /var/www/my-app
PORT=3000 NODE_ENV=production pm2 start /var/www/my-app/server.js -i 4 --name my-app >/tmp/pm2-start.log 2>&1 </dev/null ||
  { cat /tmp/pm2-start.log >&2; exit 1; }
i=0
until [ "$(pm2 jlist 2>/dev/null | grep -o '"status":"online"' | wc -l)" -eq 4 ] &&
  curl -fsS -o /dev/null http://127.0.0.1:3000/healthz 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 200 ] || { echo "PM2's cluster is not online after 20s" >&2; pm2 ls >&2; exit 1; }
  sleep 0.1
done
printf 'upstream my_app {\n    server 127.0.0.1:3000;\n}\n' >/etc/nginx/conf.d/my-app-upstream.conf
nginx -t -q
systemctl reload nginx
sleep 1`

// benchPM2 deploys v2 to h with PM2's cluster reload under load: v2 goes
// live (my-app-activate), then "pm2 reload my-app". It returns the load's
// figures and the PM2 daemon's resident memory in MB.
func benchPM2(b *testing.B, h *testbed.Host) (benchRun, int) {
	archive := pm2Archive(b)
	resetHost(b, h) // every step of the bench resets the host first: PM2 is gone after it
	ctx := context.Background()
	if err := fleet.StageRelease(ctx, h, testbed.GoodRelease("v2")); err != nil {
		b.Fatal(err)
	}
	if out, err := fleet.RunInput(ctx, h, "sudo -n sh -c 'rm -rf /opt/pm2 && mkdir -p /opt/pm2 && tar -xf - -C /opt/pm2'", bytes.NewReader(archive)); err != nil {
		b.Fatalf("install pm2: %v\n%s", err, out)
	}
	if out, err := fleet.Run(ctx, h, "sudo -n sh -c "+sshexec.Quote(pm2Start)); err != nil {
		b.Fatalf("start PM2's cluster: %v\n%s", err, out)
	}
	// The same load at rest first: what PM2's cluster serves with when
	// nothing changes (its master passes every connection to a worker).
	rest := timedLoad(b, h, func() { time.Sleep(3 * time.Second) })
	fmt.Printf("pm2 at rest: %s\n", rest.res)
	r := timedLoad(b, h, func() {
		if out, err := fleet.Run(ctx, h, "sudo -n /usr/local/sbin/my-app-activate v2 >/dev/null && sudo -n env PM2_HOME=/var/lib/pm2 node /opt/pm2/node_modules/pm2/bin/pm2 reload my-app"); err != nil {
			b.Fatalf("pm2 reload: %v\n%s", err, out)
		}
	})
	servesOnly(b, h, 3000, 1, "v2")
	out, err := fleet.Run(ctx, h, `sudo -n sh -c 'for p in $(pgrep -f "[G]od Daemon"); do sed -n "s/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p" /proc/$p/status; done'`)
	if err != nil {
		b.Fatalf("PM2's memory: %v\n%s", err, out)
	}
	kb, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		b.Fatalf("PM2's daemon: want one resident size, got %q", out)
	}
	return r, kb / 1024
}

// servesOnly checks that each of h's count ports from base answers its
// health check as version, four times, asked on the host (not through
// Nginx) in one command; the app ends each answer with a newline.
func servesOnly(b *testing.B, h *testbed.Host, base, count int, version string) {
	cmd := fmt.Sprintf(`for p in $(seq %d %d); do for _ in 1 2 3 4; do printf '%%s ' "$p"; curl -fsS "http://127.0.0.1:$p/healthz" || echo failed; done; done`, base, base+count-1)
	out, err := fleet.Run(context.Background(), h, cmd)
	answers := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(answers) != 4*count {
		b.Fatalf("%s after the deploy: %v\n%s", h.Name, err, out)
	}
	for _, a := range answers {
		if !strings.Contains(a, `"version":"`+version+`"`) {
			b.Fatalf("%s after the deploy answers %q, want version %s", h.Name, a, version)
		}
	}
}
