package deployer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"sync"

	"github.com/rollout-dev/rollout/sshexec"
)

// Streamer runs a command and streams its output until it ends or ctx is
// done. *sshexec.Client is one.
type Streamer interface {
	Stream(ctx context.Context, cmd string, stdout, stderr io.Writer) error
}

// LogsOptions select what `rollout logs` shows.
type LogsOptions struct {
	Ports  []int  // empty: every instance
	Lines  int    // last lines of each source
	Since  string // journal only, in journalctl's --since syntax
	Follow bool
}

var sinceRE = regexp.MustCompile(`^[0-9A-Za-z:+. -]{1,40}$`)

// Validate checks the options against the config.
func (o LogsOptions) Validate(cfg *Config) error {
	for _, p := range o.Ports {
		if cfg.InstancesAuto() && p >= cfg.BasePort() && p <= 65535 {
			continue // one per core: known once connected
		}
		if !slices.Contains(cfg.Ports(), p) {
			return fmt.Errorf("--port %d is not one of the instances (%v)", p, cfg.Ports())
		}
	}
	if o.Lines < 1 || o.Lines > 100000 {
		return fmt.Errorf("--lines must be 1..100000, got %d", o.Lines)
	}
	if o.Since != "" && !sinceRE.MatchString(o.Since) {
		return fmt.Errorf("--since %q: use journalctl's syntax, e.g. \"10 min ago\", \"2026-11-25 09:00\" or \"today\"", o.Since)
	}
	return nil
}

// logSource is one stream of an instance's (or a worker's) output; where
// prefixes its lines.
type logSource struct {
	where string
	cmd   string
}

// cmdLogSources are the commands that print (or follow) a unit's journal
// and log files, each line prefixed with where.
func (r sshRemote) cmdLogSources(unit, where string, files []string, o LogsOptions) []logSource {
	journal := []string{"journalctl", "--no-pager", "-o", "short-iso", "-n", strconv.Itoa(o.Lines), "-u", unit}
	args := []string{strconv.Itoa(o.Lines), "0", unit}
	if o.Follow {
		args[1] = "1"
	}
	if o.Since != "" {
		journal = append(journal, "--since", o.Since)
		args = append(args, o.Since)
	}
	if o.Follow {
		journal = append(journal, "-f")
	}
	srcs := []logSource{{where, r.priv.command("journal", args, journal)}}
	for _, f := range files {
		tail := []string{"tail", "-n", strconv.Itoa(o.Lines)}
		if o.Follow {
			tail = append(tail, "-F")
		}
		// Quiet about a missing file, not about sudo; the helper reads it
		// as the app's user.
		plain := []string{"sh", "-c", sshexec.QuoteCommand(append(tail, "--", f)...) + " 2>/dev/null"}
		srcs = append(srcs, logSource{where, r.priv.command("tail", []string{args[0], args[1], f}, plain)})
	}
	return srcs
}

// Logs writes the instances' output on one host, each line prefixed with
// host:port: their journal and their log files (from the config, or else
// their unit files). With Follow it streams until ctx is done.
func Logs(ctx context.Context, cfg *Config, host string, conn Conn, s Streamer, o LogsOptions, out *LineWriter) error {
	r := newSSHRemote(cfg, conn) // what it runs does not depend on the ports
	cfg, err := resolveHost(ctx, cfg, host, r)
	if err != nil {
		return err
	}
	ports := o.Ports
	if len(ports) == 0 {
		ports = cfg.Ports()
	}
	files := map[int][]string{}
	if len(cfg.Logs) == 0 {
		if files, err = r.LogFiles(ctx, cfg.Ports()); err != nil {
			return err
		}
	}
	var srcs []logSource
	for _, p := range ports {
		fs := cfg.LogFiles(p)
		if len(fs) == 0 {
			fs = files[p]
		}
		srcs = append(srcs, r.cmdLogSources(cfg.UnitName(p), fmt.Sprintf("%s:%d", host, p), fs, o)...)
	}
	if units := cfg.WorkerUnits(); len(o.Ports) == 0 && len(units) > 0 {
		// Every instance: the workers too, each prefixed HOST/UNIT.
		wfiles, err := r.WorkerLogFiles(ctx, units)
		if err != nil {
			return err
		}
		for _, u := range units {
			srcs = append(srcs, r.cmdLogSources(u, Where(host, 0, u), wfiles[u], o)...)
		}
	}
	run := func(src logSource) error {
		w := out.Prefixed(src.where + " ")
		defer w.Flush()
		err := s.Stream(ctx, src.cmd, w, w)
		var ee *sshexec.ExitError
		if errors.As(err, &ee) && ee.Code == 1 && !o.Follow {
			return nil // tail of a missing file
		}
		return err
	}
	if !o.Follow {
		for _, src := range srcs {
			if err := run(src); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, len(srcs))
	var wg sync.WaitGroup
	for i, src := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = run(src)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return errors.Join(errs...)
}

// LineWriter writes whole lines from many streams to one writer.
type LineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewLineWriter writes to w.
func NewLineWriter(w io.Writer) *LineWriter { return &LineWriter{w: w} }

// Prefixed returns a writer that prefixes each of its lines.
func (l *LineWriter) Prefixed(prefix string) *PrefixWriter {
	return &PrefixWriter{l: l, prefix: []byte(prefix)}
}

// PrefixWriter buffers a partial line until its end.
type PrefixWriter struct {
	l      *LineWriter
	prefix []byte
	mu     sync.Mutex
	buf    []byte
}

func (p *PrefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		p.emit(p.buf[:i+1])
		p.buf = p.buf[i+1:]
	}
}

// Flush writes a last partial line.
func (p *PrefixWriter) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		p.emit(append(p.buf, '\n'))
		p.buf = nil
	}
}

func (p *PrefixWriter) emit(line []byte) {
	p.l.mu.Lock()
	defer p.l.mu.Unlock()
	_, _ = p.l.w.Write(append(append([]byte{}, p.prefix...), line...))
}
