package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/deployer"
)

func snapshot(mem uint64, restarts int) deployer.Snapshot {
	return deployer.Snapshot{Time: time.Now(), Locked: []string{""}, Hosts: []deployer.HostStatus{{Host: "web1", Instances: []deployer.InstanceStatus{
		{Port: 3000, State: "active", Sub: "running", PID: 7, Memory: mem, Restarts: restarts, InNginx: true, Healthy: true},
	}}}}
}

func TestPageAndToken(t *testing.T) {
	srv := httptest.NewServer(New("my-app", time.Second, "s3cret-token-0123").Handler())
	defer srv.Close()
	for _, path := range []string{"/", "/state.json", "/events"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without the token: %d", path, resp.StatusCode)
		}
	}
	resp, err := http.Get(srv.URL + "/?token=s3cret-token-0123")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != 200 || !strings.Contains(string(body), "EventSource") || !strings.Contains(csp, "default-src 'none'") {
		t.Fatalf("the page: %d %q", resp.StatusCode, csp)
	}
	// Nothing from elsewhere: no URL but the SVG namespace.
	for _, bad := range []string{"https://", "http://fonts", "<link", "src=\"http"} {
		if strings.Contains(string(body), bad) {
			t.Errorf("the page refers to %q", bad)
		}
	}
}

func TestEventsAndSeries(t *testing.T) {
	s := New("my-app", time.Second, "")
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := make(chan State, 10)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var st State
				if json.Unmarshal([]byte(data), &st) == nil {
					events <- st
				}
			}
		}
	}()
	next := func() State {
		select {
		case st := <-events:
			return st
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
		return State{}
	}
	if st := next(); st.App != "my-app" || st.Snapshot != nil {
		t.Fatalf("the first event, before any poll: %+v", st)
	}
	for i := 0; i < SeriesLen+5; i++ {
		s.Update(snapshot(uint64(i)<<20, i/10))
		if i == 0 {
			if st := next(); st.Snapshot == nil || st.Snapshot.Hosts[0].Instances[0].PID != 7 {
				t.Fatalf("the event after a poll: %+v", st)
			}
		}
	}
	resp2, err := http.Get(srv.URL + "/state.json")
	if err != nil {
		t.Fatal(err)
	}
	var st State
	err = json.NewDecoder(resp2.Body).Decode(&st)
	resp2.Body.Close()
	pts := st.Series["web1:3000"]
	if err != nil || len(pts) != SeriesLen || pts[len(pts)-1].Memory != uint64(SeriesLen+4)<<20 || pts[len(pts)-1].Restarts != (SeriesLen+4)/10 {
		t.Fatalf("series: %v, %d points, last %+v", err, len(pts), pts[len(pts)-1])
	}
}
