package deployer

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestReleaseConfig(t *testing.T) {
	defaults := func(edit func(r *ReleaseConfig)) *ReleaseConfig {
		r := &ReleaseConfig{Root: "/srv/my-app", Keep: 5, PrepareTimeout: 10 * time.Minute, MigrateTimeout: 10 * time.Minute, OnFailure: OnFailureRevert}
		edit(r)
		return r
	}
	tests := []struct {
		name, yaml string
		want       *ReleaseConfig
		err        string
	}{
		{"absent", "", nil, ""},
		{"defaults", "release: {}\n", defaults(func(*ReleaseConfig) {}), ""},
		{"every key", "release:\n  root: /opt/shop\n  shared: [.env, uploads, storage/logs, storage/cache]\n  keep: 3\n" +
			"  prepare: npm ci --omit=dev\n  prepare_timeout: 90s\n  on_failure: halt\n" +
			"  migrate: npm run migrate\n  migrate_host: 10.0.0.5\n  migrate_timeout: 5m\n",
			&ReleaseConfig{Root: "/opt/shop", Shared: []string{".env", "uploads", "storage/logs", "storage/cache"}, Keep: 3,
				Prepare: "npm ci --omit=dev", PrepareTimeout: 90 * time.Second, OnFailure: OnFailureHalt,
				Migrate: "npm run migrate", MigrateHost: "10.0.0.5", MigrateTimeout: 5 * time.Minute}, ""},
		{"migrate_host not a host", "release: {migrate: ./m.sh, migrate_host: db1}\n", nil, `c.yaml:7: release.migrate_host: must be one of hosts (10.0.0.5, web2.example.com), got "db1"`},
		{"migrate two lines", "release: {migrate: \"a\\nb\"}\n", nil, `c.yaml:7: release.migrate: must be one non-empty line, got "a\nb"`},
		{"migrate_timeout 1ns", "release: {migrate: ./m.sh, migrate_timeout: 1ns}\n", nil, `c.yaml:7: release.migrate_timeout: must be 1s..2h, got 1ns`},
		{"the bounds", "release: {keep: 100, prepare_timeout: 2h}\n",
			defaults(func(r *ReleaseConfig) { r.Keep, r.PrepareTimeout = 100, 2*time.Hour }), ""},
		{"an empty root is the default", "release: {root: \"\", keep: 1}\n", defaults(func(r *ReleaseConfig) { r.Keep = 1 }), ""},

		{"not a mapping", "release: /srv/my-app\n", nil, `c.yaml:7: release: must be a mapping of keys, got "/srv/my-app"`},
		{"nothing", "release:\n", nil, `c.yaml:7: release: must be a mapping of keys, got nothing`},
		{"unknown key", "release:\n  kep: 3\n", nil, `c.yaml:8: unknown key "kep" (in release); did you mean "keep"?`},
		{"unknown key, nothing close", "release:\n  colour: blue\n", nil, `c.yaml:8: unknown key "colour" (in release)`},
		{"twice", "release:\n  keep: 2\n  keep: 3\n", nil, `c.yaml:9: release.keep: given twice (first on line 8)`},
		{"a wrong type", "release:\n  keep: many\n", nil, `c.yaml:8: release.keep: must be a whole number, got "many"`},
		{"shared not a list", "release:\n  shared: uploads\n", nil, `c.yaml:8: release.shared: must be a list, got "uploads"`},

		{"root relative", "release:\n  root: srv/my-app\n", nil, `c.yaml:8: release.root: must be an absolute path, got "srv/my-app"`},
		{"root /", "release:\n  root: /\n", nil, `c.yaml:8: release.root: must not be "/" (rollout manages the directories inside it), got "/"`},
		{"root //", "release:\n  root: //\n", nil, `c.yaml:8: release.root: must not be "/" (rollout manages the directories inside it), got "//"`},
		{"root with a space", "release:\n  root: /srv/my app\n", nil,
			`c.yaml:8: release.root: may only contain letters, digits and . _ - /, got "/srv/my app"`},
		{"root with ..", "release:\n  root: /srv/../etc\n", nil, `c.yaml:8: release.root: must not contain ".." segments, got "/srv/../etc"`},
		{"root with a trailing /", "release:\n  root: /srv/my-app/\n", nil,
			`c.yaml:8: release.root: must be a clean path (no "//", "." segments or trailing "/"), like "/srv/my-app", got "/srv/my-app/"`},
		{"root with //", "release:\n  root: /srv//my-app\n", nil,
			`c.yaml:8: release.root: must be a clean path (no "//", "." segments or trailing "/"), like "/srv/my-app", got "/srv//my-app"`},

		{"shared absolute", "release:\n  shared:\n    - uploads\n    - /etc/passwd\n", nil,
			`c.yaml:10: release.shared[1]: must be a path relative to the release (like "uploads"), not an absolute one, got "/etc/passwd"`},
		{"shared empty", "release:\n  shared: [\"\"]\n", nil, `c.yaml:8: release.shared[0]: must be a path relative to the release, got nothing`},
		{"shared with a space", "release:\n  shared: [my uploads]\n", nil,
			`c.yaml:8: release.shared[0]: may only contain letters, digits and . _ - separated by single "/", got "my uploads"`},
		{"shared with a trailing /", "release:\n  shared: [uploads/]\n", nil,
			`c.yaml:8: release.shared[0]: may only contain letters, digits and . _ - separated by single "/", got "uploads/"`},
		{"shared with //", "release:\n  shared: [a//b]\n", nil,
			`c.yaml:8: release.shared[0]: may only contain letters, digits and . _ - separated by single "/", got "a//b"`},
		{"shared ..", "release:\n  shared: [../etc]\n", nil, `c.yaml:8: release.shared[0]: must not contain "." or ".." segments, got "../etc"`},
		{"shared .", "release:\n  shared: [.]\n", nil, `c.yaml:8: release.shared[0]: must not contain "." or ".." segments, got "."`},
		{"shared ./x", "release:\n  shared: [storage/./x]\n", nil,
			`c.yaml:8: release.shared[0]: must not contain "." or ".." segments, got "storage/./x"`},
		{"shared twice", "release:\n  shared:\n    - .env\n    - uploads\n    - .env\n", nil,
			`c.yaml:11: release.shared[2]: ".env" is listed twice (also release.shared[0])`},
		{"shared inside another", "release:\n  shared:\n    - storage\n    - storage/logs\n", nil,
			`c.yaml:10: release.shared[1]: "storage/logs" is inside release.shared[0] ("storage"); list one or the other`},
		{"shared holding another", "release:\n  shared:\n    - storage/logs/app\n    - storage\n", nil,
			`c.yaml:10: release.shared[1]: "storage" holds release.shared[0] ("storage/logs/app"); list one or the other`},

		{"keep 0", "release: {keep: 0}\n", nil, `c.yaml:7: release.keep: must be 1..100 (the successful releases each host keeps), got 0`},
		{"keep 101", "release: {keep: 101}\n", nil, `c.yaml:7: release.keep: must be 1..100 (the successful releases each host keeps), got 101`},
		{"prepare blank", "release:\n  prepare: \" \"\n", nil, `c.yaml:8: release.prepare: must be one non-empty line, got " "`},
		{"prepare two lines", "release:\n  prepare: |\n    npm ci\n    npm run build\n", nil,
			`c.yaml:8: release.prepare: must be one non-empty line, got "npm ci\nnpm run build\n"`},
		{"prepare_timeout 0", "release: {prepare_timeout: 0s}\n", nil, `c.yaml:7: release.prepare_timeout: must be 1s..2h, got 0s`},
		{"prepare_timeout long", "release: {prepare_timeout: 3h}\n", nil, `c.yaml:7: release.prepare_timeout: must be 1s..2h, got 3h0m0s`},
		{"prepare_timeout negative", "release: {prepare_timeout: -1s}\n", nil, `c.yaml:7: release.prepare_timeout: must not be negative, got "-1s"`},
		{"on_failure", "release:\n  on_failure: rollback\n", nil, `c.yaml:8: release.on_failure: must be revert or halt, got "rollback"`},
		{"several, in line order", "release:\n  keep: 0\n  on_failure: stop\n  shared: [/x]\n", nil,
			"c.yaml:8: release.keep: must be 1..100 (the successful releases each host keeps), got 0\n" +
				"c.yaml:9: release.on_failure: must be revert or halt, got \"stop\"\n" +
				`c.yaml:10: release.shared[0]: must be a path relative to the release (like "uploads"), not an absolute one, got "/x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("c.yaml", []byte(minimal+tt.yaml))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("got error\n%v\nwant\n%s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Release, tt.want) {
				t.Errorf("got %+v, want %+v", c.Release, tt.want)
			}
		})
	}
}

// TestReleaseRootFromApp checks that the default root follows the app and
// that a bad app is reported once, as app.
func TestReleaseRootFromApp(t *testing.T) {
	c, err := ParseConfig("c.yaml", []byte(strings.Replace(minimal, "app: my-app", "app: shop", 1)+"release: {}\n"))
	if err != nil || c.Release.Root != "/srv/shop" {
		t.Fatalf("got %v, %+v", err, c)
	}
	for _, app := range []string{"app: My App", "app: [a]"} {
		_, err := ParseConfig("c.yaml", []byte(strings.Replace(minimal, "app: my-app", app, 1)+"release: {}\n"))
		if err == nil || strings.Count(err.Error(), "\n") != 0 || !strings.HasPrefix(err.Error(), "c.yaml:1: app: ") {
			t.Errorf("%s: got %v, want only the app's problem", app, err)
		}
	}
}

// TestReleaseValidate checks a release section made in code.
func TestReleaseValidate(t *testing.T) {
	c, err := ParseConfig("c.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	c.Release = defaultRelease() // no root: Validate does not fill defaults
	if err := c.Validate(); err == nil || err.Error() != "release.root: required" {
		t.Errorf("got %v", err)
	}
	c.Release.Root = "/srv/my-app"
	if err := c.Validate(); err != nil {
		t.Errorf("got %v", err)
	}
}

func TestReleaseID(t *testing.T) {
	at := time.Date(2024, 5, 1, 14, 0, 9, 0, time.FixedZone("CEST", 2*3600))
	long := strings.Repeat("a", 300)
	tests := []struct{ version, want string }{
		{"v1.2.3", "20240501120009-v1.2.3"},
		{"feature/x y", "20240501120009-feature-x-y"},
		{"", "20240501120009-release"},
		{"---...", "20240501120009-release"},
		{"..", "20240501120009-release"},
		{"/", "20240501120009-release"},
		{"a b\tc\n", "20240501120009-a-b-c"},
		{"a//  //b", "20240501120009-a-b"},
		{"-v1-", "20240501120009-v1"},
		{".hidden.", "20240501120009-hidden"},
		{"my_app-2.0_rc1", "20240501120009-my_app-2.0_rc1"},
		{"version ünïcödé 版本 1", "20240501120009-version-n-c-d-1"},
		{"版本", "20240501120009-release"},
		{"$(rm -rf /);`id`", "20240501120009-rm--rf-id"},
		{long, "20240501120009-" + long[:64]},
		{strings.Repeat("a", 63) + "/b", "20240501120009-" + strings.Repeat("a", 63)}, // no trailing "-" after the cut
		{strings.Repeat("a", 62) + "..b", "20240501120009-" + strings.Repeat("a", 62)},
		{"/" + long, "20240501120009-" + long[:64]},
	}
	for _, tt := range tests {
		got := ReleaseID(at, tt.version)
		if got != tt.want {
			t.Errorf("ReleaseID(%q) = %q, want %q", tt.version, got, tt.want)
		}
		if err := ValidReleaseID(got); err != nil {
			t.Errorf("ReleaseID(%q) = %q: %v", tt.version, got, err)
		}
	}
}

func TestValidReleaseID(t *testing.T) {
	for _, id := range []string{"20240501120009-v1.2.3", "20240501120009-release", "20240501120009-" + strings.Repeat("x", 64), "20240501120009--"} {
		if err := ValidReleaseID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	for _, id := range []string{"", "v1.2.3", "2024050112000-v1", "202405011200099-v1", "20240501120009", "20240501120009-",
		"20240501120009-" + strings.Repeat("x", 65), "20240501120009-a/b", "20240501120009-../x", "../20240501120009-v1",
		"20240501120009-v1\n", " 20240501120009-v1", "20240501120009_v1", "２0240501120009-v1"} {
		if err := ValidReleaseID(id); err == nil {
			t.Errorf("%q: no error", id)
		}
	}
	err := ValidReleaseID("v1.2.3")
	want := `"v1.2.3" is not a release id: want its UTC time as 14 digits (YYYYMMDDhhmmss), "-", then 1..64 letters, digits, ".", "_" or "-", like "20240501120000-v1.2.3"`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}
