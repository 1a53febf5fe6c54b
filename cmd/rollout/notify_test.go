package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/deployer"
)

func notifyConfig(t *testing.T, section string) *deployer.Config {
	t.Helper()
	cfg, err := deployer.ParseConfig("rollout.yaml", []byte("app: my-app\nhosts: [10.213.0.11]\nports: [3000, 3001]\n"+
		"nginx: {upstream_file: /etc/nginx/conf.d/u.conf, upstream: u}\n"+section))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestNotifyDeploy(t *testing.T) {
	got := make(chan map[string]any, 1)
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v map[string]any
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &v)
		got <- v
		w.WriteHeader(status)
	}))
	defer srv.Close()
	secretURL := srv.URL + "/bot42:TOPSECRET/sendMessage"
	env := map[string]string{"TG_URL": secretURL, "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "7"}
	getenv := func(k string) string { return env[k] }
	cfg := notifyConfig(t, "notify: {url_env: TG_URL, format: telegram, telegram_chat_id: \"-100123\", timeout: 2s}\n")

	_, rep, _ := goodDeploy()
	var stderr bytes.Buffer
	notifyDeploy(context.Background(), cfg, rep, nil, getenv, &stderr)
	v := <-got
	want := "✅ my-app v1 deployed to 1 host in 2.002s\n10.213.0.11: ok, restarted 3000,3001 (1.88s)\nhttps://github.com/o/r/actions/runs/7"
	if v["chat_id"] != "-100123" || v["text"] != want || stderr.Len() != 0 {
		t.Errorf("payload %v, stderr %q; want text:\n%s", v, stderr.String(), want)
	}

	// A failed deploy is posted too; a receiver that fails only warns.
	status = http.StatusInternalServerError
	_, rep, err := failedDeploy()
	stderr.Reset()
	notifyDeploy(context.Background(), cfg, rep, err, getenv, &stderr)
	if v := <-got; !strings.HasPrefix(v["text"].(string), "❌ my-app v3 deploy FAILED after 802ms\n") {
		t.Errorf("payload %v", v)
	}
	if want := "rollout: warning: notify telegram webhook: answered 500 Internal Server Error (the deploy's result is unchanged)\n"; stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}

	// The URL's variable is empty: a warning, nothing sent.
	stderr.Reset()
	env["TG_URL"] = ""
	notifyDeploy(context.Background(), cfg, rep, err, getenv, &stderr)
	if want := "rollout: warning: notify: $TG_URL is empty: no notification sent\n"; stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}
	select {
	case v := <-got:
		t.Errorf("sent %v", v)
	default:
	}

	// No notify: section, nothing at all.
	stderr.Reset()
	notifyDeploy(context.Background(), notifyConfig(t, ""), rep, err, getenv, &stderr)
	if stderr.Len() != 0 {
		t.Errorf("stderr %q", stderr.String())
	}
}

// Even an error message that carries the URL is sent and printed without it.
func TestNotifyNeverLeaksURL(t *testing.T) {
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body = string(b)
		http.Error(w, "bad token", http.StatusUnauthorized)
	}))
	defer srv.Close()
	secretURL := srv.URL + "/services/T0/B0/TOPSECRETKEY"
	cfg := notifyConfig(t, "notify: {}\n")
	rep := &deployer.Report{Version: "v9", Hosts: []deployer.HostReport{{Host: "10.213.0.11", Outcome: deployer.HostFailed, Error: "hook failed: curl " + secretURL}}}
	var stderr bytes.Buffer
	notifyDeploy(context.Background(), cfg, rep, errString2("hook failed"), func(k string) string {
		if k == "ROLLOUT_NOTIFY_URL" {
			return secretURL
		}
		return ""
	}, &stderr)
	if body == "" || strings.Contains(body, "TOPSECRETKEY") || strings.Contains(stderr.String(), "TOPSECRETKEY") {
		t.Errorf("body %s\nstderr %s", body, stderr.String())
	}
	if !strings.Contains(body, "hook failed: curl [redacted]") || !strings.Contains(stderr.String(), "answered 401 Unauthorized: bad token") {
		t.Errorf("body %s\nstderr %s", body, stderr.String())
	}
}
