package testbed

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// The testbed's network: a bridge in the controller's namespace holding
// gatewayAddr, and one network namespace per host, joined to the bridge by a
// veth pair, with the host's address on its eth0. All names start with
// namePrefix so leftovers of a killed run are found by name.
const (
	namePrefix  = "rtb-"
	bridgeName  = "rtb-br0"
	subnet      = "10.213.0"
	gatewayAddr = subnet + ".1"
)

func hostAddr(i int) string { return fmt.Sprintf("%s.%d", subnet, 11+i) }
func hostName(i int) string { return fmt.Sprintf("%sh%d", namePrefix, i+1) }

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func setupBridge(ctx context.Context) error {
	if err := ip(ctx, "link", "add", bridgeName, "type", "bridge"); err != nil {
		return err
	}
	if err := ip(ctx, "addr", "add", gatewayAddr+"/24", "dev", bridgeName); err != nil {
		return err
	}
	return ip(ctx, "link", "set", bridgeName, "up")
}

// setupHostNet creates the host's namespace (named like the host) with its
// address, linked to the bridge.
func setupHostNet(ctx context.Context, name, addr string) error {
	steps := [][]string{
		{"netns", "add", name},
		{"link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name},
		{"link", "set", name, "master", bridgeName, "up"},
		{"-n", name, "addr", "add", addr + "/24", "dev", "eth0"},
		{"-n", name, "link", "set", "eth0", "up"},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "route", "add", "default", "via", gatewayAddr},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return fmt.Errorf("network for %s: %w", name, err)
		}
	}
	return nil
}

// cleanNet removes every namespace and link the testbed may have left.
func cleanNet(ctx context.Context) {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], namePrefix) {
				_ = ip(ctx, "netns", "delete", f[0])
			}
		}
	}
	if out, err := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if strings.HasPrefix(name, namePrefix) {
				_ = ip(ctx, "link", "delete", name)
			}
		}
	}
}
