package deployer

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// monorepo is the example: two apps sharing hosts, ssh and health.
const monorepo = `hosts: [10.0.0.5, 10.0.0.6]
ssh: {user: deploy}
health:
  path: /healthz
  timeout: 20s
apps_parallel: 2
apps:
  web:
    base_port: 3000
    instances: auto
    nginx: {upstream_file: /etc/nginx/conf.d/web-upstream.conf, upstream: web}
    paths: [apps/web/**, packages/**]
  auth:
    base_port: 4190
    instances: 2
    nginx: {upstream_file: /etc/nginx/conf.d/auth-upstream.conf, upstream: auth}
    health: {timeout: 5s}
    release: {}
    paths: [services/auth/**]
`

func TestParseProjectApps(t *testing.T) {
	pr, err := ParseProject("rollout.yaml", []byte(monorepo))
	if err != nil {
		t.Fatal(err)
	}
	if !pr.Multi || pr.AppsParallel != 2 || !slices.Equal(pr.Names(), []string{"web", "auth"}) {
		t.Fatalf("multi %v, apps_parallel %d, apps %v", pr.Multi, pr.AppsParallel, pr.Names())
	}
	web, auth := pr.Apps[0], pr.Apps[1]
	// Shared keys reach both; an app's own key wins, key by key inside a
	// section.
	for _, c := range pr.Apps {
		if !slices.Equal(c.Hosts, []string{"10.0.0.5", "10.0.0.6"}) || c.SSH.User != "deploy" || c.Health.Path != "/healthz" {
			t.Errorf("%s: hosts %v, user %q, health.path %q: want the shared ones", c.App, c.Hosts, c.SSH.User, c.Health.Path)
		}
	}
	if web.Health.Timeout != 20*time.Second || auth.Health.Timeout != 5*time.Second {
		t.Errorf("health.timeout: web %s (want the shared 20s), auth %s (want its own 5s)", web.Health.Timeout, auth.Health.Timeout)
	}
	// Each app's own unit, ports, upstream, lock, releases.
	if web.Unit(3000) != "web@3000" || auth.Unit(4190) != "auth@4190" {
		t.Errorf("units %s, %s", web.Unit(3000), auth.Unit(4190))
	}
	if !web.InstancesAuto() || web.BasePort() != 3000 || !slices.Equal(auth.Ports(), []int{4190, 4191}) {
		t.Errorf("web auto %v base %d; auth ports %v", web.InstancesAuto(), web.BasePort(), auth.Ports())
	}
	if web.Nginx.Upstream != "web" || auth.Nginx.Upstream != "auth" {
		t.Errorf("upstreams %q %q", web.Nginx.Upstream, auth.Nginx.Upstream)
	}
	if web.Release != nil || auth.Release == nil || auth.Release.Root != defaultReleaseRoot("auth") {
		t.Errorf("release: web %v, auth %+v: want only auth's, at its own root", web.Release, auth.Release)
	}
	if sshRemote := newSSHRemote(web, nil); sshRemote.lockDir() == newSSHRemote(auth, nil).lockDir() {
		t.Errorf("both apps keep their lock and history in %s", sshRemote.lockDir())
	}
	if !slices.Equal(web.Paths, []string{"apps/web/**", "packages/**"}) {
		t.Errorf("web paths %v", web.Paths)
	}
	// Each knows the other shares its hosts.
	if len(web.neighbors) != 1 || web.neighbors[0].app != "auth" || len(auth.neighbors) != 1 || auth.neighbors[0].app != "web" {
		t.Errorf("neighbors: web %+v, auth %+v", web.neighbors, auth.neighbors)
	}
}

func TestParseProjectOneApp(t *testing.T) {
	pr, err := ParseProject("rollout.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if pr.Multi || len(pr.Apps) != 1 || pr.Apps[0].App != "my-app" || pr.AppsParallel != 1 {
		t.Fatalf("got multi %v, apps %v, apps_parallel %d", pr.Multi, pr.Names(), pr.AppsParallel)
	}
	if _, err := ParseConfig("rollout.yaml", []byte(monorepo)); err == nil || !strings.Contains(err.Error(), "the file has apps: (web, auth)") {
		t.Errorf("ParseConfig of a file with apps: %v", err)
	}
}

func TestParseProjectErrors(t *testing.T) {
	app := func(name, ports string, extra ...string) string {
		s := "  " + name + ":\n    " + ports + "\n    nginx: {upstream_file: /etc/nginx/conf.d/" + name + ".conf, upstream: " + name + "}\n"
		for _, e := range extra {
			s += "    " + e + "\n"
		}
		return s
	}
	head := "hosts: [h1]\napps:\n"
	tests := []struct {
		name, file string
		want       []string
	}{
		{"app beside apps", "app: x\n" + head + app("web", "ports: [3000]"),
			[]string{`rollout.yaml:1: app: with apps:, each app's name is its key under apps`}},
		{"paths at the top", "paths: [a/**]\n" + head + app("web", "ports: [3000]"),
			[]string{`rollout.yaml:1: paths: only under apps.NAME`}},
		{"paths without apps", "paths: [a]\n" + minimal,
			[]string{`rollout.yaml:1: paths: only in a file with apps:`}},
		{"apps_parallel without apps", "apps_parallel: 2\n" + minimal,
			[]string{`rollout.yaml:1: apps_parallel: only in a file with apps:`}},
		{"apps_parallel zero", "apps_parallel: 0\n" + head + app("web", "ports: [3000]"),
			[]string{`rollout.yaml:1: apps_parallel: must be a whole number of at least 1, got "0"`}},
		{"apps not a mapping", "hosts: [h1]\napps: [web]\n",
			[]string{`rollout.yaml:2: apps: must be a mapping of app names`}},
		{"bad app name", head + app("Web", "ports: [3000]"),
			[]string{`rollout.yaml:3: apps.Web: an app's name: must be lower-case letters`}},
		{"app key inside an app", head + app("web", "ports: [3000]", "app: other"),
			[]string{`rollout.yaml:6: apps.web.app: an app's name is its key under apps`}},
		{"unknown key in an app", head + app("web", "ports: [3000]", "helth: {path: /}"),
			[]string{`rollout.yaml:6: unknown key "helth" (in apps.web); did you mean "health"?`}},
		{"unknown key in an app's section", head + app("web", "ports: [3000]", "health: {pth: /}"),
			[]string{`rollout.yaml:6: unknown key "pth" (in apps.web.health); did you mean "path"?`}},
		{"bad value in an app", head + app("web", "ports: [3000]") + app("auth", "ports: [4000]", "health: {timeout: soon}"),
			[]string{`rollout.yaml:9: apps.auth.health.timeout: must be a duration like "30s", got "soon"`}},
		{"bad shared value said once", "drain_timeout: soon\n" + head + app("web", "ports: [3000]") + app("auth", "ports: [4000]"),
			[]string{`rollout.yaml:1: drain_timeout: must be a duration like "30s", got "soon"`}},
		{"bad glob", head + app("web", "ports: [3000]", "paths: ['a/[b']"),
			[]string{`rollout.yaml:6: apps.web.paths[0]: not a valid glob: "a/[b"`}},
		{"app missing its upstream", head + "  web: {ports: [3000]}\n",
			[]string{`rollout.yaml:3: apps.web.nginx.upstream_file: required`, `rollout.yaml:3: apps.web.nginx.upstream: required`}},
		{"overlapping fixed ports", head + app("web", "base_port: 3000\n    instances: 4") + app("auth", "ports: [3003, 3004]"),
			[]string{`rollout.yaml:7: apps.auth: ports 3003 of app auth are also app web's, on the same hosts`}},
		{"same auto base", head + app("web", "base_port: 3000\n    instances: auto") + app("auth", "base_port: 3000\n    instances: auto"),
			[]string{`rollout.yaml:7: apps.auth: ports 3000 of app auth are also app web's`}},
		{"same upstream", head + app("web", "ports: [3000]") + "  auth:\n    ports: [4000]\n    nginx: {upstream_file: /etc/nginx/conf.d/web.conf, upstream: web}\n",
			[]string{`rollout.yaml:6: apps.auth.nginx.upstream: apps web and auth name the same upstream "web"`}},
		{"app given twice", head + app("web", "ports: [3000]") + app("web", "ports: [4000]"),
			[]string{`rollout.yaml:6: apps.web: given twice (first on line 3)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseProject("rollout.yaml", []byte(tt.file))
			if err == nil {
				t.Fatalf("no error for\n%s", tt.file)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\nwant it to contain\n%s", err, w)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tt.want) {
				t.Errorf("%d problems, want %d:\n%v", n, len(tt.want), err)
			}
		})
	}
}

func TestProjectOnSeparateHostsMayShareEverything(t *testing.T) {
	file := `apps:
  web:  {hosts: [h1], ports: [3000], nginx: {upstream_file: /etc/nginx/conf.d/up.conf, upstream: app}}
  auth: {hosts: [h2], ports: [3000], nginx: {upstream_file: /etc/nginx/conf.d/up.conf, upstream: app}}
`
	pr, err := ParseProject("rollout.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if len(pr.Apps[0].neighbors)+len(pr.Apps[1].neighbors) != 0 {
		t.Errorf("apps on different hosts are neighbors: %+v %+v", pr.Apps[0].neighbors, pr.Apps[1].neighbors)
	}
}

func TestCheckNeighborsResolvesAutoPerHost(t *testing.T) {
	// web: auto from 3000; auth: 4 from 3002. On one core they do not meet
	// (the config is valid); on four they do.
	file := `hosts: [h1, h2]
apps:
  web:  {base_port: 3000, instances: auto, nginx: {upstream_file: /etc/nginx/conf.d/web.conf, upstream: web}}
  auth: {hosts: [h2], base_port: 3002, instances: 4, nginx: {upstream_file: /etc/nginx/conf.d/auth.conf, upstream: auth}}
`
	pr, err := ParseProject("rollout.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	web, auth := pr.Apps[0], pr.Apps[1]
	cores := func(n int) func() (int, error) { return func() (int, error) { return n, nil } }
	if err := checkNeighbors(web.ForCores(2), "h2", true, cores(2)); err != nil {
		t.Errorf("2 cores: %v", err)
	}
	if err := checkNeighbors(web.ForCores(4), "h1", true, cores(4)); err != nil {
		t.Errorf("h1 has no auth: %v", err)
	}
	err = checkNeighbors(web.ForCores(4), "h2", true, cores(4))
	if err == nil || !strings.Contains(err.Error(), "ports 3002-3003 of app web are also app auth's here (auth: 3002-3005) (instances: auto, 4 cores here)") {
		t.Errorf("4 cores, web: %v", err)
	}
	err = checkNeighbors(auth, "h2", false, cores(4))
	if err == nil || !strings.Contains(err.Error(), "ports 3002-3003 of app auth are also app web's here (web: 3000-3003)") {
		t.Errorf("4 cores, auth: %v", err)
	}
	if err := checkNeighbors(auth, "h2", false, func() (int, error) { return 0, errors.New("nproc: not found") }); err == nil || !strings.Contains(err.Error(), "app web's instances: auto: nproc: not found") {
		t.Errorf("cores unknown: %v", err)
	}
}

func TestChanged(t *testing.T) {
	pr, err := ParseProject("rollout.yaml", []byte(monorepo))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		files []string
		want  []string
	}{
		{[]string{"services/auth/main.js"}, []string{"auth"}},
		{[]string{"apps/web/src/deep/x.js", "README.md"}, []string{"web"}},
		{[]string{"packages/ui/button.js", "services/auth/a"}, []string{"web", "auth"}},
		{[]string{"README.md", "apps/webby/x"}, nil},
		{nil, nil},
	}
	for _, tt := range tests {
		got, why, err := Changed(pr.Apps, tt.files)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range got {
			names = append(names, c.App)
			if !slices.Contains(tt.files, why[c.App]) {
				t.Errorf("%v: %s chosen for %q, not a changed file", tt.files, c.App, why[c.App])
			}
		}
		if !slices.Equal(names, tt.want) {
			t.Errorf("%v: chose %v, want %v", tt.files, names, tt.want)
		}
	}
	pr.Apps[1].Paths = nil
	if _, _, err := Changed(pr.Apps, []string{"x"}); err == nil || !strings.Contains(err.Error(), `app auth has no paths:`) {
		t.Errorf("an app without paths: %v", err)
	}
}

func TestSelect(t *testing.T) {
	pr, err := ParseProject("rollout.yaml", []byte(monorepo))
	if err != nil {
		t.Fatal(err)
	}
	got, err := pr.Select([]string{"auth", "web", "auth"})
	if err != nil || len(got) != 2 || got[0].App != "web" || got[1].App != "auth" {
		t.Errorf("got %v, %v: want both, in the file's order", got, err)
	}
	if _, err := pr.Select([]string{"api", "web"}); err == nil || err.Error() != `no app "api" in the config (its apps: web, auth)` {
		t.Errorf("unknown app: %v", err)
	}
}

func TestPortRanges(t *testing.T) {
	if got := PortRanges([]int{3005, 3000, 3001, 3002, 3007, 3008}); got != "3000-3002, 3005, 3007-3008" {
		t.Errorf("got %q", got)
	}
}
