package deployer

import (
	"strings"
	"testing"
)

func TestWatchConfigErrors(t *testing.T) {
	for _, tc := range []struct{ add, want string }{
		{"watch: {}\n", "watch: needs a notify: section"},
		{"notify: {}\nwatch: {interval: 1s}\n", "watch.interval: must be at least 5s"},
		{"notify: {}\nwatch: {min_interval: 0s}\n", "watch.min_interval: must be at least 1s"},
		{"notify: {}\nwatch: {status_path: /status}\n", "watch.status_path: must be a URL path"},
		{"notify: {}\nwatch: {status_path: \"/a;b.json\"}\n", "watch.status_path: must be a URL path"},
		{"notify: {}\nwatch: {allow: [\"all; deny none\"]}\n", "watch.allow[0]: must be an IP address or a CIDR range"},
		{"notify: {}\nwatch: {allow: []}\n", "watch.allow: must name at least one address"},
	} {
		_, err := ParseConfig("rollout.yaml", []byte(minimal+tc.add))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.add, err, tc.want)
		}
	}
	cfg, err := ParseConfig("rollout.yaml", []byte(minimal+"notify: {}\nwatch: {allow: [10.0.0.0/8, \"::1\"], interval: 10s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if w := cfg.Watch; w.Interval.String() != "10s" || w.MinInterval.String() != "10m0s" || w.StatusPath != "/.rollout/status.json" || len(w.Allow) != 2 {
		t.Fatalf("watch: %+v", w)
	}
}

func TestRenderWatch(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(minimal+"notify: {url_env: HOOK}\nwatch: {min_interval: 5m}\n"))
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]ManagedFile{}
	for _, f := range Render(cfg, []int{3000, 3001}) {
		byPath[f.Path] = f
	}
	script := byPath["/usr/local/lib/rollout/my-app-watch"]
	for _, want := range []string{"APP=my-app\n", "UNIT_PREFIX=my-app@\n", "PORTS='3000 3001'\n", "MIN_INTERVAL=300\n", "STATE=/var/lib/rollout/my-app\n", "LOCK_STALE=60\n"} {
		if !strings.Contains(script.Content, want) {
			t.Errorf("the script lacks %q", want)
		}
	}
	env := byPath["/etc/rollout/my-app/webhook.env"]
	if !env.Secret || env.Mode != "600" || env.Owner != "root:root" || !strings.Contains(env.Content, "URL='<the URL in $HOOK>'") {
		t.Errorf("the env file without a URL given: %+v", env)
	}
	cfg.Watch.SetWebhook("https://hooks.example.com/services/T/B/X")
	for _, f := range Render(cfg, []int{3000}) {
		if f.Path == env.Path && !strings.Contains(f.Content, "URL=https://hooks.example.com/services/T/B/X\n") {
			t.Errorf("the env file with a URL: %q", f.Content)
		}
		if f.Path != env.Path && strings.Contains(f.Content, "hooks.example.com") {
			t.Errorf("%s holds the URL", f.Path)
		}
	}
	dropIn := byPath["/etc/systemd/system/my-app@.service.d/rollout-watch.conf"].Content
	if !strings.Contains(dropIn, "OnFailure=rollout-alert-my-app@%i.service\n") || !strings.Contains(dropIn, "ExecStopPost=-+/usr/local/lib/rollout/my-app-watch stop %i\n") {
		t.Errorf("drop-in:\n%s", dropIn)
	}
	if timer := byPath["/etc/systemd/system/rollout-status-my-app.timer"].Content; !strings.Contains(timer, "OnUnitActiveSec=60s\n") {
		t.Errorf("timer:\n%s", timer)
	}
	site := byPath["/etc/nginx/conf.d/my-app-site.conf"].Content
	if !strings.Contains(site, "location = /.rollout/status.json {\n        allow 127.0.0.1;\n        allow ::1;\n        deny all;") ||
		!strings.Contains(site, "alias /var/lib/rollout/my-app/public/status.json;") {
		t.Errorf("site:\n%s", site)
	}
	for _, bad := range []string{"", "ftp://x/y", "https://x/a b", "https://x/a'b", "https://x/$HOME"} {
		if checkWebhook(bad, "HOOK") == nil {
			t.Errorf("webhook %q accepted", bad)
		}
	}
	if err := checkWebhook("https://api.telegram.org/bot123:ABC/sendMessage", "HOOK"); err != nil {
		t.Error(err)
	}
}

// With workers, the watch also puts a drop-in on each worker's template
// and a unit for its OnFailure=, names the workers' instances to the
// script, and takes all of it away with the rest.
func TestRenderWatchWorkers(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(minimal+"notify: {url_env: HOOK}\nwatch: {}\nworkers:\n  - {unit: my-app-worker, count: 2}\n  - {unit: mailer, count: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]string{}
	for _, f := range Render(cfg, []int{3000}) {
		byPath[f.Path] = f.Content
	}
	if script := byPath["/usr/local/lib/rollout/my-app-watch"]; !strings.Contains(script, "WORKERS='my-app-worker@1 my-app-worker@2 mailer@1'\n") {
		t.Errorf("the script does not name the workers")
	}
	dropIn := byPath["/etc/systemd/system/mailer@.service.d/rollout-watch.conf"]
	if !strings.Contains(dropIn, "OnFailure=rollout-alert-my-app-mailer@%i.service\n") || !strings.Contains(dropIn, "ExecStopPost=-+/usr/local/lib/rollout/my-app-watch worker-stop %p@%i\n") {
		t.Errorf("the worker's drop-in:\n%s", dropIn)
	}
	if alert := byPath["/etc/systemd/system/rollout-alert-my-app-mailer@.service"]; !strings.Contains(alert, "ExecStart=/usr/local/lib/rollout/my-app-watch worker-start-limit mailer@%i\n") {
		t.Errorf("the worker's alert unit:\n%s", alert)
	}
	un := strings.Join(cfg.unwatchAction(), " ")
	for _, p := range []string{"/etc/systemd/system/my-app-worker@.service.d/rollout-watch.conf", "/etc/systemd/system/rollout-alert-my-app-mailer@.service", "/etc/systemd/system/mailer@.service.d"} {
		if !strings.Contains(un, p) {
			t.Errorf("unwatch leaves %s: %s", p, un)
		}
	}
}
