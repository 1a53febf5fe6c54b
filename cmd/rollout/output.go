package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/rollout-dev/rollout/deployer"
)

// Deploy output. Progress (a line per finished step) and what a failed app
// said go to stderr; the summary table, or with --output json every event
// as one JSON object per line and the summary last, go to stdout. On a
// terminal the progress is coloured (unless NO_COLOR is set); in GitHub
// Actions (GITHUB_ACTIONS=true) see github.go.

// outputOptions say how deploy output looks.
type outputOptions struct {
	JSON  bool // --output json
	Color bool // ANSI colour in progress lines
	// GitHub turns on GitHub Actions workflow commands and the job summary.
	GitHub bool
	// SummaryFile is $GITHUB_STEP_SUMMARY ("": no job summary).
	SummaryFile string
	// Parallel > 1 buffers each host's lines in GitHub Actions so that its
	// group is not interleaved with other hosts'.
	Parallel int
	// Progress prints progress lines (an upload's bytes and rate): stderr
	// is a terminal.
	Progress bool
}

// outputOptionsFor reads the environment: colour when stderr is a
// terminal and NO_COLOR is unset or empty, GitHub Actions when
// GITHUB_ACTIONS=true.
func outputOptionsFor(format string, parallel int, stderr io.Writer, getenv func(string) string) outputOptions {
	return outputOptions{
		JSON:        format == "json",
		Color:       isTerminal(stderr) && getenv("NO_COLOR") == "" && getenv("TERM") != "dumb",
		GitHub:      getenv("GITHUB_ACTIONS") == "true",
		SummaryFile: getenv("GITHUB_STEP_SUMMARY"),
		Parallel:    parallel,
		Progress:    isTerminal(stderr),
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// printer renders deploy events and the report. Events arrive from several
// goroutines (preflight, parallel hosts).
type printer struct {
	opt            outputOptions
	stdout, stderr io.Writer
	// app names the app in every line and JSON object, in a config with
	// apps: ("" otherwise).
	app string

	mu    sync.Mutex
	group map[string]*bytes.Buffer // GitHub, parallel > 1: lines of each running host
}

func newPrinter(stdout, stderr io.Writer, opt outputOptions) *printer {
	return &printer{opt: opt, stdout: stdout, stderr: stderr, group: map[string]*bytes.Buffer{}}
}

func (p *printer) event(e deployer.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.opt.JSON {
		writeJSONLine(p.stdout, p.withApp(map[string]any{"type": "step", "event": e}))
		return
	}
	if p.opt.GitHub && e.Step == deployer.StepHost {
		p.githubGroup(e)
		return
	}
	fleetStep := e.Step == deployer.StepBatch || e.Step == deployer.StepBake
	if e.Status == deployer.StatusStart && !fleetStep || (e.Status == deployer.StatusProgress && !p.opt.Progress) {
		return
	}
	line := p.line(e)
	if b := p.group[e.Host]; b != nil {
		b.WriteString(line)
		return
	}
	io.WriteString(p.stderr, line)
}

// ANSI colours of step statuses.
var statusColor = map[deployer.StepStatus]string{deployer.StatusOK: "32", deployer.StatusFail: "31", deployer.StatusWarn: "33", deployer.StatusSkip: "2"}

// line is one progress line: time, where, step, status, duration, message.
func (p *printer) line(e deployer.Event) string {
	where := e.Host
	switch {
	case where == "" && (e.Step == deployer.StepBatch || e.Step == deployer.StepBake):
		where = "fleet"
	case where == "":
		where = "local"
	}
	if e.Port != 0 || e.Worker != "" {
		where = deployer.Where(e.Host, e.Port, e.Worker)
	}
	where = p.where(where)
	status := fmt.Sprintf("%-4s", e.Status)
	if c := statusColor[e.Status]; p.opt.Color && c != "" {
		status = "\x1b[" + c + "m" + status + "\x1b[0m"
	}
	line := fmt.Sprintf("%s %-22s %-11s %s %6s", e.Time.Format("15:04:05.000"), where, e.Step, status, e.Duration.Round(time.Millisecond))
	if e.Message != "" {
		line += "  " + e.Message
	}
	return line + "\n"
}

// appFailure is what an app said after a restart that failed.
type appFailure struct {
	Host   string            `json:"host"`
	Port   int               `json:"port"`
	Worker string            `json:"worker,omitempty"`
	Step   deployer.StepName `json:"step"`
	Error  string            `json:"error"`
	Output string            `json:"output"`
}

// failures are the deploy's errors, one per failed host (or the one error
// when it is not a step's).
func failures(err error) []error {
	if err == nil {
		return nil
	}
	var merr interface{ WrappedErrors() []error }
	if errors.As(err, &merr) {
		return merr.WrappedErrors()
	}
	return []error{err}
}

func appFailures(err error) []appFailure {
	var out []appFailure
	for _, e := range failures(err) {
		var se *deployer.StepError
		if errors.As(e, &se) && se.Output != "" {
			out = append(out, appFailure{Host: se.Host, Port: se.Port, Worker: se.Worker, Step: se.Step, Error: se.Error(), Output: se.Output})
		}
	}
	return out
}

func (p *printer) report(rep *deployer.Report, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.opt.GitHub {
		p.githubReport(rep, err)
	}
	if p.opt.JSON {
		for _, f := range appFailures(err) {
			writeJSONLine(p.stdout, p.withApp(map[string]any{"type": "app_output", "failure": f}))
		}
		writeJSONLine(p.stdout, p.withApp(map[string]any{"type": "summary", "report": rep, "error": errString(err)}))
		return
	}
	// What the app said: the thing PM2 hides.
	for _, f := range appFailures(err) {
		fmt.Fprintf(p.stderr, "\n%s did not come up; what it said since the restart:\n%s\n", p.where(deployer.Where(f.Host, f.Port, f.Worker)), indentLines(f.Output, "  | "))
	}
	if rep == nil {
		return
	}
	tw := tabwriter.NewWriter(p.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\nHOST\tOUTCOME\tRESTARTED\tLEFT OUT OF SERVICE\tTIME\tERROR\n")
	for _, h := range rep.Hosts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Host, h.Outcome, ports(h.Restarted), ports(h.LeftOut), h.Duration.Round(time.Millisecond), h.Error)
	}
	tw.Flush()
	fmt.Fprintf(p.stdout, "%s%s: %s in %s\n", p.appTitle(), strings.TrimSpace(rep.Op+" "+rep.Version), p.result(err, isTerminal(p.stdout)), rep.Duration.Round(time.Millisecond))
	if rep.Release != "" {
		fmt.Fprintf(p.stdout, "release: %s\n", rep.Release)
	}
	if rep.Reverted != "" {
		fmt.Fprintf(p.stdout, "%s\n", rep.Reverted)
	}
	for _, b := range rep.Bakes {
		fmt.Fprintf(p.stdout, "%s\n", b)
	}
	if rep.Paused != "" {
		fmt.Fprintf(p.stdout, "%s\n", rep.Paused)
	}
	for _, r := range rep.Probe {
		fmt.Fprintf(p.stdout, "probe %s: %s\n", r.Host, r)
	}
	for _, h := range rep.Hosts {
		if h.Next != "" {
			fmt.Fprintf(p.stdout, "next: %s\n", h.Next)
		}
	}
}

// where is a place (a host, host:port) named with the app, if any.
func (p *printer) where(place string) string {
	if p.app == "" {
		return place
	}
	return p.app + " " + place
}

// appTitle is "app NAME " with apps: in the config, or "".
func (p *printer) appTitle() string {
	if p.app == "" {
		return ""
	}
	return "app " + p.app + " "
}

// withApp adds the app to a JSON object, if any.
func (p *printer) withApp(m map[string]any) map[string]any {
	if p.app != "" {
		m["app"] = p.app
	}
	return m
}

// result is "ok" or "FAILED", coloured on a terminal.
func (p *printer) result(err error, tty bool) string {
	s, c := "ok", "32"
	if err != nil {
		s, c = "FAILED", "31"
	}
	if p.opt.Color && tty {
		return "\x1b[" + c + "m" + s + "\x1b[0m"
	}
	return s
}

func ports(ps []int) string {
	if len(ps) == 0 {
		return "-"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}

func indentLines(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
