package loadgen

import (
	"io"
	"net/http"
	"os"
	"testing"
	"time"
)

// TestRateAccuracyLong checks the rate the e2e benchmarks rely on: 400/s
// for 10s. It takes 10s, so it runs only with LOADGEN_LONG=1, e.g.
//
//	LOADGEN_LONG=1 taskset -c 0,1 go test -race -run Long ./internal/loadgen/
func TestRateAccuracyLong(t *testing.T) {
	if os.Getenv("LOADGEN_LONG") == "" {
		t.Skip("set LOADGEN_LONG=1 to run the 10s rate check")
	}
	s := server(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(w, r.Body) })
	r := run(t, Config{URL: s.URL, Rate: 400, Duration: 10 * time.Second, PostEvery: 4})
	if r.Requests < 3960 || r.Requests > 4040 || r.OK != r.Requests {
		t.Errorf("want 4000 ±1%% OK requests, got %v", r)
	}
}
