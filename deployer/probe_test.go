package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// probeYAML makes the deploy last long enough for a few probe requests.
const probeYAML = fourInstances + "health: {timeout: 1s, attempt_timeout: 200ms, interval: 10ms, min_healthy: 60ms}\n" +
	"probe: {interval: 10ms, version_header: X-App-Version}\n"

// site serves the probe: every fail-th request (0: none) answers 502.
func site(t *testing.T, h *fakeRemote, fail int64) *atomic.Int64 {
	var n atomic.Int64
	h.site = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" || r.Header.Get("User-Agent") != "rollout-probe" {
			t.Errorf("probe sent %s %s (%s)", r.Method, r.URL, r.Header.Get("User-Agent"))
		}
		if i := n.Add(1); fail > 0 && i%fail == 0 {
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		w.Header().Set("X-App-Version", "v1")
	}))
	t.Cleanup(h.site.Close)
	return &n
}

func TestProbeCountsDuringDeploy(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002, 3003)
	served := site(t, h, 0)
	d, events := fakeDeployer(t, probeYAML, h)
	rep, err := d.Deploy(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Probe) != 1 {
		t.Fatalf("probe results: %+v", rep.Probe)
	}
	r := rep.Probe[0]
	// The preflight's request is not counted: the site saw one more.
	if r.Host != "web1" || r.URL != "http://127.0.0.1:80/" || r.Sent < 5 || r.Failed != 0 || r.Versions["v1"] != r.Sent || int64(r.Sent) != served.Load()-1 {
		t.Errorf("probe %+v; the site served %d", r, served.Load())
	}
	if r.P50 <= 0 || r.P99 < r.P50 {
		t.Errorf("latency p50 %s p99 %s", r.P50, r.P99)
	}
	if !hasEvent(*events, 0, StepProbe, StatusOK, "0 failed; p50 ") {
		t.Errorf("no probe event: %v", *events)
	}
}

// A failed probe request is a warning, or with probe.fail_on_error a
// failure of the host (its history says so).
func TestProbeFailures(t *testing.T) {
	for _, failOn := range []bool{false, true} {
		h := newFakeRemote(t, 3000, 3001, 3002, 3003)
		site(t, h, 3)
		yaml := probeYAML
		if failOn {
			yaml = strings.Replace(yaml, "probe: {", "probe: {fail_on_error: true, ", 1)
		}
		d, events := fakeDeployer(t, yaml, h)
		rep, err := d.Deploy(testCtx(t))
		r := rep.Probe[0]
		if r.Failed == 0 || r.Failures["status 502"] != r.Failed || r.Versions["v1"] != r.Sent-r.Failed {
			t.Fatalf("probe %+v", r)
		}
		var se *StepError
		switch {
		case !failOn && (err != nil || !hasEvent(*events, 0, StepProbe, StatusWarn, "(status 502 ")):
			t.Errorf("fail_on_error false: err %v, events %v", err, *events)
		case failOn && (!errors.As(err, &se) || se.Step != StepProbe || rep.Hosts[0].Outcome != HostFailed || h.history[0].Outcome != HostFailed):
			t.Errorf("fail_on_error: err %v, report %+v, history %+v", err, rep.Hosts[0], h.history)
		}
	}
}

// A probe target that does not answer at all is refused before anything
// changes: not blamed on the release.
func TestProbePreflightRefusesDeadTarget(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002, 3003)
	d, _ := fakeDeployer(t, probeYAML, h)
	_, err := d.Deploy(testCtx(t))
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepPreflight || !strings.Contains(err.Error(), "probe: GET http://127.0.0.1:80/ through the SSH connection got no answer in 3 tries (connection refused)") {
		t.Fatalf("err = %v, want a preflight refusal", err)
	}
	if len(h.ops) != 0 || len(h.writes) != 0 || h.locked || len(h.history) != 0 {
		t.Errorf("changed the host: ops %v, %d writes, locked %v, history %v", h.ops, len(h.writes), h.locked, h.history)
	}
}

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	if percentile(lat, 50) != 50*time.Millisecond || percentile(lat, 99) != 99*time.Millisecond || percentile(lat[:1], 99) != time.Millisecond {
		t.Errorf("p50 %s p99 %s", percentile(lat, 50), percentile(lat, 99))
	}
}

func TestFailureKind(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&ssh.OpenChannelError{Reason: ssh.ConnectionFailed, Message: "Connection refused"}, "connection refused"},
		{errors.New("read tcp: connection reset by peer"), "connection reset"},
		{context.DeadlineExceeded, "timeout"},
		{io.ErrUnexpectedEOF, "closed without an answer"},
		{errors.New("something else"), "error"},
	}
	for _, tt := range tests {
		if got := failureKind(fmt.Errorf("dial: %w", tt.err)); got != tt.want {
			t.Errorf("%v: %q, want %q", tt.err, got, tt.want)
		}
	}
}
