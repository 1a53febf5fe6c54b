package sshexec

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"
)

// Dial connects to cfg's host, checks its host key and authenticates.
// A host key problem is a *HostKeyError.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Port == 0 {
		cfg.Port = defaultPort
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = defaultKeepAlive
	}
	addr, who := target(cfg)
	if cfg.Host == "" || cfg.User == "" {
		return nil, fmt.Errorf("ssh %s: host and user are required", who)
	}

	auth, closeAgent, err := authMethod(cfg)
	if err != nil {
		return nil, &LocalError{Host: who, Err: err}
	}
	defer closeAgent()
	clientCfg := &ssh.ClientConfig{User: cfg.User, Auth: []ssh.AuthMethod{auth}}
	if cfg.InsecureIgnoreHostKey {
		clientCfg.HostKeyCallback = ssh.InsecureIgnoreHostKey()
	} else if clientCfg.HostKeyCallback, clientCfg.HostKeyAlgorithms, err = hostKeyCheck(cfg, addr); err != nil {
		return nil, &LocalError{Host: who, Err: err}
	}

	dctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	var raw net.Conn
	if cfg.ProxyJump != nil {
		raw, err = cfg.ProxyJump.DialContext(dctx, "tcp", addr)
	} else {
		raw, err = (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", who, err)
	}
	// The handshake can't take a context: closing the conn ends it.
	stop := context.AfterFunc(dctx, func() { raw.Close() })
	c, chans, reqs, err := ssh.NewClientConn(raw, addr, clientCfg)
	if !stop() && err == nil {
		c.Close()
		err = dctx.Err()
	}
	if err != nil {
		raw.Close()
		var hke *HostKeyError
		switch {
		case errors.As(err, &hke):
			return nil, hke
		case ctx.Err() != nil:
			return nil, fmt.Errorf("ssh %s: %w", who, ctx.Err())
		case dctx.Err() != nil:
			return nil, fmt.Errorf("ssh %s: no handshake within %s: %w", who, cfg.ConnectTimeout, dctx.Err())
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, fmt.Errorf("ssh %s: authentication failed (keys: %s; agent: %t): %w",
				who, strings.Join(cfg.KeyFiles, ", "), cfg.UseAgent, err)
		}
		return nil, fmt.Errorf("ssh %s: %w", who, err)
	}
	cl := &Client{host: addr, conn: ssh.NewClient(c, chans, reqs), done: make(chan struct{}), broken: make(chan struct{})}
	go func() {
		_ = cl.conn.Wait()
		close(cl.broken)
	}()
	if cfg.KeepAlive > 0 {
		go cl.keepAlive(cfg.KeepAlive)
	}
	return cl, nil
}

// LocalError is a problem on this machine, not on the host: a key that
// cannot be read or parsed, no key at all, a known_hosts that cannot be
// read. Nothing was sent to the host.
type LocalError struct {
	Host string // user@host:port it was for
	Err  error
}

func (e *LocalError) Error() string { return fmt.Sprintf("ssh %s: %v", e.Host, e.Err) }
func (e *LocalError) Unwrap() error { return e.Err }

// CheckLocal checks what Dial would read on this machine (the key files
// and data, an agent when there is no key, the known_hosts files and
// data) without connecting: a *LocalError says what is wrong. A
// passphrase-protected key file passes; Dial asks for its passphrase.
func CheckLocal(cfg Config) error {
	if cfg.Port == 0 {
		cfg.Port = defaultPort
	}
	addr, who := target(cfg)
	cfg.Passphrase = func(string) ([]byte, error) { return nil, errPassphraseLater }
	_, closeAgent, err := authMethod(cfg)
	if errors.Is(err, errPassphraseLater) {
		err = nil
	}
	if err != nil {
		return &LocalError{Host: who, Err: err}
	}
	if closeAgent != nil {
		closeAgent()
	}
	if cfg.InsecureIgnoreHostKey {
		return nil
	}
	if _, _, err := hostKeyCheck(cfg, addr); err != nil {
		return &LocalError{Host: who, Err: err}
	}
	return nil
}

var errPassphraseLater = errors.New("passphrase asked when dialing")

// target is cfg's host:port, and user@host:port as errors name it.
func target(cfg Config) (addr, who string) {
	addr = net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	return addr, cfg.User + "@" + addr
}

// authMethod offers the key files' signers, then the agent's, in a single
// publickey method (x/crypto tries each method name only once).
func authMethod(cfg Config) (ssh.AuthMethod, func(), error) {
	var signers []ssh.Signer
	for _, f := range cfg.KeyFiles {
		path := expandHome(f)
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("read key: %w", err)
		}
		s, err := ssh.ParsePrivateKey(pem)
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			if cfg.Passphrase == nil {
				return nil, nil, fmt.Errorf("key %s is passphrase-protected: add it to ssh-agent (ssh-add %s)", path, path)
			}
			pass, perr := cfg.Passphrase(path)
			if perr != nil {
				return nil, nil, fmt.Errorf("passphrase for key %s: %w", path, perr)
			}
			s, err = ssh.ParsePrivateKeyWithPassphrase(pem, pass)
			clear(pass)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("parse key %s: %w", path, err)
		}
		signers = append(signers, s)
	}
	for i, pem := range cfg.KeyPEMs {
		s, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			var missing *ssh.PassphraseMissingError
			if errors.As(err, &missing) {
				return nil, nil, fmt.Errorf("key %d given as data is passphrase-protected: give it without a passphrase", i+1)
			}
			return nil, nil, fmt.Errorf("parse key %d given as data: %w", i+1, err)
		}
		signers = append(signers, s)
	}
	var ag agent.ExtendedAgent
	closeAgent := func() {}
	if sock := os.Getenv("SSH_AUTH_SOCK"); cfg.UseAgent && sock != "" {
		if conn, err := net.Dial("unix", sock); err == nil {
			ag, closeAgent = agent.NewClient(conn), func() { conn.Close() }
		}
	}
	if len(signers) == 0 && ag == nil {
		return nil, nil, errors.New("no SSH key, and no ssh-agent")
	}
	return ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
		if ag == nil {
			return signers, nil
		}
		fromAgent, err := ag.Signers()
		if err != nil {
			return signers, nil // the key files may still do
		}
		return append(append([]ssh.Signer(nil), signers...), fromAgent...), nil
	}), closeAgent, nil
}

// hostKeyCheck returns the callback checking keys against known_hosts, and
// the host key algorithms to ask addr for: those known_hosts has for it, so
// a host with several key types presents one we can check (nil when the
// host is unknown, to accept any).
func hostKeyCheck(cfg Config, addr string) (ssh.HostKeyCallback, []string, error) {
	var all, present []string
	for _, f := range cfg.KnownHostsFiles {
		p := expandHome(f)
		all = append(all, p)
		if _, err := os.Stat(p); err == nil {
			present = append(present, p)
		}
	}
	dataPath := ""
	if len(cfg.KnownHostsData) > 0 {
		path, cleanup, err := memFile("known_hosts", cfg.KnownHostsData)
		if err != nil {
			return nil, nil, fmt.Errorf("known hosts given as data: %w", err)
		}
		defer cleanup() // NewDB has read it by then
		present, dataPath = append(present, path), path
	}
	var db *knownhosts.HostKeyDB
	var algos []string
	if len(present) > 0 {
		var err error
		if db, err = knownhosts.NewDB(present...); err != nil {
			return nil, nil, fmt.Errorf("read known_hosts: %w", err)
		}
		algos = db.HostKeyAlgorithms(addr)
	}
	cb := func(host string, remote net.Addr, key ssh.PublicKey) error {
		hke := &HostKeyError{Host: host, Fingerprint: ssh.FingerprintSHA256(key), KeyType: key.Type(), File: strings.Join(all, ", ")}
		if db != nil {
			err := db.HostKeyCallback()(host, remote, key)
			var ke *xknownhosts.KeyError
			if err == nil || !errors.As(err, &ke) {
				return err // accepted, or revoked or malformed
			}
			if len(ke.Want) > 0 {
				hke.Changed, hke.File = true, fmt.Sprintf("%s:%d", ke.Want[0].Filename, ke.Want[0].Line)
				if ke.Want[0].Filename == dataPath {
					hke.File = fmt.Sprintf("the known hosts given as data (line %d)", ke.Want[0].Line)
				}
				return hke
			}
		}
		if !cfg.AcceptNew || len(all) == 0 {
			return hke
		}
		return appendKnownHost(all[0], host, key)
	}
	return cb, algos, nil
}

func appendKnownHost(file, host string, key ssh.PublicKey) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("record host key of %s: %w", host, err)
	}
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("record host key of %s: %w", host, err)
	}
	_, err = fmt.Fprintln(f, knownhosts.Line([]string{host}, key))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("record host key of %s in %s: %w", host, file, err)
	}
	return nil
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return p
}
