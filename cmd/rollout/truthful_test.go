package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// refusedPort is a loopback port nothing listens on.
func refusedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// plainConfig is a config of one loopback host whose SSH port refuses,
// in a new directory with no ssh config, no agent and an empty home.
func plainConfig(t *testing.T) (cfg, dir string) {
	t.Helper()
	dir = t.TempDir()
	t.Setenv("HOME", filepath.Join(dir, "home"))
	t.Setenv("SSH_AUTH_SOCK", "")
	t.Setenv("ROLLOUT_SSH_KEY", "")
	t.Setenv("ROLLOUT_KNOWN_HOSTS", "")
	cfg = filepath.Join(dir, "rollout.yaml")
	yaml := "app: my-app\nhosts: [127.0.0.1]\nbase_port: 3000\ninstances: 2\n" +
		"ssh: {user: deploy, port: " + strconv.Itoa(refusedPort(t)) + ", connect_timeout: 2s, config: " + filepath.Join(dir, "no-ssh-config") + "}\n" +
		"nginx: {upstream_file: /etc/nginx/conf.d/my-app.conf, upstream: my_app}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, dir
}

// A mistake on this machine (the key, known_hosts, the variables holding
// them) is exit 2 naming the setting, for every command that connects,
// never "unreachable" or a host's failure.
func TestLocalSSHMistakesAreLocal(t *testing.T) {
	commands := [][]string{
		{"deploy", "--version", "v1"}, {"status"}, {"setup"}, {"logs"}, {"history"}, {"lock", "status"},
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string) (sshExtra string, env map[string]string)
		want  []string
	}{
		{"key file missing", func(t *testing.T, dir string) (string, map[string]string) {
			return ", key: " + filepath.Join(dir, "nope"), nil
		}, []string{"read key", "nope", "ssh.key, --key or ROLLOUT_SSH_KEY_FILE"}},
		{"key file not a key", func(t *testing.T, dir string) (string, map[string]string) {
			f := filepath.Join(dir, "garbage")
			if err := os.WriteFile(f, []byte("not a key\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return ", key: " + f, nil
		}, []string{"parse key", "garbage", "ssh.key, --key or ROLLOUT_SSH_KEY_FILE"}},
		{"no key at all", func(t *testing.T, dir string) (string, map[string]string) {
			return "", nil
		}, []string{"no SSH key, and no ssh-agent", "ROLLOUT_SSH_KEY"}},
		{"ROLLOUT_SSH_KEY malformed", func(t *testing.T, dir string) (string, map[string]string) {
			return "", map[string]string{"ROLLOUT_SSH_KEY": "garbage"}
		}, []string{"ROLLOUT_SSH_KEY: not an OpenSSH or PEM private key"}},
		{"ROLLOUT_KNOWN_HOSTS malformed", func(t *testing.T, dir string) (string, map[string]string) {
			key, _ := testKey(t, dir)
			return ", key: " + key, map[string]string{"ROLLOUT_KNOWN_HOSTS": testHostKeyLine(t, "10.0.0.9") + "garbage\n"}
		}, []string{"ROLLOUT_KNOWN_HOSTS: line 2 is not a known_hosts line"}},
		{"known_hosts file malformed", func(t *testing.T, dir string) (string, map[string]string) {
			key, _ := testKey(t, dir)
			kh := filepath.Join(dir, "kh")
			if err := os.WriteFile(kh, []byte("garbage\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return ", key: " + key + ", known_hosts: " + kh, nil
		}, []string{"read known_hosts", filepath.Join("kh"), "--known-hosts"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, dir := plainConfig(t)
			extra, env := tc.setup(t, dir)
			cfg := plainConfigIn(t, dir, extra)
			for k, v := range env {
				t.Setenv(k, v)
			}
			for _, args := range commands {
				out, errOut, code := runCLI(t, append(args, "-c", cfg)...)
				if code != exitUsage {
					t.Errorf("%v: exit %d, want %d\n%s%s", args, code, exitUsage, out, errOut)
					continue
				}
				for _, w := range tc.want {
					if !strings.Contains(errOut, w) {
						t.Errorf("%v: stderr does not say %q:\n%s", args, w, errOut)
					}
				}
				for _, never := range []string{"unreachable", "not every instance", "/proc/self/fd", "127.0.0.1"} {
					if strings.Contains(out+errOut, never) {
						t.Errorf("%v: blamed on the host (%q):\n%s%s", args, never, out, errOut)
					}
				}
			}
		})
	}
}

// plainConfigIn adds sshExtra to the ssh: line of dir's config
// (plainConfig's environment stays).
func plainConfigIn(t *testing.T, dir, sshExtra string) string {
	t.Helper()
	cfg := filepath.Join(dir, "rollout.yaml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "}\nnginx:", sshExtra+"}\nnginx:", 1)
	if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A host that cannot be reached is the same exit code for every command
// (3: nothing was read or changed there), and the deploy's summary says
// why on its row and in one line per failure, with no aggregation
// boilerplate.
func TestUnreachableHostOneExitCode(t *testing.T) {
	_, dir := plainConfig(t)
	key, _ := testKey(t, dir)
	cfg := plainConfigIn(t, dir, ", key: "+key+", known_hosts: "+filepath.Join(dir, "kh"))
	for _, args := range [][]string{
		{"deploy", "--version", "v1"}, {"status"}, {"setup"}, {"logs"}, {"history"}, {"lock", "status"}, {"lock", "release"}, {"scale", "--instances", "2"}, {"exec"},
	} {
		args := append(args, "-c", cfg)
		if args[0] == "exec" {
			args = append(args, "--", "true")
		}
		out, errOut, code := runCLI(t, args...)
		if code != exitPreflight {
			t.Errorf("%v: exit %d, want %d\n%s%s", args, code, exitPreflight, out, errOut)
		}
		if strings.Contains(errOut, "error occurred") || strings.Contains(errOut, "\t* ") {
			t.Errorf("%v: multierror boilerplate:\n%s", args, errOut)
		}
		if !strings.Contains(errOut, "connection refused") {
			t.Errorf("%v: the cause is not said:\n%s", args, errOut)
		}
	}

	out, errOut, _ := runCLI(t, "deploy", "-c", cfg, "--version", "v1")
	row := regexp.MustCompile(`(?m)^127\.0\.0\.1\s+not started\s+-\s+-\s+\S+\s+preflight: .*connection refused$`)
	if !row.MatchString(out) {
		t.Errorf("the summary row does not say why:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^rollout: preflight 127\.0\.0\.1: ssh .*connection refused \(after [0-9.]+[µm]?s\)$`).MatchString(errOut) {
		t.Errorf("the failure line lacks step, host, time or cause:\n%s", errOut)
	}
	out, _, _ = runCLI(t, "deploy", "-c", cfg, "--version", "v1", "-o", "json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var sum struct {
		Error  string
		Report struct {
			Hosts []struct{ Error string }
		}
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sum.Error, "error occurred") || !strings.HasPrefix(sum.Error, "preflight 127.0.0.1") ||
		len(sum.Report.Hosts) != 1 || !strings.Contains(sum.Report.Hosts[0].Error, "connection refused") {
		t.Errorf("JSON summary: %+v", sum)
	}
}

// Help shows true defaults: no flag claims 0 or 0s when the config decides.
func TestHelpShowsTrueDefaults(t *testing.T) {
	var walk func(prefix []string, cmds []*cli.Command)
	walk = func(prefix []string, cmds []*cli.Command) {
		for _, cmd := range cmds {
			args := append(append([]string(nil), prefix...), cmd.Name)
			walk(args, cmd.Subcommands)
			out, _, code := runCLI(t, append(args, "--help")...)
			if code != 0 {
				t.Errorf("%v --help: exit %d", args, code)
			}
			for _, bad := range []string{"(default: 0)", "(default: 0s)", "(default: all others) (default"} {
				if strings.Contains(out, bad) {
					t.Errorf("%v --help shows %s:\n%s", args, bad, out)
				}
			}
		}
	}
	walk(nil, newApp(os.Stdout, os.Stderr).Commands)
	out, _, _ := runCLI(t, "--help")
	for _, line := range strings.Split(strings.TrimSpace(exitCodesText()), "\n") {
		if !strings.Contains(out, strings.TrimSpace(line)) {
			t.Errorf("rollout --help lacks %q", line)
		}
	}
}

// Unknown commands and flags exit 2 with the closest name; a command that
// takes no arguments refuses them (a flag after an argument included).
func TestUnknownCommandsFlagsAndArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"deploi"}, `unknown command "deploi": did you mean "deploy"?`},
		{[]string{"secrets", "lsit"}, `unknown command "lsit": did you mean "list"?`},
		{[]string{"--verion"}, `unknown flag --verion: did you mean "--version"?`},
		{[]string{"plan", "--verison", "v1"}, `unknown flag --verison: did you mean "--version"?`},
		{[]string{"plan", "-c", "../../examples/rollout.yaml", "--version", "v1", "extra"}, `plan takes no arguments, got "extra"`},
		{[]string{"status", "-c", "../../examples/rollout.yaml", "web1", "--output", "json"}, `(flags go before any argument)`},
	} {
		_, errOut, code := runCLI(t, tc.args...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, want %d and %q:\n%s", tc.args, code, exitUsage, tc.want, errOut)
		}
	}
	// Every command without arguments of its own refuses one.
	for _, cmd := range newApp(os.Stdout, os.Stderr).Commands {
		if cmd.ArgsUsage != "" || len(cmd.Subcommands) > 0 {
			continue
		}
		args := []string{cmd.Name, "stray"}
		if cmd.Name == "scale" {
			args = []string{cmd.Name, "--instances", "2", "stray"}
		}
		_, errOut, code := runCLI(t, args...)
		if code != exitUsage || !strings.Contains(errOut, "takes no arguments") {
			t.Errorf("%s stray: exit %d: %s", cmd.Name, code, errOut)
		}
	}
}

// A flag's bad value is named as the flag's (and its variable's), not as
// the config file's.
func TestFlagErrorsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--parallel", "0"}, nil, "--parallel (or ROLLOUT_PARALLEL): parallel: must be at least 1, got 0"},
		{[]string{"--hosts", "a;b"}, nil, `--hosts (or ROLLOUT_HOSTS): hosts[0]: must be a host name`},
		{nil, map[string]string{"ROLLOUT_HOSTS": "x;y"}, `--hosts (or ROLLOUT_HOSTS): hosts[0]`},
		{[]string{"--drain-timeout", "-1s"}, nil, "--drain-timeout (or ROLLOUT_DRAIN_TIMEOUT): drain_timeout:"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, errOut, code := runCLI(t, append([]string{"plan", "-c", "../../examples/rollout.yaml", "--version", "v1"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(errOut, tc.want) || strings.Contains(errOut, "rollout.yaml: ") {
				t.Errorf("exit %d, want %d and %q:\n%s", code, exitUsage, tc.want, errOut)
			}
		})
	}
}

// The docs' exit code table is the one --help prints.
func TestDocsExitCodes(t *testing.T) {
	b, err := os.ReadFile("../../docs/troubleshooting.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range exitCodes {
		row := "| " + strconv.Itoa(e.code) + " | " + e.meaning + " |"
		if !strings.Contains(string(b), row) {
			t.Errorf("docs/troubleshooting.md lacks the row %s", row)
		}
	}
}

// plan and deploy --dry-run refuse the artifact a deploy would refuse,
// with the deploy's exit code; plan --live with a host it cannot read
// exits 3 and says so on stderr.
func TestPlanRefusesWhatDeployRefuses(t *testing.T) {
	dir := t.TempDir()
	noArtifact := filepath.Join(dir, "no-artifact.yaml")
	if err := os.WriteFile(noArtifact, []byte("app: my-app\nhosts: [10.9.9.9]\nports: [3000]\nnginx: {upstream_file: /etc/nginx/u.conf, upstream: u}\nrelease: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.yaml")
	if err := os.WriteFile(missing, []byte("app: my-app\nhosts: [10.9.9.9]\nports: [3000]\nnginx: {upstream_file: /etc/nginx/u.conf, upstream: u}\nrelease: {artifact: dist/web}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	evil := filepath.Join(dir, "evil.tar.gz")
	writeTarGz(t, evil, map[string]string{"../escape.js": "x", "server.js": "y"})
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no artifact", []string{"-c", noArtifact}, "--artifact (or ROLLOUT_ARTIFACT, or release.artifact) is required"},
		{"artifact missing", []string{"-c", "../../examples/rollout.yaml", "--artifact", "/nonexistent"}, "/nonexistent"},
		{"release.artifact missing", []string{"-c", missing}, filepath.Join(dir, "dist/web")},
		{"artifact escapes", []string{"-c", "../../examples/rollout.yaml", "--artifact", evil}, "../escape.js"},
	} {
		for _, cmd := range [][]string{{"plan"}, {"deploy", "--dry-run"}} {
			args := append(append(append([]string(nil), cmd...), tc.args...), "--version", "v1")
			_, deployErr, deployCode := runCLI(t, append([]string{"deploy"}, append(tc.args, "--version", "v1")...)...)
			out, errOut, code := runCLI(t, args...)
			if code != exitUsage || code != deployCode || !strings.Contains(errOut, tc.want) || out != "" {
				t.Errorf("%s: %v: exit %d (deploy: %d %s), want %d and %q:\n%s%s", tc.name, cmd, code, deployCode, deployErr, exitUsage, tc.want, out, errOut)
			}
		}
	}

	// --live against a host that refuses: the plan is printed, the exit
	// code and stderr say the host could not be read.
	_, kdir := plainConfig(t)
	key, _ := testKey(t, kdir)
	cfg := plainConfigIn(t, kdir, ", key: "+key+", known_hosts: "+filepath.Join(kdir, "kh"))
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, append(b, []byte("release: {artifact: "+mustAbs(t, "../../examples/app")+"}\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, "plan", "-c", cfg, "--version", "v1", "--live")
	if code != exitPreflight || !strings.Contains(out, "could not be read") ||
		!regexp.MustCompile(`(?m)^rollout: 127\.0\.0\.1: .*connection refused$`).MatchString(errOut) {
		t.Errorf("plan --live with a dead host: exit %d\n%s\n%s", code, out, errOut)
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// The plan of the README's quick-start config is short (under 100 lines
// for 2 hosts × 4 instances) and grows by one line per instance.
func TestPlanIsShortAndLinear(t *testing.T) {
	var quick string
	for _, s := range snippets(t, "../../README.md") {
		if s.lang == "yaml" && strings.Contains(s.text, "app: my-app") && strings.Contains(s.text, "instances: 4\n") {
			quick = s.text
			break
		}
	}
	if quick == "" {
		t.Fatal("the README has no quick-start config with instances: 4")
	}
	lines := func(instances string) int {
		cfg := filepath.Join(t.TempDir(), "rollout.yaml")
		if err := os.WriteFile(cfg, []byte(strings.Replace(quick, "instances: 4\n", "instances: "+instances+"\n", 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := runCLI(t, "plan", "-c", cfg, "--version", "v2")
		if code != exitOK {
			t.Fatalf("plan: exit %d: %s", code, errOut)
		}
		return strings.Count(out, "\n")
	}
	four, sixtyFour := lines("4"), lines("64")
	if four >= 100 {
		t.Errorf("the plan of 2 × 4 is %d lines", four)
	}
	if sixtyFour-four != 2*60 {
		t.Errorf("2 × 4: %d lines, 2 × 64: %d lines: not one line per instance", four, sixtyFour)
	}
	t.Logf("2 × 4: %d lines; 2 × 64: %d lines", four, sixtyFour)
}

// rollout check runs the offline checks a deploy runs before connecting
// (config, artifact, the SSH material) and exits as the deploy would;
// --live against a host that refuses is exit 3 with the cause.
func TestCheckOffline(t *testing.T) {
	_, dir := plainConfig(t)
	key, _ := testKey(t, dir)
	cfg := plainConfigIn(t, dir, ", key: "+key+", known_hosts: "+filepath.Join(dir, "kh"))
	out, errOut, code := runCLI(t, "check", "-c", cfg)
	if code != exitOK || !strings.Contains(out, "my-app: config ok: 1 host(s), 2 instance(s) per host") {
		t.Errorf("check: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = runCLI(t, "check", "-c", "../../examples/rollout.yaml", "--key", key)
	if code != exitOK || !strings.Contains(out, "artifact ok: ") {
		t.Errorf("check of the example: exit %d\n%s%s", code, out, errOut)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-c", "../../examples/rollout.yaml", "--key", key, "--artifact", "/nonexistent"}, exitUsage, "/nonexistent"},
		{[]string{"-c", cfg, "--key", filepath.Join(dir, "nope")}, exitUsage, "read key"},
		{[]string{"-c", cfg, "--parallel", "0"}, exitUsage, "--parallel (or ROLLOUT_PARALLEL)"},
		{[]string{"-c", cfg, "--live"}, exitPreflight, "preflight 127.0.0.1"},
	} {
		out, errOut, code := runCLI(t, append([]string{"check"}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("check %v: exit %d, want %d and %q\n%s%s", tc.args, code, tc.code, tc.want, out, errOut)
		}
	}
}
