package sshexec

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"unicode/utf8"
)

// gate serialises a session's stdout and stderr writes and, once shut,
// drops them, so no write reaches the caller's writers after run returns.
type gate struct {
	mu     sync.Mutex
	closed bool
}

func (g *gate) shut() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

func (g *gate) writer(w io.Writer) io.Writer { return gatedWriter{g, orDiscard(w)} }

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

type gatedWriter struct {
	g *gate
	w io.Writer
}

func (gw gatedWriter) Write(p []byte) (int, error) {
	gw.g.mu.Lock()
	defer gw.g.mu.Unlock()
	if gw.g.closed {
		return len(p), nil
	}
	return gw.w.Write(p)
}

// capped is a buffer that keeps the first maxOutput bytes written to it.
type capped struct{ bytes.Buffer }

func (b *capped) Write(p []byte) (int, error) {
	if room := maxOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// tailBuffer keeps the end of what is written to it, for ExitError.Stderr.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if keep := maxExitStderr + 256; len(t.b) > 2*keep { // slack for trimmed space
		t.b = append([]byte(nil), t.b[len(t.b)-keep:]...)
	}
	return len(p), nil
}

// String is the last maxExitStderr bytes, trimmed, "..." first if cut.
func (t *tailBuffer) String() string {
	s := strings.TrimSpace(string(t.b))
	if len(s) <= maxExitStderr {
		return s
	}
	s = s[len(s)-maxExitStderr:]
	for len(s) > 0 && !utf8.RuneStart(s[0]) {
		s = s[1:]
	}
	return "..." + s
}
