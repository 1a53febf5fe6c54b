package deployer

import (
	"os"
	"path/filepath"
	"testing"
)

// maxErrorText bounds the error text of any config under maxConfigSize:
// maxErrors problems quoting at most maxQuoted bytes of a value each.
const maxErrorText = 64 << 10

// FuzzParseConfig checks that no input makes the parser panic, that a
// config it accepts is valid, and that its errors stay short.
func FuzzParseConfig(f *testing.F) {
	files, err := filepath.Glob("testdata/config/*.yaml")
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed configs: %v", err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		minimal,
		validConfig,
		minimal + "helth:\n  path: /x\n",
		minimal + "ssh:\n  port: \"22\"\n  accept_new: yes\n",
		minimal + "drain_timeout: -5s\nmin_serving: 3\n",
		minimal + "unit: my-app@{port};rm\n",
		minimal + "hooks:\n  before: [\"a\\0b\"]\n  host_after: ['make', ' ']\n",
		minimal + "notify: {format: telegram, telegram_chat_id: \"-100\"}\nsetup:\n  listen: 8080\n  restart_sec: 5s\n",
		minimal + "ssh:\n  jump: \"bastion, ops@b:99999\"\n",
		minimal + "release:\n  root: /srv/my-app/\n  shared: [.env, uploads, uploads/x, ../y, /z]\n  keep: 0\n  prepare: npm ci\n  on_failure: halt\n",
		"app: My App\nhosts: [h]\nports: [1]\nnginx: {upstream_file: /u, upstream: u}\nrelease: {}\nsetup: {exec_start: /bin/a %i}\n",
		minimal + "---\napp: other\n",
		"app: my-app\nhosts: [10.0.0.5]\nbase_port: 3000\ninstances: auto\nnginx: {upstream_file: /etc/u.conf, upstream: up}\n",
		"app: &a my-app\nhosts: [*a]\nbase_port: 65535\ninstances: 2\nnginx: *a\n",
		"- app: my-app\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("rollout.yaml", data)
		if err != nil {
			if c != nil {
				t.Errorf("a config with the error %v", err)
			}
			if n := len(err.Error()); n > maxErrorText && len(data) <= maxConfigSize {
				t.Errorf("the error is %d bytes long, for %d bytes of config", n, len(data))
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Errorf("ParseConfig accepted a config that Validate refuses:\n%v", err)
		}
	})
}
