package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// A bare host (systemd, Nginx and Node.js installed; no app user, unit,
// upstream or site) set up by rollout, then deployed to.
func TestSetupBareHostThenDeploy(t *testing.T) {
	h := fleet.Hosts[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := fleet.Reboot(ctx, h); err != nil { // without Provision: bare
		t.Fatal(err)
	}
	defer resetHost(t, h)
	if out, _ := fleet.Run(ctx, h, "getent passwd my-app || echo no-user; ls /etc/nginx/conf.d/ /etc/systemd/system/my-app@.service 2>&1"); !strings.Contains(out, "no-user") || strings.Contains(out, ".conf") {
		t.Fatalf("the host is not bare:\n%s", out)
	}
	setupLines := fmt.Sprintf("setup:\n  server_name: %s\n", h.Addr)
	cfg := oneHostConfig(t, setupLines)
	// No activation hook on a bare host: the test puts the release in place.
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	noHooks := strings.Replace(string(b), "hooks:\n  host_before:\n    - sudo -n /usr/local/sbin/my-app-activate \"$ROLLOUT_VERSION\"\n", "", 1)
	if noHooks == string(b) {
		t.Fatal("could not drop the hook from the config")
	}
	if err := os.WriteFile(cfg, []byte(noHooks), 0o600); err != nil {
		t.Fatal(err)
	}

	out, code := rollout(t, "setup", "-c", cfg)
	if code != 0 || !strings.Contains(out, "create system user my-app") || !strings.Contains(out, "write /etc/systemd/system/my-app@.service") {
		t.Fatalf("setup exited %d", code)
	}
	nginxTestPasses(t, h)

	// The release and the app's secrets arrive the way teams ship them.
	if err := fleet.StageRelease(ctx, h, testbed.GoodRelease("v2")); err != nil {
		t.Fatal(err)
	}
	if out, err := fleet.Run(ctx, h, `sudo -n sh -c 'cp -a /srv/releases/v2/. /var/www/my-app/ && echo DATABASE_URL=postgres://x@127.0.0.1/x > /etc/my-app/.env'`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, code := rollout(t, "setup", "-c", cfg); code != 0 || !strings.Contains(out, h.Addr+": no changes") {
		t.Errorf("a second setup exited %d or changed something:\n%s", code, out)
	}
	if _, code := rollout(t, "deploy", "-c", cfg, "--version", "v2"); code != 0 {
		t.Fatalf("deploy after setup exited %d", code)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for range 8 {
		resp, err := client.Get("http://" + h.Addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-App-Version") != "v2" {
			t.Fatalf("through nginx: %s, version %q", resp.Status, resp.Header.Get("X-App-Version"))
		}
	}
	// The unit is the hardened one, and the app runs as its own user.
	if out, _ := fleet.Run(ctx, h, "systemctl show -p User,NoNewPrivileges,ProtectSystem,ProtectHome,PrivateTmp my-app@3000"); !strings.Contains(out, "User=my-app") ||
		!strings.Contains(out, "NoNewPrivileges=yes") || !strings.Contains(out, "ProtectSystem=strict") {
		t.Errorf("the unit is not hardened:\n%s", out)
	}

	// A changed setting: --dry-run shows the diff and changes nothing.
	if err := os.WriteFile(cfg, []byte(strings.Replace(noHooks, setupLines, setupLines+"  memory_max: 512M\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := fleet.Run(ctx, h, "cat /etc/systemd/system/my-app@.service")
	out, code = rollout(t, "setup", "-c", cfg, "--dry-run")
	if code != 0 || !strings.Contains(out, "-MemoryMax=1G") || !strings.Contains(out, "+MemoryMax=512M") || !strings.Contains(out, "would change") {
		t.Errorf("setup --dry-run exited %d without the diff", code)
	}
	if after, _ := fleet.Run(ctx, h, "cat /etc/systemd/system/my-app@.service"); after != before {
		t.Errorf("--dry-run changed the unit file")
	}
	if out, _ := rollout(t, "history", "-c", cfg); strings.Count(out, " setup ") != 2 {
		t.Errorf("the history does not show the two setups:\n%s", out)
	}
}
