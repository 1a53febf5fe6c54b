package deployer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

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
	return b.String()
}

func TestSetupChangesOnlyWhatDiffers(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(validConfig))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)

	// A host that has it all: nothing to do, nothing run.
	done := &setupHost{inspect: inspection(cfg, true)}
	res, err := Setup(ctx, cfg, "web1", done, false)
	if err != nil || len(res.Changes) != 0 || len(done.applied) != 0 {
		t.Fatalf("prepared host: %v, changes %q, ran %d commands", err, res.Changes, len(done.applied))
	}

	// A bare host: every part, in one script, with the files on stdin.
	bare := &setupHost{inspect: inspection(cfg, false)}
	res, err = Setup(ctx, cfg, "web1", bare, false)
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
	res, err = Setup(ctx, cfg, "web1", dry, true)
	if err != nil || strings.Join(res.Changes, "\n") != joined || len(dry.applied) != 0 || !strings.Contains(res.Diff, "+[Service]") {
		t.Errorf("dry run: %v, ran %d commands, changes %q", err, len(dry.applied), res.Changes)
	}
}
