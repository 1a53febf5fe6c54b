package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A host rollout cannot read is shown as unknown, with why: never as a
// free lock or an empty history.
func TestUnreadableHostIsUnknown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens there now: the connection is refused
	dir := t.TempDir()
	key, _ := testKey(t, dir)
	cfg := filepath.Join(dir, "rollout.yaml")
	yaml := "app: my-app\nhosts: [127.0.0.1]\nports: [3000]\nssh: {user: deploy, port: " + strconv.Itoa(port) + ", connect_timeout: 2s, key: " + key + ", known_hosts: " + filepath.Join(dir, "kh") + "}\n" +
		"nginx: {upstream_file: /etc/nginx/conf.d/my-app.conf, upstream: my_app}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"lock", "status"}, {"lock", "release"}} {
		out, errOut, code := runCLI(t, append(args, "-c", cfg)...)
		if code != exitPreflight || strings.Contains(out, "free") || !strings.Contains(out, "127.0.0.1  UNKNOWN") {
			t.Errorf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
		out, _, _ = runCLI(t, append(args, "-c", cfg, "--output", "json")...)
		var doc struct {
			Locks []struct{ State, Error string }
		}
		if json.Unmarshal([]byte(out), &doc) != nil || len(doc.Locks) != 1 || doc.Locks[0].State != "unknown" || doc.Locks[0].Error == "" {
			t.Errorf("%v json: %s", args, out)
		}
	}
	out, _, code := runCLI(t, "history", "-c", cfg)
	if code != exitPreflight || !strings.Contains(out, "127.0.0.1") || !strings.Contains(out, "UNKNOWN") {
		t.Errorf("history: exit %d\n%s", code, out)
	}
	out, _, code = runCLI(t, "logs", "-c", cfg)
	if code != exitPreflight || !strings.Contains(out, "127.0.0.1 UNKNOWN: its logs could not be read: ") {
		t.Errorf("logs: exit %d\n%s", code, out)
	}
	out, _, _ = runCLI(t, "history", "-c", cfg, "--output", "json")
	if !strings.Contains(out, `"state":"unknown"`) {
		t.Errorf("history json: %s", out)
	}
}
