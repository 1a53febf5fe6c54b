package sshexec

import (
	"strings"
)

// Quote quotes s as one word for a POSIX shell: unchanged when made only of
// [A-Za-z0-9_@%+=:,./-], else in single quotes.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_@%+=:,./-", r)) {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}

// QuoteCommand quotes each argument and joins them with spaces.
func QuoteCommand(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}
