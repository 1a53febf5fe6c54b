package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Every host comes up as the seed's team runs a server: its units active,
// and Nginx spreading requests over every instance.
func TestTestbedHostsServeThroughNginx(t *testing.T) {
	resetFleet(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, h := range fleet.Hosts {
		t.Run(h.Name, func(t *testing.T) {
			var units []string
			for i := 0; i < instances; i++ {
				units = append(units, fmt.Sprintf("my-app@%d", basePort+i))
			}
			out, err := fleet.Run(ctx, h, "systemctl is-active "+strings.Join(units, " "))
			if err != nil {
				t.Fatalf("units not active: %v\n%s", err, out)
			}
			if got, want := strings.Fields(out), instances; len(got) != want {
				t.Fatalf("is-active printed %q, want %d lines", out, want)
			}

			// The seed's lockdown: root:www-data, files 0640, directories 2750.
			out, err = fleet.Run(ctx, h, "sudo -n stat -c '%U:%G %a %n' /var/www/my-app /var/www/my-app/server.js; id -nG nodeuser; getent passwd nodeuser")
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"root:www-data 2750 /var/www/my-app\n", "root:www-data 640 /var/www/my-app/server.js\n", "www-data", "/usr/sbin/nologin"} {
				if !strings.Contains(out, want) {
					t.Errorf("host setup: missing %q in\n%s", want, out)
				}
			}

			seen := map[string]int{}
			client := &http.Client{Timeout: 5 * time.Second}
			for i := 0; i < 40; i++ {
				resp, err := client.Get("http://" + h.Addr + "/")
				if err != nil {
					t.Fatalf("request through nginx: %v", err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d through nginx", resp.StatusCode)
				}
				if v := resp.Header.Get("X-App-Version"); v != "v1" {
					t.Errorf("X-App-Version = %q, want v1", v)
				}
				seen[resp.Header.Get("X-App-Port")]++
			}
			for i := 0; i < instances; i++ {
				if port := fmt.Sprint(basePort + i); seen[port] == 0 {
					t.Errorf("no request reached instance %s (seen %v)", port, seen)
				}
			}
		})
	}
}

// A release missing a required variable dies with its own clear stderr line:
// the testbed reproduces the "silent death" that rollout must surface.
func TestTestbedSilentDeathIsVisibleInLogs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h := fleet.Hosts[0]
	out, err := fleet.Run(ctx, h, "cd /tmp && sudo -n -u nodeuser env -i PORT=3999 /usr/bin/node /var/www/my-app/server.js 2>&1; echo exit=$?")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "FATAL: required environment variable DATABASE_URL is not set") || !strings.Contains(out, "exit=1") {
		t.Fatalf("app without its env: got %q", out)
	}
}
