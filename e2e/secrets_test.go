package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// Secrets that travel with the release, on a host whose deploy user may
// run only the helper: a release whose required variable the secrets lack
// stops at the preflight (exit 3) with nothing restarted; once set, the
// deploy goes through under load and every instance runs with exactly
// the values set (newlines, quotes, = and unicode included); new secrets
// with the same code are a new release; a rollback brings back the env
// that went with the code; the files on the host are root's; and no
// output of rollout ever shows a value.
func TestSecrets(t *testing.T) {
	hosts := fleet.Hosts[:1]
	h := hosts[0]
	ctx := context.Background()
	dir := t.TempDir()
	key := filepath.Join(dir, "age.key")
	pub, code := rollout(t, "secrets", "keygen", "--out", key)
	if code != 0 || !strings.HasPrefix(pub, "age1") {
		t.Fatalf("keygen exited %d:\n%s", code, pub)
	}
	pub = strings.TrimSpace(strings.SplitN(pub, "\n", 2)[0])
	cfg := releaseConfig(t, hosts, "")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sealedPath := filepath.Join(dir, "production.env.age")
	conf := string(b) + fmt.Sprintf("sudo: helper\nsecrets:\n  file: %s\n  recipients: [%s]\n  identity: %s\n  required: [API_KEY]\n", sealedPath, pub, key)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	// The values a deploy must carry exactly, and that no output may show.
	first := map[string]string{
		"API_KEY":      "sk_live_1st-\"quoted\" back\\slash `tick` $HOME = sign",
		"MULTI_LINE":   "-----BEGIN KEY-----\nline two\n  indented three\n",
		"UNICODE":      "pässwörd-🔑-末",
		"DATABASE_URL": "postgres://app:p%40ss=w0rd@db/app?sslmode=require",
	}
	second := "sk_live_2nd-rotated-VALUE"
	set := func(name, value string) {
		t.Helper()
		cmd := exec.Command(rolloutBin, "secrets", "set", "-c", cfg, name)
		cmd.Stdin = strings.NewReader(value + "\n")
		cmd.Env = append(os.Environ(), "NO_COLOR=1")
		if out, err := cmd.CombinedOutput(); err != nil || strings.Contains(string(out), value) {
			t.Fatalf("secrets set %s: %v\n%s", name, err, out)
		}
	}
	var outputs []string // every output of rollout, to search for values
	run := func(args ...string) (string, int) {
		t.Helper()
		out, code := rollout(t, args...)
		outputs = append(outputs, out)
		return out, code
	}
	set("DATABASE_URL", first["DATABASE_URL"])

	moveToReleases(t, cfg, hosts) // setup (as root): units read the release's env; the helper
	if out, err := fleet.Run(ctx, h, "systemctl cat my-app@3000 | grep EnvironmentFile"); err != nil || !strings.Contains(out, "EnvironmentFile=-/srv/my-app/instances/%i/.rollout/env") {
		t.Fatalf("the unit does not read the release's env: %v\n%s", err, out)
	}
	if out, err := fleet.Run(ctx, h, "sudo -n rm -f /etc/sudoers.d/deploy"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	// API_KEY is required and not set: exit 3 before anything changes.
	rel := testbed.GoodRelease("v2")
	rel.EnvHashes = true
	art := artifactDir(t, rel)
	before := instanceStates(t, h)
	out, code := run("deploy", "-c", cfg, "--version", "v2", "--artifact", art)
	if code != 3 || !strings.Contains(out, "API_KEY") || !strings.Contains(out, "rollout secrets set") {
		t.Fatalf("a deploy without a required secret exited %d:\n%s", code, out)
	}
	if after := instanceStates(t, h); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("instances restarted: %v -> %v", before, after)
	}
	// A .env.example in the release names one more.
	withExample := rel
	withExample.EnvExample = "# what the app reads\nAPI_KEY=\nPAYMENT_WEBHOOK_SECRET=\n"
	out, code = run("deploy", "-c", cfg, "--version", "v2", "--artifact", artifactDir(t, withExample))
	if code != 3 || !strings.Contains(out, "PAYMENT_WEBHOOK_SECRET") {
		t.Errorf("a deploy without a secret the .env.example names exited %d:\n%s", code, out)
	}

	for _, n := range []string{"API_KEY", "MULTI_LINE", "UNICODE"} {
		set(n, first[n])
	}
	out = deployUnderLoad(t, hosts, cfg, "v2 with its secrets", 0, "deploy", "--version", "v2", "--artifact", art)
	outputs = append(outputs, out)
	if !strings.Contains(out, "added API_KEY, DATABASE_URL, MULTI_LINE, UNICODE") {
		t.Errorf("the deploy does not name the secrets it added:\n%s", out)
	}
	v2 := onRelease(t, cfg, hosts, "v2", "ok")
	envIs(t, h, first)
	out, code = run("secrets", "diff", "-c", cfg)
	if code != 0 || !strings.Contains(out, "runs the file's secrets") {
		t.Errorf("secrets diff after the deploy exited %d:\n%s", code, out)
	}
	// The files are root's, 0600 in a 0700 directory; deploy cannot read them.
	if out, err := fleet.RunRoot(ctx, h, "stat -c '%U %a %n' /srv/my-app/releases/"+v2+"/.rollout /srv/my-app/releases/"+v2+"/.rollout/env /srv/my-app/releases/"+v2+"/.rollout/secrets.age"); err != nil ||
		strings.Count(out, "root 600 ") != 2 || !strings.Contains(out, "root 700 ") {
		t.Errorf("the secrets' files: %v\n%s", err, out)
	}
	if out, err := fleet.Run(ctx, h, "cat /srv/my-app/releases/"+v2+"/.rollout/env"); err == nil {
		t.Errorf("deploy read the env:\n%s", out)
	}

	// A new value, the same code: diff names it, the deploy makes a new
	// release and records the changed name.
	set("API_KEY", second)
	out, code = run("secrets", "diff", "-c", cfg)
	if code != 1 || !strings.Contains(out, "~API_KEY") {
		t.Errorf("secrets diff after set exited %d:\n%s", code, out)
	}
	out = deployUnderLoad(t, hosts, cfg, "v2 with a rotated key", 0, "deploy", "--version", "v2", "--artifact", art)
	outputs = append(outputs, out)
	v2b := onRelease(t, cfg, hosts, "v2", "ok")
	if v2b == v2 || !strings.Contains(out, "changed API_KEY") {
		t.Errorf("the rotated key went out as release %s (was %s):\n%s", v2b, v2, out)
	}
	rotated := map[string]string{"API_KEY": second, "MULTI_LINE": first["MULTI_LINE"]}
	envIs(t, h, rotated)

	// A rollback brings back the env of the code it goes back to. The
	// deploy key comes from $ROLLOUT_AGE_KEY, as in CI (none needed here).
	deployUnderLoad(t, hosts, cfg, "rollback", 0, "rollback")
	if got := onRelease(t, cfg, hosts, "v2", "reverted"); got != v2 {
		t.Errorf("rollback went to %s, want %s", got, v2)
	}
	envIs(t, h, first)
	keyText, _ := os.ReadFile(key)
	out, code = rolloutEnv(t, []string{"ROLLOUT_AGE_KEY=" + string(keyText)}, "secrets", "diff", "-c", cfg, "--output", "json")
	outputs = append(outputs, out)
	if code != 1 || !strings.Contains(out, `"changed":["API_KEY"]`) {
		t.Errorf("secrets diff after the rollback exited %d:\n%s", code, out)
	}

	// Every other output: plan, status, releases, history, logs (the app's
	// journal), JSON deploy events; none may show a value.
	for _, args := range [][]string{
		{"plan", "-c", cfg, "--version", "v3", "--artifact", art},
		{"releases", "-c", cfg, "--output", "json"},
		{"history", "-c", cfg, "--output", "json"},
		{"status", "-c", cfg},
		{"logs", "-c", cfg, "--port", "3000", "--lines", "200"},
		{"secrets", "list", "-c", cfg},
		{"deploy", "-c", cfg, "--version", "v2", "--artifact", art, "--output", "json"},
	} {
		run(args...)
	}
	if hist := outputs[len(outputs)-5]; !strings.Contains(hist, `"secrets_changed":["~API_KEY"]`) {
		t.Errorf("the history does not name the changed secret:\n%s", hist)
	}
	journal, _ := fleet.RunRoot(ctx, h, "journalctl -u 'my-app@*' --no-pager; cat /srv/my-app/.rollout/releases.jsonl /var/lib/rollout/my-app/history.jsonl")
	outputs = append(outputs, journal)
	for _, out := range outputs {
		for name, v := range first {
			if strings.Contains(out, v) || strings.Contains(out, strings.SplitN(v, "\n", 2)[0]) && len(v) > 8 {
				t.Errorf("an output shows the value of %s:\n%s", name, out)
			}
		}
		if strings.Contains(out, second) {
			t.Errorf("an output shows the rotated key:\n%s", out)
		}
	}
}

// envIs checks that every instance of h runs with each variable's value
// (by its SHA-256, which the app serves; never the value itself).
func envIs(t *testing.T, h *testbed.Host, want map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < instances; i++ {
		for name, v := range want {
			out, err := fleet.Run(ctx, h, fmt.Sprintf("curl -sf 'http://127.0.0.1:%d/envhash?name=%s'", basePort+i, name))
			var got struct {
				Set    bool   `json:"set"`
				SHA256 string `json:"sha256"`
			}
			if err != nil || json.Unmarshal([]byte(out), &got) != nil {
				t.Fatalf("%s:%d envhash %s: %v\n%s", h.Name, basePort+i, name, err, out)
			}
			sum := sha256.Sum256([]byte(v))
			if !got.Set || got.SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("%s:%d runs %s with another value (set %v)", h.Name, basePort+i, name, got.Set)
			}
		}
	}
}
