package deployer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// validConfig is also the config of plan_test.go's golden plans.
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

// minimal is the smallest valid config; the error cases edit it, and add
// lines from line 7 on.
const minimal = `app: my-app
hosts: [10.0.0.5, web2.example.com]
ports: [3000, 3001, 3002]
nginx:
  upstream_file: /etc/nginx/conf.d/my-app-upstream.conf
  upstream: my_app
`

func intPtr(n int) *int { return &n }

func TestParseConfigValid(t *testing.T) {
	defaults := func(edit func(c *Config)) *Config {
		c := DefaultConfig()
		edit(c)
		return c
	}
	tests := []struct {
		name string
		load func() (*Config, error)
		want *Config
	}{
		{
			name: "every key, ports as a list",
			load: func() (*Config, error) { return LoadConfig("testdata/config/valid.yaml") },
			want: &Config{
				App:          "my-app",
				UnitTemplate: "my-app@{port}.service",
				Hosts:        []string{"10.0.0.5", "web2.example.com", "2001:db8::7"},
				SSH: SSHConfig{User: "deploy", Port: 2222, Key: "~/.ssh/id_ed25519",
					KnownHosts: "~/.ssh/known_hosts_rollout", AcceptNew: true, ConnectTimeout: 5 * time.Second, KeepAlive: 5 * time.Second, Reconnect: 20 * time.Second,
					ConfigFile: "~/.ssh/config_rollout", Jump: "ops@bastion.example.com:2200"},
				Sudo: "true",
				Nginx: NginxConfig{
					UpstreamFile:  "/etc/nginx/conf.d/my-app-upstream.conf",
					Upstream:      "my_app",
					ServerAddress: "127.0.0.2",
					TestCommand:   "/usr/sbin/nginx -t -q",
					ReloadCommand: "/usr/sbin/nginx -s reload",
					PIDFile:       "/var/run/nginx.pid",
				},
				Health: HealthConfig{Path: "/healthz?deep=1", Status: 204, Timeout: 45 * time.Second,
					AttemptTimeout: 1500 * time.Millisecond, Interval: 100 * time.Millisecond, MinHealthy: 0},
				DrainTimeout: time.Minute,
				Logs:         []string{"/var/log/my-app/stderr-{port}.log", "/var/log/my-app/access.log"},
				Hooks: Hooks{
					Before:     []string{"make release"},
					After:      []string{"./notify.sh"},
					HostBefore: []string{`sudo -n /usr/local/sbin/my-app-activate "$ROLLOUT_VERSION"`},
					HostAfter:  []string{"rm -rf /srv/my-app/releases/old\necho done\n"},
				},
				Parallel: 2, StateDir: "/var/lib/rollout-state", LockStaleAfter: 90 * time.Second,
				Setup:     DefaultConfig().Setup,
				Instances: Instances{List: []int{3000, 3001, 3002}},
				Strategy: StrategyConfig{MaxUnavailable: Amount{Percent: 50}, Batches: []Amount{{N: 1}, {Percent: 50}, {Percent: 100}},
					Bake: 2 * time.Minute, MaxErrorRatio: 0.02, MinRequests: 100, SmallSample: SmallSampleProceed, AccessLog: "/var/log/nginx/my-app.log"},
				Probe: ProbeConfig{Enabled: true, Address: "127.0.0.1:8080", Path: "/ping", HostName: "www.example.com",
					Interval: 200 * time.Millisecond, Timeout: time.Second, VersionHeader: "X-App-Version", FailOnError: true},
				minServing: intPtr(1),
			},
		},
		{
			name: "base_port and instances, defaults",
			load: func() (*Config, error) { return LoadConfig("testdata/config/base_port.yaml") },
			want: defaults(func(c *Config) {
				c.App, c.UnitTemplate, c.Hosts = "my-app", "my-app@{port}", []string{"10.0.0.5"}
				c.Nginx.UpstreamFile, c.Nginx.Upstream = "/etc/nginx/conf.d/my-app-upstream.conf", "my_app"
				c.Instances = Instances{Base: 3000, Count: 4}
			}),
		},
		{
			name: "the plan tests' config",
			load: func() (*Config, error) { return ParseConfig("rollout.yaml", []byte(validConfig)) },
			want: defaults(func(c *Config) {
				c.App, c.UnitTemplate, c.Hosts = "my-app", "my-app@{port}", []string{"10.0.0.5", "web2.example.com"}
				c.SSH.User, c.SSH.Key = "deploy", "~/.ssh/id_ed25519"
				c.Nginx.UpstreamFile, c.Nginx.Upstream = "/etc/nginx/conf.d/my-app-upstream.conf", "my_app"
				c.Health.Timeout, c.Health.MinHealthy = 20*time.Second, time.Second
				c.Hooks.HostBefore = []string{`sudo -n /usr/local/sbin/my-app-activate "$ROLLOUT_VERSION"`}
				c.Instances = Instances{Base: 3000, Count: 4}
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.load()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestConfigMethods(t *testing.T) {
	full, err := LoadConfig("testdata/config/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	small, err := LoadConfig("testdata/config/base_port.yaml")
	if err != nil {
		t.Fatal(err)
	}
	inCode := &Config{App: "shop"} // no UnitTemplate: "<app>@{port}"
	sudo := func(mode, user string) bool {
		return (&Config{Sudo: mode, SSH: SSHConfig{User: user}}).UseSudo()
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"ports, list", full.Ports(), []int{3000, 3001, 3002}},
		{"ports, base_port", small.Ports(), []int{3000, 3001, 3002, 3003}},
		{"min_serving given", full.MinServing(), 1},
		{"min_serving default", small.MinServing(), 3},
		{"unit", full.Unit(3001), "my-app@3001.service"},
		{"unit default", small.Unit(3003), "my-app@3003"},
		{"unit name", small.UnitName(3003), "my-app@3003"},
		{"unit of a config built in code", inCode.Unit(80), "shop@80"},
		{"log files", full.LogFiles(3002), []string{"/var/log/my-app/stderr-3002.log", "/var/log/my-app/access.log"}},
		{"no log files", small.LogFiles(3000), []string(nil)},
		{"sudo auto, deploy", sudo("auto", "deploy"), true},
		{"sudo auto, root", sudo("auto", "root"), false},
		{"sudo auto, unresolved user", sudo("auto", ""), true},
		{"sudo true, root", sudo("true", "root"), true},
		{"sudo false, deploy", sudo("false", "deploy"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %#v, want %#v", tt.got, tt.want)
			}
		})
	}
	t.Run("ports are a copy", func(t *testing.T) {
		ports := []int{4000, 4001}
		small.SetPorts(ports)
		ports[0] = 1
		small.Ports()[1] = 2
		if got, want := small.Ports(), []int{4000, 4001}; !reflect.DeepEqual(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		replace []string // old, new pairs applied to minimal
		add     string   // appended to minimal, from line 7
		want    string
	}{
		// Keys.
		{name: "unknown key with suggestion", add: "helth:\n  path: /x\n",
			want: `rollout.yaml:7: unknown key "helth" (in the top level); did you mean "health"?`},
		{name: "unknown key without suggestion", add: "colour: blue\n",
			want: `rollout.yaml:7: unknown key "colour" (in the top level)`},
		{name: "unknown nested key", add: "health:\n  timout: 5s\n",
			want: `rollout.yaml:8: unknown key "timout" (in health); did you mean "timeout"?`},
		{name: "unknown key in nginx", replace: []string{"  upstream: my_app\n", "  upstream: my_app\n  reload: nginx -s reload\n"},
			want: `rollout.yaml:7: unknown key "reload" (in nginx)`},
		{name: "key given twice", add: "app: other\n",
			want: `rollout.yaml:7: app: given twice (first on line 1)`},
		{name: "missing nested key", replace: []string{"  upstream_file: /etc/nginx/conf.d/my-app-upstream.conf\n", ""},
			want: `rollout.yaml:4: nginx.upstream_file: required`},
		{name: "missing mapping", replace: []string{"nginx:\n  upstream_file: /etc/nginx/conf.d/my-app-upstream.conf\n  upstream: my_app\n", ""},
			want: "rollout.yaml: nginx.upstream_file: required\nrollout.yaml: nginx.upstream: required"},
		{name: "missing top-level key", replace: []string{"app: my-app\n", ""},
			want: `rollout.yaml: app: required`},

		// Types.
		{name: "string for a list", replace: []string{"hosts: [10.0.0.5, web2.example.com]", "hosts: 10.0.0.5"},
			want: `rollout.yaml:2: hosts: must be a list, got "10.0.0.5"`},
		{name: "list for a mapping", add: "ssh: [deploy]\n",
			want: `rollout.yaml:7: ssh: must be a mapping of keys, got a list`},
		{name: "mapping for a string", replace: []string{"app: my-app", "app: {name: my-app}"},
			want: `rollout.yaml:1: app: must be a string, got a mapping`},
		{name: "string for a number", add: "ssh:\n  port: \"22\"\n",
			want: `rollout.yaml:8: ssh.port: must be a whole number, got "22"`},
		{name: "string for a bool", add: "ssh:\n  accept_new: yes\n",
			want: `rollout.yaml:8: ssh.accept_new: must be true or false, got "yes"`},
		{name: "null", add: "logs:\n",
			want: `rollout.yaml:7: logs: must be a list, got nothing`},
		{name: "bad sudo", add: "sudo: sometimes\n",
			want: `rollout.yaml:7: sudo: must be auto, true, false or helper, got "sometimes"`},

		// Durations.
		{name: "bare number duration", add: "health:\n  timeout: 30\n",
			want: `rollout.yaml:8: health.timeout: must be a duration like "30s", got "30"`},
		{name: "quoted bare number duration", add: "drain_timeout: \"0\"\n",
			want: `rollout.yaml:7: drain_timeout: must be a duration like "30s", got "0"`},
		{name: "not a duration", add: "ssh:\n  connect_timeout: soon\n",
			want: `rollout.yaml:8: ssh.connect_timeout: must be a duration like "30s", got "soon"`},
		{name: "negative duration", add: "drain_timeout: -5s\n",
			want: `rollout.yaml:7: drain_timeout: must not be negative, got "-5s"`},
		{name: "zero duration", add: "health:\n  interval: 0s\n",
			want: `rollout.yaml:8: health.interval: must be 10ms..1m, got 0s`},
		{name: "attempt longer than timeout", add: "health:\n  timeout: 1s\n  attempt_timeout: 2s\n",
			want: `rollout.yaml:9: health.attempt_timeout: must not be longer than health.timeout (1s), got 2s`},
		{name: "default attempt longer than timeout", add: "health:\n  timeout: 1s\n",
			want: `rollout.yaml:7: health.attempt_timeout: must not be longer than health.timeout (1s), got 2s`},

		// Ports.
		{name: "bad port", replace: []string{"ports: [3000, 3001, 3002]", "ports: [3000, 70000]"},
			want: `rollout.yaml:3: ports[1]: must be a port 1..65535, got 70000`},
		{name: "port on its own line", replace: []string{"ports: [3000, 3001, 3002]", "ports:\n  - 3000\n  - x"},
			want: `rollout.yaml:5: ports[1]: must be a whole number, got "x"`},
		{name: "duplicate port", replace: []string{"ports: [3000, 3001, 3002]", "ports: [3000, 3001, 3000]"},
			want: `rollout.yaml:3: ports[2]: 3000 is listed twice`},
		{name: "both port forms", add: "base_port: 4000\ninstances: 2\n",
			want: `rollout.yaml:3: ports: give either ports or base_port with instances, not both`},
		{name: "neither port form", replace: []string{"ports: [3000, 3001, 3002]\n", ""},
			want: `rollout.yaml: ports: required (or base_port and instances)`},
		{name: "base_port alone", replace: []string{"ports: [3000, 3001, 3002]", "base_port: 3000"},
			want: `rollout.yaml:3: base_port: needs instances too`},
		{name: "instances auto without base_port", replace: []string{"ports: [3000, 3001, 3002]", "instances: auto"},
			want: `rollout.yaml:3: instances: needs base_port too`},
		{name: "no instances", replace: []string{"ports: [3000, 3001, 3002]", "base_port: 3000\ninstances: 0"},
			want: `rollout.yaml:4: instances: must be at least 1, got 0`},
		{name: "bad base_port", replace: []string{"ports: [3000, 3001, 3002]", "base_port: 0\ninstances: 2"},
			want: `rollout.yaml:3: base_port: must be a port 1..65535, got 0`},
		{name: "instances past the last port", replace: []string{"ports: [3000, 3001, 3002]", "base_port: 65535\ninstances: 2"},
			want: `rollout.yaml:4: instances: 2 instances from base_port 65535 run past port 65535`},
		{name: "min_serving too high", add: "min_serving: 3\n",
			want: `rollout.yaml:7: min_serving: must be 0..2 (the other instances of a host), got 3`},
		{name: "min_serving negative", add: "min_serving: -1\n",
			want: `rollout.yaml:7: min_serving: must be 0..2 (the other instances of a host), got -1`},

		// Strategy and probe.
		{name: "max_unavailable above min_serving", add: "min_serving: 2\nstrategy:\n  max_unavailable: 2\n",
			want: `rollout.yaml:9: strategy.max_unavailable: 2 of 3 instances would leave 1 serving while they restart, below min_serving 2`},
		{name: "max_unavailable percent above min_serving", add: "min_serving: 2\nstrategy: {max_unavailable: 70%}\n",
			want: `rollout.yaml:8: strategy.max_unavailable: 70% of 3 instances would leave 1 serving while they restart, below min_serving 2`},
		{name: "max_unavailable percent out of range", add: "strategy:\n  max_unavailable: 150%\n",
			want: `rollout.yaml:8: strategy.max_unavailable: a percentage must be 1%..100%, got "150%"`},
		{name: "max_unavailable zero", add: "strategy:\n  max_unavailable: 0\n",
			want: `rollout.yaml:8: strategy.max_unavailable: must be a number of instances (at least 1) or a percentage like "25%", got "0"`},
		{name: "max_unavailable a list", add: "strategy:\n  max_unavailable: [1]\n",
			want: `rollout.yaml:8: strategy.max_unavailable: must be a number of instances or a percentage like "25%", got a list`},
		{name: "unknown strategy key", add: "strategy:\n  max_unavailible: 2\n",
			want: `rollout.yaml:8: unknown key "max_unavailible" (in strategy); did you mean "max_unavailable"?`},
		{name: "batches not ending at 100%", add: "strategy:\n  batches: [1, 50%]\n",
			want: `rollout.yaml:8: strategy.batches[1]: the last batch must be 100% (the whole fleet), got 50%`},
		{name: "batches not rising", add: "strategy:\n  batches: [50%, 25%, 100%]\n",
			want: `rollout.yaml:8: strategy.batches[1]: batches count the fleet's instances on the release so far, so each must be more than the one before: 25% after 50%`},
		{name: "batch percentage out of range", add: "strategy:\n  batches: [0%, 100%]\n",
			want: `rollout.yaml:8: strategy.batches[0]: a percentage must be 1%..100%, got "0%"`},
		{name: "bake without batches", add: "strategy:\n  bake: 1m\n",
			want: `rollout.yaml:8: strategy.bake: bakes after each batch but the last: it needs strategy.batches with at least two batches, e.g. [1, 100%]`},
		{name: "error ratio out of range", add: "strategy:\n  max_error_ratio: 5\n",
			want: `rollout.yaml:8: strategy.max_error_ratio: must be 0..1 (0.01 is 1%), got 5`},
		{name: "error ratio a string", add: "strategy:\n  max_error_ratio: 1%\n",
			want: `rollout.yaml:8: strategy.max_error_ratio: must be a number like 0.01, got "1%"`},
		{name: "small_sample", add: "strategy:\n  small_sample: skip\n",
			want: `rollout.yaml:8: strategy.small_sample: must be wait or proceed, got "skip"`},
		{name: "pause without release", add: "strategy:\n  batches: [1, 100%]\n  pause_after_canary: true\n",
			want: `rollout.yaml:9: strategy.pause_after_canary: needs the release: section: rollout promote and rollout rollback continue from the releases on the hosts`},
		{name: "pause without batches", add: "release: {}\nstrategy:\n  pause_after_canary: true\n",
			want: `rollout.yaml:9: strategy.pause_after_canary: pauses after the first batch: it needs strategy.batches with at least two batches, e.g. [1, 100%]`},
		{name: "probe a string", add: "probe: off\n",
			want: `rollout.yaml:7: probe: must be a mapping of keys, got "off"`},
		{name: "probe address without port", add: "probe:\n  address: 127.0.0.1\n",
			want: `rollout.yaml:8: probe.address: must be HOST:PORT, e.g. "127.0.0.1:80", got "127.0.0.1"`},
		{name: "probe address bad host", add: "probe:\n  address: \"a b:80\"\n",
			want: `rollout.yaml:8: probe.address: the host must be an IP address or a host name, got "a b:80"`},
		{name: "probe interval too short", add: "probe:\n  interval: 1ms\n",
			want: `rollout.yaml:8: probe.interval: must be 10ms..1m, got 1ms`},
		{name: "probe path", add: "probe:\n  path: x; rm\n",
			want: `rollout.yaml:8: probe.path: must be a path starting with /, got "x; rm"`},
		{name: "probe header", add: "probe:\n  version_header: \"X Version\"\n",
			want: `rollout.yaml:8: probe.version_header: must be an HTTP header name, got "X Version"`},

		// Values that reach a remote shell.
		{name: "unit without {port}", add: "unit: my-app@3000\n",
			want: `rollout.yaml:7: unit: must contain {port} exactly once, like "my-app@{port}", got "my-app@3000"`},
		{name: "unit with two {port}", add: "unit: my-app@{port}{port}\n",
			want: `rollout.yaml:7: unit: must contain {port} exactly once, like "my-app@{port}", got "my-app@{port}{port}"`},
		{name: "unit with a shell metachar", add: "unit: my-app@{port};rm\n",
			want: `rollout.yaml:7: unit: may only contain letters, digits and : _ . @ - besides {port}, got "my-app@{port};rm"`},
		{name: "unit not a template instance", add: "unit: my-app-{port}\n",
			want: `rollout.yaml:7: unit: must be a systemd template instance, a name then "@" then {port}, like "my-app@{port}", got "my-app-{port}"`},
		{name: "bad app", replace: []string{"app: my-app", "app: My-App"},
			want: `rollout.yaml:1: app: must be lower-case letters, digits, "_", "." or "-", starting with a letter or digit, got "My-App"`},
		{name: "relative upstream file", replace: []string{"/etc/nginx/conf.d/my-app-upstream.conf", "conf.d/up.conf"},
			want: `rollout.yaml:5: nginx.upstream_file: must be an absolute path, got "conf.d/up.conf"`},
		{name: "upstream file with a space", replace: []string{"/etc/nginx/conf.d/my-app-upstream.conf", `"/etc/nginx/my app.conf"`},
			want: `rollout.yaml:5: nginx.upstream_file: may only contain letters, digits and . _ - /, got "/etc/nginx/my app.conf"`},
		{name: "upstream file with ..", replace: []string{"/etc/nginx/conf.d/my-app-upstream.conf", "/etc/nginx/../shadow"},
			want: `rollout.yaml:5: nginx.upstream_file: must not contain ".." segments, got "/etc/nginx/../shadow"`},
		{name: "bad upstream name", replace: []string{"upstream: my_app", "upstream: my app"},
			want: `rollout.yaml:6: nginx.upstream: must be an upstream name: letters, digits, "_", "." or "-", got "my app"`},
		{name: "bad server address", add: "  server_address: 127.0.0.1:80\n",
			want: `rollout.yaml:7: nginx.server_address: must be an IP address or "localhost", got "127.0.0.1:80"`},
		{name: "multi-line nginx command", add: "  reload_command: \"nginx -s reload\\nrm -rf /\"\n",
			want: `rollout.yaml:7: nginx.reload_command: must be one non-empty line, got "nginx -s reload\nrm -rf /"`},
		{name: "bad health path", add: "health:\n  path: healthz\n",
			want: `rollout.yaml:8: health.path: must be a path starting with "/" (letters, digits and . _ ~ / % ? & = + -), got "healthz"`},
		{name: "health path with a quote", add: "health:\n  path: /x'y\n",
			want: `rollout.yaml:8: health.path: must be a path starting with "/" (letters, digits and . _ ~ / % ? & = + -), got "/x'y"`},
		{name: "bad health status", add: "health:\n  status: 99\n",
			want: `rollout.yaml:8: health.status: must be an HTTP status 100..599, got 99`},
		{name: "bad host", replace: []string{"hosts: [10.0.0.5, web2.example.com]", "hosts: [10.0.0.5, 'host;rm -rf /']"},
			want: `rollout.yaml:2: hosts[1]: must be a host name or an IP address, got "host;rm -rf /"`},
		{name: "host like an option", replace: []string{"hosts: [10.0.0.5, web2.example.com]", "hosts: [-oProxyCommand=x]"},
			want: `rollout.yaml:2: hosts[0]: must be a host name or an IP address, got "-oProxyCommand=x"`},
		{name: "duplicate host", replace: []string{"hosts: [10.0.0.5, web2.example.com]", "hosts: [10.0.0.5, web2.example.com, 10.0.0.5]"},
			want: `rollout.yaml:2: hosts[2]: "10.0.0.5" is listed twice (also hosts[0])`},
		{name: "duplicate host, other spelling", replace: []string{"hosts: [10.0.0.5, web2.example.com]", "hosts:\n  - '2001:db8::1'\n  - '2001:DB8:0::1'"},
			want: `rollout.yaml:4: hosts[1]: "2001:DB8:0::1" is listed twice (also hosts[0])`},
		{name: "wrong type and bad value in one list", replace: []string{"hosts: [10.0.0.5, web2.example.com]", "hosts:\n  - {name: a}\n  - bad host\n  - web2.example.com"},
			want: "rollout.yaml:3: hosts[0]: must be a string, got a mapping\nrollout.yaml:4: hosts[1]: must be a host name or an IP address, got \"bad host\""},
		{name: "no hosts", replace: []string{"hosts: [10.0.0.5, web2.example.com]", "hosts: []"},
			want: `rollout.yaml:2: hosts: required`},
		{name: "bad ssh user", add: "ssh:\n  user: \"deploy;id\"\n",
			want: `rollout.yaml:8: ssh.user: must be a user name: lower-case letters, digits, "_", "." or "-", got "deploy;id"`},
		{name: "bad log file", add: "logs: ['/var/log/my-app/$(id)-{port}.log']\n",
			want: `rollout.yaml:7: logs[0]: may only contain letters, digits, . _ - / and {port}, got "/var/log/my-app/$(id)-{port}.log"`},
		{name: "empty hook", add: "hooks:\n  host_after: ['make', ' ']\n",
			want: `rollout.yaml:8: hooks.host_after[1]: must be a non-empty command without NUL bytes, got " "`},
		{name: "hook with NUL", add: "hooks:\n  before: [\"a\\0b\"]\n",
			want: `rollout.yaml:8: hooks.before[0]: must be a non-empty command without NUL bytes, got "a\x00b"`},
		{name: "parallel 0", add: "parallel: 0\n",
			want: `rollout.yaml:7: parallel: must be at least 1, got 0`},

		// The file as a whole.
		{name: "yaml syntax", replace: []string{"hosts: [10.0.0.5, web2.example.com]", "hosts: [10.0.0.5"},
			want: `rollout.yaml:2: did not find expected ',' or ']'`},
		{name: "unquoted {port} in a flow list", add: "logs: [/var/log/my-app/{port}.log]\n",
			want: `rollout.yaml:7: did not find expected ',' or ']': a {port} inside [ ] is read as a YAML mapping: quote the item ("/var/log/my-app/{port}.log") or write the list one "- item" per line`},
		{name: "bad indentation", replace: []string{"  upstream: my_app", " upstream: my_app"},
			want: `rollout.yaml:6: did not find expected key`},
		{name: "tab indentation", replace: []string{"nginx:\n", "nginx:\n\tpid_file: /run/nginx.pid\n"},
			want: `rollout.yaml:5: found character that cannot start any token`},
		{name: "two documents", add: "---\napp: other\n",
			want: `rollout.yaml:7: only one YAML document is allowed`},
		{name: "not a mapping", replace: []string{minimal, "- app: my-app\n"},
			want: `rollout.yaml: must be a mapping of keys, got a list`},
		{name: "only comments", replace: []string{minimal, "# app: my-app\n"},
			want: `rollout.yaml: the file is empty; it needs at least app, hosts, ports and nginx`},
		{name: "empty", replace: []string{minimal, ""},
			want: `rollout.yaml: the file is empty; it needs at least app, hosts, ports and nginx`},

		// Every problem, in line order (the file-wide one first), whatever
		// order they are found in.
		{
			name: "several problems",
			replace: []string{
				"app: my-app", "app: My App",
				"ports: [3000, 3001, 3002]\n", "",
				"  upstream: my_app\n", "  upstream: my_app\nhelth: {}\n",
			},
			add: "drain_timeout: 30\nhosts: [again]\n",
			want: `rollout.yaml: ports: required (or base_port and instances)
rollout.yaml:1: app: must be lower-case letters, digits, "_", "." or "-", starting with a letter or digit, got "My App"
rollout.yaml:6: unknown key "helth" (in the top level); did you mean "health"?
rollout.yaml:7: drain_timeout: must be a duration like "30s", got "30"
rollout.yaml:8: hosts: given twice (first on line 2)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := minimal
			for i := 0; i+1 < len(tt.replace); i += 2 {
				if !strings.Contains(data, tt.replace[i]) {
					t.Fatalf("%q is not in the config", tt.replace[i])
				}
				data = strings.Replace(data, tt.replace[i], tt.replace[i+1], 1)
			}
			data += tt.add
			cfg, err := ParseConfig("rollout.yaml", []byte(data))
			if err == nil {
				t.Fatalf("no error, config %+v; want\n%s", cfg, tt.want)
			}
			if cfg != nil {
				t.Errorf("got a config with the error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("config:\n%s\ngot:\n%s\nwant:\n%s", data, got, tt.want)
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		_, err := LoadConfig(filepath.Join(t.TempDir(), "rollout.yaml"))
		if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "read config: ") {
			t.Errorf("got %v, want a wrapped fs.ErrNotExist", err)
		}
	})
	t.Run("errors name the path", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rollout.yaml")
		if err := os.WriteFile(path, []byte(minimal+"parallel: -1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(path)
		if got, want := err, path+":7: parallel: must be at least 1, got -1"; got == nil || got.Error() != want {
			t.Errorf("got %v, want %s", got, want)
		}
	})
}

func TestValidateAfterOverrides(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   string // "" for valid
		check  func(c *Config) (got, want any)
	}{
		{name: "fewer ports than min_serving", change: func(c *Config) { c.SetPorts([]int{3000, 3001}); c.SetMinServing(2) },
			want: "min_serving: must be 0..1 (the other instances of a host), got 2"},
		{name: "min_serving explicitly 0", change: func(c *Config) { c.SetMinServing(0) },
			check: func(c *Config) (any, any) { return c.MinServing(), 0 }},
		{name: "min_serving default follows the ports", change: func(c *Config) { c.SetPorts([]int{4000, 4001, 4002, 4003, 4004}) },
			check: func(c *Config) (any, any) { return c.MinServing(), 4 }},
		{name: "bad and duplicate ports", change: func(c *Config) { c.SetPorts([]int{3000, 0, 3000}) },
			want: "ports[1]: must be a port 1..65535, got 0\nports[2]: 3000 is listed twice"},
		{name: "no ports", change: func(c *Config) { c.SetPorts(nil) },
			want: "ports: required (or base_port and instances)"},
		{name: "duplicate host", change: func(c *Config) { c.Hosts = append(c.Hosts, "10.0.0.5") },
			want: `hosts[2]: "10.0.0.5" is listed twice (also hosts[0])`},
		{name: "bad host and user", change: func(c *Config) { c.Hosts = []string{"a b"}; c.SSH.User = "Admin" },
			want: "hosts[0]: must be a host name or an IP address, got \"a b\"\n" +
				`ssh.user: must be a user name: lower-case letters, digits, "_", "." or "-", got "Admin"`},
		{name: "health timeout below the attempt timeout", change: func(c *Config) { c.Health.Timeout = time.Second },
			want: "health.attempt_timeout: must not be longer than health.timeout (1s), got 2s"},
		{name: "zero drain timeout", change: func(c *Config) { c.DrainTimeout = 0 },
			want: "drain_timeout: must be 1s..1h, got 0s"},
		{name: "ssh port and parallel", change: func(c *Config) { c.SSH.Port = 0; c.Parallel = 0 },
			want: "ssh.port: must be a port 1..65535, got 0\nparallel: must be at least 1, got 0"},
		{name: "valid overrides", change: func(c *Config) { c.Hosts = []string{"::1", "localhost"}; c.SSH.User = "root"; c.Parallel = 2 },
			check: func(c *Config) (any, any) { return c.UseSudo(), false }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig("rollout.yaml", []byte(minimal))
			if err != nil {
				t.Fatal(err)
			}
			tt.change(cfg)
			err = cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Errorf("got:\n%v\nwant:\n%s", err, tt.want)
			}
			if tt.check != nil {
				if got, want := tt.check(cfg); !reflect.DeepEqual(got, want) {
					t.Errorf("got %v, want %v", got, want)
				}
			}
		})
	}
	t.Run("defaults alone", func(t *testing.T) {
		want := "app: required\nhosts: required\nports: required (or base_port and instances)\n" +
			"nginx.upstream_file: required\nnginx.upstream: required"
		if err := DefaultConfig().Validate(); err == nil || err.Error() != want {
			t.Errorf("got:\n%v\nwant:\n%s", err, want)
		}
	})
}

func TestInstancesAuto(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(strings.Replace(validConfig, "instances: 4", "instances: auto", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.InstancesAuto() || len(cfg.Ports()) != 0 || cfg.BasePort() != 3000 {
		t.Fatalf("auto: %v ports %v base %d", cfg.InstancesAuto(), cfg.Ports(), cfg.BasePort())
	}
	hc := cfg.ForCores(3)
	if hc.InstancesAuto() || fmt.Sprint(hc.Ports()) != "[3000 3001 3002]" || hc.MinServing() != 2 {
		t.Errorf("for 3 cores: %v, min_serving %d", hc.Ports(), hc.MinServing())
	}
	if cfg.ForCores(0).Ports()[0] != 3000 || len(cfg.ForCores(0).Ports()) != 1 {
		t.Error("no cores must still mean one instance")
	}
	if err := cfg.SetInstances(2); err != nil || fmt.Sprint(cfg.Ports()) != "[3000 3001]" || cfg.InstancesAuto() {
		t.Errorf("SetInstances(2): %v %v", err, cfg.Ports())
	}
}
