package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/rollout-dev/rollout/deployer"
)

var t0 = time.Date(2026, 11, 25, 4, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// goodDeploy is one host, two instances, all fine.
func goodDeploy() ([]deployer.Event, *deployer.Report, error) {
	h := "10.213.0.11"
	ev := []deployer.Event{
		{Time: at(0), Host: h, Step: deployer.StepPreflight, Status: "start"},
		{Time: at(120), Host: h, Step: deployer.StepPreflight, Status: "ok", Duration: 120 * time.Millisecond},
		{Time: at(121), Host: h, Step: deployer.StepHost, Status: "start"},
		{Time: at(200), Host: h, Port: 3000, Step: deployer.StepRestart, Status: "ok", Duration: 79 * time.Millisecond},
		{Time: at(900), Host: h, Port: 3000, Step: deployer.StepHealth, Status: "ok", Duration: 700 * time.Millisecond},
		{Time: at(1500), Host: h, Port: 3001, Step: deployer.StepWaitDrain, Status: "warn", Duration: 600 * time.Millisecond, Message: "drain timeout 600ms: 1 connections still open, restarting anyway"},
		{Time: at(2000), Host: h, Port: 3001, Step: deployer.StepHealth, Status: "ok", Duration: 500 * time.Millisecond},
		{Time: at(2001), Host: h, Step: deployer.StepHost, Status: "ok", Duration: 1880 * time.Millisecond},
	}
	rep := &deployer.Report{Op: "deploy", Version: "v1", Duration: 2002 * time.Millisecond, Hosts: []deployer.HostReport{
		{Host: h, Outcome: deployer.HostOK, Restarted: []int{3000, 3001}, Duration: 1880 * time.Millisecond},
	}}
	return ev, rep, nil
}

// failedDeploy is two hosts in parallel: .12's first instance dies after
// its restart (and stays out of Nginx); .11 stops before its next instance.
func failedDeploy() ([]deployer.Event, *deployer.Report, error) {
	a, b := "10.213.0.11", "10.213.0.12"
	serr := &deployer.StepError{Host: b, Port: 3000, Step: deployer.StepHealth, Err: deployer.ErrRestarted, LeftOut: true,
		Output: "systemd: my-app@3000 is activating/auto-restart\nFATAL: PAYMENT_API_KEY is not set | ``` 100%\n"}
	stopped := &deployer.StepError{Host: a, Port: 3001, Step: deployer.StepCapacity, Err: deployer.ErrStopped}
	ev := []deployer.Event{
		{Time: at(100), Host: a, Step: deployer.StepPreflight, Status: "ok", Duration: 100 * time.Millisecond},
		{Time: at(110), Host: b, Step: deployer.StepPreflight, Status: "ok", Duration: 110 * time.Millisecond},
		{Time: at(111), Host: a, Step: deployer.StepHost, Status: "start"},
		{Time: at(112), Host: b, Step: deployer.StepHost, Status: "start"},
		{Time: at(200), Host: a, Port: 3000, Step: deployer.StepRestart, Status: "ok", Duration: 88 * time.Millisecond},
		{Time: at(210), Host: b, Port: 3000, Step: deployer.StepRestart, Status: "ok", Duration: 98 * time.Millisecond},
		{Time: at(700), Host: b, Port: 3000, Step: deployer.StepHealth, Status: "fail", Duration: 490 * time.Millisecond, Message: "instance was restarted by systemd"},
		{Time: at(701), Host: b, Step: deployer.StepHost, Status: "fail", Duration: 589 * time.Millisecond, Message: serr.Error()},
		{Time: at(800), Host: a, Port: 3000, Step: deployer.StepHealth, Status: "ok", Duration: 600 * time.Millisecond},
		{Time: at(801), Host: a, Step: deployer.StepHost, Status: "skip", Duration: 690 * time.Millisecond, Message: stopped.Error()},
	}
	rep := &deployer.Report{Op: "deploy", Version: "v3", Duration: 802 * time.Millisecond, Hosts: []deployer.HostReport{
		{Host: a, Outcome: deployer.HostStopped, Restarted: []int{3000}, Duration: 690 * time.Millisecond, Error: stopped.Error()},
		{Host: b, Outcome: deployer.HostFailed, Restarted: []int{3000}, LeftOut: []int{3000}, Duration: 589 * time.Millisecond, Error: serr.Error()},
	}}
	return ev, rep, multierror.Append(nil, serr)
}

func render(opt outputOptions, ev []deployer.Event, rep *deployer.Report, err error) (string, string) {
	var stdout, stderr bytes.Buffer
	p := newPrinter(&stdout, &stderr, opt)
	for _, e := range ev {
		p.event(e)
	}
	p.report(rep, err)
	return stdout.String(), stderr.String()
}

func TestTextOutput(t *testing.T) {
	ev, rep, err := goodDeploy()
	stdout, stderr := render(outputOptions{}, ev, rep, err)
	wantErr := `04:00:00.120 10.213.0.11            preflight   ok    120ms
04:00:00.200 10.213.0.11:3000       restart     ok     79ms
04:00:00.900 10.213.0.11:3000       health      ok    700ms
04:00:01.500 10.213.0.11:3001       wait-drain  warn  600ms  drain timeout 600ms: 1 connections still open, restarting anyway
04:00:02.000 10.213.0.11:3001       health      ok    500ms
04:00:02.001 10.213.0.11            host        ok    1.88s
`
	wantOut := `
HOST         OUTCOME  RESTARTED  LEFT OUT OF SERVICE  TIME   ERROR
10.213.0.11  ok       3000,3001  -                    1.88s  
deploy v1: ok in 2.002s
`
	if stderr != wantErr {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, wantErr)
	}
	if stdout != wantOut {
		t.Errorf("stdout:\n%q\nwant:\n%q", stdout, wantOut)
	}

	// A failure shows what the app said.
	ev, rep, err = failedDeploy()
	stdout, stderr = render(outputOptions{Parallel: 2}, ev, rep, err)
	for _, want := range []string{
		"04:00:00.700 10.213.0.12:3000       health      fail  490ms  instance was restarted by systemd\n",
		"04:00:00.801 10.213.0.11            host        skip  690ms  capacity 10.213.0.11:3001: stopped before the next instance\n",
		"\n10.213.0.12:3000 did not come up; what it said since the restart:\n  | systemd: my-app@3000 is activating/auto-restart\n  | FATAL: PAYMENT_API_KEY is not set | ``` 100%\n",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "::") || !strings.HasSuffix(stdout, "deploy v3: FAILED in 802ms\n") {
		t.Errorf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
}

func TestColor(t *testing.T) {
	ev, rep, err := failedDeploy()
	_, stderr := render(outputOptions{Color: true}, ev, rep, err)
	for _, want := range []string{"  \x1b[32mok  \x1b[0m ", "  \x1b[31mfail\x1b[0m ", "  \x1b[2mskip\x1b[0m "} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%q", want, stderr)
		}
	}
	_, stderr = render(outputOptions{}, ev, rep, err)
	if strings.Contains(stderr, "\x1b[") {
		t.Errorf("colour without Color:\n%q", stderr)
	}
}

func TestOutputOptionsFor(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	var buf bytes.Buffer
	// Not a terminal: never colour.
	if o := outputOptionsFor("text", 1, &buf, env()); o.Color || o.JSON || o.GitHub {
		t.Errorf("buffer: %+v", o)
	}
	o := outputOptionsFor("json", 3, &buf, env("GITHUB_ACTIONS", "true", "GITHUB_STEP_SUMMARY", "/tmp/s.md", "NO_COLOR", "1"))
	want := outputOptions{JSON: true, GitHub: true, SummaryFile: "/tmp/s.md", Parallel: 3}
	if o != want {
		t.Errorf("got %+v, want %+v", o, want)
	}
	if o := outputOptionsFor("text", 1, &buf, env("GITHUB_ACTIONS", "1")); o.GitHub {
		t.Errorf("GITHUB_ACTIONS=1 is not GitHub Actions (it sets \"true\"): %+v", o)
	}
}

func TestJSONOutput(t *testing.T) {
	ev, rep, err := failedDeploy()
	stdout, stderr := render(outputOptions{JSON: true}, ev, rep, err)
	if stderr != "" {
		t.Errorf("stderr: %q", stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != len(ev)+2 {
		t.Fatalf("%d lines, want %d events + app_output + summary:\n%s", len(lines), len(ev), stdout)
	}
	var types []string
	for i, l := range lines {
		var v struct {
			Type  string         `json:"type"`
			Event deployer.Event `json:"event"`
		}
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, l)
		}
		types = append(types, v.Type)
		if i < len(ev) && (v.Type != "step" || v.Event != ev[i]) {
			t.Errorf("line %d: got %+v, want step %+v", i+1, v, ev[i])
		}
	}
	if got := fmt.Sprint(types[len(ev):]); got != "[app_output summary]" {
		t.Errorf("last types %s", got)
	}
	var sum struct {
		Report deployer.Report `json:"report"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Error != err.Error() || sum.Report.Hosts[1].Outcome != deployer.HostFailed || sum.Report.Hosts[1].LeftOut[0] != 3000 {
		t.Errorf("summary %+v", sum)
	}
	var app struct {
		Failure appFailure `json:"failure"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-2]), &app); err != nil {
		t.Fatal(err)
	}
	if app.Failure.Host != "10.213.0.12" || app.Failure.Port != 3000 || !strings.Contains(app.Failure.Output, "FATAL: PAYMENT_API_KEY") {
		t.Errorf("app_output %+v", app)
	}
}

// A host rollout could not get back to ends the summary with what to do,
// in the text and in the job summary.
func TestNextStepShown(t *testing.T) {
	rep := &deployer.Report{Op: "deploy", Version: "v2", Duration: time.Second, Hosts: []deployer.HostReport{
		{Host: "web1", Outcome: deployer.HostFailed, LeftOut: []int{3001}, Error: "host unreachable",
			Next: "web1 could not be reached again; run `rollout deploy --version v2` again"},
	}}
	err := fmt.Errorf("host unreachable")
	stdout, _ := render(outputOptions{}, nil, rep, err)
	if !strings.HasSuffix(stdout, "deploy v2: FAILED in 1s\nnext: web1 could not be reached again; run `rollout deploy --version v2` again\n") {
		t.Errorf("stdout:\n%s", stdout)
	}
	if sum := jobSummary("", rep, err); !strings.Contains(sum, "**Next, for web1:** web1 could not be reached again") {
		t.Errorf("job summary:\n%s", sum)
	}
}

// An upload's progress lines are for a terminal; a release and its revert
// are in the summary.
func TestReleaseOutput(t *testing.T) {
	at := time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC)
	ev := []deployer.Event{
		{Time: at, Host: "10.213.0.11", Step: deployer.StepUpload, Status: deployer.StatusProgress, Message: "1.2 MB of 3.4 MB, 12.0 MB/s"},
		{Time: at, Host: "10.213.0.11", Step: deployer.StepUpload, Status: deployer.StatusOK, Message: "release 20261127040000-v4: 3.4 MB in 300ms"},
	}
	rep := &deployer.Report{Op: "deploy", Version: "v4", Release: "20261127040000-v4", Reverted: "reverted to 20261126040000-v3",
		Hosts: []deployer.HostReport{{Host: "10.213.0.11", Outcome: deployer.HostFailed}}}
	err := errors.New("deploy failed")
	stdout, stderr := render(outputOptions{}, ev, rep, err)
	if strings.Contains(stderr, "MB/s") || !strings.Contains(stderr, "upload      ok") {
		t.Errorf("not a terminal: progress shown, or the upload not:\n%s", stderr)
	}
	if !strings.Contains(stdout, "release: 20261127040000-v4\nreverted to 20261126040000-v3\n") {
		t.Errorf("summary:\n%s", stdout)
	}
	if _, stderr = render(outputOptions{Progress: true}, ev, rep, err); !strings.Contains(stderr, "1.2 MB of 3.4 MB, 12.0 MB/s") {
		t.Errorf("a terminal: no progress line:\n%s", stderr)
	}
	if sum := jobSummary("", rep, err); !strings.Contains(sum, "Release `20261127040000-v4`. **reverted to 20261126040000-v3.**") {
		t.Errorf("job summary:\n%s", sum)
	}
}

// The probe's figures are in the summary, the JSON report and the job
// summary.
func TestProbeOutput(t *testing.T) {
	rep := &deployer.Report{Op: "deploy", Version: "v4",
		Hosts: []deployer.HostReport{{Host: "10.213.0.11", Outcome: deployer.HostOK}},
		Probe: []deployer.ProbeResult{{Host: "10.213.0.11", URL: "http://127.0.0.1:80/", Sent: 120, Failed: 1,
			Failures: map[string]int{"status 502": 1}, P50: 2300 * time.Microsecond, P99: 14 * time.Millisecond,
			Versions: map[string]int{"v3": 40, "v4": 79}}}}
	want := "120 requests to http://127.0.0.1:80/, 1 failed (status 502 1); p50 2.3ms, p99 14ms; answered by v4 79, v3 40"
	stdout, _ := render(outputOptions{}, nil, rep, nil)
	if !strings.Contains(stdout, "probe 10.213.0.11: "+want+"\n") {
		t.Errorf("summary:\n%s", stdout)
	}
	stdout, _ = render(outputOptions{JSON: true}, nil, rep, nil)
	if !strings.Contains(stdout, `"probe":[{"host":"10.213.0.11","url":"http://127.0.0.1:80/","requests":120,"failed":1,"failures":{"status 502":1},"p50_ns":2300000,"p99_ns":14000000,"versions":{"v3":40,"v4":79}}]`) {
		t.Errorf("json:\n%s", stdout)
	}
	if sum := jobSummary("", rep, nil); !strings.Contains(sum, "- **10.213.0.11**: "+want+"\n") {
		t.Errorf("job summary:\n%s", sum)
	}
}

// The bakes' figures are in the summary and the job summary.
func TestBakeOutput(t *testing.T) {
	rep := &deployer.Report{Op: "deploy", Version: "v4",
		Hosts: []deployer.HostReport{{Host: "10.213.0.11", Outcome: deployer.HostStopped}},
		Bakes: []deployer.BakeResult{{Batch: 1, Duration: 20 * time.Second, New: deployer.Tally{Requests: 200, Errors: 20}, Old: deployer.Tally{Requests: 600},
			Verdict: "breach", Reason: "the new instances answered 10.0% 5xx"}}}
	want := "bake after batch 1 (20s): breach: new instances 200 requests, 20 5xx (10.0%); old 600 requests, 0 5xx (0.0%); the new instances answered 10.0% 5xx"
	err := errors.New("bake failed")
	if stdout, _ := render(outputOptions{}, nil, rep, err); !strings.Contains(stdout, want+"\n") {
		t.Errorf("summary:\n%s", stdout)
	}
	if sum := jobSummary("", rep, err); !strings.Contains(sum, want) {
		t.Errorf("job summary:\n%s", sum)
	}
	ev := []deployer.Event{{Step: deployer.StepBake, Status: deployer.StatusStart, Message: "watching real traffic for 20s"}}
	if _, stderr := render(outputOptions{}, ev, rep, err); !strings.Contains(stderr, "fleet                  bake        start     0s  watching real traffic for 20s") {
		t.Errorf("events:\n%s", stderr)
	}
}
