package deployer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestLoadConfigTooLarge checks that a file over 1 MiB is refused by its
// size, in a short message, and that one of exactly 1 MiB is read.
func TestLoadConfigTooLarge(t *testing.T) {
	t.Run("10 MiB", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rollout.yaml")
		if err := os.WriteFile(path, []byte(minimal+strings.Repeat("#", 10<<20-len(minimal))), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(path)
		want := path + ": the file is 10485760 bytes; a config is at most 1 MiB (1048576 bytes)"
		if err == nil || err.Error() != want {
			t.Fatalf("got %v, want %s", err, want)
		}
		if len(err.Error()) >= 1024 {
			t.Errorf("the error is %d bytes long", len(err.Error()))
		}
	})
	t.Run("1 MiB and a byte, given as data", func(t *testing.T) {
		_, err := ParseConfig("rollout.yaml", []byte(minimal+strings.Repeat("#", 1<<20+1-len(minimal))))
		want := "rollout.yaml: the file is 1048577 bytes; a config is at most 1 MiB (1048576 bytes)"
		if err == nil || err.Error() != want {
			t.Errorf("got %v, want %s", err, want)
		}
	})
	t.Run("exactly 1 MiB", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rollout.yaml")
		if err := os.WriteFile(path, []byte(minimal+strings.Repeat("#", 1<<20-len(minimal))), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadConfig(path); err != nil {
			t.Errorf("got %v, want no error", err)
		}
	})
}

// TestConfigValueTooLong checks that a value over 4096 characters is
// refused where it is, once, in a short message.
func TestConfigValueTooLong(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name    string
		parse   func(data []byte) (*Config, error) // ParseConfig if nil
		replace []string                           // old, new pairs applied to minimal
		add     string                             // appended to minimal, from line 7 (inside nginx:)
		want    string
	}{
		{name: "10 MB upstream, past the file's bound", parse: func(data []byte) (*Config, error) {
			root, err := document("rollout.yaml", data)
			if err != nil {
				return nil, err
			}
			return parseConfig("rollout.yaml", root)
		},
			replace: []string{"upstream: my_app", "upstream: " + long(10<<20)},
			want:    "rollout.yaml:6: nginx.upstream: is 10485760 characters long; at most 4096"},
		{name: "upstream in a file under 1 MiB", replace: []string{"upstream: my_app", "upstream: " + long(1_000_000)},
			want: "rollout.yaml:6: nginx.upstream: is 1000000 characters long; at most 4096"},
		{name: "characters, not bytes", add: "  reload_command: " + strings.Repeat("é", 4097) + "\n",
			want: "rollout.yaml:7: nginx.reload_command: is 4097 characters long; at most 4096"},
		{name: "a hook", add: "hooks:\n  before: [make, " + long(5000) + "]\n",
			want: "rollout.yaml:8: hooks.before[1]: is 5000 characters long; at most 4096"},
		{name: "a host", replace: []string{"web2.example.com", long(5000)},
			want: "rollout.yaml:2: hosts[1]: is 5000 characters long; at most 4096"},
		{name: "a duration", add: "drain_timeout: " + long(5000) + "\n",
			want: "rollout.yaml:7: drain_timeout: is 5000 characters long; at most 4096"},
		{name: "a number", add: "parallel: " + strings.Repeat("1", 5000) + "\n",
			want: "rollout.yaml:7: parallel: is 5000 characters long; at most 4096"},
		{name: "a port", replace: []string{"3001", strings.Repeat("1", 5000)},
			want: "rollout.yaml:3: ports[1]: is 5000 characters long; at most 4096"},
		{name: "a required value", replace: []string{"app: my-app", "app: " + long(5000)},
			want: "rollout.yaml:1: app: is 5000 characters long; at most 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parse := tt.parse
			if parse == nil {
				parse = func(data []byte) (*Config, error) { return ParseConfig("rollout.yaml", data) }
			}
			data := minimal
			for i := 0; i+1 < len(tt.replace); i += 2 {
				data = strings.Replace(data, tt.replace[i], tt.replace[i+1], 1)
			}
			_, err := parse([]byte(data + tt.add))
			if err == nil || err.Error() != tt.want {
				t.Fatalf("got:\n%.2000v\nwant:\n%s", err, tt.want)
			}
			if len(err.Error()) >= 1024 {
				t.Errorf("the error is %d bytes long", len(err.Error()))
			}
		})
	}
	t.Run("4096 characters are fine", func(t *testing.T) {
		c, err := ParseConfig("rollout.yaml", []byte(minimal+"hooks:\n  after: ["+long(4096)+"]\n"))
		if err != nil || len(c.Hooks.After[0]) != 4096 {
			t.Errorf("got %v", err)
		}
	})
}

// TestConfigErrorsQuoteBriefly checks that an error quotes at most 200
// bytes of a bad value, whichever check finds it.
func TestConfigErrorsQuoteBriefly(t *testing.T) {
	bad := "my app" + strings.Repeat("x", 294) // 300 bytes
	quoted := `"my app` + strings.Repeat("x", 194) + `"…(300 bytes)`
	tests := []struct {
		name, replace, add, want string
	}{
		{name: "a validator", replace: "upstream: " + bad,
			want: `rollout.yaml:6: nginx.upstream: must be an upstream name: letters, digits, "_", "." or "-", got ` + quoted},
		{name: "a type error", add: "ssh:\n  port: " + bad + "\n",
			want: `rollout.yaml:8: ssh.port: must be a whole number, got ` + quoted},
		{name: "an unknown key", add: bad + ": 1\n",
			want: `rollout.yaml:7: unknown key ` + quoted + ` (in the top level)`},
		{name: "a bastion", add: "ssh:\n  jump: " + strings.Repeat("b", 300) + ":99999\n",
			want: `rollout.yaml:8: ssh.jump: bastion "` + strings.Repeat("b", 200) + `"…(306 bytes): must be a port 1..65535, got 99999`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := minimal
			if tt.replace != "" {
				data = strings.Replace(data, "upstream: my_app", tt.replace, 1)
			}
			_, err := ParseConfig("rollout.yaml", []byte(data+tt.add))
			if err == nil || err.Error() != tt.want {
				t.Errorf("got:\n%v\nwant:\n%s", err, tt.want)
			}
		})
	}
}

func TestQuoteValue(t *testing.T) {
	a := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct{ name, in, want string }{
		{"short", "my app", `"my app"`},
		{"200 bytes, whole", a(200), `"` + a(200) + `"`},
		{"201 bytes, cut", a(201), `"` + a(200) + `"…(201 bytes)`},
		{"escapes", "a\x00\n\"", `"a\x00\n\""`},
		{"a rune across the cut", a(199) + "é" + a(10), `"` + a(199) + `"…(211 bytes)`},
		{"a rune before the cut", a(198) + "é" + a(10), `"` + a(198) + `é"…(210 bytes)`},
		{"not UTF-8", a(198) + strings.Repeat("\x80", 10), `"` + a(198) + `\x80\x80"…(208 bytes)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := quoteValue(tt.in); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
	if got := quoteValue(strings.Repeat("é", 1000)); !utf8.ValidString(got) {
		t.Errorf("cut inside a rune: %q", got)
	}
}

// TestConfigErrorsCounted checks that only the first 20 problems are
// listed, then how many more there are, in Validate too.
func TestConfigErrorsCounted(t *testing.T) {
	var hosts []string
	for i := range 25 {
		hosts = append(hosts, fmt.Sprintf("'bad host %d'", i))
	}
	_, err := ParseConfig("rollout.yaml", []byte(strings.Replace(minimal, "10.0.0.5, web2.example.com", strings.Join(hosts, ", "), 1)))
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 21 || lines[19] != `rollout.yaml:2: hosts[19]: must be a host name or an IP address, got "bad host 19"` ||
		lines[20] != "rollout.yaml: and 5 more problems" {
		t.Errorf("got %d lines:\n%v", len(lines), err)
	}

	c, err := ParseConfig("rollout.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range map[int]string{21: "and 1 more problem", 22: "and 2 more problems"} {
		c.Hosts = strings.Split(strings.Repeat("a b,", n), ",")[:n]
		err = c.Validate()
		if lines := strings.Split(fmt.Sprint(err), "\n"); len(lines) != 21 || lines[20] != want {
			t.Errorf("%d problems, got:\n%v", n, err)
		}
	}
}

// TestParseConfigManyTypeErrors checks that many type errors with their
// validation problems are told apart in linear time: comparing each
// problem with each type error took 17s for these 20,000 (100 times this
// test), and minutes for a 1 MiB file.
func TestParseConfigManyTypeErrors(t *testing.T) {
	data := strings.Replace(minimal, "10.0.0.5, web2.example.com", strings.Repeat("[], ", 20000)+"[]", 1)
	_, err := ParseConfig("rollout.yaml", []byte(data))
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 21 || lines[0] != "rollout.yaml:2: hosts[0]: must be a string, got a list" ||
		lines[20] != "rollout.yaml: and 19981 more problems" {
		t.Errorf("got %d lines:\n%.3000v", len(lines), err)
	}
}

// Every duration has bounds (a typo of 1ns or 100h is refused, naming the
// key and the range), explicit zeros are never replaced by a default, and
// instances per host are capped.
func TestEveryValueBounded(t *testing.T) {
	for _, tc := range []struct{ add, want string }{
		{"drain_timeout: 1ns\n", "drain_timeout: must be 1s..1h, got 1ns"},
		{"drain_timeout: 100h\n", "drain_timeout: must be 1s..1h, got 100h0m0s"},
		{"health: {interval: 1ns}\n", "health.interval: must be 10ms..1m, got 1ns"},
		{"health: {timeout: 1ns}\n", "health.timeout: must be 1s..1h, got 1ns"},
		{"health: {attempt_timeout: 1ns}\n", "health.attempt_timeout: must be 10ms..1m, got 1ns"},
		{"health: {min_healthy: 11m}\n", "health.min_healthy: must be 0s..10m, got 11m0s"},
		{"ssh: {connect_timeout: 1ns}\n", "ssh.connect_timeout: must be 1s..10m, got 1ns"},
		{"strategy: {batches: [1, 100%], bake: 1ns}\n", "strategy.bake: must be 1s..24h, got 1ns"},
		{"release: {root: /srv/my-app, artifact: build, prepare_timeout: 1ns}\n", "release.prepare_timeout: must be 1s..2h, got 1ns"},
		{"probe: {timeout: 1ns}\n", "probe.timeout: must be 10ms..1m, got 1ns"},
		{"lock_stale_after: 1000h\n", "lock_stale_after: must be 3s..1h, got 1000h0m0s"},
		{"setup: {restart_sec: 1h}\n", "setup.restart_sec: must be 0s..10m, got 1h0m0s"},
		{"setup: {listen: 0}\n", "setup.listen: must be"},
		{"setup: {start_limit_burst: 0}\n", "setup.start_limit_burst: must be at least 1, got 0"},
	} {
		t.Run(tc.add, func(t *testing.T) {
			_, err := ParseConfig("rollout.yaml", []byte(minimal+tc.add))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
	// An explicit 0 where 0 means something is kept, not replaced.
	c, err := ParseConfig("rollout.yaml", []byte(minimal+"setup: {restart_sec: 0s}\n"))
	if err != nil || c.setupDefaults().RestartDelay != 0 {
		t.Errorf("restart_sec: 0s: %v, %v", c, err)
	}

	for _, tc := range []struct{ yaml, want string }{
		{"base_port: 3000\ninstances: 1025\n", "instances: must be at most 1024 instances per host (one per CPU core is usual), got 1025"},
		{"base_port: 3000\ninstances: 60000\n", "instances: must be at most 1024 instances per host"},
		{"ports: [" + strings.TrimSuffix(strings.Repeat("3000, ", 1025), ", ") + "]\n", "ports: must be at most 1024 instances per host"},
	} {
		body := strings.Replace(minimal, "ports: [3000, 3001, 3002]\n", tc.yaml, 1)
		if body == minimal {
			t.Fatalf("minimal has no ports line to replace:\n%s", minimal)
		}
		_, err := ParseConfig("rollout.yaml", []byte(body))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Count(err.Error(), "\n") > 12 {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
	c, err = ParseConfig("rollout.yaml", []byte(strings.Replace(minimal, "ports: [3000, 3001, 3002]\n", "base_port: 3000\ninstances: 1024\n", 1)))
	if err != nil || len(c.Ports()) != MaxInstances {
		t.Errorf("1024 instances: %v", err)
	}
	if err := c.SetInstances(1025); err == nil {
		t.Error("scale to 1025 accepted")
	}
}

// A merge key is refused as what it is, not as a misspelt key; the plan
// says what min_serving: 0 really does.
func TestMergeKeysAndServingFloorSaid(t *testing.T) {
	_, err := ParseConfig("rollout.yaml", []byte(minimal+"health:\n  <<: {timeout: 10s}\n  path: /healthz\n"))
	if err == nil || !strings.Contains(err.Error(), "rollout.yaml:8: health: YAML merge keys (<<) are not read") || strings.Contains(err.Error(), "did you mean") {
		t.Errorf("merge key: %v", err)
	}
	c, err := ParseConfig("rollout.yaml", []byte(minimal+"min_serving: 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := BuildPlanFor(c, "v1", nil).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "stop unless the drain leaves at least 1 other serving (min_serving is 0, but a host's last serving instance is never drained)") ||
		strings.Contains(b.String(), "1 others") {
		t.Errorf("the plan does not say what min_serving: 0 does:\n%s", b.String())
	}
}

// An unquoted {port} in a [ ] list is a YAML error; rollout says how to
// write it, and the quoted form is read.
func TestPlaceholderInFlowListHint(t *testing.T) {
	_, err := ParseConfig("rollout.yaml", []byte(minimal+"logs: [/var/log/my-app/stderr-{port}.log]\n"))
	if err == nil || !strings.Contains(err.Error(), "rollout.yaml:7:") || !strings.Contains(err.Error(), `quote the item ("/var/log/my-app/{port}.log")`) {
		t.Errorf("got %v", err)
	}
	c, err := ParseConfig("rollout.yaml", []byte(minimal+"logs: [\"/var/log/my-app/stderr-{port}.log\"]\n"))
	if err != nil || len(c.Logs) != 1 {
		t.Errorf("quoted: %v", err)
	}
	// Another syntax error gets no such hint.
	_, err = ParseConfig("rollout.yaml", []byte(minimal+"logs: [/var/log/a.log\n"))
	if err == nil || strings.Contains(err.Error(), "{port}") {
		t.Errorf("unrelated error: %v", err)
	}
}
