package deployer

import (
	"strings"
	"testing"
)

// balancerHelperConfig is an app behind two balancers with sudo: helper.
func balancerHelperConfig(t *testing.T, lb string) *Config {
	t.Helper()
	nginx := "nginx: {upstream_file: /etc/nginx/conf.d/my-app-upstream.conf, upstream: my_app}\n"
	if lb != "" {
		nginx = "" // haproxy: the backend holds the instances
	}
	cfg, err := ParseConfig("rollout.yaml", []byte(`
app: my-app
hosts: [10.0.0.5, 10.0.0.6]
ssh: {user: deploy}
sudo: helper
ports: [3000, 3001]
`+nginx+`lb:
  hosts: [10.0.1.1, 10.0.1.2]
`+lb))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A balancer host's helper accepts what rollout sends it, nginx or
// HAProxy, and refuses what is not this app's.
func TestHelperOnBalancers(t *testing.T) {
	for _, tc := range []struct {
		driver string
		sent   func(r sshRemote) map[string]string
		refuse map[string][]string
	}{
		{"", func(r sshRemote) map[string]string {
			return map[string]string{
				"check nginx": r.cmdNginxCheck(r.cfg.Nginx),
				"drain":       r.cmdWriteUpstream(r.cfg.Nginx, []int{3001}, false),
				"undrain":     r.cmdWriteUpstream(r.cfg.Nginx, nil, false),
			}
		}, map[string][]string{
			"another upstream file": {"write-upstream", "/etc/nginx/nginx.conf", "nginx -t", "", "/run/nginx.pid", "-"},
			"a port of no instance": {"write-upstream", "/etc/nginx/conf.d/my-app-upstream.conf", "nginx -t", "", "/run/nginx.pid", "-", "22"},
			"haproxy on nginx":      {"haproxy", "/run/haproxy/admin.sock", "app", "100", "state"},
		}},
		{"  driver: haproxy\n  backend: app\n", func(r sshRemote) map[string]string {
			api := haproxyAPI{Socket: "/run/haproxy/admin.sock", Backend: "app"}
			return map[string]string{
				"check": r.cmdHAProxy(api, "check", nil),
				"state": r.cmdHAProxy(api, "state", nil),
				"apply": r.cmdHAProxy(api, "apply", []string{"drain:10.0.0.5-3000", "ready:10.0.0.6-3001"}),
			}
		}, map[string][]string{
			"another socket":         {"haproxy", "/run/other.sock", "app", "100", "state"},
			"another backend":        {"haproxy", "/run/haproxy/admin.sock", "other", "100", "state"},
			"another operation":      {"haproxy", "/run/haproxy/admin.sock", "app", "100", "disable"},
			"a server with a shell":  {"haproxy", "/run/haproxy/admin.sock", "app", "100", "apply", "drain:$(id)"},
			"an item of no kind":     {"haproxy", "/run/haproxy/admin.sock", "app", "100", "apply", "maint:x"},
			"arguments to state":     {"haproxy", "/run/haproxy/admin.sock", "app", "100", "state", "x"},
			"a timeout of no number": {"haproxy", "/run/haproxy/admin.sock", "app", "x", "state"},
		}},
	} {
		cfg := balancerHelperConfig(t, tc.driver)
		lc := cfg.lbSide()
		path, id := helperHere(t, lc)
		_, real := lc.helper()
		prefix := "sudo -n " + lc.HelperPath() + " " + real + " "
		for name, cmd := range tc.sent(newSSHRemote(lc, nil)) {
			rest, ok := strings.CutPrefix(cmd, prefix)
			if !ok {
				t.Errorf("%s: not a call of the balancer's helper: %.120s", name, cmd)
				continue
			}
			if out, code := runCommand(t, "sh '"+path+"' "+id+" "+rest, ""); code != 0 || !strings.HasPrefix(out, "accepted ") {
				t.Errorf("%s: the helper said (exit %d):\n%s", name, code, out)
			}
		}
		for name, args := range tc.refuse {
			if out, code := runHelper(t, path, append([]string{id}, args...)...); code != exitRefused || !strings.Contains(out, "refused: ") {
				t.Errorf("%s: exit %d\n%s", name, code, out)
			}
		}
		// setup writes it, with its sudoers file, on each balancer.
		var got []string
		for _, f := range BalancerFiles(cfg, map[string][]int{"10.0.0.5": {3000, 3001}, "10.0.0.6": {3000, 3001}}) {
			if f.Path == lc.HelperPath() || f.Path == lc.SudoersFile() {
				got = append(got, f.Host+" "+f.Path)
			}
		}
		if want := "10.0.1.1 /usr/local/lib/rollout/my-app,10.0.1.1 /etc/sudoers.d/rollout-my-app,10.0.1.2 /usr/local/lib/rollout/my-app,10.0.1.2 /etc/sudoers.d/rollout-my-app"; strings.Join(got, ",") != want {
			t.Errorf("balancer files: %v", got)
		}
	}
	if _, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [10.0.0.5]\nssh: {user: deploy}\nsudo: helper\nbase_port: 3000\ninstances: auto\n"+
		"nginx: {upstream_file: /etc/nginx/conf.d/u.conf, upstream: u}\nlb: {hosts: [10.0.1.1]}\n")); err == nil || !strings.Contains(err.Error(), "needs the instances' ports listed") {
		t.Errorf("auto ports with a balancer's helper: %v", err)
	}
}
