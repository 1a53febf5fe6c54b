package deployer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
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

// setupHost answers setup's inspection with a host that has exactly what
// the given files and directories say (nil: nothing), and records what
// setup then runs.
type setupHost struct {
	Conn
	inspect   string
	inspected bool
	applied   []string
	stdin     []string
}

// Run answers the first command (the inspection) and records the others.
func (h *setupHost) Run(_ context.Context, cmd string, stdin io.Reader) (sshexec.Result, error) {
	if !h.inspected {
		h.inspected = true
		return sshexec.Result{Stdout: []byte(h.inspect)}, nil
	}
	h.applied = append(h.applied, cmd)
	if stdin != nil {
		b, _ := io.ReadAll(stdin)
		h.stdin = append(h.stdin, string(b))
	}
	return sshexec.Result{}, nil
}

// inspection is setup's inspect output for a host that is already set up
// (prepared) or bare.
func inspection(cfg *Config, prepared bool) string {
	s := cfg.setupDefaults()
	var b strings.Builder
	if prepared {
		fmt.Fprintf(&b, "user 998 %s,%s\n", s.User, s.Group)
	} else {
		b.WriteString("user none \n")
	}
	for _, d := range setupDirs(cfg) {
		b.WriteString(setupSep + "\n")
		if prepared {
			b.WriteString(d.owner + " " + d.mode + "\n")
		} else {
			b.WriteString("missing\n")
		}
	}
	for _, f := range Render(cfg, cfg.Ports()) {
		b.WriteString(setupSep + "\n")
		if prepared {
			b.WriteString(f.Owner + " " + f.Mode + "\n" + base64.StdEncoding.EncodeToString([]byte(f.Content)) + "\n")
		} else {
			b.WriteString("missing\n")
		}
	}
	b.WriteString(setupSep + "\n")
	for range cfg.Ports() {
		if prepared {
			b.WriteString("enabled\n")
		} else {
			b.WriteString("disabled\n")
		}
	}
	b.WriteString(setupSep + "\n")
	switch {
	case cfg.Watch == nil:
		b.WriteString("none\n")
	case prepared:
		b.WriteString("enabled\nactive\ncurl\n")
	default:
		b.WriteString("disabled\ninactive\ncurl\n")
	}
	b.WriteString(setupSep + "\n")
	if prepared {
		b.WriteString("code\n")
	} else {
		b.WriteString("empty\n")
	}
	return b.String()
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
	seed = strings.Replace(seed, base64.StdEncoding.EncodeToString([]byte(Render(cfg, cfg.Ports())[0].Content)), base64.StdEncoding.EncodeToString([]byte("[Service]\nWorkingDirectory=/var/www/my-app\n")), 1)
	h := &setupHost{inspect: seed}
	// The first release is named after the instant the caller gives every
	// host: one ID for the fleet, whichever second each host's setup runs.
	now := time.Date(2026, 11, 28, 2, 1, 46, 900e6, time.UTC)
	res, err := Setup(testCtx(t), cfg, "web1", h, false, now)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(res.Changes, "\n")
	if !strings.Contains(joined, "move the code in /var/www/my-app into release 20261128020146-initial ") || !strings.Contains(joined, "update /etc/systemd/system/my-app@.service") {
		t.Fatalf("changes:\n%s", joined)
	}
	if len(h.applied) != 1 {
		t.Fatalf("applied %d scripts", len(h.applied))
	}
	sc := h.applied[0]
	link := strings.Index(sc, "/srv/my-app/instances/3000")
	unit := strings.Index(sc, "daemon-reload")
	if link < 0 || unit < 0 || link > unit || !strings.Contains(sc, "/srv/my-app/current") || !strings.Contains(sc, `"outcome":"ok"`) {
		t.Errorf("the script does not link every instance before the unit changes:\n%s", sc)
	}

	// Once moved (current exists), setup moves nothing again.
	again := &setupHost{inspect: strings.TrimSuffix(inspection(cfg, true), "code\n") + "current\n"}
	res, err = Setup(testCtx(t), cfg, "web1", again, false, now)
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
	done := &setupHost{inspect: inspection(cfg, true)}
	res, err := Setup(ctx, cfg, "web1", done, false, time.Now())
	if err != nil || len(res.Changes) != 0 || len(done.applied) != 0 {
		t.Fatalf("prepared host: %v, changes %q, ran %d commands", err, res.Changes, len(done.applied))
	}

	// A bare host: every part, in one script, with the files on stdin.
	bare := &setupHost{inspect: inspection(cfg, false)}
	res, err = Setup(ctx, cfg, "web1", bare, false, time.Now())
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
	if len(bare.applied) != 1 || !strings.Contains(bare.applied[0], "systemctl daemon-reload") || !strings.Contains(bare.applied[0], "nginx config test failed; restored") {
		t.Fatalf("applied %d scripts:\n%s", len(bare.applied), strings.Join(bare.applied, "\n---\n"))
	}
	if unit := Render(cfg, cfg.Ports())[0].Content; !strings.Contains(bare.stdin[0], unit) {
		t.Error("the unit file was not sent on stdin")
	}

	// A dry run says the same and runs nothing.
	dry := &setupHost{inspect: inspection(cfg, false)}
	res, err = Setup(ctx, cfg, "web1", dry, true, time.Now())
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
	if _, err := Setup(ctx, cfg, "web1", &setupHost{inspect: inspection(cfg, false)}, false, time.Now()); err == nil || !strings.Contains(err.Error(), "$HOOK is empty") {
		t.Fatalf("without the URL: %v", err)
	}
	cfg.Watch.SetWebhook("https://hooks.example.com/services/SECRET")
	bare := &setupHost{inspect: inspection(cfg, false)}
	res, err := Setup(ctx, cfg, "web1", bare, true, time.Now())
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
	done := &setupHost{inspect: inspection(cfg, true)}
	if res, err := Setup(ctx, cfg, "web1", done, false, time.Now()); err != nil || len(res.Changes) != 0 {
		t.Fatalf("a host with the watch: %v, changes %q", err, res.Changes)
	}
	noCurl := &setupHost{inspect: strings.Replace(inspection(cfg, true), "active\ncurl\n", "active\nno-curl\n", 1)}
	if _, err := Setup(ctx, cfg, "web1", noCurl, false, time.Now()); err == nil || !strings.Contains(err.Error(), "no curl") {
		t.Fatalf("without curl: %v", err)
	}

	plain, err := ParseConfig("rollout.yaml", []byte(validConfig))
	if err != nil {
		t.Fatal(err)
	}
	installed := &setupHost{inspect: strings.Replace(inspection(plain, true), setupSep+"\nnone\n", setupSep+"\ninstalled\n", 1)}
	res, err = Setup(ctx, plain, "web1", installed, false, time.Now())
	if err != nil || !strings.Contains(strings.Join(res.Changes, "\n"), "remove the watch an earlier setup installed") || len(installed.applied) != 1 {
		t.Fatalf("the section gone: %v, changes %q", err, res.Changes)
	}
	sc := installed.applied[0]
	stop, rm, reload := strings.Index(sc, "systemctl disable --now -- rollout-status-my-app.timer"), strings.Index(sc, "/usr/local/lib/rollout/my-app-watch"), strings.Index(sc, "systemctl daemon-reload")
	if stop < 0 || rm < stop || reload < rm || !strings.Contains(sc, "/etc/rollout/my-app/webhook.env") {
		t.Errorf("the removal:\n%s", sc)
	}
}
