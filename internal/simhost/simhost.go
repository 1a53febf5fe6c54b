// Package simhost is a simulated rollout host for the fleet-scale
// benchmark: an in-process SSH server on loopback that answers rollout's
// remote commands as a host running systemd template instances behind an
// Nginx upstream would, keeping the state they change (each unit's process,
// the upstream file, the deploy lock), and serves the instances' health
// checks over direct-tcpip channels. Every byte it sends is delayed by the
// configured round-trip time, so a command costs the round trips it would
// cost over a real network.
//
// It answers the commands of a deploy without release: and without hooks:
// nproc, preflight, the lock, reading the upstream file, inspect,
// write-upstream, restart, systemctl show and the history; anything else exits 127. It is a benchmark's
// stand-in for the testbed, not a test of the scripts (e2e/ runs those on
// real hosts).
package simhost

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Options shape a simulated host.
type Options struct {
	App      string        // the units are APP@PORT
	Upstream string        // the upstream block's name
	Ports    []int         // its instances, each in the upstream
	Cores    int           // what nproc says
	RTT      time.Duration // added to every round trip
	Boot     time.Duration // from a restart until the instance answers its health check
	Reload   time.Duration // an Nginx config test and reload
}

// Host is a running simulated host.
type Host struct {
	Addr string // 127.0.0.1:PORT
	Port int

	opt Options
	ln  net.Listener
	cfg *ssh.ServerConfig

	boot time.Time // the simulated host's boot

	mu       sync.Mutex
	upstream []byte
	units    map[int]*unit
	locked   bool
	drained  []byte // the record of instances drained by hand
	conns    []net.Conn
	// Commands counts the commands run, by name.
	commands map[string]int
}

type unit struct {
	pid     int
	started time.Time // the process's start
}

// Start serves a simulated host on 127.0.0.1:0 with host key hostKey,
// accepting only the client key authorized.
func Start(opt Options, hostKey ssh.Signer, authorized ssh.PublicKey) (*Host, error) {
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), authorized.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("key not authorized")
		},
	}
	cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &Host{Addr: ln.Addr().String(), Port: ln.Addr().(*net.TCPAddr).Port, opt: opt, ln: ln, cfg: cfg,
		boot: time.Now().Add(-2 * time.Hour), units: map[int]*unit{}, commands: map[string]int{}}
	var b strings.Builder
	fmt.Fprintf(&b, "upstream %s {\n", opt.Upstream)
	start := h.boot.Add(time.Minute)
	for i, p := range opt.Ports {
		fmt.Fprintf(&b, "    server 127.0.0.1:%d;\n", p)
		h.units[p] = &unit{pid: 1000 + i, started: start}
	}
	b.WriteString("}\n")
	h.upstream = []byte(b.String())
	go h.accept()
	return h, nil
}

// Close stops the host and drops its connections.
func (h *Host) Close() {
	h.ln.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
}

// Commands are the commands run so far, by name.
func (h *Host) Commands() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for k, v := range h.commands {
		out[k] = v
	}
	return out
}

// Restarts is how many instances were restarted.
func (h *Host) Restarts() int { return h.Commands()["restart"] }

func (h *Host) accept() {
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		dc := newDelayedConn(c, h.opt.RTT)
		h.mu.Lock()
		h.conns = append(h.conns, dc)
		h.mu.Unlock()
		go h.serve(dc)
	}
}

func (h *Host) serve(c net.Conn) {
	defer c.Close()
	conn, chans, reqs, err := ssh.NewServerConn(c, h.cfg)
	if err != nil {
		return
	}
	defer conn.Close()
	go func() {
		for r := range reqs {
			if r.WantReply {
				_ = r.Reply(false, nil) // as OpenSSH answers keepalive@openssh.com
			}
		}
	}()
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			go h.session(nc)
		case "direct-tcpip":
			go h.directTCPIP(nc)
		default:
			_ = nc.Reject(ssh.UnknownChannelType, "unsupported")
		}
	}
}

// session runs one exec request.
func (h *Host) session(nc ssh.NewChannel) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	for r := range reqs {
		if r.Type != "exec" {
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
			continue
		}
		var msg struct{ Command string }
		if ssh.Unmarshal(r.Payload, &msg) != nil {
			_ = r.Reply(false, nil)
			return
		}
		_ = r.Reply(true, nil)
		go ssh.DiscardRequests(reqs)
		stdin := func() []byte {
			b, _ := io.ReadAll(ch)
			return b
		}
		var stdout, stderr bytes.Buffer
		code := h.run(msg.Command, stdin, &stdout, &stderr)
		_, _ = ch.Write(stdout.Bytes())
		_, _ = ch.Stderr().Write(stderr.Bytes())
		_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
		return
	}
}

// run answers one command as the host would, returning its exit code.
func (h *Host) run(command string, stdin func() []byte, stdout, stderr io.Writer) int {
	command = strings.TrimPrefix(command, "sudo -n ")
	args, err := splitWords(command)
	if err != nil || len(args) == 0 {
		fmt.Fprintf(stderr, "simhost: cannot read %q\n", command)
		return 2
	}
	name := args[0]
	if name == "sh" && len(args) >= 4 && args[1] == "-c" {
		name, args = strings.TrimPrefix(args[3], "rollout-"), args[4:]
	} else if name == "systemctl" && len(args) > 1 {
		name, args = "systemctl "+args[1], args[2:]
	}
	h.mu.Lock()
	h.commands[name]++
	h.mu.Unlock()
	switch name {
	case "nproc":
		fmt.Fprintln(stdout, h.opt.Cores)
	case "preflight", "cat": // cat -- UPSTREAM_FILE
		h.mu.Lock()
		stdout.Write(h.upstream)
		h.mu.Unlock()
	case "lock-acquire":
		stdin()
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.locked {
			fmt.Fprintln(stdout, "held 0")
			fmt.Fprintln(stdout, `{"user":"someone else"}`)
			return 0
		}
		h.locked = true
		fmt.Fprintln(stdout, "acquired")
	case "lock-refresh":
	case "lock-release":
		h.mu.Lock()
		h.locked = false
		h.mu.Unlock()
	case "history-append":
		stdin()
	case "drained": // FILE read|write: the instances drained by hand
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(args) > 1 && args[1] == "write" {
			h.drained = stdin()
		} else {
			stdout.Write(h.drained)
		}
	case "inspect": // PROPERTIES UPSTREAM_FILE UNIT...
		h.mu.Lock()
		defer h.mu.Unlock()
		fmt.Fprintln(stdout, "@@rollout@@ units")
		for _, u := range args[2:] {
			h.show(stdout, u)
		}
		fmt.Fprintln(stdout, "@@rollout@@ uptime")
		fmt.Fprintf(stdout, "%.2f 0.00\n", float64(time.Now().UnixMicro()-h.bootMicro())/1e6)
		fmt.Fprintln(stdout, "@@rollout@@ upstream")
		stdout.Write(h.upstream)
	case "systemctl show": // -p PROPS -- UNIT
		h.mu.Lock()
		defer h.mu.Unlock()
		h.show(stdout, args[len(args)-1])
	case "write-upstream": // FILE TEST RELOAD PID DRAIN_MS [PORT...]
		return h.writeUpstream(stdin(), len(args) > 5, stdout, stderr)
	case "restart": // UNIT PROPS ROOT PORT RELEASE [LOG...]
		return h.restart(args[0], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "simhost: %s: not simulated\n", name)
		return 127
	}
	return 0
}

// bootMicro is the host's boot, in Unix microseconds.
func (h *Host) bootMicro() int64 { return h.boot.UnixMicro() }

// port is the port of unit "APP@PORT".
func port(unit string) int {
	_, p, _ := strings.Cut(strings.TrimSuffix(unit, ".service"), "@")
	n, _ := strconv.Atoi(p)
	return n
}

// show prints `systemctl show` of unit; h.mu held.
func (h *Host) show(w io.Writer, name string) {
	u, ok := h.units[port(name)]
	if !ok {
		fmt.Fprintf(w, "Id=%s.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\nMainPID=0\nExecMainStartTimestampMonotonic=0\nNRestarts=0\nResult=success\nStartLimitBurst=5\nStartLimitIntervalUSec=10s\nMemoryCurrent=[not set]\n\n", name)
		return
	}
	fmt.Fprintf(w, "Id=%s.service\nLoadState=loaded\nActiveState=active\nSubState=running\nMainPID=%d\nExecMainStartTimestampMonotonic=%d\nNRestarts=0\nResult=success\nStartLimitBurst=5\nStartLimitIntervalUSec=10s\nMemoryCurrent=52428800\n\n",
		name, u.pid, u.started.UnixMicro()-h.bootMicro())
}

// writeUpstream is write-upstream.sh: a compare-and-swap of the upstream
// file, a config test and reload, and the drain's wait.
func (h *Host) writeUpstream(in []byte, drained bool, stdout, stderr io.Writer) int {
	sum, next, ok := bytes.Cut(in, []byte("\n"))
	h.mu.Lock()
	have := sha256.Sum256(h.upstream)
	if !ok || string(sum) != hex.EncodeToString(have[:]) {
		h.mu.Unlock()
		fmt.Fprintln(stderr, "the upstream file changed")
		return 67 // EX_CHANGED
	}
	h.upstream = next
	h.mu.Unlock()
	time.Sleep(h.opt.Reload)
	if drained {
		fmt.Fprintln(stdout, "drained 0")
	}
	return 0
}

// restart is restart.sh: a new process, healthy after Boot.
func (h *Host) restart(name string, stdout, stderr io.Writer) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	u, ok := h.units[port(name)]
	if !ok {
		fmt.Fprintf(stderr, "Unit %s.service not found.\n", name)
		return 5
	}
	fmt.Fprintf(stdout, "@@rollout@@ clock\n%d\n@@rollout@@ sizes\n@@rollout@@ before\n", time.Now().UnixMicro())
	h.show(stdout, name)
	u.pid += 100
	u.started = time.Now()
	fmt.Fprintln(stdout, "@@rollout@@ after")
	h.show(stdout, name)
	return 0
}

// directTCPIP serves an instance's health check: 200 once it has booted,
// connection refused while it boots.
func (h *Host) directTCPIP(nc ssh.NewChannel) {
	var msg struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	if ssh.Unmarshal(nc.ExtraData(), &msg) != nil {
		_ = nc.Reject(ssh.ConnectionFailed, "bad request")
		return
	}
	h.mu.Lock()
	u, ok := h.units[int(msg.Port)]
	up := ok && time.Since(u.started) >= h.opt.Boot
	h.mu.Unlock()
	if !up {
		_ = nc.Reject(ssh.ConnectionFailed, "Connection refused")
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	go ssh.DiscardRequests(reqs)
	br := bufio.NewReader(ch)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		body := `{"status":"ok"}` + "\n"
		if _, err := fmt.Fprintf(ch, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
			return
		}
		if req.Close {
			return
		}
	}
}

// splitWords splits a command as sh would for rollout's quoting
// (sshexec.Quote): words separated by spaces, single-quoted parts, and
// '\” for a quote inside one.
func splitWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	in, inQuote := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\'':
			inQuote = false
		case inQuote:
			w.WriteByte(c)
		case c == '\'':
			inQuote, in = true, true
		case c == '\\' && i+1 < len(s):
			i++
			w.WriteByte(s[i])
			in = true
		case c == ' ' || c == '\n' || c == '\t':
			if in {
				words = append(words, w.String())
				w.Reset()
				in = false
			}
		default:
			w.WriteByte(c)
			in = true
		}
	}
	if inQuote {
		return nil, errors.New("unterminated quote")
	}
	if in {
		words = append(words, w.String())
	}
	return words, nil
}

// delayedConn delays every byte it writes by d: with the client on the
// same machine, each round trip takes d more.
type delayedConn struct {
	net.Conn
	d      time.Duration
	mu     sync.Mutex
	closed bool
	queue  chan delayed
}

type delayed struct {
	at   time.Time
	data []byte
}

func newDelayedConn(c net.Conn, d time.Duration) net.Conn {
	if d <= 0 {
		return c
	}
	dc := &delayedConn{Conn: c, d: d, queue: make(chan delayed, 1024)}
	go func() {
		for p := range dc.queue {
			time.Sleep(time.Until(p.at))
			if _, err := dc.Conn.Write(p.data); err != nil {
				dc.Conn.Close()
			}
		}
	}()
	return dc
}

func (c *delayedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	c.queue <- delayed{at: time.Now().Add(c.d), data: bytes.Clone(p)}
	return len(p), nil
}

func (c *delayedConn) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.queue)
	}
	c.mu.Unlock()
	return c.Conn.Close()
}
