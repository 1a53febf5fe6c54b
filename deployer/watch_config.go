package deployer

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
)

// WatchConfig is the watch: section: what `rollout setup` installs on each
// host so that it alerts between deploys (systemd only: a unit drop-in, a
// oneshot unit and a timer running one script), and serves status.json.
// Its alerts go to the notify: section's webhook.
type WatchConfig struct {
	// MinInterval: at most one alert per instance this often; the ones
	// held back are counted in the next.
	MinInterval time.Duration
	// Interval is how often the timer writes status.json and looks for
	// instances that turned bad or recovered.
	Interval time.Duration
	// StatusPath is where the site serves status.json.
	StatusPath string
	// Allow are the addresses (or CIDR ranges) allowed to read it.
	Allow []string

	webhook string // the URL setup stores on each host (SetWebhook)
}

// SetWebhook gives setup the webhook URL to store on each host (from the
// environment variable notify.url_env names; never from the file).
func (w *WatchConfig) SetWebhook(url string) { w.webhook = url }

// checkWebhook refuses a URL that is not http(s) or that the host's env
// file could not hold as one quoted word.
func checkWebhook(raw, env string) error {
	if raw == "" {
		return fmt.Errorf("watch: $%s is empty: rollout setup stores the webhook's URL on each host (root only, 0600)", env)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || strings.ContainsAny(raw, "\"' \t\r\n\\`$") {
		return fmt.Errorf("watch: $%s is not an http(s) URL without quotes, blanks or backslashes", env)
	}
	return nil
}

func defaultWatch() *WatchConfig {
	return &WatchConfig{MinInterval: 10 * time.Minute, Interval: time.Minute, StatusPath: "/.rollout/status.json", Allow: []string{"127.0.0.1", "::1"}}
}

// watchSection is the watch: section; without one c.Watch stays nil.
func watchSection(c *Config) field {
	w := defaultWatch()
	fields := []field{
		duration("min_interval", &w.MinInterval),
		duration("interval", &w.Interval),
		str("status_path", &w.StatusPath),
		strs("allow", &w.Allow),
	}
	return one("watch", func(p *parser, key string) {
		if p.fields(key, fields) {
			c.Watch = w
		}
	})
}

func (c *Config) checkWatch(cs *checks) {
	w := c.Watch
	if w == nil {
		return
	}
	if c.Notify == nil {
		cs.add("watch", errors.New("needs a notify: section: the webhook its alerts go to"))
	}
	if w.MinInterval < time.Second {
		cs.add("watch.min_interval", fmt.Errorf("must be at least 1s, got %s", w.MinInterval))
	}
	if w.Interval < 5*time.Second {
		cs.add("watch.interval", fmt.Errorf("must be at least 5s, got %s", w.Interval))
	}
	if !pathRE.MatchString(w.StatusPath) || strings.Contains(w.StatusPath, "..") || !strings.HasSuffix(w.StatusPath, ".json") {
		cs.add("watch.status_path", fmt.Errorf(`must be a URL path of letters, digits, ".", "_", "-" and "/" ending in .json, got %s`, quoteValue(w.StatusPath)))
	}
	if len(w.Allow) == 0 {
		cs.add("watch.allow", errors.New(`must name at least one address (e.g. 127.0.0.1): status.json is never public`))
	}
	for i, a := range w.Allow {
		if _, err := netip.ParsePrefix(a); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(a); err != nil {
			cs.add(fmt.Sprintf("watch.allow[%d]", i), fmt.Errorf("must be an IP address or a CIDR range, got %s", quoteValue(a)))
		}
	}
}

// Where setup puts the watch's pieces on a host.
func (c *Config) watchScript() string   { return "/usr/local/lib/rollout/" + c.App + "-watch" }
func (c *Config) watchEnvFile() string  { return "/etc/rollout/" + c.App + "/webhook.env" }
func (c *Config) watchStateDir() string { return strings.TrimRight(c.StateDir, "/") + "/" + c.App }
func (c *Config) watchStatusFile() string {
	return c.watchStateDir() + "/public/status.json"
}
func (c *Config) alertUnit() string   { return "rollout-alert-" + c.App + "@" }
func (c *Config) watchDropIn() string { return c.unitFile() + ".d/rollout-watch.conf" }

// A worker's pieces of the watch: the drop-in on its template, and the
// unit its OnFailure= starts (one per worker: two workers' instances share
// their numbers).
func (w Worker) watchDropIn() string {
	return "/etc/systemd/system/" + w.Unit + "@.service.d/rollout-watch.conf"
}
func (c *Config) workerAlertUnit(w Worker) string {
	return "rollout-alert-" + c.App + "-" + w.Unit + "@"
}

// workerWatchFiles are the files of the watch for the workers.
func (c *Config) workerWatchFiles() []string {
	var out []string
	for _, w := range c.Workers {
		out = append(out, w.watchDropIn(), "/etc/systemd/system/"+c.workerAlertUnit(w)+".service")
	}
	return out
}

// removeWatchScript takes away what watchFiles installed (the timer
// stopped and disabled first), and status.json.
// unwatchAction removes what setup installed for a watch: section:
// the timer stopped, its files and their directories once empty.
func (c *Config) unwatchAction() setupAction {
	files := []string{c.watchDropIn(), "/etc/systemd/system/" + c.alertUnit() + ".service", "/etc/systemd/system/" + c.statusUnit() + ".service",
		"/etc/systemd/system/" + c.statusUnit() + ".timer", c.watchScript(), c.watchEnvFile(), c.watchStatusFile()}
	files = append(files, c.workerWatchFiles()...)
	dirs := []string{dirOf(c.watchDropIn()), dirOf(c.watchEnvFile())}
	for _, w := range c.Workers {
		dirs = append(dirs, dirOf(w.watchDropIn()))
	}
	a := setupAction{"unwatch", c.statusUnit() + ".timer", strconv.Itoa(len(files))}
	a = append(a, files...)
	a = append(a, strconv.Itoa(len(dirs)))
	return append(a, dirs...)
}
func (c *Config) statusUnit() string { return "rollout-status-" + c.App }

// unitPrefix is the instances' unit name up to the port: "my-app@".
func (c *Config) unitPrefix() string {
	return strings.TrimSuffix(strings.TrimSuffix(c.unitTemplate(), ".service"), "{port}")
}

// watchFiles are the files setup writes for the watch: section; webhook
// is the webhook's URL (a secret: its file is root's, 0600, and shown by
// no diff).
func (c *Config) watchFiles(ports []int, webhook string) []ManagedFile {
	w := c.Watch
	home, spare := c.slotsOf(ports)
	secs := func(d time.Duration) string { return strconv.Itoa(int(d.Round(time.Second).Seconds())) }
	health := c.Health.AttemptTimeout
	if health <= 0 {
		health = 2 * time.Second
	}
	vars := [][2]string{
		{"APP", c.App}, {"UNIT_PREFIX", c.unitPrefix()}, {"PORTS", portWords(home)}, {"SPARE", portWords(spare)},
		{"STATE", c.watchStateDir()}, {"LOCK_STALE", secs(c.LockStaleAfter)}, {"MIN_INTERVAL", secs(w.MinInterval)},
		{"ENV_FILE", c.watchEnvFile()}, {"STATUS_FILE", c.watchStatusFile()}, {"UPSTREAM_FILE", c.Nginx.UpstreamFile},
		{"UPSTREAM", c.Nginx.Upstream}, {"SERVER_ADDR", c.Nginx.ServerAddress}, {"HEALTH_PATH", c.Health.Path},
		{"HEALTH_STATUS", strconv.Itoa(c.Health.Status)}, {"HEALTH_TIMEOUT", secs(health)}, {"SELF", c.watchScript()},
		{"WORKERS", strings.Join(c.WorkerUnits(), " ")},
	}
	body, err := scriptFiles.ReadFile("scripts/host-watch.sh")
	if err != nil {
		panic(err) // embedded
	}
	var script strings.Builder
	script.WriteString("#!/bin/sh\n# Written by rollout setup (the watch: section of rollout.yaml); see below.\n")
	for _, v := range vars {
		fmt.Fprintf(&script, "%s=%s\n", v[0], sshexec.Quote(v[1]))
	}
	script.WriteString(strings.TrimPrefix(string(body), "#!/bin/sh\n"))

	n := c.Notify
	env := fmt.Sprintf("# Written by rollout setup: the webhook of %s's alerts (root only).\nURL=%s\nFORMAT=%s\nCHAT_ID=%s\n",
		c.App, sshexec.Quote(webhook), sshexec.Quote(n.Format), sshexec.Quote(n.TelegramChatID))
	dropIn := fmt.Sprintf(`# Written by rollout setup (watch:): alert when an instance stops with a
# result other than success, and when systemd gives up restarting it.
[Unit]
OnFailure=%s%%i.service

[Service]
ExecStopPost=-+%s stop %%i
`, c.alertUnit(), c.watchScript())
	alert := fmt.Sprintf(`# Written by rollout setup (watch:): started by systemd when %s%%i fails.
[Unit]
Description=rollout alert: %s%%i failed

[Service]
Type=oneshot
ExecStart=%s start-limit %%i
`, c.unitPrefix(), c.unitPrefix(), c.watchScript())
	service := fmt.Sprintf(`# Written by rollout setup (watch:): status.json and alerts for %s.
[Unit]
Description=rollout status of %s

[Service]
Type=oneshot
ExecStart=%s status
`, c.App, c.App, c.watchScript())
	timer := fmt.Sprintf(`# Written by rollout setup (watch:).
[Unit]
Description=rollout status of %s, every %s

[Timer]
OnBootSec=%s
OnUnitActiveSec=%s
AccuracySec=1s

[Install]
WantedBy=timers.target
`, c.App, w.Interval, secs(w.Interval)+"s", secs(w.Interval)+"s")
	files := []ManagedFile{
		{Path: c.watchScript(), Owner: "root:root", Mode: "755", Content: script.String()},
		{Path: c.watchEnvFile(), Owner: "root:root", Mode: "600", Content: env, Secret: true},
		{Path: c.watchDropIn(), Owner: "root:root", Mode: "644", Content: dropIn},
		{Path: "/etc/systemd/system/" + c.alertUnit() + ".service", Owner: "root:root", Mode: "644", Content: alert},
		{Path: "/etc/systemd/system/" + c.statusUnit() + ".service", Owner: "root:root", Mode: "644", Content: service},
		{Path: "/etc/systemd/system/" + c.statusUnit() + ".timer", Owner: "root:root", Mode: "644", Content: timer},
	}
	for _, wk := range c.Workers {
		dropIn := fmt.Sprintf(`# Written by rollout setup (watch:): alert when a worker stops with a
# result other than success, and when systemd gives up restarting it.
[Unit]
OnFailure=%s%%i.service

[Service]
ExecStopPost=-+%s worker-stop %%p@%%i
`, c.workerAlertUnit(wk), c.watchScript())
		alert := fmt.Sprintf(`# Written by rollout setup (watch:): started by systemd when %s@%%i fails.
[Unit]
Description=rollout alert: %s@%%i failed

[Service]
Type=oneshot
ExecStart=%s worker-start-limit %s@%%i
`, wk.Unit, wk.Unit, c.watchScript(), wk.Unit)
		files = append(files,
			ManagedFile{Path: wk.watchDropIn(), Owner: "root:root", Mode: "644", Content: dropIn},
			ManagedFile{Path: "/etc/systemd/system/" + c.workerAlertUnit(wk) + ".service", Owner: "root:root", Mode: "644", Content: alert})
	}
	return files
}

// watchDirs are the directories the watch's files need.
func (c *Config) watchDirs() []managedDir {
	dirs := []managedDir{
		{"/usr/local/lib/rollout", "root:root", "755"},
		{"/etc/rollout", "root:root", "755"},
		{"/etc/rollout/" + c.App, "root:root", "700"},
		{dirOf(c.watchDropIn()), "root:root", "755"},
		{c.watchStateDir(), "root:root", "755"},
		{c.watchStateDir() + "/public", "root:root", "755"},
	}
	for _, w := range c.Workers {
		dirs = append(dirs, managedDir{dirOf(w.watchDropIn()), "root:root", "755"})
	}
	return dirs
}

// statusLocation is the site's location serving status.json.
func (c *Config) statusLocation() string {
	var b strings.Builder
	fmt.Fprintf(&b, "    location = %s {\n", c.Watch.StatusPath)
	for _, a := range c.Watch.Allow {
		fmt.Fprintf(&b, "        allow %s;\n", a)
	}
	fmt.Fprintf(&b, "        deny all;\n        default_type application/json;\n        add_header Cache-Control no-store;\n        alias %s;\n    }\n", c.watchStatusFile())
	return b.String()
}
