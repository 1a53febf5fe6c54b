package deployer

import (
	"bytes"
	"strconv"
	"strings"
	"text/template"
	"time"
)

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
	// check is how setup checks the new file before it takes the old
	// one's place (checkSudoers); "" for none.
	check string
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

var unitTmpl = template.Must(template.New("unit").Parse(`# Written by rollout setup: edit rollout.yaml's {{.Section}} section, not this file.
[Unit]
Description={{.Description}}
After=network.target
StartLimitIntervalSec={{.StartWindow}}
StartLimitBurst={{.StartLimit}}

[Service]
Type=simple
User={{.User}}
Group={{.User}}
SupplementaryGroups={{.Group}}
Environment={{.Environment}}
EnvironmentFile={{.EnvFile}}
{{if .SecretsEnv}}EnvironmentFile=-{{.SecretsEnv}}
{{end}}WorkingDirectory={{.WorkDir}}
ExecStart={{.ExecStart}}
Restart=on-failure
RestartSec={{.RestartSec}}
{{if .StopTimeout}}TimeoutStopSec={{.StopTimeout}}
{{end}}MemoryMax={{.MemoryMax}}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths={{.LogDir}}{{if .UploadsDir}} {{.UploadsDir}}{{end}}
StandardOutput=append:{{.LogDir}}/{{.Stdout}}.log
StandardError=append:{{.LogDir}}/{{.Stderr}}.log

[Install]
WantedBy=multi-user.target
`))

// unitValues are unitTmpl's values common to the instances' and the
// workers' units.
func unitValues(cfg *Config) map[string]any {
	s := cfg.setupDefaults()
	return map[string]any{"App": cfg.App, "User": s.User, "Group": s.Group, "EnvFile": s.EnvFile,
		"RestartSec": seconds(s.RestartDelay), "MemoryMax": s.MemoryMax, "LogDir": s.LogDir, "UploadsDir": s.UploadsDir,
		"StartWindow": seconds(s.StartWindow), "StartLimit": s.StartLimit}
}

// seconds is d as systemd reads it: "1.5s".
func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s" }

// renderWorker is w's template unit: no port; its instances are %p@1,
// %p@2, …, each with its own link under the release root
// (instances/%p@%i) and its own log file.
func renderWorker(cfg *Config, w Worker) ManagedFile {
	v := unitValues(cfg)
	workDir, secretsEnv := cfg.setupDefaults().AppDir, ""
	if r := cfg.Release; r != nil {
		workDir = strings.TrimRight(r.Root, "/") + "/instances/%p@%i"
		if cfg.secretsEnvFile() != "" {
			secretsEnv = workDir + "/" + secretsDir + "/env"
		}
	}
	for k, x := range map[string]any{"Section": "workers", "Description": cfg.App + " worker %p@%i", "Environment": "NODE_ENV=production WORKER=%i",
		"WorkDir": workDir, "ExecStart": w.ExecStart, "SecretsEnv": secretsEnv, "StopTimeout": seconds(w.StopTimeout), "Stdout": "%p-%i", "Stderr": "%p-%i"} {
		v[k] = x
	}
	var unit bytes.Buffer
	_ = unitTmpl.Execute(&unit, v)
	return ManagedFile{Path: w.unitFile(), Owner: "root:root", Mode: "644", Content: unit.String()}
}

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
	v := unitValues(cfg)
	for k, x := range map[string]any{"Section": "setup", "Description": cfg.App + " instance on port %i", "Environment": "NODE_ENV=production PORT=%i",
		"WorkDir": s.workDir, "ExecStart": s.ExecStart, "SecretsEnv": cfg.secretsEnvFile(), "Stdout": "stdout-%i", "Stderr": "stderr-%i"} {
		v[k] = x
	}
	var unit bytes.Buffer
	_ = unitTmpl.Execute(&unit, v)
	files := []ManagedFile{{Path: cfg.unitFile(), Owner: "root:root", Mode: "644", Content: unit.String()}}
	for _, w := range cfg.setupWorkers() {
		files = append(files, renderWorker(cfg, w))
	}
	files = append(files, appHostBalancerFiles(cfg, ports)...)
	files = append(files, ManagedFile{Path: s.EnvFile, Owner: "root:root", Mode: "600", Content: "", Keep: true})
	if w := cfg.Watch; w != nil {
		webhook := w.webhook
		if webhook == "" {
			webhook = "<the URL in $" + cfg.Notify.URLEnv + ">"
		}
		files = append(files, cfg.watchFiles(ports, webhook)...)
	}
	files = append(files, cfg.logRotateFiles()...)
	return append(files, cfg.helperFiles()...)
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
	if cfg.UsesHelper() {
		dirs = append(dirs, managedDir{helperDir, "root:root", "755"})
	}
	return dirs
}

func dirOf(p string) string { return p[:strings.LastIndex(p, "/")] }
