package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// One host at a time: its group is open while it runs, lines stream live.
func TestGitHubGood(t *testing.T) {
	ev, rep, err := goodDeploy()
	summary := filepath.Join(t.TempDir(), "summary.md")
	if err := os.WriteFile(summary, []byte("earlier step\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr := render(outputOptions{GitHub: true, SummaryFile: summary, Parallel: 1}, ev, rep, err)
	wantErr := `04:00:00.120 10.213.0.11            preflight   ok    120ms
::group::10.213.0.11
04:00:00.200 10.213.0.11:3000       restart     ok     79ms
04:00:00.900 10.213.0.11:3000       health      ok    700ms
04:00:01.500 10.213.0.11:3001       wait-drain  warn  600ms  drain timeout 600ms: 1 connections still open, restarting anyway
04:00:02.000 10.213.0.11:3001       health      ok    500ms
04:00:02.001 10.213.0.11            host        ok    1.88s
::endgroup::
`
	if stderr != wantErr {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, wantErr)
	}
	if !strings.HasSuffix(stdout, "deploy v1: ok in 2.002s\n") {
		t.Errorf("stdout:\n%s", stdout)
	}
	got, _ := os.ReadFile(summary)
	want := "earlier step\n" + "### rollout deploy `v1`: ok in 2.002s\n\n" +
		"| host | outcome | restarted | left out | time | error |\n" +
		"|---|---|---|---|---|---|\n" +
		"| 10.213.0.11 | ok | 3000,3001 | - | 1.88s |  |\n\n"
	if string(got) != want {
		t.Errorf("summary:\n%s\nwant:\n%s", got, want)
	}
}

// Hosts in parallel: each host's lines come out as one group when it
// finishes; one annotation per failure; the summary shows what the app said.
func TestGitHubFailed(t *testing.T) {
	ev, rep, err := failedDeploy()
	summary := filepath.Join(t.TempDir(), "summary.md")
	_, stderr := render(outputOptions{GitHub: true, SummaryFile: summary, Parallel: 2}, ev, rep, err)
	wantErr := `04:00:00.100 10.213.0.11            preflight   ok    100ms
04:00:00.110 10.213.0.12            preflight   ok    110ms
::group::10.213.0.12
04:00:00.210 10.213.0.12:3000       restart     ok     98ms
04:00:00.700 10.213.0.12:3000       health      fail  490ms  instance was restarted by systemd
04:00:00.701 10.213.0.12            host        fail  589ms  health 10.213.0.12:3000: instance was restarted by systemd (instance left out of service)
::endgroup::
::group::10.213.0.11
04:00:00.200 10.213.0.11:3000       restart     ok     88ms
04:00:00.800 10.213.0.11:3000       health      ok    600ms
04:00:00.801 10.213.0.11            host        skip  690ms  capacity 10.213.0.11:3001: stopped before the next instance
::endgroup::
::error title=rollout%3A health failed on 10.213.0.12%3A3000::health 10.213.0.12:3000: instance was restarted by systemd (instance left out of service)

10.213.0.12:3000 did not come up; what it said since the restart:
  | systemd: my-app@3000 is activating/auto-restart
  | FATAL: PAYMENT_API_KEY is not set | ` + "```" + ` 100%
`
	if stderr != wantErr {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, wantErr)
	}
	got, _ := os.ReadFile(summary)
	want := "### rollout deploy `v3`: FAILED in 802ms\n\n" +
		"| host | outcome | restarted | left out | time | error |\n" +
		"|---|---|---|---|---|---|\n" +
		"| 10.213.0.11 | stopped | 3000 | - | 690ms | capacity 10.213.0.11:3001: stopped before the next instance |\n" +
		"| 10.213.0.12 | failed | 3000 | 3000 | 589ms | health 10.213.0.12:3000: instance was restarted by systemd (instance left out of service) |\n" +
		"\n**10.213.0.12:3000 did not come up**; what it said since the restart:\n\n" +
		"````text\nsystemd: my-app@3000 is activating/auto-restart\nFATAL: PAYMENT_API_KEY is not set | ``` 100%\n````\n\n"
	if string(got) != want {
		t.Errorf("summary:\n%s\nwant:\n%s", got, want)
	}
}

// With --output json the stream on stdout stays pure JSON; annotations and
// the summary still happen.
func TestGitHubJSON(t *testing.T) {
	ev, rep, err := failedDeploy()
	summary := filepath.Join(t.TempDir(), "summary.md")
	stdout, stderr := render(outputOptions{JSON: true, GitHub: true, SummaryFile: summary, Parallel: 2}, ev, rep, err)
	if strings.Contains(stdout, "::") || strings.Contains(stderr, "::group::") || !strings.HasPrefix(stderr, "::error title=") {
		t.Errorf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
	if b, _ := os.ReadFile(summary); !strings.Contains(string(b), "| 10.213.0.12 | failed |") {
		t.Errorf("summary:\n%s", b)
	}
}

// A summary that cannot be written warns; the deploy's result is unchanged.
func TestGitHubSummaryUnwritable(t *testing.T) {
	ev, rep, err := goodDeploy()
	_, stderr := render(outputOptions{GitHub: true, SummaryFile: filepath.Join(t.TempDir(), "no", "such.md")}, ev, rep, err)
	if !strings.Contains(stderr, "rollout: warning: job summary: open ") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

func TestWorkflowCommandEscaping(t *testing.T) {
	tests := []struct{ in, data, prop string }{
		{"plain", "plain", "plain"},
		{"100%", "100%25", "100%25"},
		{"a\r\nb", "a%0D%0Ab", "a%0D%0Ab"},
		{"host:22, port", "host:22, port", "host%3A22%2C port"},
		{"%0A", "%250A", "%250A"},
	}
	for _, tt := range tests {
		if got := escapeData(tt.in); got != tt.data {
			t.Errorf("escapeData(%q) = %q, want %q", tt.in, got, tt.data)
		}
		if got := escapeProperty(tt.in); got != tt.prop {
			t.Errorf("escapeProperty(%q) = %q, want %q", tt.in, got, tt.prop)
		}
	}
	// A failure message with a newline is one annotation, not a new command.
	_, stderr := render(outputOptions{GitHub: true}, nil, nil, errString2("boom\n::warning::injected"))
	if stderr != "::error title=rollout deploy failed::boom%0A::warning::injected\n" {
		t.Errorf("got %q", stderr)
	}
}

type errString2 string

func (e errString2) Error() string { return string(e) }

func TestMarkdownHelpers(t *testing.T) {
	if got := mdCell("a|b\nc"); got != `a\|b c` {
		t.Errorf("mdCell: %q", got)
	}
	for in, want := range map[string]string{"": "```", "x ``` y": "````", "`````": "``````"} {
		if got := codeFence(in); got != want {
			t.Errorf("codeFence(%q) = %q, want %q", in, got, want)
		}
	}
}
