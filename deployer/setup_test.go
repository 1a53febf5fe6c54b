package deployer

import (
	"encoding/json"
	"strings"
	"testing"
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
