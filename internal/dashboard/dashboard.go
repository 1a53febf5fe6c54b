// Package dashboard serves `rollout dashboard`: one page of every host and
// instance, updated live by server-sent events from the same polls as
// `rollout watch`. The page is embedded (HTML, CSS and JavaScript in one
// file, nothing fetched from elsewhere). It does not poll: the caller
// gives it each snapshot.
package dashboard

import (
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/rollout-dev/rollout/deployer"
)

//go:embed index.html
var page []byte

// SeriesLen is how many polls each instance's sparkline keeps.
const SeriesLen = 60

// Point is one poll of one instance, for its sparkline.
type Point struct {
	Time     time.Time `json:"t"`
	Memory   uint64    `json:"m"`
	Restarts int       `json:"r"`
}

// State is what the page shows.
type State struct {
	App      string             `json:"app"`
	Interval time.Duration      `json:"interval_ns"`
	Snapshot *deployer.Snapshot `json:"snapshot,omitempty"` // nil before the first poll
	// Series are each instance's last polls, by "HOST:PORT".
	Series map[string][]Point `json:"series"`
}

// Server holds the latest state and the pages listening for it.
type Server struct {
	// Token, when set, must be in every request (?token=…).
	Token string

	mu    sync.Mutex
	state State
	subs  map[chan []byte]struct{}
}

// New is a Server for app, polled every interval.
func New(app string, interval time.Duration, token string) *Server {
	return &Server{Token: token, state: State{App: app, Interval: interval, Series: map[string][]Point{}}, subs: map[chan []byte]struct{}{}}
}

// Update takes a poll's snapshot and sends the new state to every page.
func (s *Server) Update(snap deployer.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.Snapshot = &snap
	for _, h := range snap.Hosts {
		for _, i := range h.Instances {
			key := fmt.Sprintf("%s:%d", h.Host, i.Port)
			pts := append(s.state.Series[key], Point{Time: snap.Time, Memory: i.Memory, Restarts: i.Restarts})
			if len(pts) > SeriesLen {
				pts = pts[len(pts)-SeriesLen:]
			}
			s.state.Series[key] = pts
		}
	}
	b := s.encode()
	for ch := range s.subs {
		select {
		case ch <- b:
		default: // a slow page gets the next one
		}
	}
}

func (s *Server) encode() []byte {
	b, err := json.Marshal(s.state)
	if err != nil {
		return []byte(`{}`)
	}
	return b
}

// Handler serves the page (/), its events (/events) and the state as JSON
// (/state.json).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("GET /state.json", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		b := s.encode()
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("GET /events", s.events)
	return s.auth(mux)
}

// auth refuses a request without the token, when there is one.
func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.Token != "" && subtle.ConstantTimeCompare([]byte(r.URL.Query().Get("token")), []byte(s.Token)) != 1 {
			http.Error(w, "a token is required: open the address rollout dashboard printed", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// events streams the state: now, then at every update, until the page
// goes away.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch := make(chan []byte, 1)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	first := s.encode()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	send := func(b []byte) bool {
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		flusher.Flush()
		return true
	}
	if !send(first) {
		return
	}
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case b := <-ch:
			if !send(b) {
				return
			}
		case <-keepalive.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			flusher.Flush()
		}
	}
}
