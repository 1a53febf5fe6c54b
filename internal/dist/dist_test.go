package dist

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blakesmith/ar"

	"github.com/rollout-dev/rollout/internal/testenv"
)

// One build for this machine's platform: the archive, the .deb and the
// .rpm, each holding what a user installs, and checksums that match.
func TestBuildHost(t *testing.T) {
	if Host().OS != "linux" {
		testenv.Skip(t, "packages are built for linux; this is %s", Host())
	}
	out := t.TempDir()
	mtime := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	files, err := Build(context.Background(), Options{Root: "../..", Out: out, Version: "1.2.3-snapshot+abc1234", Targets: []Target{Host()}, MTime: mtime})
	if err != nil {
		t.Fatal(err)
	}
	var formats []string
	for _, f := range files {
		formats = append(formats, f.Format)
	}
	if !slices.Equal(formats, []string{TarGz, Deb, RPM}) {
		t.Fatalf("made %v, want tar.gz, deb, rpm", formats)
	}

	// The archive: the binary (executable), README, man page, completions.
	entries := tarEntries(t, readFile(t, files[0].Path))
	want := []string{"rollout", "README.md", "rollout.1.gz", "rollout.bash", "_rollout", "rollout.fish"}
	if got := entries.names; !slices.Equal(got, want) {
		t.Errorf("archive holds %v, want %v", got, want)
	}
	if e := entries.files["rollout"]; e.Mode != 0o755 || !e.ModTime.Equal(mtime) {
		t.Errorf("archive's rollout: mode %o, time %v", e.Mode, e.ModTime)
	}
	if filepath.Base(files[0].Path) != "rollout_1.2.3-snapshot+abc1234_"+Host().String()+".tar.gz" {
		t.Errorf("archive named %s", files[0].Path)
	}

	// The binary says its version.
	bin := filepath.Join(t.TempDir(), "rollout")
	if err := os.WriteFile(bin, entries.files["rollout"].body, 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(bin, "version").Output(); err != nil || !strings.HasPrefix(string(b), "rollout 1.2.3-snapshot+abc1234 ") {
		t.Errorf("rollout version: %q %v", b, err)
	}
	// The man page is gzipped troff with sections.
	if man := gunzip(t, entries.files["rollout.1.gz"].body); !strings.Contains(man, "\n.SH ") {
		t.Errorf("man page has no section:\n%.300s", man)
	}

	// The .deb: installs the same files where Debian looks for them.
	deb := debData(t, readFile(t, files[1].Path))
	wantDeb := []string{"./usr/bin/rollout", "./usr/share/man/man1/rollout.1.gz",
		"./usr/share/bash-completion/completions/rollout", "./usr/share/zsh/vendor-completions/_rollout",
		"./usr/share/fish/vendor_completions.d/rollout.fish"}
	for _, w := range wantDeb {
		if _, ok := deb.files[w]; !ok {
			t.Errorf(".deb lacks %s (has %v)", w, deb.names)
		}
	}
	if e := deb.files["./usr/bin/rollout"]; e.Mode&0o777 != 0o755 || !bytes.Equal(e.body, entries.files["rollout"].body) {
		t.Errorf(".deb's rollout: mode %o, same binary as the archive: %v", e.Mode, bytes.Equal(e.body, entries.files["rollout"].body))
	}
	if !strings.HasPrefix(filepath.Base(files[1].Path), "rollout_1.2.3~snapshot") {
		t.Errorf(".deb named %s", files[1].Path)
	}

	// The .rpm: an RPM (its lead), named for the architecture.
	rpm := readFile(t, files[2].Path)
	if !bytes.HasPrefix(rpm, []byte{0xed, 0xab, 0xee, 0xdb}) {
		t.Errorf("%s is not an RPM", files[2].Path)
	}
	if !bytes.Contains(rpm, []byte("/usr/share/man/man1")) && !bytes.Contains(rpm, []byte("rollout.1.gz")) {
		t.Errorf("the .rpm does not name the man page")
	}

	// checksums.txt: one line per file, each sum right.
	sums := strings.Split(strings.TrimSpace(string(readFile(t, filepath.Join(out, "checksums.txt")))), "\n")
	if len(sums) != 3 {
		t.Fatalf("checksums.txt has %d lines:\n%s", len(sums), strings.Join(sums, "\n"))
	}
	for _, line := range sums {
		sum, name, ok := strings.Cut(line, "  ")
		h := sha256.Sum256(readFile(t, filepath.Join(out, name)))
		if !ok || sum != hex.EncodeToString(h[:]) {
			t.Errorf("checksums.txt: %q does not match %s", line, name)
		}
	}

	// The same commit builds the same archive.
	again, err := Build(context.Background(), Options{Root: "../..", Out: t.TempDir(), Version: "1.2.3-snapshot+abc1234", Targets: []Target{Host()}, Formats: []string{TarGz}, MTime: mtime})
	if err != nil {
		t.Fatal(err)
	}
	if again[0].SHA256 != files[0].SHA256 {
		t.Errorf("two builds of one commit differ: %s, %s", again[0].SHA256, files[0].SHA256)
	}
}

func TestOptionsRefused(t *testing.T) {
	for _, o := range []Options{
		{Root: ".", Out: "x", Version: "v1.2.3"},
		{Root: ".", Out: "x", Version: ""},
		{Root: ".", Out: "x", Version: "1.0.0", Formats: []string{"zip"}},
		{Root: ".", Out: "x", Version: "1.0.0", Targets: []Target{{"windows", "amd64"}}},
		{Out: "x", Version: "1.0.0"},
	} {
		if _, err := Build(context.Background(), o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func TestParseSemver(t *testing.T) {
	for _, tc := range []struct {
		tag  string
		want [3]int
		ok   bool
	}{
		{"v1.4.0", [3]int{1, 4, 0}, true},
		{"v10.0.12", [3]int{10, 0, 12}, true},
		{"1.4.0", [3]int{}, false},
		{"v1.4", [3]int{}, false},
		{"v1.4.0-rc1", [3]int{}, false},
		{"v01.4.0", [3]int{}, false},
	} {
		got, ok := parseSemver(tc.tag)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("parseSemver(%q) = %v, %v; want %v, %v", tc.tag, got, ok, tc.want, tc.ok)
		}
	}
}

type entry struct {
	tar.Header
	body []byte
}

// tarball is a tar's regular files, by name and in order.
type tarball struct {
	names []string
	files map[string]*entry
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gunzip(t *testing.T, b []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// tarEntries reads a gzipped tar's regular files.
func tarEntries(t *testing.T, gz []byte) tarball {
	t.Helper()
	tr := tar.NewReader(strings.NewReader(gunzip(t, gz)))
	tb := tarball{files: map[string]*entry{}}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return tb
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		tb.files[hdr.Name] = &entry{Header: *hdr, body: body}
		tb.names = append(tb.names, hdr.Name)
	}
}

// debData reads a .deb's data.tar.gz.
func debData(t *testing.T, deb []byte) tarball {
	t.Helper()
	r := ar.NewReader(bytes.NewReader(deb))
	for {
		hdr, err := r.Next()
		if err != nil {
			t.Fatalf(".deb has no data.tar.gz: %v", err)
		}
		if strings.TrimSuffix(hdr.Name, "/") == "data.tar.gz" {
			b, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			return tarEntries(t, b)
		}
	}
}
