package deployer

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// SetupConfig is the setup section: how `rollout setup` prepares a host
// the way the seed article's playbook did. Empty fields take defaults
// derived from the app's name (see setupDefaults).
type SetupConfig struct {
	User string // runs the app: a system user without a login shell
	// DeployUser is the user sudo: helper lets run the helper (default:
	// ssh.user as the config file says it).
	DeployUser   string
	Group        string // can read the code (the web server's group)
	AppDir       string // the code: root:Group, directories 2750
	ExecStart    string
	EnvFile      string // created empty (0600 root) if missing, never overwritten
	LogDir       string // per-instance stdout/stderr logs
	UploadsDir   string // optional: writable by User (2770 User:Group)
	MemoryMax    string
	RestartDelay time.Duration
	StartLimit   int           // StartLimitBurst
	StartWindow  time.Duration // StartLimitIntervalSec
	SiteFile     string        // the Nginx site proxying to the upstream
	Listen       int
	ServerName   string
	// LogRotateSize is the size past which an output file in LogDir is
	// rotated; LogRotateKeep how many rotated ones are kept (0: no
	// rotation is set up).
	LogRotateSize string
	LogRotateKeep int

	workDir string // the unit's WorkingDirectory, from setupDefaults
}

// setupSection is the setup: section.
func setupSection(s *SetupConfig) field {
	return section("setup",
		str("user", &s.User),
		str("deploy_user", &s.DeployUser),
		str("group", &s.Group),
		str("app_dir", &s.AppDir),
		str("exec_start", &s.ExecStart),
		str("env_file", &s.EnvFile),
		str("log_dir", &s.LogDir),
		str("uploads_dir", &s.UploadsDir),
		str("memory_max", &s.MemoryMax),
		duration("restart_sec", &s.RestartDelay),
		integer("start_limit_burst", &s.StartLimit),
		duration("start_limit_interval", &s.StartWindow),
		str("site_file", &s.SiteFile),
		integer("listen", &s.Listen),
		str("server_name", &s.ServerName),
		str("log_rotate_size", &s.LogRotateSize),
		integer("log_rotate_keep", &s.LogRotateKeep),
	)
}

// setupDefaults fills what the setup section leaves out. With a release:
// section the instances run from Root/instances/PORT instead of AppDir.
func (c *Config) setupDefaults() SetupConfig {
	s := c.Setup
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&s.User, c.App)
	def(&s.Group, "www-data")
	def(&s.AppDir, "/var/www/"+c.App)
	s.workDir = s.AppDir
	if c.Release != nil {
		s.workDir = c.Release.Root + "/instances/%i"
	}
	def(&s.ExecStart, "/usr/bin/node "+strings.TrimRight(s.workDir, "/")+"/server.js")
	def(&s.EnvFile, "/etc/"+c.App+"/.env")
	def(&s.LogDir, "/var/log/"+c.App)
	def(&s.MemoryMax, "1G")
	def(&s.SiteFile, "/etc/nginx/conf.d/"+c.App+"-site.conf")
	def(&s.ServerName, "_")
	return s
}

var (
	logSizeRE    = regexp.MustCompile(`^[1-9][0-9]{0,5}[kMG]?$`)
	memoryRE     = regexp.MustCompile(`^[0-9]+[KMGT]?$|^[0-9]{1,2}%$|^infinity$`)
	serverNameRE = regexp.MustCompile(`^[A-Za-z0-9_.*-]+( [A-Za-z0-9_.*-]+)*$`)
	// execRE is a program and its arguments; "%i" (the instance's port,
	// for systemd) may be in any of them.
	execRE = regexp.MustCompile(`^/([A-Za-z0-9_./-]|%i)+( ([A-Za-z0-9_./=:,+@-]|%i)+)*$`)
)

func (c *Config) setupProblems() []problem {
	var ps []problem
	check := func(key string, err error) {
		if err != nil {
			ps = append(ps, problem{key: key, err: err})
		}
	}
	if match(appRE, c.App, "") != nil {
		return nil // reported as app; the defaults derive from it
	}
	s := c.setupDefaults()
	check("setup.user", match(userRE, s.User, `a user name: lower-case letters, digits, "_", "." or "-"`))
	if s.DeployUser != "" {
		check("setup.deploy_user", match(userRE, s.DeployUser, `a user name: lower-case letters, digits, "_", "." or "-"`))
	}
	check("setup.group", match(userRE, s.Group, `a group name: lower-case letters, digits, "_", "." or "-"`))
	for key, v := range map[string]string{"setup.app_dir": s.AppDir, "setup.env_file": s.EnvFile, "setup.log_dir": s.LogDir, "setup.site_file": s.SiteFile} {
		check(key, validPath(v, false))
	}
	if s.UploadsDir != "" {
		check("setup.uploads_dir", validPath(s.UploadsDir, false))
	}
	if c.Setup.ExecStart != "" || c.Release == nil || validReleaseRoot(c.Release.Root) == nil {
		// (The default from a bad release.root is reported as release.root.)
		check("setup.exec_start", match(execRE, s.ExecStart, "an absolute program path and plain arguments (letters, digits, . _ / = : , + @ - and %i)"))
	}
	check("setup.memory_max", match(memoryRE, s.MemoryMax, `a size like 512M or 1G, a percentage, or infinity`))
	check("setup.restart_sec", within(s.RestartDelay, 0, 10*time.Minute))
	check("setup.start_limit_interval", within(s.StartWindow, 0, 24*time.Hour))
	if s.StartLimit < 1 {
		check("setup.start_limit_burst", fmt.Errorf("must be at least 1, got %d", s.StartLimit))
	}
	check("setup.listen", validPort(s.Listen))
	check("setup.server_name", match(serverNameRE, s.ServerName, "server names separated by spaces"))
	check("setup.log_rotate_size", match(logSizeRE, s.LogRotateSize, `a size logrotate reads, like 100M, 500k or 2G`))
	if s.LogRotateKeep < 0 || s.LogRotateKeep > 1000 {
		check("setup.log_rotate_keep", fmt.Errorf("must be 0..1000 (0: no rotation), got %d", s.LogRotateKeep))
	}
	return ps
}
