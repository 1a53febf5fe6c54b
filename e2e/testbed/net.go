package testbed

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// network is a testbed's network: a bridge in the controller's namespace
// holding the gateway address, and one network namespace per host, joined
// to the bridge by a veth pair, with the host's address on its eth0. Every
// name starts with the slot's prefix, so leftovers of a killed run are
// found by name, and testbeds of other slots are left alone. Slot 0 is
// rtb-* on 10.213.0.0/24 (the examples' addresses); slot N is rtbN-* on
// 10.213.N.0/24.
type network struct {
	prefix, bridge, subnet string
}

func newNetwork(slot int) network {
	prefix := "rtb-"
	if slot > 0 {
		prefix = fmt.Sprintf("rtb%d-", slot)
	}
	return network{prefix: prefix, bridge: prefix + "br0", subnet: fmt.Sprintf("10.213.%d", slot)}
}

func (n network) gateway() string       { return n.subnet + ".1" }
func (n network) hostAddr(i int) string { return fmt.Sprintf("%s.%d", n.subnet, 11+i) }
func (n network) hostName(i int) string { return fmt.Sprintf("%sh%d", n.prefix, i+1) }

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (n network) setupBridge(ctx context.Context) error {
	if err := ip(ctx, "link", "add", n.bridge, "type", "bridge"); err != nil {
		return err
	}
	if err := ip(ctx, "addr", "add", n.gateway()+"/24", "dev", n.bridge); err != nil {
		return err
	}
	return ip(ctx, "link", "set", n.bridge, "up")
}

// setupHost creates the host's namespace (named like the host) with its
// address, linked to the bridge.
func (n network) setupHost(ctx context.Context, name, addr string) error {
	steps := [][]string{
		{"netns", "add", name},
		{"link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name},
		{"link", "set", name, "master", n.bridge, "up"},
		{"-n", name, "addr", "add", addr + "/24", "dev", "eth0"},
		{"-n", name, "link", "set", "eth0", "up"},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "route", "add", "default", "via", n.gateway()},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return fmt.Errorf("network for %s: %w", name, err)
		}
	}
	return nil
}

// clean removes every namespace and link of the slot the testbed may have
// left.
func (n network) clean(ctx context.Context) {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], n.prefix) {
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
			if strings.HasPrefix(name, n.prefix) {
				_ = ip(ctx, "link", "delete", name)
			}
		}
	}
}
