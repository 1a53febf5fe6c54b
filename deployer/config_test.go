package deployer

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const validConfig = `app: my-app
hosts:
  - 10.0.0.5
  - web2.example.com
ssh:
  user: deploy
  key: ~/.ssh/id_ed25519
base_port: 3000
instances: 4
nginx:
  upstream_file: /etc/nginx/conf.d/my-app-upstream.conf
  upstream: my_app
health:
  timeout: 20s
  min_healthy: 1s
hooks:
  host_before: ['sudo -n /usr/local/sbin/my-app-activate "$ROLLOUT_VERSION"']
`

func TestParseConfigValid(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(validConfig))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Ports(), []int{3000, 3001, 3002, 3003}; !reflect.DeepEqual(got, want) {
		t.Errorf("ports %v, want %v", got, want)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"unit default", cfg.UnitName(3001), "my-app@3001"},
		{"min_serving default", cfg.MinServing(), 3},
		{"sudo for non-root", cfg.UseSudo(), true},
		{"health timeout", cfg.Health.Timeout, 20 * time.Second},
		{"health path default", cfg.Health.Path, "/healthz"},
		{"drain default", cfg.DrainTimeout, 30 * time.Second},
		{"reload default", cfg.Nginx.ReloadCommand, "systemctl reload nginx"},
		{"hosts", cfg.Hosts, []string{"10.0.0.5", "web2.example.com"}},
		{"hook", cfg.Hooks.HostBefore, []string{`sudo -n /usr/local/sbin/my-app-activate "$ROLLOUT_VERSION"`}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		replace [2]string // in validConfig
		want    string
	}{
		{"unknown key with suggestion", [2]string{"health:", "helth:"}, `rollout.yaml:13: unknown key "helth" (in the top level); did you mean "health"?`},
		{"unknown nested key", [2]string{"  timeout: 20s", "  timout: 20s"}, `rollout.yaml:14: unknown key "timout" (in health); did you mean "timeout"?`},
		{"bad duration", [2]string{"timeout: 20s", "timeout: 20"}, `rollout.yaml:14: health.timeout: must be a duration like "30s", got "20"`},
		{"negative duration", [2]string{"timeout: 20s", "timeout: -5s"}, `rollout.yaml:14: health.timeout: must not be negative, got "-5s"`},
		{"bad base port", [2]string{"base_port: 3000", "base_port: 70000"}, `rollout.yaml:8: base_port: must be a port 1..65535, got 70000`},
		{"instances auto", [2]string{"instances: 4", "instances: auto"}, `rollout.yaml:9: instances: instances: auto is not supported yet, give a number`},
		{"both port forms", [2]string{"base_port: 3000", "ports: [3000]\nbase_port: 3000"}, `rollout.yaml:8: ports: give either ports or base_port and instances, not both`},
		{"duplicate port", [2]string{"base_port: 3000\ninstances: 4", "ports: [3000, 3001, 3000]"}, `rollout.yaml:8: ports[2]: port 3000 is listed twice`},
		{"shell in unit", [2]string{"app: my-app", "app: my-app\nunit: my-app@{port};rm -rf /"}, `rollout.yaml:2: unit: must be a template instance with one {port}`},
		{"relative upstream", [2]string{"/etc/nginx/conf.d/my-app-upstream.conf", "conf.d/up.conf"}, `rollout.yaml:11: nginx.upstream_file: must be an absolute path`},
		{"dotdot upstream", [2]string{"/etc/nginx/conf.d/my-app-upstream.conf", "/etc/nginx/../shadow"}, `rollout.yaml:11: nginx.upstream_file: must be an absolute path`},
		{"bad host", [2]string{"10.0.0.5", "'host;rm -rf /'"}, `rollout.yaml:3: hosts[0]: must be a host name or IP address, got "host;rm -rf /"`},
		{"bad health path", [2]string{"  timeout: 20s", "  path: healthz\n  timeout: 20s"}, `rollout.yaml:14: health.path: must be a path like /healthz, got "healthz"`},
		{"min_serving too high", [2]string{"instances: 4", "instances: 4\nmin_serving: 4"}, `rollout.yaml:10: min_serving: must be 0..3 (the other instances of a host), got 4`},
		{"wrong type", [2]string{"  - 10.0.0.5\n  - web2.example.com", "    x: 1"}, `rollout.yaml:3: hosts: must be a list`},
		{"missing upstream file", [2]string{"  upstream_file: /etc/nginx/conf.d/my-app-upstream.conf\n", ""}, `rollout.yaml: nginx.upstream_file: required`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := strings.Replace(validConfig, tt.replace[0], tt.replace[1], 1)
			if data == validConfig {
				t.Fatalf("replacement %q not found", tt.replace[0])
			}
			_, err := ParseConfig("rollout.yaml", []byte(data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v\nwant %q", err, tt.want)
			}
		})
	}
}

func TestParseConfigReportsEveryProblemInLineOrder(t *testing.T) {
	data := strings.Replace(strings.Replace(validConfig, "timeout: 20s", "timeout: soon", 1), "ssh:", "shh:", 1)
	_, err := ParseConfig("rollout.yaml", []byte(data))
	if err == nil {
		t.Fatal("want errors")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "rollout.yaml:5: unknown key \"shh\"") || !strings.HasPrefix(lines[1], "rollout.yaml:14: health.timeout") {
		t.Errorf("got:\n%v", err)
	}
}

func TestParseConfigEmpty(t *testing.T) {
	if _, err := ParseConfig("rollout.yaml", nil); err == nil || !strings.Contains(err.Error(), "rollout.yaml: the config is empty") {
		t.Errorf("got %v", err)
	}
}

func TestValidateAfterOverrides(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(validConfig))
	if err != nil {
		t.Fatal(err)
	}
	cfg.SetPorts([]int{3000, 3001})
	cfg.SetMinServing(2)
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "min_serving: must be 0..1") {
		t.Errorf("got %v", err)
	}
	cfg.SetMinServing(1)
	cfg.Hosts = append(cfg.Hosts, "10.0.0.5")
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `hosts[2]: host "10.0.0.5" is listed twice`) {
		t.Errorf("got %v", err)
	}
}
