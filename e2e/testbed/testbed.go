// Package testbed boots throwaway Linux hosts for rollout's end-to-end tests,
// demo and benchmarks: systemd-nspawn containers running real systemd,
// OpenSSH and Nginx, each in its own network namespace with its own address
// in 10.213.0.0/24, reachable from the controller over a bridge.
//
// Hosts boot a shared, cached Debian rootfs read-only with a volatile
// overlay, so every boot starts clean and a host is reset by rebooting it.
// Everything the testbed creates is named with the "rtb-" prefix, and Up
// first removes whatever a killed run left behind. It needs root.
//
// It does not know about rollout: it provisions hosts the way the seed
// article's team does (provision.sh) and ships releases of examples/app.
package testbed

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rollout-dev/rollout/sshexec"
)

// Default directories: the rootfs is cached across runs, state is not.
const (
	DefaultCacheDir = "/var/cache/rollout-testbed"
	DefaultStateDir = "/run/rollout-testbed"
)

// The Debian releases a testbed can boot (Options.Suite): their systemd,
// Nginx and OpenSSH are the versions rollout supports.
const (
	Bullseye = "bullseye" // Debian 11: systemd 247, Nginx 1.18, OpenSSH 8.4
	Bookworm = "bookworm" // Debian 12: systemd 252, Nginx 1.22, OpenSSH 9.2
	Trixie   = "trixie"   // Debian 13: systemd 257, Nginx 1.26, OpenSSH 10.0
)

// Suites are the Debian releases the testbed boots, oldest first.
var Suites = []string{Bullseye, Bookworm, Trixie}

// Options configure Up.
type Options struct {
	Hosts int // how many hosts to boot (1..9)
	// Slot numbers the testbed among those running on this machine at
	// once (0..9): each slot has its own names (rtb-*, rtbN-*), network
	// (10.213.N.0/24), state and lock.
	Slot int
	// Suite is the Debian release the hosts run (Suites); Bookworm when
	// empty.
	Suite    string
	CacheDir string    // rootfs cache; DefaultCacheDir when empty
	StateDir string    // keys, logs, pid files; DefaultStateDir (slot N: DefaultStateDir-N) when empty
	Log      io.Writer // progress lines; io.Discard when nil
	// Binds are files of this machine bound read-only into every host:
	// "SOURCE:DEST" (Traefik, built once, at /usr/local/bin/traefik).
	Binds []string
}

// Host is one booted test host.
type Host struct {
	Name string // container and network namespace name, e.g. "rtb-h1"
	Addr string // its address, e.g. "10.213.0.11"

	index int
	dir   string
	cmd   *exec.Cmd
}

// Testbed is a set of booted hosts and the controller's credentials for
// them.
type Testbed struct {
	Hosts []*Host
	// KeyFile is the controller's private key, authorised for the login
	// users "deploy" (passwordless sudo) and "nosudo" (no sudo rights).
	KeyFile string
	// KnownHosts lists every host's keys, for strict host key checking.
	KnownHosts string

	opts   Options
	net    network
	rootfs string
	unlock func()
}

// Up boots opts.Hosts hosts in parallel and waits until each one's systemd
// is up and its sshd answers. Leftovers of earlier runs are removed first.
// Only one testbed runs on a machine at a time: a second Up waits for the
// first's Down (or its process to die).
func Up(ctx context.Context, opts Options) (tb *Testbed, err error) {
	if opts.Hosts < 1 || opts.Hosts > 9 {
		return nil, fmt.Errorf("testbed: hosts must be 1..9, got %d", opts.Hosts)
	}
	if opts.Slot < 0 || opts.Slot > 9 {
		return nil, fmt.Errorf("testbed: slot must be 0..9, got %d", opts.Slot)
	}
	if opts.Suite == "" {
		opts.Suite = Bookworm
	}
	if !slices.Contains(Suites, opts.Suite) {
		return nil, fmt.Errorf("testbed: suite %q: want one of %v", opts.Suite, Suites)
	}
	if opts.CacheDir == "" {
		opts.CacheDir = DefaultCacheDir
	}
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir
		if opts.Slot > 0 {
			opts.StateDir = fmt.Sprintf("%s-%d", DefaultStateDir, opts.Slot)
		}
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("testbed: must run as root (systemd-nspawn, ip netns)")
	}
	for _, bin := range []string{"systemd-nspawn", "debootstrap", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("testbed: %s not found (apt-get install systemd-container debootstrap iproute2): %w", bin, err)
		}
	}
	rootfs, err := EnsureRootfs(ctx, opts.CacheDir, opts.Suite, opts.Log)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("testbed: state dir: %w", err)
	}
	unlock, err := lockFile(filepath.Join(opts.StateDir, ".lock"))
	if err != nil {
		return nil, err
	}
	tb = &Testbed{opts: opts, net: newNetwork(opts.Slot), rootfs: rootfs, unlock: unlock}
	defer func() {
		if err != nil {
			_ = tb.Down(context.WithoutCancel(ctx))
			tb = nil
		}
	}()
	if err := tb.clean(ctx); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("testbed: state dir: %w", err)
	}
	if err := tb.net.setupBridge(ctx); err != nil {
		return nil, err
	}
	tb.KeyFile = filepath.Join(opts.StateDir, "id_ed25519")
	if _, err := writeKeyPair(tb.KeyFile, "ed25519"); err != nil {
		return nil, err
	}
	tb.KnownHosts = filepath.Join(opts.StateDir, "known_hosts")

	var known []string
	for i := 0; i < opts.Hosts; i++ {
		name := tb.net.hostName(i)
		h := &Host{Name: name, Addr: tb.net.hostAddr(i), index: i, dir: filepath.Join(opts.StateDir, name)}
		if err := os.MkdirAll(h.dir, 0o700); err != nil {
			return nil, fmt.Errorf("testbed: %w", err)
		}
		for _, kt := range []string{"ed25519", "ecdsa"} {
			pub, err := writeKeyPair(filepath.Join(h.dir, "ssh_host_"+kt+"_key"), kt)
			if err != nil {
				return nil, err
			}
			known = append(known, h.Addr+" "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))))
		}
		tb.Hosts = append(tb.Hosts, h)
	}
	if err := os.WriteFile(tb.KnownHosts, []byte(strings.Join(known, "\n")+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("testbed: write known_hosts: %w", err)
	}

	start := time.Now()
	errs := make([]error, len(tb.Hosts))
	var wg sync.WaitGroup
	for i, h := range tb.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = tb.boot(ctx, h)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	fmt.Fprintf(opts.Log, "testbed: %d %s hosts up in %.1fs (%s.0/24)\n", len(tb.Hosts), opts.Suite, time.Since(start).Seconds(), tb.net.subnet)
	return tb, nil
}

// boot creates the host's network and starts its container.
func (tb *Testbed) boot(ctx context.Context, h *Host) error {
	if err := tb.net.setupHost(ctx, h.Name, h.Addr); err != nil {
		return err
	}
	return tb.start(ctx, h)
}

func (tb *Testbed) start(ctx context.Context, h *Host) error {
	logf, err := os.Create(filepath.Join(h.dir, "console.log"))
	if err != nil {
		return fmt.Errorf("testbed: %w", err)
	}
	defer logf.Close()
	args := []string{
		"--quiet", "--boot", "--directory=" + tb.rootfs, "--volatile=overlay",
		"--register=no", "--keep-unit", "--console=read-only",
		"--machine=" + h.Name, "--hostname=" + strings.TrimPrefix(h.Name, tb.net.prefix),
		"--network-namespace-path=/run/netns/" + h.Name,
		"--bind-ro=" + tb.KeyFile + ".pub:/home/deploy/.ssh/authorized_keys",
		"--bind-ro=" + tb.KeyFile + ".pub:/home/nosudo/.ssh/authorized_keys",
	}
	for _, b := range tb.opts.Binds {
		args = append(args, "--bind-ro="+b)
	}
	for _, kt := range []string{"ed25519", "ecdsa"} {
		k := filepath.Join(h.dir, "ssh_host_"+kt+"_key")
		args = append(args, "--bind-ro="+k+":/etc/ssh/ssh_host_"+kt+"_key", "--bind-ro="+k+".pub:/etc/ssh/ssh_host_"+kt+"_key.pub")
	}
	// Not CommandContext: the container must outlive a cancelled boot wait
	// long enough to be stopped in order by Down.
	cmd := exec.Command("systemd-nspawn", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testbed: start %s: %w", h.Name, err)
	}
	h.cmd = cmd
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	_ = os.WriteFile(filepath.Join(h.dir, "pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	return tb.waitReady(ctx, h, exited)
}

// waitReady waits until the host's sshd answers and systemd has finished
// booting (running or degraded).
func (tb *Testbed) waitReady(ctx context.Context, h *Host, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var last error
	for {
		select {
		case <-exited:
			return fmt.Errorf("testbed: %s: container exited during boot; see %s", h.Name, filepath.Join(h.dir, "console.log"))
		case <-ctx.Done():
			return fmt.Errorf("testbed: %s not ready: %w (last: %v)", h.Name, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
		c, err := tb.Dial(ctx, h, "deploy")
		if err != nil {
			last = err
			continue
		}
		res, err := c.Run(ctx, "systemctl is-system-running --wait", nil)
		c.Close()
		state := strings.TrimSpace(string(res.Stdout))
		if state == "running" || state == "degraded" {
			return nil
		}
		last = fmt.Errorf("system state %q: %v", state, err)
	}
}

// Dial opens an SSH connection to h as user, checking its host key.
func (tb *Testbed) Dial(ctx context.Context, h *Host, user string) (*sshexec.Client, error) {
	return sshexec.Dial(ctx, sshexec.Config{
		Host:            h.Addr,
		Port:            22,
		User:            user,
		KeyFiles:        []string{tb.KeyFile},
		KnownHostsFiles: []string{tb.KnownHosts},
		ConnectTimeout:  15 * time.Second,
	})
}

// Run runs a shell command on h as deploy and returns its stdout. A command
// that fails returns an error holding its stderr.
func (tb *Testbed) Run(ctx context.Context, h *Host, cmd string) (string, error) {
	return tb.RunInput(ctx, h, cmd, nil)
}

// RunInput is Run with stdin.
func (tb *Testbed) RunInput(ctx context.Context, h *Host, cmd string, stdin io.Reader) (string, error) {
	c, err := tb.Dial(ctx, h, "deploy")
	if err != nil {
		return "", err
	}
	defer c.Close()
	res, err := c.Run(ctx, cmd, stdin)
	if err != nil {
		return string(res.Stdout), fmt.Errorf("%s: %s: %w", h.Name, cmd, err)
	}
	return string(res.Stdout), nil
}

// RunRoot runs a shell command on h as root, from outside (nsenter into
// the container's namespaces), not over SSH: for what the tests check
// that a deploy user without sudo cannot read.
func (tb *Testbed) RunRoot(ctx context.Context, h *Host, cmd string) (string, error) {
	leader, err := containerLeader(h.cmd.Process.Pid)
	if err != nil {
		return "", fmt.Errorf("%s: %w", h.Name, err)
	}
	c := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(leader), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--", "/bin/sh", "-c", cmd)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s: %w: %s", h.Name, cmd, err, stderr.String())
	}
	return string(out), nil
}

// containerLeader is the container's PID 1 as seen here: the first
// process under systemd-nspawn's in another PID namespace.
func containerLeader(nspawn int) (int, error) {
	own, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return 0, err
	}
	queue := []int{nspawn}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && ns != own {
			return pid, nil
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		for _, f := range strings.Fields(string(b)) {
			if child, err := strconv.Atoi(f); err == nil {
				queue = append(queue, child)
			}
		}
	}
	return 0, fmt.Errorf("no container process under systemd-nspawn %d", nspawn)
}

// Reboot stops h's container and boots it again from the clean rootfs:
// everything done on it since its last boot is gone.
func (tb *Testbed) Reboot(ctx context.Context, h *Host) error {
	stopProcess(h.cmd.Process.Pid, 20*time.Second)
	return tb.start(ctx, h)
}

// Stop stops h's container and leaves it down (Start boots it again).
func (tb *Testbed) Stop(h *Host) {
	stopProcess(h.cmd.Process.Pid, 20*time.Second)
}

// Start boots h's stopped container again from the clean rootfs.
func (tb *Testbed) Start(ctx context.Context, h *Host) error {
	return tb.start(ctx, h)
}

// Down stops every host and removes the network. It is safe to call more
// than once.
func (tb *Testbed) Down(ctx context.Context) error {
	if tb == nil {
		return nil
	}
	err := tb.clean(ctx)
	if tb.unlock != nil {
		tb.unlock()
		tb.unlock = nil
	}
	return err
}

// clean stops every container of the testbed's slot still running (found
// by name, even from a killed run) and removes the slot's namespaces, links
// and state.
func (tb *Testbed) clean(ctx context.Context) error {
	stateDir := tb.opts.StateDir
	var wg sync.WaitGroup
	for _, pid := range nspawnPIDs(tb.net.prefix) {
		wg.Add(1)
		go func() { defer wg.Done(); stopProcess(pid, 20*time.Second) }()
	}
	wg.Wait()
	tb.net.clean(ctx)
	entries, _ := os.ReadDir(stateDir)
	for _, e := range entries {
		if e.Name() != ".lock" {
			_ = os.RemoveAll(filepath.Join(stateDir, e.Name()))
		}
	}
	if left := nspawnPIDs(tb.net.prefix); len(left) > 0 {
		return fmt.Errorf("testbed: containers still running after clean: pids %v", left)
	}
	return nil
}

// nspawnPIDs finds the systemd-nspawn processes of the testbeds whose names
// start with prefix, by command line.
func nspawnPIDs(prefix string) []int {
	var pids []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(raw), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "systemd-nspawn" {
			continue
		}
		for _, a := range args {
			if strings.HasPrefix(a, "--machine="+prefix) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// stopProcess asks a container to power off (SIGTERM to systemd-nspawn) and
// kills it if it has not stopped within grace.
func stopProcess(pid int, grace time.Duration) {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100 && alive(pid); i++ {
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, after, ok := strings.Cut(string(raw), ") ")
	return ok && !strings.HasPrefix(after, "Z")
}

// writeKeyPair writes a new private key (OpenSSH format, 0600) to path and
// its public key to path.pub.
func writeKeyPair(path, kind string) (ssh.PublicKey, error) {
	var priv any
	switch kind {
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		priv = k
	case "ecdsa":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		priv = k
	default:
		return nil, fmt.Errorf("testbed: unknown key type %q", kind)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, fmt.Errorf("testbed: marshal %s key: %w", kind, err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("testbed: %s signer: %w", kind, err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, fmt.Errorf("testbed: write key: %w", err)
	}
	if err := os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		return nil, fmt.Errorf("testbed: write key: %w", err)
	}
	return signer.PublicKey(), nil
}
