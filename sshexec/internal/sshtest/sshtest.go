// Package sshtest is an in-process SSH server on 127.0.0.1 for tests. It
// runs "exec" requests with /bin/sh -c on this machine (so exit codes,
// output and stdin are real), kills them on "signal" requests or when the
// session closes, and serves "direct-tcpip" channels to loopback addresses.
package sshtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Server is a running test server; it stops when the test ends.
type Server struct {
	Addr string // "127.0.0.1:PORT"
	Port int

	ln       net.Listener
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
	silentKA bool // leave keepalives unanswered
}

// NewEd25519Signer returns a fresh ed25519 key.
func NewEd25519Signer(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// NewECDSASigner returns a fresh P-256 key.
func NewECDSASigner(t testing.TB) ssh.Signer {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Start serves on 127.0.0.1:0, accepting only the client key authorized and
// presenting hostKeys.
func Start(t testing.TB, authorized ssh.PublicKey, hostKeys ...ssh.Signer) *Server {
	t.Helper()
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), authorized.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("key not authorized")
		},
	}
	for _, k := range hostKeys {
		cfg.AddHostKey(k)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: ln.Addr().String(), Port: ln.Addr().(*net.TCPAddr).Port, ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c, cfg)
			}()
		}
	}()
	t.Cleanup(s.Close)
	return s
}

// SilenceKeepAlives makes the server stop answering global requests.
func (s *Server) SilenceKeepAlives() {
	s.mu.Lock()
	s.silentKA = true
	s.mu.Unlock()
}

// DropConnections closes every connection the server has, as if sshd's
// session for it were killed; the server goes on accepting new ones.
func (s *Server) DropConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

// Close stops the server and drops its connections.
func (s *Server) Close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) serve(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	conn, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	defer conn.Close()
	go func() {
		for r := range reqs {
			s.mu.Lock()
			silent := s.silentKA
			s.mu.Unlock()
			if !silent && r.WantReply {
				_ = r.Reply(false, nil) // as OpenSSH does for keepalive@openssh.com
			}
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for nc := range chans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch nc.ChannelType() {
			case "session":
				session(nc)
			case "direct-tcpip":
				directTCPIP(nc)
			default:
				_ = nc.Reject(ssh.UnknownChannelType, "unsupported")
			}
		}()
	}
}

// session runs one exec request; other requests are refused.
func session(nc ssh.NewChannel) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	defer func() { go ssh.DiscardRequests(reqs) }()
	var cmd *exec.Cmd
	exited := make(chan struct{})
	kill := func(sig syscall.Signal) {
		if cmd != nil && cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, sig) // the whole process group
		}
	}
	for {
		var r *ssh.Request
		select {
		case r = <-reqs:
		case <-exited:
			return
		}
		if r == nil { // the client closed the channel
			kill(syscall.SIGKILL)
			if cmd != nil {
				<-exited
			}
			return
		}
		switch {
		case r.Type == "exec" && cmd == nil:
			var msg struct{ Command string }
			if ssh.Unmarshal(r.Payload, &msg) != nil {
				_ = r.Reply(false, nil)
				continue
			}
			cmd = exec.Command("/bin/sh", "-c", msg.Command)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.Stdout, cmd.Stderr = ch, ch.Stderr()
			cmd.WaitDelay = time.Second
			stdin, err := cmd.StdinPipe()
			if err == nil {
				err = cmd.Start()
			}
			_ = r.Reply(err == nil, nil)
			if err != nil {
				return
			}
			go func() {
				_, _ = io.Copy(stdin, ch)
				stdin.Close()
			}()
			go func() {
				_ = cmd.Wait()
				reportExit(ch, cmd.ProcessState)
				close(exited)
			}()
		case r.Type == "signal":
			var msg struct{ Signal string }
			if ssh.Unmarshal(r.Payload, &msg) == nil {
				if sig, ok := signals[msg.Signal]; ok {
					kill(sig)
				}
			}
			if r.WantReply {
				_ = r.Reply(true, nil)
			}
		default:
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
	}
}

var signals = map[string]syscall.Signal{
	"ABRT": syscall.SIGABRT, "ALRM": syscall.SIGALRM, "FPE": syscall.SIGFPE,
	"HUP": syscall.SIGHUP, "ILL": syscall.SIGILL, "INT": syscall.SIGINT,
	"KILL": syscall.SIGKILL, "PIPE": syscall.SIGPIPE, "QUIT": syscall.SIGQUIT,
	"SEGV": syscall.SIGSEGV, "TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}

func reportExit(ch ssh.Channel, ps *os.ProcessState) {
	ws, _ := ps.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		name := "USR1" // unknown to the map: any name will do for tests
		for n, s := range signals {
			if s == ws.Signal() {
				name = n
			}
		}
		_, _ = ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Message    string
			Lang       string
		}{Signal: name}))
		return
	}
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(ws.ExitStatus())}))
}

// directTCPIP connects the channel to a loopback address.
func directTCPIP(nc ssh.NewChannel) {
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
	if ip := net.ParseIP(msg.Host); ip == nil || !ip.IsLoopback() {
		_ = nc.Reject(ssh.Prohibited, "loopback only")
		return
	}
	target, err := net.Dial("tcp", net.JoinHostPort(msg.Host, strconv.Itoa(int(msg.Port))))
	if err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	defer target.Close()
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	go ssh.DiscardRequests(reqs)
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(target, ch)
		target.(*net.TCPConn).CloseWrite()
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(ch, target)
		_ = ch.CloseWrite()
		done <- struct{}{}
	}()
	<-done
	<-done
}
