package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// ciRun deploys like a GitHub Actions step would: GITHUB_ACTIONS=true, a
// job summary file, and a Slack-style webhook (on loopback, in this
// process) named by ROLLOUT_NOTIFY_URL. It returns the output, exit code,
// summary and the text the webhook got.
func ciRun(t *testing.T, args ...string) (out string, code int, summary string, posted string) {
	t.Helper()
	texts := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v struct{ Text string }
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &v); err != nil {
			t.Errorf("webhook got %q: %v", b, err)
		}
		texts <- v.Text
	}))
	defer srv.Close()
	secret := srv.URL + "/services/T0/B0/SECRETKEY123"
	summaryFile := filepath.Join(t.TempDir(), "step_summary.md")
	t.Setenv("GITHUB_ACTIONS", "true")
	t.Setenv("GITHUB_STEP_SUMMARY", summaryFile)
	t.Setenv("ROLLOUT_NOTIFY_URL", secret)
	out, code = rollout(t, args...)
	b, err := os.ReadFile(summaryFile)
	if err != nil {
		t.Fatalf("job summary: %v", err)
	}
	select {
	case posted = <-texts:
	default:
		t.Errorf("the webhook got nothing")
	}
	if strings.Contains(out, "SECRETKEY123") || strings.Contains(posted, "SECRETKEY123") {
		t.Errorf("the webhook URL leaked")
	}
	t.Logf("job summary:\n%s\nwebhook:\n%s", b, posted)
	return out, code, string(b), posted
}

func ciConfig(t *testing.T, minHealthy string) string {
	t.Helper()
	cfg := fleetConfig(t, minHealthy)
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("notify: {url_env: ROLLOUT_NOTIFY_URL, format: slack, timeout: 5s}\n"); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A good deploy in GitHub Actions, two hosts at once: one ::group:: per
// host holding only that host's lines, no annotation, a summary row per
// host, and the webhook told.
func TestCIGoodDeploy(t *testing.T) {
	out, code, summary, posted := ciRun(t, "deploy", "-c", ciConfig(t, "0s"), "--version", "v1", "--parallel", "2")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if strings.Contains(out, "::error") {
		t.Errorf("annotation on a good deploy")
	}
	if n := strings.Count(out, "::endgroup::"); n != len(fleet.Hosts) {
		t.Errorf("%d groups closed, want %d", n, len(fleet.Hosts))
	}
	for _, h := range fleet.Hosts {
		// The host's group: every line in it is the host's own.
		i := strings.Index(out, "::group::"+h.Addr+"\n")
		if i < 0 {
			t.Errorf("no group for %s", h.Addr)
			continue
		}
		body, _, ok := strings.Cut(out[i+len("::group::"+h.Addr+"\n"):], "::endgroup::\n")
		lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
		if !ok || len(lines) < instances*3 {
			t.Errorf("group %s: %d lines:\n%s", h.Addr, len(lines), body)
		}
		for _, l := range lines {
			if f := strings.Fields(l); len(f) < 3 || strings.Split(f[1], ":")[0] != h.Addr {
				t.Errorf("group %s holds %q", h.Addr, l)
			}
		}
		row := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(h.Addr) + ` \| ok \| (300[0-3],){3}300[0-3] \| - \| [0-9.]+m?s \|  \|$`)
		if !row.MatchString(summary) {
			t.Errorf("summary lacks an ok row for %s", h.Addr)
		}
	}
	if !strings.HasPrefix(summary, "### rollout deploy `v1`: ok in ") || !strings.Contains(summary, "| host | outcome | restarted | left out | time | error |\n|---|---|---|---|---|---|\n") {
		t.Errorf("summary header wrong")
	}
	if !strings.HasPrefix(posted, "✅ my-app v1 deployed to 2 hosts in ") || !strings.Contains(posted, "\n"+fleet.Hosts[0].Addr+": ok, restarted ") {
		t.Errorf("webhook text wrong")
	}
	// The probe's figures, per host: in the job summary and the webhook.
	for _, h := range fleet.Hosts {
		probe := regexp.MustCompile(regexp.QuoteMeta(h.Addr) + `\*?\*?: [0-9]+ requests to http://127\.0\.0\.1:80/, 0 failed; p50 `)
		if !probe.MatchString(summary) || !probe.MatchString(posted) {
			t.Errorf("no probe figures for %s in the job summary or the webhook", h.Addr)
		}
	}
}

// A release that cannot start, on one host: an ::error:: annotation naming
// the instance, the failed row and the app's own words in the summary, and
// the webhook told of the failure.
func TestCIFailedDeploy(t *testing.T) {
	h := fleet.Hosts[0]
	t.Cleanup(func() { resetHost(t, h) })
	r := testbed.GoodRelease("v3")
	r.RequiredEnv = []string{"PAYMENT_API_KEY"}
	if err := fleet.StageRelease(t.Context(), h, r); err != nil {
		t.Fatal(err)
	}
	out, code, summary, posted := ciRun(t, "deploy", "-c", ciConfig(t, "1s"), "--version", "v3", "--hosts", h.Addr)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	annotation := regexp.MustCompile(`(?m)^::error title=rollout%3A (wait-active|health|stable) failed on ` + regexp.QuoteMeta(h.Addr) + `%3A3000::\S+ ` + regexp.QuoteMeta(h.Addr) + `:3000: .*\(instance left out of service\)$`)
	if !annotation.MatchString(out) || strings.Count(out, "::error") != 1 {
		t.Errorf("want one ::error:: annotation for %s:3000", h.Addr)
	}
	if !strings.Contains(out, "::group::"+h.Addr+"\n") || !strings.Contains(out, "::endgroup::") {
		t.Errorf("no group for %s", h.Addr)
	}
	row := regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(h.Addr) + ` \| failed \| 3000 \| 3000 \| [0-9.]+m?s \| \S+ ` + regexp.QuoteMeta(h.Addr) + `:3000: .+ \|$`)
	if !strings.HasPrefix(summary, "### rollout deploy `v3`: FAILED in ") || !row.MatchString(summary) {
		t.Errorf("summary lacks the failed row")
	}
	said := "**" + h.Addr + ":3000 did not come up**; what it said since the restart:\n\n```text\n"
	if i := strings.Index(summary, said); i < 0 || !strings.Contains(summary[i:], "FATAL: required environment variable PAYMENT_API_KEY is not set") {
		t.Errorf("summary lacks what the app said")
	}
	if !strings.HasPrefix(posted, "❌ my-app v3 deploy FAILED after ") || !strings.Contains(posted, h.Addr+": failed, restarted 3000, left out of service 3000") {
		t.Errorf("webhook text wrong")
	}
}

// A webhook that never answers: the deploy still succeeds, and rollout
// gives up on the webhook after notify.timeout with a warning.
func TestCIHangingWebhook(t *testing.T) {
	release := make(chan struct{})
	got := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		got <- struct{}{}
		<-release
	}))
	defer srv.Close()
	defer close(release) // before the server closes
	h := fleet.Hosts[0]
	cfg := fleetConfig(t, "0s")
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("notify: {url_env: HANGING_HOOK, timeout: 1s}\n")
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HANGING_HOOK", srv.URL+"/hook/SECRETKEY456")
	out, code := rollout(t, "deploy", "-c", cfg, "--version", "v1", "--hosts", h.Addr)
	if code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
	want := "rollout: warning: notify slack webhook: no answer within 1s: context deadline exceeded (the deploy's result is unchanged)\n"
	if !strings.HasSuffix(out, want) || strings.Contains(out, "SECRETKEY456") {
		t.Errorf("output does not end with %q", want)
	}
	select {
	case <-got:
	default:
		t.Errorf("the webhook was never called")
	}
}
