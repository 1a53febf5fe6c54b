package deployer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/internal/testenv"
)

// tgz is a gzipped tar of files (name -> content).
func tgz(t *testing.T, files map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o640, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(content))
	}
	tw.Close()
	zw.Close()
	return buf.String()
}

// The upload script runs chown, runuser and root-owned modes: as root, in
// a temporary root directory.
func releaseRoot(t *testing.T) (root, owner, group string) {
	t.Helper()
	testenv.NeedRoot(t) // the release scripts chown
	for _, tool := range []string{"runuser", "timeout", "sha256sum", "tar"} {
		testenv.NeedCommand(t, tool)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(t.TempDir(), "srv"), u.Username, g.Name
}

func TestReleaseUploadScript(t *testing.T) {
	root, owner, group := releaseRoot(t)
	body := tgz(t, map[string]string{"server.js": "ok", "bin/run": "#!/bin/sh", ".env": "FROM_RELEASE=1"})
	upload := func(id, data, sum, prepare string, shared ...string) (string, int) {
		args := append([]string{root, id, sum, owner, group, "5", prepare, `{"id":"` + id + `","sha256":"` + sum + `","outcome":"new"}`}, shared...)
		return runScript(t, "release-upload", data, args...)
	}
	noLeftovers := func() {
		t.Helper()
		if m, _ := filepath.Glob(filepath.Join(root, "releases", "*.partial*")); len(m) > 0 {
			t.Errorf("left behind %v", m)
		}
	}

	t.Run("cut short", func(t *testing.T) {
		out, code := upload(relV1, body[:len(body)/2], sha(body), "")
		if code != exitChecksum || !strings.Contains(out, "damaged or cut short") {
			t.Errorf("exit %d: %s", code, out)
		}
		noLeftovers()
		if _, err := os.Stat(filepath.Join(root, "releases", relV1)); err == nil {
			t.Error("a damaged upload became a release")
		}
	})
	t.Run("prepare fails", func(t *testing.T) {
		out, code := upload(relV1, body, sha(body), "echo npm ERR! no lockfile; exit 7")
		if code != exitPrepare || !strings.Contains(out, "release.prepare exited 7") || !strings.Contains(out, "npm ERR! no lockfile") {
			t.Errorf("exit %d: %s", code, out)
		}
		noLeftovers()
	})
	t.Run("prepare times out", func(t *testing.T) {
		args := []string{root, relV1, sha(body), owner, group, "1", "sleep 30", "{}"}
		out, code := runScript(t, "release-upload", body, args...)
		if code != exitPrepare || !strings.Contains(out, "timed out after 1s") {
			t.Errorf("exit %d: %s", code, out)
		}
		noLeftovers()
	})
	t.Run("a device file", func(t *testing.T) {
		// Unpacked as root: a device node readable by all would hand the
		// app's user the disk; a fifo is no code either.
		for _, h := range []tar.Header{{Name: "disk", Typeflag: tar.TypeBlock, Mode: 0o666, Devmajor: 8}, {Name: "pipe", Typeflag: tar.TypeFifo, Mode: 0o644}} {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			tw := tar.NewWriter(zw)
			tw.WriteHeader(&tar.Header{Name: "server.js", Mode: 0o4755, Size: 2})
			tw.Write([]byte("ok"))
			tw.WriteHeader(&h)
			tw.Close()
			zw.Close()
			data := buf.String()
			out, code := upload(relV1, data, sha(data), "")
			if code != exitSpecial || !strings.Contains(out, h.Name) {
				t.Errorf("%s: exit %d: %s", h.Name, code, out)
			}
			noLeftovers()
		}
	})
	t.Run("shared path nowhere", func(t *testing.T) {
		out, code := upload(relV1, body, sha(body), "", "uploads")
		if code != exitShared || !strings.Contains(out, "uploads is neither in") {
			t.Errorf("exit %d: %s", code, out)
		}
		noLeftovers()
	})
	t.Run("in place", func(t *testing.T) {
		out, code := upload(relV1, body, sha(body), "touch prepared", ".env")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		rel := filepath.Join(root, "releases", relV1)
		for name, mode := range map[string]os.FileMode{"server.js": 0o640, "prepared": 0o640, "bin": os.ModeDir | os.ModeSetgid | 0o750} {
			fi, err := os.Stat(filepath.Join(rel, name))
			if err != nil || fi.Mode() != mode {
				t.Errorf("%s: %v, mode %v, want %v", name, err, fi.Mode(), mode)
			}
		}
		// The release's .env seeded the shared one, and it links to it.
		if l, _ := os.Readlink(filepath.Join(rel, ".env")); l != filepath.Join(root, "shared", ".env") || readFile(t, filepath.Join(root, "shared", ".env")) != "FROM_RELEASE=1" {
			t.Errorf(".env links to %q", l)
		}
		if log := readFile(t, filepath.Join(root, ".rollout", "releases.jsonl")); !strings.Contains(log, relV1) {
			t.Errorf("log %q", log)
		}
		noLeftovers()
	})
	t.Run("again", func(t *testing.T) {
		if out, code := upload(relV1, body, sha(body), ""); code != 0 {
			t.Errorf("the same release again: exit %d: %s", code, out)
		}
		other := tgz(t, map[string]string{"server.js": "other"})
		if out, code := upload(relV1, other, sha(other), ""); code != exitChecksum || !strings.Contains(out, "with other content") {
			t.Errorf("another artifact under the same ID: exit %d: %s", code, out)
		}
		if readFile(t, filepath.Join(root, "releases", relV1, "server.js")) != "ok" {
			t.Error("the release in place was replaced")
		}
	})
	t.Run("switch and record", func(t *testing.T) {
		if out, code := runScript(t, "release-switch", "", root, "3000", relV2); code != exitNoRelease {
			t.Errorf("switch to a missing release: exit %d: %s", code, out)
		}
		if out, code := runScript(t, "release-switch", "", root, "3000", relV1); code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		if l, _ := os.Readlink(filepath.Join(root, "instances", "3000")); l != "../releases/"+relV1 {
			t.Errorf("link %q", l)
		}
		os.MkdirAll(filepath.Join(root, "releases", relV2), 0o750)
		out, code := runScript(t, "release-record", "", root, `{"id":"a"}`+"\n"+`{"id":"b"}`, relV2, relV1, relV2)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		// Both are named (by an instance, by current): neither is removed.
		for _, id := range []string{relV1, relV2} {
			if _, err := os.Stat(filepath.Join(root, "releases", id)); err != nil {
				t.Errorf("%s removed while in use", id)
			}
		}
		if l, _ := os.Readlink(filepath.Join(root, "current")); l != "releases/"+relV2 {
			t.Errorf("current %q", l)
		}
		if log := readFile(t, filepath.Join(root, ".rollout", "releases.jsonl")); !strings.HasSuffix(log, `{"id":"a"}`+"\n"+`{"id":"b"}`+"\n") {
			t.Errorf("log %q", log)
		}
		runScript(t, "release-switch", "", root, "3000", relV2)
		if _, code := runScript(t, "release-record", "", root, "", "", relV1); code != 0 {
			t.Fatal("record")
		}
		if _, err := os.Stat(filepath.Join(root, "releases", relV1)); err == nil {
			t.Error("an unused release was not removed")
		}
	})
}
