package deployer

import (
	"github.com/rollout-dev/rollout/internal/secrets"

	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRenderGolden(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(validConfig+`setup:
  user: nodeuser
  uploads_dir: /var/www/my-app/uploads
  memory_max: 512M
  server_name: example.com www.example.com
`))
	if err != nil {
		t.Fatal(err)
	}
	files := Render(cfg, cfg.Ports())
	b, err := json.MarshalIndent(files, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "render.json", append(b, '\n'))
	unit := files[0].Content
	for _, want := range []string{"User=nodeuser", "ReadWritePaths=/var/log/my-app /var/www/my-app/uploads", "MemoryMax=512M", "ProtectSystem=strict"} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	if files[0].Path != "/etc/systemd/system/my-app@.service" || !files[1].Keep || !files[3].Keep {
		t.Errorf("paths or keep flags: %+v", files)
	}
}

func TestSetupConfigErrors(t *testing.T) {
	for _, tt := range []struct{ setup, want string }{
		{"  exec_start: node server.js; rm -rf /\n", "setup.exec_start: must be an absolute program path"},
		{"  memory_max: lots\n", "setup.memory_max: must be a size like 512M"},
		{"  user: Root\n", "setup.user: must be a user name"},
		{"  app_dir: var/www\n", "setup.app_dir: must be an absolute path"},
		{"  server_name: 'a;b'\n", "setup.server_name: must be server names"},
		{"  colour: blue\n", `unknown key "colour" (in setup)`},
	} {
		_, err := ParseConfig("rollout.yaml", []byte(validConfig+"setup:\n"+tt.setup))
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "rollout.yaml:") {
			t.Errorf("setup %q: err = %v, want %q", tt.setup, err, tt.want)
		}
	}
}

// fakeSetupHost answers setup's inspection with found and records what
// setup then applies.
type fakeSetupHost struct {
	found   setupFound
	applied [][]setupAction
	stdin   []string
	workers map[string]unitState // the workers' units systemd has
}

func (h *fakeSetupHost) WorkerStates(context.Context, []string) (map[string]unitState, error) {
	return h.workers, nil
}

func (h *fakeSetupHost) Cores(context.Context) (int, error) { return 2, nil }

func (h *fakeSetupHost) SetupInspect(context.Context, setupWant) (setupFound, error) {
	return h.found, nil
}

func (h *fakeSetupHost) SetupApply(_ context.Context, actions []setupAction, stdin []byte) error {
	h.applied = append(h.applied, actions)
	h.stdin = append(h.stdin, string(stdin))
	return nil
}

// verbs are the actions' verbs, and where a verb first comes.
func verbs(actions []setupAction) map[string]int {
	at := map[string]int{}
	for i, a := range actions {
		if _, ok := at[a[0]]; !ok {
			at[a[0]] = i
		}
	}
	return at
}

// inspection is what setup finds on a host that is already set up
// (prepared) or bare.
func inspection(cfg *Config, prepared bool) setupFound {
	s := cfg.setupDefaults()
	f := setupFound{Dirs: map[string]string{}, Files: map[string]foundFile{}, Code: "empty"}
	if prepared {
		f.UserExists, f.Groups, f.Code = true, []string{s.User, s.Group}, "code"
		for _, d := range setupDirs(cfg) {
			f.Dirs[d.path] = d.owner + " " + d.mode
		}
		for _, mf := range Render(cfg, cfg.Ports()) {
			f.Files[mf.Path] = foundFile{Meta: mf.Owner + " " + mf.Mode, Content: []byte(mf.Content)}
		}
	}
	for range cfg.Ports() {
		if prepared {
			f.Enabled = append(f.Enabled, "enabled")
		} else {
			f.Enabled = append(f.Enabled, "disabled")
		}
	}
	switch {
	case cfg.Watch == nil:
		f.Watch = []string{"none"}
	case prepared:
		f.Watch = []string{"enabled", "active", "curl"}
	default:
		f.Watch = []string{"disabled", "inactive", "curl"}
	}
	switch {
	case !cfg.logRotates():
	case prepared:
		f.LogRotate = []string{"enabled", "active", "logrotate"}
	default:
		f.LogRotate = []string{"disabled", "inactive", "logrotate"}
	}
	return f
}

// A host in the seed's layout, set up with release: its code becomes the
// first release, linked for every instance, before the unit changes.
func TestSetupMovesASeedHostToReleases(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(validConfig+"release: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	seed := inspection(cfg, true)
	// The seed's unit ran from the app directory: it differs.
	unit := Render(cfg, cfg.Ports())[0]
	seed.Files[unit.Path] = foundFile{Meta: "root:root 644", Content: []byte("[Service]\nWorkingDirectory=/var/www/my-app\n")}
	h := &fakeSetupHost{found: seed}
	// The first release is named after the instant the caller gives every
	// host: one ID for the fleet, whichever second each host's setup runs.
	now := time.Date(2026, 11, 28, 2, 1, 46, 900e6, time.UTC)
	res, err := setupHost(testCtx(t), cfg, "web1", h, false, now)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(res.Changes, "\n")
	if !strings.Contains(joined, "move the code in /var/www/my-app into release 20261128020146-initial ") || !strings.Contains(joined, "update /etc/systemd/system/my-app@.service") {
		t.Fatalf("changes:\n%s", joined)
	}
	if len(h.applied) != 1 {
		t.Fatalf("applied %d times", len(h.applied))
	}
	at := verbs(h.applied[0])
	migrate := h.applied[0][at["migrate"]]
	want := setupAction{"migrate", "/var/www/my-app", "/srv/my-app", "www-data", "20261128020146-initial"}
	if at["migrate"] > at["daemon-reload"] || !slices.Equal(migrate[:5], want) || !strings.Contains(migrate[5], `"outcome":"ok"`) ||
		!slices.Equal(migrate[6:], []string{"4", "3000", "3001", "3002", "3003"}) {
		t.Errorf("the migration does not link every instance before the unit changes: %q", h.applied[0])
	}

	// Once moved (current exists), setup moves nothing again.
	moved := inspection(cfg, true)
	moved.Code = "current"
	again := &fakeSetupHost{found: moved}
	res, err = setupHost(testCtx(t), cfg, "web1", again, false, now)
	if err != nil || len(res.Changes) != 0 {
		t.Errorf("a moved host: %v, changes %q", err, res.Changes)
	}
}

func TestSetupChangesOnlyWhatDiffers(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(validConfig))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)

	// A host that has it all: nothing to do, nothing run.
	done := &fakeSetupHost{found: inspection(cfg, true)}
	res, err := setupHost(ctx, cfg, "web1", done, false, time.Now())
	if err != nil || len(res.Changes) != 0 || len(done.applied) != 0 {
		t.Fatalf("prepared host: %v, changes %q, ran %d commands", err, res.Changes, len(done.applied))
	}

	// A bare host: every part, in one script, with the files on stdin.
	bare := &fakeSetupHost{found: inspection(cfg, false)}
	res, err = setupHost(ctx, cfg, "web1", bare, false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(res.Changes, "\n")
	for _, want := range []string{"create system user my-app", "create /var/www/my-app", "write /etc/systemd/system/my-app@.service",
		"write /etc/nginx/conf.d/my-app-upstream.conf", "enable my-app@3000"} {
		if !strings.Contains(joined, want) {
			t.Errorf("changes lack %q:\n%s", want, joined)
		}
	}
	if len(bare.applied) != 1 {
		t.Fatalf("applied %d times", len(bare.applied))
	}
	at := verbs(bare.applied[0])
	for _, v := range []string{"user", "join", "dir", "file", "daemon-reload", "nginx", "enable"} {
		if _, ok := at[v]; !ok {
			t.Errorf("no %s in %q", v, bare.applied[0])
		}
	}
	if at["file"] > at["daemon-reload"] || at["daemon-reload"] > at["enable"] || at["file"] > at["nginx"] {
		t.Errorf("out of order: %q", bare.applied[0])
	}
	if _, started := at["start"]; started {
		t.Errorf("an empty app directory's instances were started: %q", bare.applied[0])
	}
	// Each file's size is what it reads of stdin.
	size := 0
	for _, a := range bare.applied[0] {
		if a[0] == "file" {
			n, _ := strconv.Atoi(a[5])
			size += n
		}
	}
	if size != len(bare.stdin[0]) {
		t.Errorf("the files' sizes add up to %d, stdin holds %d", size, len(bare.stdin[0]))
	}
	if unit := Render(cfg, cfg.Ports())[0].Content; !strings.Contains(bare.stdin[0], unit) {
		t.Error("the unit file was not sent on stdin")
	}

	// A dry run says the same and runs nothing.
	dry := &fakeSetupHost{found: inspection(cfg, false)}
	res, err = setupHost(ctx, cfg, "web1", dry, true, time.Now())
	if err != nil || strings.Join(res.Changes, "\n") != joined || len(dry.applied) != 0 || !strings.Contains(res.Diff, "+[Service]") {
		t.Errorf("dry run: %v, ran %d commands, changes %q", err, len(dry.applied), res.Changes)
	}
}

// TestRenderRelease checks the unit and the directories of a host whose
// code ships as releases: each instance runs from Root/instances/PORT.
func TestRenderRelease(t *testing.T) {
	lines := func(unit string) (wd, exec string) {
		for _, l := range strings.Split(unit, "\n") {
			if v, ok := strings.CutPrefix(l, "WorkingDirectory="); ok {
				wd = v
			}
			if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
				exec = v
			}
		}
		return wd, exec
	}
	tests := []struct {
		name, add      string
		wantWD, wantEx string
		wantDirs       []managedDir
	}{
		{name: "without release", add: "",
			wantWD: "/var/www/my-app", wantEx: "/usr/bin/node /var/www/my-app/server.js",
			wantDirs: []managedDir{{"/var/www/my-app", "root:www-data", "2750"}, {"/var/log/my-app", "my-app:my-app", "755"},
				{"/etc/my-app", "root:root", "750"}}},
		{name: "release defaults", add: "release: {}\n",
			wantWD: "/srv/my-app/instances/%i", wantEx: "/usr/bin/node /srv/my-app/instances/%i/server.js",
			wantDirs: []managedDir{{"/srv/my-app", "root:www-data", "2750"}, {"/srv/my-app/releases", "root:www-data", "2750"},
				{"/srv/my-app/instances", "root:www-data", "2750"}, {"/srv/my-app/shared", "root:www-data", "2750"},
				{"/srv/my-app/.rollout", "root:root", "700"},
				{"/var/log/my-app", "my-app:my-app", "755"}, {"/etc/my-app", "root:root", "750"}}},
		{name: "release root, exec_start with %i, group, uploads",
			add: "release: {root: /opt/shop}\nsetup:\n  group: nginx\n  exec_start: /usr/bin/node --title=shop-%i /opt/shop/instances/%i/dist/main.js\n" +
				"  uploads_dir: /opt/shop/shared/uploads\n",
			wantWD: "/opt/shop/instances/%i", wantEx: "/usr/bin/node --title=shop-%i /opt/shop/instances/%i/dist/main.js",
			wantDirs: []managedDir{{"/opt/shop", "root:nginx", "2750"}, {"/opt/shop/releases", "root:nginx", "2750"},
				{"/opt/shop/instances", "root:nginx", "2750"}, {"/opt/shop/shared", "root:nginx", "2750"},
				{"/opt/shop/.rollout", "root:root", "700"},
				{"/var/log/my-app", "my-app:my-app", "755"}, {"/etc/my-app", "root:root", "750"},
				{"/opt/shop/shared/uploads", "my-app:nginx", "2770"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig("rollout.yaml", []byte(validConfig+tt.add))
			if err != nil {
				t.Fatal(err)
			}
			wd, exec := lines(Render(cfg, cfg.Ports())[0].Content)
			if wd != tt.wantWD || exec != tt.wantEx {
				t.Errorf("WorkingDirectory=%s\nExecStart=%s\nwant\nWorkingDirectory=%s\nExecStart=%s", wd, exec, tt.wantWD, tt.wantEx)
			}
			if got := setupDirs(cfg); !reflect.DeepEqual(got, tt.wantDirs) {
				t.Errorf("dirs\n%v\nwant\n%v", got, tt.wantDirs)
			}
		})
	}
}

// With secrets:, each instance reads its release's env after the host's.
func TestRenderSecrets(t *testing.T) {
	_, pub, _ := secrets.Keygen()
	for _, tc := range []struct{ add, want string }{
		{"release: {}\n", ""},
		{"release: {}\nsecrets: {file: s.age, recipients: [" + pub + "]}\n", "EnvironmentFile=-/srv/my-app/instances/%i/.rollout/env\n"},
	} {
		cfg, err := ParseConfig("rollout.yaml", []byte(validConfig+tc.add))
		if err != nil {
			t.Fatal(err)
		}
		unit := Render(cfg, cfg.Ports())[0].Content
		if want := "EnvironmentFile=/etc/my-app/.env\n" + tc.want + "WorkingDirectory="; !strings.Contains(unit, want) {
			t.Errorf("the unit lacks\n%s\n%s", want, unit)
		}
	}
}

// TestSetupExecStartPercent checks that exec_start may hold the instance's
// port as %i, and no other systemd specifier.
func TestSetupExecStartPercent(t *testing.T) {
	for _, ok := range []string{"/usr/bin/node /srv/a/%i/server.js", "/srv/%i/bin/app --port=%i", "/usr/bin/app %i%i"} {
		if _, err := ParseConfig("rollout.yaml", []byte(validConfig+"setup:\n  exec_start: "+ok+"\n")); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"/usr/bin/app %n", "/usr/bin/app %", "/usr/bin/app %%i", "/usr/bin/app %I", "/usr/bin/app i%", "%i/usr/bin/app"} {
		_, err := ParseConfig("rollout.yaml", []byte(validConfig+"setup:\n  exec_start: \""+bad+"\"\n"))
		if err == nil || !strings.Contains(err.Error(), "setup.exec_start: must be an absolute program path and plain arguments (letters, digits, . _ / = : , + @ - and %i)") {
			t.Errorf("%q: got %v", bad, err)
		}
	}
}

// TestSetupReleaseBadRoot checks that a bad release.root is reported once,
// not again as the exec_start derived from it.
func TestSetupReleaseBadRoot(t *testing.T) {
	_, err := ParseConfig("rollout.yaml", []byte(validConfig+"release: {root: \"/srv/my;app\"}\n"))
	want := `rollout.yaml:18: release.root: may only contain letters, digits and . _ - /, got "/srv/my;app"`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

// The watch: installed with its timer and the URL kept out of the diff;
// taken away again once the section is gone.
func TestSetupWatch(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(validConfig+"notify: {url_env: HOOK}\nwatch: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if _, err := setupHost(ctx, cfg, "web1", &fakeSetupHost{found: inspection(cfg, false)}, false, time.Now()); err == nil || !strings.Contains(err.Error(), "$HOOK is empty") {
		t.Fatalf("without the URL: %v", err)
	}
	cfg.Watch.SetWebhook("https://hooks.example.com/services/SECRET")
	bare := &fakeSetupHost{found: inspection(cfg, false)}
	res, err := setupHost(ctx, cfg, "web1", bare, true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(res.Changes, "\n")
	for _, want := range []string{"write /etc/rollout/my-app/webhook.env", "write /etc/systemd/system/my-app@.service.d/rollout-watch.conf", "enable and start rollout-status-my-app.timer"} {
		if !strings.Contains(joined, want) {
			t.Errorf("changes lack %q:\n%s", want, joined)
		}
	}
	if strings.Contains(res.Diff, "SECRET") || !strings.Contains(res.Diff, "(a secret: it changes, the content is not shown)") {
		t.Errorf("the diff shows the URL:\n%s", res.Diff)
	}
	done := &fakeSetupHost{found: inspection(cfg, true)}
	if res, err := setupHost(ctx, cfg, "web1", done, false, time.Now()); err != nil || len(res.Changes) != 0 {
		t.Fatalf("a host with the watch: %v, changes %q", err, res.Changes)
	}
	nc := inspection(cfg, true)
	nc.Watch[2] = "no-curl"
	noCurl := &fakeSetupHost{found: nc}
	if _, err := setupHost(ctx, cfg, "web1", noCurl, false, time.Now()); err == nil || !strings.Contains(err.Error(), "no curl") {
		t.Fatalf("without curl: %v", err)
	}

	plain, err := ParseConfig("rollout.yaml", []byte(validConfig))
	if err != nil {
		t.Fatal(err)
	}
	inst := inspection(plain, true)
	inst.Watch = []string{"installed"}
	installed := &fakeSetupHost{found: inst}
	res, err = setupHost(ctx, plain, "web1", installed, false, time.Now())
	if err != nil || !strings.Contains(strings.Join(res.Changes, "\n"), "remove the watch an earlier setup installed") || len(installed.applied) != 1 {
		t.Fatalf("the section gone: %v, changes %q", err, res.Changes)
	}
	at := verbs(installed.applied[0])
	unwatch := installed.applied[0][at["unwatch"]]
	if at["unwatch"] > at["daemon-reload"] || unwatch[1] != "rollout-status-my-app.timer" ||
		!slices.Contains(unwatch, "/usr/local/lib/rollout/my-app-watch") || !slices.Contains(unwatch, "/etc/rollout/my-app/webhook.env") {
		t.Errorf("the removal: %q", installed.applied[0])
	}
}

// The instances' output files: a logrotate rule past setup.log_rotate_size
// and a timer that checks them, enabled; none with log_rotate_keep: 0; a
// host without logrotate is refused, saying what to do.
func TestSetupLogRotation(t *testing.T) {
	ctx := context.Background()
	cfg, err := ParseConfig("rollout.yaml", []byte(validConfig+"setup: {log_rotate_size: 5M, log_rotate_keep: 3}\n"))
	if err != nil {
		t.Fatal(err)
	}
	bare := &fakeSetupHost{found: inspection(cfg, false)}
	res, err := setupHost(ctx, cfg, "web1", bare, false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(res.Changes, "\n")
	for _, want := range []string{"write /etc/logrotate.d/rollout-my-app", "write /etc/systemd/system/rollout-logrotate-my-app.timer", "enable and start rollout-logrotate-my-app.timer (rotates /var/log/my-app's output files past 5M, every 10min)"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no %q in:\n%s", want, joined)
		}
	}
	rule := ""
	for _, f := range Render(cfg, cfg.Ports()) {
		if f.Path == "/etc/logrotate.d/rollout-my-app" {
			rule = f.Content
		}
	}
	for _, want := range []string{"/var/log/my-app/stdout-*.log /var/log/my-app/stderr-*.log {", "\tsize 5M\n", "\trotate 3\n", "\tcopytruncate\n"} {
		if !strings.Contains(rule, want) {
			t.Errorf("the rule lacks %q:\n%s", want, rule)
		}
	}
	noTool := inspection(cfg, true)
	noTool.LogRotate[2] = "no-logrotate"
	if _, err := setupHost(ctx, cfg, "web1", &fakeSetupHost{found: noTool}, false, time.Now()); err == nil || !strings.Contains(err.Error(), "apt install logrotate, or log_rotate_keep: 0") {
		t.Errorf("a host without logrotate: %v", err)
	}
	off, err := ParseConfig("rollout.yaml", []byte(validConfig+"setup: {log_rotate_keep: 0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if w := off.setupWant(off.Ports()); w.LogTimer != "" || slices.ContainsFunc(w.Files, func(f ManagedFile) bool { return strings.Contains(f.Path, "logrotate") }) {
		t.Errorf("log_rotate_keep: 0 still rotates: %+v", w)
	}
	for _, bad := range []string{"log_rotate_size: 0", "log_rotate_size: 5 M", "log_rotate_size: '100M; rm -rf /'", "log_rotate_keep: -1", "log_rotate_keep: 1001"} {
		if _, err := ParseConfig("rollout.yaml", []byte(validConfig+"setup: {"+bad+"}\n")); err == nil || !strings.Contains(err.Error(), "setup.log_rotate_") {
			t.Errorf("%s: %v", bad, err)
		}
	}
}
