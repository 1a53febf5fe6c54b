package sshexec

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

var jumpRE = regexp.MustCompile(`^(?:([a-z_][a-z0-9_.-]*)@)?([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?$`)

// ParseJump splits one bastion hop, [user@]host[:port]; user and port are
// empty and 0 when not given.
func ParseJump(hop string) (user, host string, port int, err error) {
	m := jumpRE.FindStringSubmatch(strings.TrimSpace(hop))
	if m == nil {
		return "", "", 0, fmt.Errorf("a bastion must be [user@]host[:port], got %q", hop)
	}
	if m[3] != "" {
		port, _ = strconv.Atoi(m[3])
		if err := checkPort(port); err != nil {
			return "", "", 0, fmt.Errorf("bastion %q: %w", hop, err)
		}
	}
	return m[1], strings.Trim(m[2], "[]"), port, nil
}

// checkPort checks a TCP port.
func checkPort(port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("must be a port 1..65535, got %d", port)
	}
	return nil
}
