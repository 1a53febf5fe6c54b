package sshexec_test

import (
	"testing"

	"github.com/rollout-dev/rollout/sshexec"
)

func TestParseJump(t *testing.T) {
	for _, tt := range []struct {
		in, user, host string
		port           int
		bad            bool
	}{
		{in: "bastion", host: "bastion"},
		{in: "ops@10.0.0.1:2200", user: "ops", host: "10.0.0.1", port: 2200},
		{in: "[2001:db8::1]:22", host: "2001:db8::1", port: 22},
		{in: "ops@host;rm -rf /", bad: true},
		{in: "host:99999", bad: true},
	} {
		u, h, p, err := sshexec.ParseJump(tt.in)
		if (err != nil) != tt.bad || u != tt.user || h != tt.host || p != tt.port {
			t.Errorf("ParseJump(%q) = %q %q %d %v", tt.in, u, h, p, err)
		}
	}
}
