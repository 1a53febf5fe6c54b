package deployer

import (
	"fmt"
	"strings"
)

// The instances' output files (setup.log_dir, written by systemd with
// StandardOutput=append:) are rotated by logrotate past
// setup.log_rotate_size, setup.log_rotate_keep of them kept, checked every
// logRotateEvery by a timer setup installs (Debian's daily logrotate run
// reads the same rule). copytruncate: systemd holds each file open in
// append mode, so after the copy the instance writes on at the start of
// the same file, with no restart and nothing lost but what it writes
// between the copy and the truncation.

// logRotateEvery is how often the timer checks the files' sizes.
const logRotateEvery = "10min"

func (c *Config) logRotates() bool { return c.setupDefaults().LogRotateKeep > 0 }

// logRotateUnit names the timer (.timer) and its service (.service).
func (c *Config) logRotateUnit() string { return "rollout-logrotate-" + c.App }

// logRotateRule is the rule's file, where Debian's logrotate reads rules.
func (c *Config) logRotateRule() string { return "/etc/logrotate.d/rollout-" + c.App }

// logRotateFiles are the rule, the timer and its service.
func (c *Config) logRotateFiles() []ManagedFile {
	if !c.logRotates() {
		return nil
	}
	s := c.setupDefaults()
	dir := strings.TrimRight(s.LogDir, "/")
	rule := fmt.Sprintf(`# Written by rollout setup: the output files of %s's instances, rotated
# past %s (setup.log_rotate_size), %d kept (setup.log_rotate_keep); checked
# every %s by %s.timer and daily by logrotate.timer.
%s/stdout-*.log %s/stderr-*.log {
	size %s
	rotate %d
	copytruncate
	compress
	delaycompress
	missingok
	notifempty
}
`, c.App, s.LogRotateSize, s.LogRotateKeep, logRotateEvery, c.logRotateUnit(), dir, dir, s.LogRotateSize, s.LogRotateKeep)
	service := fmt.Sprintf(`# Written by rollout setup: rotates %s's output files (%s).
[Unit]
Description=rotate the output files of %s
ConditionPathExists=%s

[Service]
Type=oneshot
ExecStart=/usr/sbin/logrotate --state /var/lib/logrotate/%s.status %s
`, c.App, c.logRotateRule(), c.App, c.logRotateRule(), c.logRotateUnit(), c.logRotateRule())
	timer := fmt.Sprintf(`# Written by rollout setup: checks %s's output files every %s.
[Unit]
Description=rotate the output files of %s every %s

[Timer]
OnBootSec=%s
OnUnitActiveSec=%s
AccuracySec=1min

[Install]
WantedBy=timers.target
`, c.App, logRotateEvery, c.App, logRotateEvery, logRotateEvery, logRotateEvery)
	return []ManagedFile{
		{Path: c.logRotateRule(), Owner: "root:root", Mode: "644", Content: rule},
		{Path: "/etc/systemd/system/" + c.logRotateUnit() + ".service", Owner: "root:root", Mode: "644", Content: service},
		{Path: "/etc/systemd/system/" + c.logRotateUnit() + ".timer", Owner: "root:root", Mode: "644", Content: timer},
	}
}
