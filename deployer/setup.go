package deployer

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/pmezard/go-difflib/difflib"

	"github.com/rollout-dev/rollout/sshexec"
)

// SetupConfig is the setup section: how `rollout setup` prepares a host
// the way the seed article's playbook did. Empty fields take defaults
// derived from the app's name (see setupDefaults).
type SetupConfig struct {
	User         string // runs the app: a system user without a login shell
	Group        string // can read the code (the web server's group)
	AppDir       string // the code: root:Group, directories 2750
	ExecStart    string
	EnvFile      string // created empty (0600 root) if missing, never overwritten
	LogDir       string // per-instance stdout/stderr logs
	UploadsDir   string // optional: writable by User (2770 User:Group)
	MemoryMax    string
	RestartDelay time.Duration
	StartLimit   int           // StartLimitBurst
	StartWindow  time.Duration // StartLimitIntervalSec
	SiteFile     string        // the Nginx site proxying to the upstream
	Listen       int
	ServerName   string

	workDir string // the unit's WorkingDirectory, from setupDefaults
}

// setupSection is the setup: section.
func setupSection(s *SetupConfig) field {
	return section("setup",
		str("user", &s.User),
		str("group", &s.Group),
		str("app_dir", &s.AppDir),
		str("exec_start", &s.ExecStart),
		str("env_file", &s.EnvFile),
		str("log_dir", &s.LogDir),
		str("uploads_dir", &s.UploadsDir),
		str("memory_max", &s.MemoryMax),
		duration("restart_sec", &s.RestartDelay),
		integer("start_limit_burst", &s.StartLimit),
		duration("start_limit_interval", &s.StartWindow),
		str("site_file", &s.SiteFile),
		integer("listen", &s.Listen),
		str("server_name", &s.ServerName),
	)
}

// setupDefaults fills what the setup section leaves out. With a release:
// section the instances run from Root/instances/PORT instead of AppDir.
func (c *Config) setupDefaults() SetupConfig {
	s := c.Setup
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&s.User, c.App)
	def(&s.Group, "www-data")
	def(&s.AppDir, "/var/www/"+c.App)
	s.workDir = s.AppDir
	if c.Release != nil {
		s.workDir = c.Release.Root + "/instances/%i"
	}
	def(&s.ExecStart, "/usr/bin/node "+strings.TrimRight(s.workDir, "/")+"/server.js")
	def(&s.EnvFile, "/etc/"+c.App+"/.env")
	def(&s.LogDir, "/var/log/"+c.App)
	def(&s.MemoryMax, "1G")
	def(&s.SiteFile, "/etc/nginx/conf.d/"+c.App+"-site.conf")
	def(&s.ServerName, "_")
	if s.RestartDelay == 0 {
		s.RestartDelay = 2 * time.Second
	}
	if s.StartLimit == 0 {
		s.StartLimit = 3
	}
	if s.StartWindow == 0 {
		s.StartWindow = time.Minute
	}
	if s.Listen == 0 {
		s.Listen = 80
	}
	return s
}

var (
	memoryRE     = regexp.MustCompile(`^[0-9]+[KMGT]?$|^[0-9]{1,2}%$|^infinity$`)
	serverNameRE = regexp.MustCompile(`^[A-Za-z0-9_.*-]+( [A-Za-z0-9_.*-]+)*$`)
	// execRE is a program and its arguments; "%i" (the instance's port,
	// for systemd) may be in any of them.
	execRE = regexp.MustCompile(`^/([A-Za-z0-9_./-]|%i)+( ([A-Za-z0-9_./=:,+@-]|%i)+)*$`)
)

func (c *Config) setupProblems() []problem {
	var ps []problem
	check := func(key string, err error) {
		if err != nil {
			ps = append(ps, problem{key: key, err: err})
		}
	}
	if match(appRE, c.App, "") != nil {
		return nil // reported as app; the defaults derive from it
	}
	s := c.setupDefaults()
	check("setup.user", match(userRE, s.User, `a user name: lower-case letters, digits, "_", "." or "-"`))
	check("setup.group", match(userRE, s.Group, `a group name: lower-case letters, digits, "_", "." or "-"`))
	for key, v := range map[string]string{"setup.app_dir": s.AppDir, "setup.env_file": s.EnvFile, "setup.log_dir": s.LogDir, "setup.site_file": s.SiteFile} {
		check(key, validPath(v, false))
	}
	if s.UploadsDir != "" {
		check("setup.uploads_dir", validPath(s.UploadsDir, false))
	}
	if c.Setup.ExecStart != "" || c.Release == nil || validReleaseRoot(c.Release.Root) == nil {
		// (The default from a bad release.root is reported as release.root.)
		check("setup.exec_start", match(execRE, s.ExecStart, "an absolute program path and plain arguments (letters, digits, . _ / = : , + @ - and %i)"))
	}
	check("setup.memory_max", match(memoryRE, s.MemoryMax, `a size like 512M or 1G, a percentage, or infinity`))
	if s.RestartDelay < 0 || s.StartWindow < 0 {
		check("setup.restart_sec", errors.New("must not be negative"))
	}
	if s.StartLimit < 1 {
		check("setup.start_limit_burst", fmt.Errorf("must be at least 1, got %d", s.StartLimit))
	}
	check("setup.listen", validPort(s.Listen))
	check("setup.server_name", match(serverNameRE, s.ServerName, "server names separated by spaces"))
	return ps
}

// ManagedFile is a file setup writes.
type ManagedFile struct {
	Path    string `json:"path"`
	Owner   string `json:"owner"` // user:group
	Mode    string `json:"mode"`  // octal, as stat %a prints it
	Content string `json:"content"`
	// Keep: an existing file is left as it is (the upstream rollout edits,
	// the env file holding secrets).
	Keep bool `json:"keep,omitempty"`
	// Secret: its content is never shown (the webhook's URL): a dry run
	// says it changes, not how.
	Secret bool `json:"secret,omitempty"`
	// Host is the load balancer host the file is for (lb:); "": every
	// app host.
	Host string `json:"host,omitempty"`
	// Doc: setup never writes it; it says what to add by hand (HAProxy's
	// server lines).
	Doc bool `json:"doc,omitempty"`
}

// unitFile is the template unit's path: my-app@{port} -> my-app@.service.
func (c *Config) unitFile() string {
	return "/etc/systemd/system/" + strings.Replace(strings.TrimSuffix(c.unitTemplate(), ".service"), "{port}", "", 1) + ".service"
}

var unitTmpl = template.Must(template.New("unit").Parse(`# Written by rollout setup: edit rollout.yaml's setup section, not this file.
[Unit]
Description={{.App}} instance on port %i
After=network.target
StartLimitIntervalSec={{.StartWindow}}
StartLimitBurst={{.StartLimit}}

[Service]
Type=simple
User={{.User}}
Group={{.User}}
SupplementaryGroups={{.Group}}
Environment=NODE_ENV=production PORT=%i
EnvironmentFile={{.EnvFile}}
WorkingDirectory={{.WorkDir}}
ExecStart={{.ExecStart}}
Restart=on-failure
RestartSec={{.RestartSec}}
MemoryMax={{.MemoryMax}}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths={{.LogDir}}{{if .UploadsDir}} {{.UploadsDir}}{{end}}
StandardOutput=append:{{.LogDir}}/stdout-%i.log
StandardError=append:{{.LogDir}}/stderr-%i.log

[Install]
WantedBy=multi-user.target
`))

var siteTmpl = template.Must(template.New("site").Parse(`# Written by rollout setup: edit rollout.yaml's setup section, not this file.
# The access log's upstream fields are what rollout's bake reads.
log_format rollout_{{.App}} {{.LogFormat}};
server {
    listen {{.Listen}};
    server_name {{.ServerName}};
    access_log {{.AccessLog}} rollout_{{.App}};
{{.StatusLocation}}    location / {
        proxy_pass http://{{.Upstream}};
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
    }
}
`))

// renderSite is the Nginx site that sends requests to the upstream.
func renderSite(cfg *Config) string {
	s := cfg.setupDefaults()
	status := ""
	if cfg.Watch != nil {
		status = cfg.statusLocation()
	}
	var site bytes.Buffer
	_ = siteTmpl.Execute(&site, map[string]any{"Listen": s.Listen, "ServerName": s.ServerName, "Upstream": cfg.Nginx.Upstream,
		"App": cfg.App, "LogFormat": LogFormat, "AccessLog": cfg.AccessLogFile(), "StatusLocation": status})
	return site.String()
}

// Render returns the files setup manages on each app host, for the given
// instances.
func Render(cfg *Config, ports []int) []ManagedFile {
	s := cfg.setupDefaults()
	secs := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s" }
	var unit, site, up bytes.Buffer
	_ = unitTmpl.Execute(&unit, map[string]any{"App": cfg.App, "User": s.User, "Group": s.Group, "EnvFile": s.EnvFile,
		"WorkDir": s.workDir, "ExecStart": s.ExecStart, "RestartSec": secs(s.RestartDelay), "MemoryMax": s.MemoryMax,
		"LogDir": s.LogDir, "UploadsDir": s.UploadsDir, "StartWindow": secs(s.StartWindow), "StartLimit": s.StartLimit})
	site.WriteString(renderSite(cfg))
	fmt.Fprintf(&up, "# Written by rollout setup; rollout marks servers down and up while it deploys.\nupstream %s {\n", cfg.Nginx.Upstream)
	for _, p := range ports {
		fmt.Fprintf(&up, "    server %s:%d;\n", cfg.Nginx.ServerAddress, p)
	}
	up.WriteString("}\n")
	files := []ManagedFile{
		{Path: cfg.unitFile(), Owner: "root:root", Mode: "644", Content: unit.String()},
		{Path: cfg.Nginx.UpstreamFile, Owner: "root:root", Mode: "644", Content: up.String(), Keep: true},
		{Path: s.SiteFile, Owner: "root:root", Mode: "644", Content: site.String()},
		{Path: s.EnvFile, Owner: "root:root", Mode: "600", Content: "", Keep: true},
	}
	if cfg.LB != nil {
		// Nginx is on the balancers (lb:), not beside the instances.
		files = slices.Delete(files, 1, 3)
	}
	if w := cfg.Watch; w != nil {
		webhook := w.webhook
		if webhook == "" {
			webhook = "<the URL in $" + cfg.Notify.URLEnv + ">"
		}
		files = append(files, cfg.watchFiles(ports, webhook)...)
	}
	return files
}

// managedDir is a directory setup makes sure of.
type managedDir struct{ path, owner, mode string }

// setupDirs are the directories setup makes sure of, parents first: the
// code's (AppDir, or with a release: section its Root and the directories
// in it), the logs', the env file's, the uploads'.
func setupDirs(cfg *Config) []managedDir {
	s := cfg.setupDefaults()
	code := []managedDir{{s.AppDir, "root:" + s.Group, "2750"}}
	if r := cfg.Release; r != nil {
		code = []managedDir{
			{r.Root, "root:" + s.Group, "2750"},
			{r.Root + "/releases", "root:" + s.Group, "2750"},
			{r.Root + "/instances", "root:" + s.Group, "2750"},
			{r.Root + "/shared", "root:" + s.Group, "2750"},
			{r.Root + "/.rollout", "root:root", "700"},
		}
	}
	dirs := append(code,
		managedDir{s.LogDir, s.User + ":" + s.User, "755"},
		managedDir{dirOf(s.EnvFile), "root:root", "750"},
	)
	if s.UploadsDir != "" {
		dirs = append(dirs, managedDir{s.UploadsDir, s.User + ":" + s.Group, "2770"})
	}
	if cfg.Watch != nil {
		dirs = append(dirs, cfg.watchDirs()...)
	}
	return dirs
}

func dirOf(p string) string { return p[:strings.LastIndex(p, "/")] }

// SetupResult is what setup did, or would do, on one host.
type SetupResult struct {
	Host    string   `json:"host"`
	Changes []string `json:"changes"`
	Diff    string   `json:"diff,omitempty"` // with DryRun
	// Ports are the host's instances (instances: auto resolved).
	Ports []int `json:"ports,omitempty"`
}

const setupSep = "@@rollout-setup@@"

// setupInspect prints, for the user and each managed directory and file,
// what is there: "user UID GROUPS", then per path "PATH OWNER MODE" and a
// file's content in base64 (or "PATH missing").
func (r sshRemote) cmdSetupInspect(files []ManagedFile, dirs []managedDir, unit func(int) string, ports []int) string {
	s := r.cfg.setupDefaults()
	var b strings.Builder
	fmt.Fprintf(&b, "echo \"user $(id -u %s 2>/dev/null || echo none) $(id -nG %s 2>/dev/null | tr ' ' ,)\"\n", sshexec.Quote(s.User), sshexec.Quote(s.User))
	for _, d := range dirs {
		fmt.Fprintf(&b, "echo %s; stat -c '%%U:%%G %%a' -- %s 2>/dev/null || echo missing\n", setupSep, sshexec.Quote(d.path))
	}
	inspectFiles(&b, files)
	var units []string
	for _, p := range ports {
		units = append(units, sshexec.Quote(unit(p)))
	}
	fmt.Fprintf(&b, "echo %s; systemctl is-enabled -- %s 2>/dev/null || true\n", setupSep, strings.Join(units, " "))
	// The watch: the timer's state and curl; without a watch: section,
	// whether an earlier setup installed one (then it is removed).
	if r.cfg.Watch != nil {
		fmt.Fprintf(&b, "echo %s; systemctl is-enabled -- %s 2>/dev/null || true; systemctl is-active -- %s 2>/dev/null || true; command -v curl >/dev/null && echo curl || echo no-curl\n",
			setupSep, sshexec.Quote(r.cfg.statusUnit()+".timer"), sshexec.Quote(r.cfg.statusUnit()+".timer"))
	} else {
		fmt.Fprintf(&b, "echo %s; if [ -e %s ] || [ -e %s ]; then echo installed; else echo none; fi\n",
			setupSep, sshexec.Quote(r.cfg.watchDropIn()), sshexec.Quote(r.cfg.watchScript()))
	}
	// What the app's code is: "current" (the release layout is in place),
	// "code" (the seed's app directory holds it), or "empty".
	code := "echo empty"
	if r.cfg.Release != nil {
		code = fmt.Sprintf("if [ -L %s/current ]; then echo current; elif [ -n \"$(ls -A -- %s 2>/dev/null)\" ]; then echo code; else echo empty; fi",
			sshexec.Quote(r.releaseRoot()), sshexec.Quote(s.AppDir))
	} else {
		code = fmt.Sprintf("if [ -n \"$(ls -A -- %s 2>/dev/null)\" ]; then echo code; else echo empty; fi", sshexec.Quote(s.AppDir))
	}
	fmt.Fprintf(&b, "echo %s; %s", setupSep, code)
	return r.privScript(b.String())
}

// migrateScript moves a host in the seed's layout to the release layout:
// the app directory's code is copied into a first release, id, that every
// instance's link and current name, logged ok. Running instances are not
// touched: they run the same code from the new place at their next
// restart. It runs before the unit file changes.
func (r sshRemote) migrateScript(id string, ports []int, e ReleaseEntry) string {
	s := r.cfg.setupDefaults()
	root := r.releaseRoot()
	rel := sshexec.Quote(root + "/releases/" + id)
	line, _ := json.Marshal(e)
	var b strings.Builder
	fmt.Fprintf(&b, "rm -rf -- %s.partial\nmkdir -p -- %s.partial\ncp -a -- %s/. %s.partial/\n", rel, rel, sshexec.Quote(s.AppDir), rel)
	fmt.Fprintf(&b, "chown -R -- %s %s.partial\nmv -T -- %s.partial %s\n", sshexec.Quote("root:"+s.Group), rel, rel, rel)
	for _, p := range ports {
		link := sshexec.Quote(fmt.Sprintf("%s/instances/%d", root, p))
		tmp := sshexec.Quote(fmt.Sprintf("%s/instances/.%d.tmp", root, p))
		fmt.Fprintf(&b, "ln -sfn -- %s %s\nmv -T -- %s %s\n", sshexec.Quote("../releases/"+id), tmp, tmp, link)
	}
	fmt.Fprintf(&b, "ln -sfn -- %s %s\nmv -T -- %s %s\n", sshexec.Quote("releases/"+id), sshexec.Quote(root+"/.current.tmp"),
		sshexec.Quote(root+"/.current.tmp"), sshexec.Quote(root+"/current"))
	fmt.Fprintf(&b, "printf '%%s\\n' %s >>%s\n", sshexec.Quote(string(line)), sshexec.Quote(root+"/.rollout/releases.jsonl"))
	return b.String()
}

// Setup prepares a host: the service user, the directories, the unit, the
// Nginx upstream and site, the env file; then enables the instances (and
// starts them when the app directory holds a release). Only what differs
// is changed; a second run changes nothing. With dryRun nothing changes
// and the result holds a unified diff of every file that would.
//
// A host in the seed's layout (release: set) gets its code moved into a
// first release named after now, which the caller gives every host of the
// fleet, so that the first release has one ID everywhere (a rollback goes
// only to a release that is on every host).
func Setup(ctx context.Context, cfg *Config, host string, conn Conn, dryRun bool, now time.Time) (*SetupResult, error) {
	res := &SetupResult{Host: host}
	if !strings.HasSuffix(cfg.unitFile(), "@.service") {
		return nil, errors.New(`setup writes a template unit: unit must end with "@{port}"`)
	}
	if w := cfg.Watch; w != nil {
		if err := checkWebhook(w.webhook, cfg.Notify.URLEnv); err != nil {
			return nil, err
		}
	}
	r := newSSHRemote(cfg, conn) // what it runs does not depend on the ports
	cfg, err := resolveHost(ctx, cfg, host, r)
	if err != nil {
		return nil, err
	}
	s := cfg.setupDefaults()
	ports := cfg.Ports()
	res.Ports = ports
	files := Render(cfg, ports)
	dirs := setupDirs(cfg)
	out, err := conn.Run(ctx, r.cmdSetupInspect(files, dirs, cfg.UnitName, ports), nil)
	if err != nil {
		return nil, explainRemote(fmt.Errorf("inspect: %w", err), cfg)
	}
	parts := strings.Split(string(out.Stdout), setupSep+"\n")
	if len(parts) != 1+len(dirs)+len(files)+3 {
		return nil, fmt.Errorf("inspect: unexpected output %q", out.Stdout)
	}
	var script strings.Builder
	script.WriteString("set -e\n")
	var stdin bytes.Buffer

	// The user.
	user := strings.Fields(strings.TrimSpace(parts[0]))
	if len(user) < 2 || user[1] == "none" {
		res.Changes = append(res.Changes, "create system user "+s.User)
		fmt.Fprintf(&script, "useradd --system --no-create-home --shell /usr/sbin/nologin --user-group %s\n", sshexec.Quote(s.User))
	}
	if len(user) < 3 || !strings.Contains(","+user[2]+",", ","+s.Group+",") {
		res.Changes = append(res.Changes, fmt.Sprintf("add %s to group %s", s.User, s.Group))
		fmt.Fprintf(&script, "usermod -aG %s %s\n", sshexec.Quote(s.Group), sshexec.Quote(s.User))
	}
	// The directories.
	for i, d := range dirs {
		have := strings.TrimSpace(parts[1+i])
		if have == d.owner+" "+d.mode {
			continue
		}
		if have == "missing" {
			res.Changes = append(res.Changes, fmt.Sprintf("create %s (%s %s)", d.path, d.owner, d.mode))
		} else {
			res.Changes = append(res.Changes, fmt.Sprintf("%s: %s -> %s %s", d.path, have, d.owner, d.mode))
		}
		// chmod keeps a directory's setgid bit (inherited from a setgid
		// parent) under a numeric mode of 4 digits or fewer: 5 digits set
		// exactly this mode.
		fmt.Fprintf(&script, "install -d -o %s -g %s -m %s -- %s\nchown %s -- %s\nchmod %s -- %s\n",
			sshexec.Quote(strings.Split(d.owner, ":")[0]), sshexec.Quote(strings.Split(d.owner, ":")[1]), d.mode, sshexec.Quote(d.path),
			sshexec.Quote(d.owner), sshexec.Quote(d.path), strings.Repeat("0", 5-len(d.mode))+d.mode, sshexec.Quote(d.path))
	}
	// A host in the seed's layout: its code becomes the first release,
	// before the unit runs instances from their links.
	code := strings.TrimSpace(parts[len(parts)-1])
	parts = parts[:len(parts)-1]
	watchState := strings.TrimSpace(parts[len(parts)-1])
	parts = parts[:len(parts)-1]
	if cfg.Watch != nil && strings.Contains(watchState, "no-curl") {
		return nil, errors.New("watch: the host has no curl, which its alerts post with (apt install curl)")
	}
	if cfg.Release != nil && code == "code" {
		id := ReleaseID(now, "initial")
		res.Changes = append(res.Changes, fmt.Sprintf("move the code in %s into release %s under %s (every instance's link and current name it; running instances are not restarted)",
			s.AppDir, id, cfg.Release.Root))
		script.WriteString(r.migrateScript(id, ports, ReleaseEntry{ID: id, Version: "initial", User: NewLockInfo("setup", "").User, Time: time.Now().UTC(), Outcome: ReleaseOK}))
	}
	// The files, each through stdin, in order.
	fw := &fileWriter{host: host, dryRun: dryRun, res: res, script: &script, stdin: &stdin}
	for i, f := range files {
		nginx := strings.HasPrefix(f.Path, "/etc/nginx/") || f.Path == cfg.Nginx.UpstreamFile || f.Path == s.SiteFile
		if err := fw.file(f, parts[1+len(dirs)+i], nginx); err != nil {
			return nil, err
		}
	}
	unitChanged := fw.unitChanged
	if cfg.Watch == nil && watchState == "installed" {
		res.Changes = append(res.Changes, "remove the watch an earlier setup installed (no watch: section): "+cfg.statusUnit()+".timer, the drop-in, the alert unit, the script and the webhook file")
		script.WriteString(cfg.removeWatchScript())
		unitChanged = true
	}
	if unitChanged {
		script.WriteString("systemctl daemon-reload\n")
	}
	fw.nginxTail(cfg.Nginx)
	// The instances: enabled; started when a release is in place.
	enabled := strings.Fields(parts[len(parts)-1])
	var toEnable []string
	for i, p := range ports {
		if i >= len(enabled) || enabled[i] != "enabled" {
			toEnable = append(toEnable, sshexec.Quote(cfg.UnitName(p)))
		}
	}
	if len(toEnable) > 0 {
		where := s.AppDir + " holds the code"
		if cfg.Release != nil {
			where = "a release is in place"
		}
		res.Changes = append(res.Changes, "enable "+strings.Join(toEnable, " ")+" (started if "+where+")")
		fmt.Fprintf(&script, "systemctl enable -- %s\n", strings.Join(toEnable, " "))
		if code != "empty" {
			fmt.Fprintf(&script, "systemctl start -- %s\n", strings.Join(toEnable, " "))
		}
	}
	if w := cfg.Watch; w != nil && watchState != "enabled\nactive\ncurl" {
		res.Changes = append(res.Changes, "enable and start "+cfg.statusUnit()+".timer (status.json and alerts every "+w.Interval.String()+")")
		fmt.Fprintf(&script, "systemctl enable --now -- %s\n", sshexec.Quote(cfg.statusUnit()+".timer"))
	}
	res.Diff = fw.diff.String()
	if dryRun || len(res.Changes) == 0 {
		return res, nil
	}
	if _, err := conn.Run(ctx, r.privScript(script.String()), &stdin); err != nil {
		return res, explainRemote(fmt.Errorf("apply: %w", err), cfg)
	}
	return res, nil
}

// fileWriter adds to a setup script the writes of the managed files that
// differ from what the inspection found, each through stdin, and the Nginx
// test (putting the previous files back when it fails) and reload when an
// Nginx file changed.
type fileWriter struct {
	host   string
	dryRun bool
	res    *SetupResult
	script *strings.Builder
	stdin  *bytes.Buffer

	diff                      strings.Builder
	restore                   strings.Builder // puts the nginx files back if nginx -t fails
	prevs                     []string
	unitChanged, nginxChanged bool
}

// file writes f unless found (the inspection's part for it: "missing", or
// "OWNER MODE" and the content in base64) shows it as it should be; nginx:
// it is an Nginx file.
func (w *fileWriter) file(f ManagedFile, found string, nginx bool) error {
	lines := strings.SplitN(strings.TrimSpace(found), "\n", 2)
	exists := lines[0] != "missing"
	var old []byte
	if exists && len(lines) == 2 {
		var err error
		if old, err = base64.StdEncoding.DecodeString(strings.TrimSpace(lines[1])); err != nil {
			return fmt.Errorf("inspect %s: %w", f.Path, err)
		}
	}
	if exists && f.Keep {
		return nil
	}
	meta := f.Owner + " " + f.Mode
	if exists && string(old) == f.Content && lines[0] == meta {
		return nil
	}
	res, script := w.res, w.script
	switch {
	case !exists:
		res.Changes = append(res.Changes, "write "+f.Path)
	case string(old) != f.Content:
		res.Changes = append(res.Changes, "update "+f.Path)
	default:
		res.Changes = append(res.Changes, fmt.Sprintf("%s: %s -> %s", f.Path, lines[0], meta))
	}
	if w.dryRun && f.Secret {
		fmt.Fprintf(&w.diff, "--- %s:%s\n+++ %s:%s (rollout setup)\n(a secret: it changes, the content is not shown)\n", w.host, f.Path, w.host, f.Path)
	} else if w.dryRun {
		d, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{A: difflib.SplitLines(string(old)), B: difflib.SplitLines(f.Content),
			FromFile: w.host + ":" + f.Path, ToFile: w.host + ":" + f.Path + " (rollout setup)", Context: 3})
		w.diff.WriteString(d)
	}
	owner := strings.Split(f.Owner, ":")
	// head -c reads exactly this file's bytes from the shared stdin.
	fmt.Fprintf(script, "t=$(mktemp -- %s.rollout.XXXXXX)\nhead -c %d >\"$t\"\nchown %s:%s -- \"$t\"\nchmod %s -- \"$t\"\n",
		sshexec.Quote(f.Path), len(f.Content), sshexec.Quote(owner[0]), sshexec.Quote(owner[1]), f.Mode)
	if nginx {
		w.nginxChanged = true
		if exists {
			fmt.Fprintf(script, "cp -p -- %s %s.rollout-prev\n", sshexec.Quote(f.Path), sshexec.Quote(f.Path))
			fmt.Fprintf(&w.restore, "mv -f -- %s.rollout-prev %s\n", sshexec.Quote(f.Path), sshexec.Quote(f.Path))
			w.prevs = append(w.prevs, sshexec.Quote(f.Path+".rollout-prev"))
		} else {
			fmt.Fprintf(&w.restore, "rm -f -- %s\n", sshexec.Quote(f.Path))
		}
	}
	if strings.HasPrefix(f.Path, "/etc/systemd/system/") {
		w.unitChanged = true
	}
	fmt.Fprintf(script, "mv -f -- \"$t\" %s\n", sshexec.Quote(f.Path))
	w.stdin.WriteString(f.Content)
	return nil
}

// nginxTail tests the Nginx config when an Nginx file changed (putting
// the previous files back if it fails) and reloads Nginx.
func (w *fileWriter) nginxTail(n NginxConfig) {
	if !w.nginxChanged {
		return
	}
	reload := "kill -HUP \"$(cat -- " + sshexec.Quote(n.PIDFile) + ")\""
	if n.ReloadCommand != "" {
		reload = n.ReloadCommand
	}
	fmt.Fprintf(w.script, "if ! out=$(%s 2>&1); then\n%s  printf 'nginx config test failed; restored the previous files\\n%%s\\n' \"$out\" >&2\n  exit 65\nfi\n",
		n.TestCommand, w.restore.String())
	if len(w.prevs) > 0 {
		fmt.Fprintf(w.script, "rm -f -- %s\n", strings.Join(w.prevs, " "))
	}
	fmt.Fprintf(w.script, "if [ -s %s ]; then %s; fi\n", sshexec.Quote(n.PIDFile), reload)
}

// inspectFiles prints, per file, a separator line then "OWNER MODE" and its
// content in base64, or "missing".
func inspectFiles(b *strings.Builder, files []ManagedFile) {
	for _, f := range files {
		fmt.Fprintf(b, "echo %s; if [ -e %s ]; then stat -c '%%U:%%G %%a' -- %s; base64 -w0 -- %s; echo; else echo missing; fi\n",
			setupSep, sshexec.Quote(f.Path), sshexec.Quote(f.Path), sshexec.Quote(f.Path))
	}
}

// BalancerFiles are the files of the load balancer hosts (lb:), for the
// instances of each app host (ports, by host): with nginx, the upstream
// file naming every instance at its host's address (written only when
// missing: rollout edits it while it deploys) and the site sending
// requests to it; with haproxy, the backend's server lines, which setup
// does not write.
func BalancerFiles(cfg *Config, ports map[string][]int) []ManagedFile {
	lb := cfg.LB
	if lb == nil {
		return nil
	}
	var lines strings.Builder
	if lb.Driver == lbHAProxy {
		fmt.Fprintf(&lines, "# Add to haproxy.cfg (rollout drains and readies these servers through\n# the runtime API: \"stats socket %s level admin\" in global).\nbackend %s\n", lb.Socket, lb.Backend)
		for _, h := range cfg.Hosts {
			for _, p := range ports[h] {
				fmt.Fprintf(&lines, "    server %s-%d %s:%d check\n", h, p, cfg.lbAddress(h), p)
			}
		}
		return []ManagedFile{{Path: "/etc/haproxy/haproxy.cfg", Owner: "root:root", Mode: "644", Content: lines.String(), Doc: true}}
	}
	fmt.Fprintf(&lines, "# Written by rollout setup; rollout marks servers down and up while it deploys.\nupstream %s {\n", cfg.Nginx.Upstream)
	for _, h := range cfg.Hosts {
		for _, p := range ports[h] {
			fmt.Fprintf(&lines, "    server %s:%d;\n", cfg.lbAddress(h), p)
		}
	}
	lines.WriteString("}\n")
	var files []ManagedFile
	for _, h := range lb.Hosts {
		files = append(files,
			ManagedFile{Host: h, Path: cfg.Nginx.UpstreamFile, Owner: "root:root", Mode: "644", Content: lines.String(), Keep: true},
			ManagedFile{Host: h, Path: cfg.setupDefaults().SiteFile, Owner: "root:root", Mode: "644", Content: renderSite(cfg)})
	}
	return files
}

// SetupBalancer writes the nginx files of one load balancer host (lb:) as
// BalancerFiles says, then tests and reloads its Nginx; only what differs
// is changed. With dryRun nothing changes and the result holds a diff.
func SetupBalancer(ctx context.Context, cfg *Config, host string, conn Conn, dryRun bool, ports map[string][]int) (*SetupResult, error) {
	res := &SetupResult{Host: host}
	var files []ManagedFile
	for _, f := range BalancerFiles(cfg, ports) {
		if f.Host == host && !f.Doc {
			files = append(files, f)
		}
	}
	if len(files) == 0 {
		return res, nil
	}
	lc := cfg.lbSide()
	r := newSSHRemote(lc, conn)
	var b strings.Builder
	inspectFiles(&b, files)
	out, err := conn.Run(ctx, r.privScript(b.String()), nil)
	if err != nil {
		return nil, explainRemote(fmt.Errorf("inspect: %w", err), lc)
	}
	parts := strings.Split(string(out.Stdout), setupSep+"\n")
	if len(parts) != 1+len(files) {
		return nil, fmt.Errorf("inspect: unexpected output %q", out.Stdout)
	}
	var script strings.Builder
	script.WriteString("set -e\n")
	var stdin bytes.Buffer
	fw := &fileWriter{host: host, dryRun: dryRun, res: res, script: &script, stdin: &stdin}
	for i, f := range files {
		if err := fw.file(f, parts[1+i], true); err != nil {
			return nil, err
		}
	}
	fw.nginxTail(lc.Nginx)
	res.Diff = fw.diff.String()
	if dryRun || len(res.Changes) == 0 {
		return res, nil
	}
	if _, err := conn.Run(ctx, r.privScript(script.String()), &stdin); err != nil {
		return res, explainRemote(fmt.Errorf("apply: %w", err), lc)
	}
	return res, nil
}
