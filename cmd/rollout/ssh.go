package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kevinburke/ssh_config"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/term"

	"github.com/rollout-dev/rollout/deployer"
	"github.com/rollout-dev/rollout/sshexec"
)

// sshDialer reaches hosts as OpenSSH would: the names in rollout.yaml may
// be aliases of the ssh config file (HostName, User, Port, IdentityFile,
// UserKnownHostsFile, ProxyJump). rollout.yaml and flags win over the ssh
// config file where they say something other than their defaults.
type sshDialer struct {
	cfg  *deployer.Config
	file *ssh_config.Config // nil: no ssh config file
	// From the environment (CI secrets): used in memory only.
	keyPEM, knownHosts []byte
}

func newSSHDialer(cfg *deployer.Config) (*sshDialer, error) {
	d := &sshDialer{cfg: cfg}
	if k := os.Getenv("ROLLOUT_SSH_KEY"); k != "" {
		d.keyPEM = []byte(k)
		if err := checkKeyData(d.keyPEM); err != nil {
			return nil, fmt.Errorf("ROLLOUT_SSH_KEY: %w", err)
		}
	}
	if k := os.Getenv("ROLLOUT_KNOWN_HOSTS"); k != "" {
		d.knownHosts = []byte(k)
		if err := checkKnownHostsData(d.knownHosts); err != nil {
			return nil, fmt.Errorf("ROLLOUT_KNOWN_HOSTS: %w", err)
		}
	}
	if cfg.SSH.ConfigFile == "" {
		return d, nil
	}
	path := expandHome(cfg.SSH.ConfigFile)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return d, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ssh config: %w", err)
	}
	defer f.Close()
	if d.file, err = ssh_config.Decode(f); err != nil {
		return nil, fmt.Errorf("ssh config %s: %w", path, err)
	}
	return d, nil
}

func (d *sshDialer) get(alias, key string) string {
	if d.file == nil {
		return ""
	}
	v, err := d.file.Get(alias, key)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(v)
}

// hostConfig resolves how to reach alias; user and port, when set, come
// from a bastion spec and win over everything else.
func (d *sshDialer) hostConfig(alias, user string, port int) sshexec.Config {
	cfg := d.cfg
	sc := sshexec.Config{
		Host:           alias,
		Port:           cfg.SSH.Port,
		User:           cfg.SSH.User,
		UseAgent:       true,
		AcceptNew:      cfg.SSH.AcceptNew,
		ConnectTimeout: cfg.SSH.ConnectTimeout,
		KeepAlive:      cfg.SSH.KeepAlive,
		Passphrase:     askPassphrase,
		KnownHostsData: d.knownHosts,
	}
	if h := d.get(alias, "HostName"); h != "" {
		sc.Host = strings.ReplaceAll(h, "%h", alias)
	}
	if p, err := strconv.Atoi(d.get(alias, "Port")); err == nil && sc.Port == deployer.DefaultConfig().SSH.Port {
		sc.Port = p
	}
	if sc.User == "" {
		sc.User = d.get(alias, "User")
	}
	if user != "" {
		sc.User = user
	}
	if port != 0 {
		sc.Port = port
	}
	if sc.User == "" {
		sc.User = currentUser()
	}
	known := cfg.SSH.KnownHosts
	if f := d.get(alias, "UserKnownHostsFile"); f != "" && known == deployer.DefaultConfig().SSH.KnownHosts {
		known = strings.Fields(f)[0]
	}
	sc.KnownHostsFiles = []string{known}
	if d.keyPEM != nil {
		sc.KeyPEMs = [][]byte{d.keyPEM}
	}
	switch {
	case cfg.SSH.Key != "":
		sc.KeyFiles = []string{cfg.SSH.Key}
	case d.file != nil:
		if files, err := d.file.GetAll(alias, "IdentityFile"); err == nil {
			for _, f := range files {
				if p := expandHome(f); fileExists(p) {
					sc.KeyFiles = append(sc.KeyFiles, p)
				}
			}
		}
	}
	if len(sc.KeyFiles) == 0 && d.keyPEM == nil {
		if home, err := os.UserHomeDir(); err == nil {
			for _, k := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
				if p := filepath.Join(home, ".ssh", k); fileExists(p) {
					sc.KeyFiles = append(sc.KeyFiles, p)
				}
			}
		}
	}
	return sc
}

// jumps are the bastions to reach alias through, in order.
func (d *sshDialer) jumps(alias string) []string {
	j := d.cfg.SSH.Jump
	if j == "" {
		j = d.get(alias, "ProxyJump")
	}
	if j == "" || strings.EqualFold(j, "none") {
		return nil
	}
	return strings.Split(j, ",")
}

// Dial connects to alias, through its bastions if any: one connection per
// host, every command and tunnel shares it.
func (d *sshDialer) Dial(ctx context.Context, alias string) (deployer.Conn, error) {
	var hops []*sshexec.Client
	closeAll := func() {
		for i := len(hops) - 1; i >= 0; i-- {
			hops[i].Close()
		}
	}
	var via *sshexec.Client
	for _, hop := range d.jumps(alias) {
		user, host, port, err := sshexec.ParseJump(hop)
		if err != nil {
			closeAll()
			return nil, err
		}
		sc := d.hostConfig(host, user, port)
		sc.ProxyJump = via
		c, err := sshexec.Dial(ctx, sc)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("bastion %s: %w", strings.TrimSpace(hop), err)
		}
		hops = append(hops, c)
		via = c
	}
	sc := d.hostConfig(alias, "", 0)
	sc.ProxyJump = via
	c, err := sshexec.Dial(ctx, sc)
	if err != nil {
		closeAll()
		return nil, err
	}
	if len(hops) == 0 {
		return c, nil
	}
	return &jumpedClient{Client: c, hops: hops}, nil
}

// jumpedClient is a connection made through bastions; closing it closes
// them too.
type jumpedClient struct {
	*sshexec.Client
	hops []*sshexec.Client
}

func (j *jumpedClient) Close() error {
	err := j.Client.Close()
	for i := len(j.hops) - 1; i >= 0; i-- {
		j.hops[i].Close()
	}
	return err
}

// askPassphrase asks on the terminal for an encrypted key's passphrase;
// without a terminal it says how to do without one.
func askPassphrase(file string) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil || !term.IsTerminal(int(tty.Fd())) {
		if tty != nil {
			tty.Close()
		}
		return nil, fmt.Errorf("no terminal to ask for the passphrase of %s: add the key to ssh-agent (ssh-add %s), or give ROLLOUT_SSH_KEY an unencrypted deploy key", file, file)
	}
	defer tty.Close()
	fmt.Fprintf(tty, "Enter passphrase for key %s: ", file)
	pass, err := term.ReadPassword(int(tty.Fd()))
	fmt.Fprintln(tty)
	return pass, err
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return p
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// checkKeyData checks a private key given in a variable (never printed).
func checkKeyData(pem []byte) error {
	_, err := gossh.ParsePrivateKey(pem)
	var missing *gossh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		return errors.New("the key is passphrase-protected: give a deploy key without a passphrase")
	case err != nil:
		return fmt.Errorf("not an OpenSSH or PEM private key (%v)", err)
	}
	return nil
}

// checkKnownHostsData checks known_hosts lines given in a variable.
func checkKnownHostsData(data []byte) error {
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, _, _, _, _, err := gossh.ParseKnownHosts([]byte(line)); err != nil {
			return fmt.Errorf("line %d is not a known_hosts line (%v): ssh-keyscan HOST prints them", i+1, err)
		}
	}
	return nil
}

// checkLocal checks, before anything connects, what dialing aliases
// would read on this machine (keys, agent, known_hosts), naming the
// setting at fault: a local mistake is never blamed on a host.
func (d *sshDialer) checkLocal(aliases []string) error {
	seen := map[string]bool{}
	for _, alias := range aliases {
		targets := []sshexec.Config{d.hostConfig(alias, "", 0)}
		for _, hop := range d.jumps(alias) {
			user, host, port, err := sshexec.ParseJump(hop)
			if err != nil {
				return usageError{fmt.Errorf("ssh.jump (or --jump, ProxyJump) of %s: %w", alias, err)}
			}
			targets = append(targets, d.hostConfig(host, user, port))
		}
		for _, sc := range targets {
			key := fmt.Sprint(sc.KeyFiles, sc.KnownHostsFiles, len(sc.KeyPEMs))
			if seen[key] {
				continue
			}
			seen[key] = true
			if err := sshexec.CheckLocal(sc); err != nil {
				// The host plays no part: name the setting instead.
				var le *sshexec.LocalError
				if errors.As(err, &le) {
					err = le.Err
				}
				return usageError{fmt.Errorf("ssh: %w%s", err, d.keyHint(err))}
			}
		}
	}
	return nil
}

// keyHint names the settings that chose the key or known_hosts file.
func (d *sshDialer) keyHint(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "no SSH key"):
		return ": set ssh.key (or --key, ROLLOUT_SSH_KEY_FILE), give the key itself in ROLLOUT_SSH_KEY, add an IdentityFile to the ssh config, or run ssh-agent"
	case strings.Contains(msg, "known_hosts"):
		return " (ssh.known_hosts, --known-hosts or ROLLOUT_KNOWN_HOSTS_FILE, or UserKnownHostsFile in the ssh config)"
	case d.cfg.SSH.Key != "":
		return " (ssh.key, --key or ROLLOUT_SSH_KEY_FILE)"
	}
	return " (an IdentityFile of the ssh config, or ~/.ssh)"
}
