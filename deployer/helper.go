package deployer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
)

// With sudo: helper the deploy user runs one command as root: this app's
// helper (scripts/helper.sh with the app's values and the scripts its
// verbs run), which rollout setup installs with a sudoers drop-in naming
// only it. Every privileged operation is then `sudo -n HELPER ID VERB
// ARGS`, and the helper refuses any argument that is not this app's.

// helperDir holds the helpers, one per app, root's.
const helperDir = "/usr/local/lib/rollout"

// helperVerbs are the scripts the helper runs for its callers, by name;
// the helper also has start, stop, journal and tail (one command each).
var helperVerbs = []string{"preflight", "write-upstream", "restart", "app-output",
	"lock-acquire", "lock-refresh", "lock-release", "lock-status", "history-append", "history-read", "drained",
	"release-state", "release-upload", "release-switch", "release-record", "release-secrets", "release-migrate", "secrets-read", "access-read", "haproxy", "exec", "exec-stop"}

// UsesHelper says whether privileged commands go through the app's helper.
func (c *Config) UsesHelper() bool { return c.Sudo == sudoHelper }

const sudoHelper = "helper"

// HelperPath is where setup installs the app's helper.
func (c *Config) HelperPath() string { return helperDir + "/" + c.App }

// SudoersFile is the app's sudoers drop-in. sudo skips files in
// /etc/sudoers.d whose names hold a dot, so the app's dots become "_".
func (c *Config) SudoersFile() string {
	return "/etc/sudoers.d/rollout-" + strings.ReplaceAll(c.App, ".", "_")
}

// deployUser is the user the helper is for: setup.deploy_user, else the
// SSH user the config file names.
func (c *Config) deployUser() string {
	if c.Setup.DeployUser != "" {
		return c.Setup.DeployUser
	}
	return c.SSH.User
}

// sudoers is the app's drop-in: the deploy user may run the helper as
// root without a password, and nothing else.
func (c *Config) sudoers() string {
	return fmt.Sprintf("# rollout: %s may run %s's helper as root, and nothing else (written by rollout setup)\n"+
		"%s ALL=(root) NOPASSWD: %s\n", c.deployUser(), c.App, c.deployUser(), c.HelperPath())
}

// helper returns the app's helper program and its id (a hash of it): the
// values it checks arguments against, helper.sh, and the scripts of its
// verbs.
func (c *Config) helper() (text, id string) {
	return c.helperWith(func(verb string) string {
		return "exec sh -c " + sshexec.Quote(scriptBody(verb)) + " " + sshexec.Quote("rollout-"+verb) + ` "$@"`
	})
}

// helperWith is helper with run giving what each script verb runs once
// its arguments passed.
func (c *Config) helperWith(run func(verb string) string) (text, id string) {
	s := c.setupDefaults()
	prefix, suffix, _ := strings.Cut(c.unitTemplate(), "{port}")
	var ports, base string
	slots := "1"
	if c.surging() {
		slots = "2" // each instance's slot has a spare port
	}
	if c.Instances.Auto {
		base = strconv.Itoa(c.Instances.Base)
	} else {
		ports = portWords(c.AllPorts())
	}
	var workers []string // NAME:COUNT, or NAME:auto
	for _, w := range c.Workers {
		n := strconv.Itoa(w.Count)
		if w.Auto {
			n = "auto"
		}
		workers = append(workers, w.Unit+":"+n)
	}
	haSocket, haBackend := c.helperHAProxy()
	n := c.helperNginx()
	var root, prepare, shared, migrate string
	timeout, migrateTimeout := "0", "0"
	if r := c.Release; r != nil {
		root, prepare, shared, migrate = strings.TrimRight(r.Root, "/"), r.Prepare, strings.Join(r.Shared, "\n"), r.Migrate
		timeout = strconv.Itoa(int(r.PrepareTimeout / time.Second))
		migrateTimeout = strconv.Itoa(int(r.MigrateTimeout / time.Second))
	}
	logDirs := []string{strings.TrimRight(s.LogDir, "/")}
	for _, l := range c.Logs {
		if dir := dirOf(strings.Split(l, "{port}")[0]); dir != "" && !contains(logDirs, dir) {
			logDirs = append(logDirs, dir)
		}
	}
	values := []struct{ name, value string }{
		{"APP", c.App}, {"APP_USER", s.User}, {"APP_GROUP", s.Group},
		{"UNIT_PREFIX", prefix}, {"UNIT_SUFFIX", suffix}, {"PORTS", ports}, {"PORT_BASE", base}, {"PORT_SLOTS", slots},
		{"UNIT_PROPS", unitProps}, {"WORKERS", strings.Join(workers, " ")},
		{"NGINX_UPSTREAM", n.UpstreamFile}, {"NGINX_TEST", n.TestCommand},
		{"NGINX_RELOAD", n.ReloadCommand}, {"NGINX_PID", n.PIDFile},
		{"LOCK_DIR", strings.TrimRight(c.StateDir, "/") + "/" + c.App},
		{"RELEASE_ROOT", root}, {"PREPARE", prepare}, {"PREPARE_TIMEOUT", timeout}, {"SHARED", shared},
		{"MIGRATE", migrate}, {"MIGRATE_TIMEOUT", migrateTimeout}, {"ENV_FILE", s.EnvFile},
		{"WORK_DIR", s.workDir},
		{"LOG_DIRS", strings.Join(logDirs, "\n")}, {"ACCESS_LOG", c.AccessLogFile()},
		{"HAPROXY_SOCKET", haSocket}, {"HAPROXY_BACKEND", haBackend},
	}
	var b strings.Builder
	for _, v := range values {
		fmt.Fprintf(&b, "%s=%s\n", v.name, sshexec.Quote(v.value))
	}
	main := scriptText("helper")
	main = main[strings.Index(main, "\n")+1:] // the #! line goes first, with the id
	var verbs strings.Builder
	verbs.WriteString("case $verb in\n")
	for _, v := range helperVerbs {
		fmt.Fprintf(&verbs, "%s) %s ;;\n", v, run(v))
	}
	verbs.WriteString("esac\nrefuse \"no script for verb '$verb'\"\n")
	const mark = "# @@scripts@@ rollout setup puts here the scripts of the verbs above.\n"
	if !strings.Contains(main, mark) {
		panic("rollout: helper.sh has no scripts mark") // a programming error
	}
	body := b.String() + strings.Replace(main, mark, verbs.String(), 1)
	sum := sha256.Sum256([]byte(body))
	id = hex.EncodeToString(sum[:8])
	head := fmt.Sprintf("#!/bin/sh\n# rollout's helper for %s, written by rollout setup: do not edit (setup writes it again).\nHELPER_ID=%s\n", c.App, id)
	return head + body, id
}

// helperFiles are the helper and its sudoers drop-in, for setup.
func (c *Config) helperFiles() []ManagedFile {
	if !c.UsesHelper() {
		return nil
	}
	text, _ := c.helper()
	return []ManagedFile{
		{Path: c.HelperPath(), Owner: "root:root", Mode: "755", Content: text},
		{Path: c.SudoersFile(), Owner: "root:root", Mode: "440", Content: c.sudoers(), check: checkSudoers},
	}
}

// checkSudo checks sudo: and, with helper, what the helper needs.
func (c *Config) checkSudo(cs *checks) {
	switch c.Sudo {
	case "auto", "true", "false":
	case sudoHelper:
		if u := c.deployUser(); u == "" || u == "root" {
			cs.add("sudo", fmt.Errorf("helper needs the user it lets run the helper, not root: set ssh.user or setup.deploy_user (got %s)", quoteValue(u)))
		}
	default:
		cs.add("sudo", fmt.Errorf("must be auto, true, false or helper, got %s", quoteValue(c.Sudo)))
	}
}

// checkSudoers: setup checks the file with visudo -cf before it is moved
// into place; a file visudo refuses is never installed.
const checkSudoers = "sudoers"

// privilege is how a host runs what needs root.
type privilege struct {
	sudo bool // through sudo -n: the SSH user is not root
	// helper is "HELPER ID" with sudo: helper, the only command sudo
	// runs; "" runs any command.
	helper string
}

// privilege is the config's way to root. Setup, which installs the
// helper, needs root itself (rootSetup).
func (c *Config) privilege() privilege {
	p := privilege{sudo: c.UseSudo()}
	if c.UsesHelper() && !c.rootSetup {
		_, id := c.helper()
		p.helper = sshexec.QuoteCommand(c.HelperPath(), id)
	}
	return p
}

// command runs verb's one command as root: through the helper, or plain.
func (p privilege) command(verb string, args, plain []string) string {
	cmd := sshexec.QuoteCommand(plain...)
	if p.helper != "" {
		cmd = p.helper + " " + sshexec.QuoteCommand(append([]string{verb}, args...)...)
	}
	if p.sudo {
		return "sudo -n " + cmd
	}
	return cmd
}
