package artifact

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/internal/testenv"
)

// tent is one entry of a tarball built by a test.
type tent struct {
	name string
	typ  byte // tar.TypeReg when zero
	body string
	link string
	mode int64
}

// tarball writes ents as a gzipped tarball named name in a new temporary
// directory and returns its path.
func tarball(t *testing.T, name string, ents ...tent) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range ents {
		hdr := &tar.Header{
			Typeflag: e.typ,
			Name:     e.name,
			Linkname: e.link,
			Mode:     e.mode,
			ModTime:  time.Unix(1700000000, 0),
		}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// readBack reads the packed archive: its entries' headers and contents.
func readBack(t *testing.T, a *Artifact) ([]*tar.Header, map[string]string) {
	t.Helper()
	r, err := a.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	zr, err := gzip.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header name %q, mtime %v; want none", zr.Name, zr.ModTime)
	}
	tr := tar.NewReader(zr)
	var hdrs []*tar.Header
	bodies := map[string]string{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		hdrs = append(hdrs, hdr)
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			bodies[hdr.Name] = string(b)
		}
	}
	return hdrs, bodies
}

func names(hdrs []*tar.Header) []string {
	var n []string
	for _, h := range hdrs {
		n = append(n, h.Name)
	}
	return n
}

// packed packs src into a temporary directory and removes the result with the
// test.
func packed(t *testing.T, src string) *Artifact {
	t.Helper()
	a, err := Pack(src, t.TempDir())
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	t.Cleanup(func() { a.Remove() })
	return a
}

// refused packs src, which must fail with an error naming src and containing
// want, and checks that nothing is left in the temporary directory.
func refused(t *testing.T, src, want string) error {
	t.Helper()
	tmp := t.TempDir()
	a, err := Pack(src, tmp)
	if err == nil {
		a.Remove()
		t.Fatalf("Pack(%s) succeeded; want an error containing %q", src, want)
	}
	if !strings.HasPrefix(err.Error(), "artifact "+src+": ") || !strings.Contains(err.Error(), want) {
		t.Errorf("Pack error %q; want \"artifact %s: ...%s...\"", err, src, want)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("Pack left %d files in its temporary directory", len(left))
	}
	return err
}

func TestPackRefusesTarballEntries(t *testing.T) {
	file := tent{name: "index.html", body: "hi"}
	for _, tc := range []struct {
		name string
		ents []tent
		want string
	}{
		{"absolute", []tent{file, {name: "/etc/cron.d/x", body: "x"}}, `entry "/etc/cron.d/x": is an absolute path`},
		{"dotdot", []tent{file, {name: "../x", body: "x"}}, `entry "../x": escapes the release directory`},
		{"dotdot deep", []tent{file, {name: "a/../../x", body: "x"}}, `entry "a/../../x": escapes the release directory`},
		{"dotdot inside", []tent{file, {name: "a/../b", body: "x"}}, `entry "a/../b": has a ".." component`},
		{"newline", []tent{file, {name: "a\nb", body: "x"}}, "NUL or a newline"},
		{"long name", []tent{file, {name: strings.Repeat("a/", 2048) + "x", body: "x"}}, "longer than 4096 bytes"},
		{"symlink absolute", []tent{file, {name: "passwd", typ: tar.TypeSymlink, link: "/etc/passwd"}}, `entry "passwd": symlink to "/etc/passwd" is absolute`},
		{"symlink escapes", []tent{file, {name: "lib/a", typ: tar.TypeSymlink, link: "../../x"}}, `entry "lib/a": symlink to "../../x" escapes the release directory`},
		{"symlink dotdot", []tent{file, {name: "up", typ: tar.TypeSymlink, link: ".."}}, "escapes the release directory"},
		{"symlink through symlink", []tent{file,
			{name: "s", typ: tar.TypeSymlink, link: "."},
			{name: "t", typ: tar.TypeSymlink, link: "s/s/../../etc"}}, `entry "t": symlink to "s/s/../../etc" has ".." after a name`},
		{"symlink empty", []tent{file, {name: "l", typ: tar.TypeSymlink}}, "empty target"},
		{"under symlink", []tent{file,
			{name: "lib", typ: tar.TypeSymlink, link: "sub"},
			{name: "lib/x", body: "x"}}, `entry "lib/x": is under "lib", which is not a directory`},
		{"under file", []tent{file, {name: "index.html/x", body: "x"}}, `is under "index.html"`},
		{"hard link", []tent{file, {name: "h", typ: tar.TypeLink, link: "index.html"}}, `entry "h": is a hard link`},
		{"fifo", []tent{file, {name: "p", typ: tar.TypeFifo}}, `entry "p": is a FIFO`},
		{"char device", []tent{file, {name: "null", typ: tar.TypeChar}}, `entry "null": is a character device`},
		{"block device", []tent{file, {name: "sda", typ: tar.TypeBlock}}, `entry "sda": is a block device`},
		{"duplicate", []tent{file, {name: "./index.html", body: "evil"}}, `entry "index.html": appears more than once`},
		{"duplicate dir", []tent{file, {name: "d/", typ: tar.TypeDir}, {name: "d", typ: tar.TypeDir}}, `entry "d": appears more than once`},
		{"root not a dir", []tent{file, {name: "./", typ: tar.TypeSymlink, link: "x"}}, "is the release directory itself"},
		{"no files", []tent{{name: "d/", typ: tar.TypeDir}, {name: "d/l", typ: tar.TypeSymlink, link: "e"}}, "has no files"},
		{"empty", nil, "has no files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused(t, tarball(t, "app.tgz", tc.ents...), tc.want)
		})
	}
}

func TestPackAcceptsSymlinkInside(t *testing.T) {
	a := packed(t, tarball(t, "app.tar.gz",
		tent{name: "b", body: "b"},
		tent{name: "lib/", typ: tar.TypeDir},
		tent{name: "lib/a", typ: tar.TypeSymlink, link: "../b"},
		tent{name: "lib/self", typ: tar.TypeSymlink, link: "./../lib/."},
		tent{name: "root", typ: tar.TypeSymlink, link: "."},
	))
	hdrs, _ := readBack(t, a)
	links := map[string]string{}
	for _, h := range hdrs {
		if h.Typeflag == tar.TypeSymlink {
			links[h.Name] = h.Linkname
		}
	}
	want := map[string]string{"lib/a": "../b", "lib/self": "./../lib/.", "root": "."}
	if !reflect.DeepEqual(links, want) {
		t.Errorf("symlinks %v; want %v", links, want)
	}
}

func TestPackRefusesSource(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, err := os.ReadFile(tarball(t, "good.tgz", tent{name: "a", body: strings.Repeat("x", 10000)}))
	if err != nil {
		t.Fatal(err)
	}
	var plain bytes.Buffer
	tw := tar.NewWriter(&plain)
	tw.WriteHeader(&tar.Header{Name: "a", Size: 1, Mode: 0o644})
	tw.Write([]byte("a"))
	tw.Close()
	var text bytes.Buffer
	zw := gzip.NewWriter(&text)
	zw.Write([]byte(strings.Repeat("not a tar file\n", 100)))
	zw.Close()

	t.Run("missing", func(t *testing.T) {
		err := refused(t, filepath.Join(dir, "nope.tgz"), "no such file or directory")
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v is not fs.ErrNotExist", err)
		}
	})
	for _, tc := range []struct {
		name, file string
		data       []byte
		want       string
	}{
		{"wrong suffix", "app.zip", good, "not a directory or a readable .tar.gz: name does not end in .tar.gz or .tgz"},
		{"not gzip", "app.tar.gz", []byte("hello, this is not gzip\n"), "not a directory or a readable .tar.gz: gzip: invalid header"},
		{"plain tar", "app.tgz", plain.Bytes(), "not a directory or a readable .tar.gz: gzip: invalid header"},
		{"gzip not tar", "app.tgz", text.Bytes(), "not a directory or a readable .tar.gz: archive/tar: invalid tar header"},
		{"truncated", "app.tgz", good[:len(good)-12], "not a directory or a readable .tar.gz:"},
		{"bad checksum", "app.tgz", append(good[:len(good)-8:len(good)-8], 0, 0, 0, 0, 0, 0, 0, 0), "not a directory or a readable .tar.gz: gzip: invalid checksum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused(t, write(tc.file, tc.data), tc.want)
		})
	}
	t.Run("fifo", func(t *testing.T) {
		p := filepath.Join(dir, "fifo.tgz")
		if err := syscall.Mkfifo(p, 0o644); err != nil {
			t.Fatal(err)
		}
		refused(t, p, "not a directory or a regular file")
	})
}

// tree makes a directory with the given files ("name" -> contents, a name
// ending in "/" is a directory, contents "-> target" make a symlink and
// "#!..." an executable file) and returns its path.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(name, "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(body, "-> "):
			err = os.Symlink(strings.TrimPrefix(body, "-> "), p)
		case strings.HasPrefix(body, "#!"):
			err = os.WriteFile(p, []byte(body), 0o700)
		default:
			err = os.WriteFile(p, []byte(body), 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestPackRefusesDirectoryEntries(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"symlink absolute", map[string]string{"a": "a", "etc/passwd": "-> /etc/passwd"}, `entry "etc/passwd": symlink to "/etc/passwd" is absolute`},
		{"symlink escapes", map[string]string{"a": "a", "lib/up": "-> ../../outside"}, `entry "lib/up": symlink to "../../outside" escapes the release directory`},
		{"newline", map[string]string{"a": "a", "b\nc": "x"}, "NUL or a newline"},
		{"no files", map[string]string{"d/e/": "", "d/l": "-> e"}, "has no files"},
		{".rollout", map[string]string{"a": "a", ".rollout/env": "X=1"}, `entry ".rollout": .rollout is where rollout keeps the release's secrets on the hosts; rename it`},
		{".rollout file", map[string]string{"a": "a", ".rollout": "x"}, `entry ".rollout": .rollout is where`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused(t, tree(t, tc.files), tc.want)
		})
	}
	t.Run("fifo", func(t *testing.T) {
		dir := tree(t, map[string]string{"a": "a"})
		if err := syscall.Mkfifo(filepath.Join(dir, "p"), 0o644); err != nil {
			t.Fatal(err)
		}
		refused(t, dir, `entry "p": is a FIFO`)
	})
	t.Run("unreadable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads any directory")
		}
		dir := tree(t, map[string]string{"a": "a", "secret/b": "b"})
		if err := os.Chmod(filepath.Join(dir, "secret"), 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(filepath.Join(dir, "secret"), 0o755) })
		refused(t, dir, "permission denied")
	})
}

func TestPackEntryLimit(t *testing.T) {
	defer func(n int) { maxEntries = n }(maxEntries)
	maxEntries = 3
	ents := []tent{{name: "a", body: "a"}, {name: "b", body: "b"}, {name: "c", body: "c"}}
	packed(t, tarball(t, "three.tgz", ents...))
	refused(t, tarball(t, "four.tgz", append(ents, tent{name: "d", body: "d"})...), "has more than 3 entries")
	packed(t, tree(t, map[string]string{"a": "a", "b": "b", "c": "c"}))
	refused(t, tree(t, map[string]string{"a": "a", "b": "b", "c": "c", "d": "d"}), "has more than 3 entries")
}

func TestPackNormalizes(t *testing.T) {
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 987654321, time.UTC)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Name, zw.ModTime = "build.tar", mtime
	tw := tar.NewWriter(zw)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "abc"}},
		{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "./z.txt", Mode: 0o666, Size: 1},
		{Typeflag: tar.TypeReg, Name: "bin/run", Mode: 0o701, Size: 1},
		{Typeflag: tar.TypeSymlink, Name: "current", Linkname: "bin", Mode: 0o755},
		{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o700},
		{Typeflag: tar.TypeReg, Name: "bin-x", Mode: 0o400, Size: 1,
			PAXRecords: map[string]string{"SCHILY.xattr.user.x": "y"}},
		{Typeflag: tar.TypeReg, Name: "bin//./lib", Mode: 0o4755, Size: 0},
	} {
		if h.Typeflag != tar.TypeXGlobalHeader {
			h.Uid, h.Gid, h.Uname, h.Gname = 1000, 1000, "alice", "staff"
			h.ModTime, h.AccessTime, h.ChangeTime = mtime, mtime, mtime
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte("x")[:h.Size])
	}
	tw.Close()
	zw.Close()
	src := filepath.Join(t.TempDir(), "app.TGZ")
	if err := os.WriteFile(src, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	a := packed(t, src)
	if a.Files != 4 {
		t.Errorf("Files %d; want 4", a.Files)
	}
	hdrs, _ := readBack(t, a)
	// Sorted by cleaned name ("bin" < "bin-x" < "bin/lib"), so a directory
	// still comes before everything in it.
	wantNames := []string{"bin/", "bin-x", "bin/lib", "bin/run", "current", "z.txt"}
	if got := names(hdrs); !reflect.DeepEqual(got, wantNames) {
		t.Errorf("names %q; want %q", got, wantNames)
	}
	wantModes := map[string]int64{"bin/": 0o750, "bin-x": 0o640, "bin/lib": 0o750, "bin/run": 0o750, "current": 0o777, "z.txt": 0o640}
	for _, h := range hdrs {
		if h.Mode != wantModes[h.Name] {
			t.Errorf("%s: mode %o; want %o", h.Name, h.Mode, wantModes[h.Name])
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d:%d %q:%q; want 0:0 and no names", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if !h.ModTime.Equal(mtime.Truncate(time.Second)) {
			t.Errorf("%s: mtime %v; want %v", h.Name, h.ModTime, mtime.Truncate(time.Second))
		}
		if !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
			t.Errorf("%s: atime %v, ctime %v; want none", h.Name, h.AccessTime, h.ChangeTime)
		}
		if len(h.PAXRecords) != 0 {
			t.Errorf("%s: PAX records %v; want none", h.Name, h.PAXRecords)
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPackDeterministic(t *testing.T) {
	dir := tree(t, map[string]string{
		"index.html":     "<h1>hi</h1>",
		"bin/start":      "#!/bin/sh\necho hi\n",
		"lib/app/a.js":   "a()",
		"lib/app/b.js":   "b()",
		"lib/current":    "-> app",
		"empty/":         "",
		"a-b/c":          "c",
		"static/big.bin": strings.Repeat("0123456789", 100000),
	})
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 600000000, time.UTC)
	for _, p := range []string{"index.html", "bin/start", "lib/app/a.js", "lib/app/b.js", "a-b/c", "static/big.bin", "empty", "static", "a-b", "bin", "lib/app", "lib", "."} {
		if err := os.Chtimes(filepath.Join(dir, p), mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	a1, a2 := packed(t, dir), packed(t, dir)
	if a1.SHA256 != a2.SHA256 {
		t.Errorf("packing twice gave %s and %s", a1.SHA256, a2.SHA256)
	}
	data := mustRead(t, a1.Path)
	if sum := sha256.Sum256(data); a1.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("SHA256 %s; the file's is %x", a1.SHA256, sum)
	}
	if a1.Size != int64(len(data)) {
		t.Errorf("Size %d; the file has %d bytes", a1.Size, len(data))
	}
	if a1.Files != 6 {
		t.Errorf("Files %d; want 6", a1.Files)
	}

	// The same tree as a tarball, in another order, with other owners and
	// modes, packs to the same bytes. (lib/current's own mtime is not set
	// above, so give the tarball's symlink the same one.)
	fi, err := os.Lstat(filepath.Join(dir, "lib/current"))
	if err != nil {
		t.Fatal(err)
	}
	hdrs, bodies := readBack(t, a1)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for i := len(hdrs) - 1; i >= 0; i-- {
		h := *hdrs[i]
		h.Name = "./" + h.Name
		h.Uid, h.Uname = 501, "bob"
		h.Mode |= 0o044
		h.ModTime = h.ModTime.Add(300 * time.Millisecond)
		if h.Typeflag == tar.TypeSymlink {
			h.ModTime = fi.ModTime()
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, bodies[hdrs[i].Name])
	}
	tw.Close()
	zw.Close()
	src := filepath.Join(t.TempDir(), "same.tgz")
	if err := os.WriteFile(src, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if a3 := packed(t, src); a3.SHA256 != a1.SHA256 {
		t.Errorf("the same tree as a tarball packs to %s; the directory to %s", a3.SHA256, a1.SHA256)
	}
}

func TestPackRoundTrip(t *testing.T) {
	files := map[string]string{
		"index.html":       "<h1>hi</h1>",
		"bin/start":        "#!/bin/sh\necho hi\n",
		"lib/app/v1/a.js":  "a()",
		"lib/app/current":  "-> v1",
		"lib/app/index.js": "-> ../../index.html",
		"var/cache/":       "",
	}
	a := packed(t, tree(t, files))
	hdrs, bodies := readBack(t, a)
	want := []string{"bin/", "bin/start", "index.html", "lib/", "lib/app/", "lib/app/current",
		"lib/app/index.js", "lib/app/v1/", "lib/app/v1/a.js", "var/", "var/cache/"}
	if got := names(hdrs); !reflect.DeepEqual(got, want) {
		t.Errorf("names %q; want %q", got, want)
	}
	for name, body := range files {
		if strings.HasPrefix(body, "-> ") || strings.HasSuffix(name, "/") {
			continue
		}
		if bodies[name] != body {
			t.Errorf("%s: contents %q; want %q", name, bodies[name], body)
		}
	}

	// Extract it the way the servers do.
	testenv.NeedCommand(t, "tar")
	out := t.TempDir()
	r, err := a.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command("tar", "-xzf", "-", "--no-same-owner")
	cmd.Dir, cmd.Stdin = out, r
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, b)
	}
	for name, body := range files {
		p := filepath.Join(out, name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Error(err)
			continue
		}
		switch {
		case strings.HasSuffix(name, "/"):
			if !fi.IsDir() {
				t.Errorf("%s: extracted as %v; want a directory", name, fi.Mode())
			}
		case strings.HasPrefix(body, "-> "):
			if target, err := os.Readlink(p); err != nil || target != strings.TrimPrefix(body, "-> ") {
				t.Errorf("%s: symlink to %q (%v); want %q", name, target, err, body[3:])
			}
		default:
			if got, err := os.ReadFile(p); err != nil || string(got) != body {
				t.Errorf("%s: extracted %q (%v); want %q", name, got, err, body)
			}
			if exec := fi.Mode()&0o100 != 0; exec != strings.HasPrefix(body, "#!") {
				t.Errorf("%s: extracted mode %v", name, fi.Mode())
			}
		}
	}
	if got, err := os.ReadFile(filepath.Join(out, "lib/app/index.js")); err != nil || string(got) != files["index.html"] {
		t.Errorf("reading through lib/app/index.js: %q, %v", got, err)
	}
}

// A top-level .env.example is kept for the deploy's required secrets; one
// deeper is not.
func TestPackKeepsEnvExample(t *testing.T) {
	dir := tree(t, map[string]string{"a": "a", ".env.example": "API_KEY=\n", "sub/.env.example": "OTHER=\n"})
	a, err := Pack(dir, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Remove()
	if string(a.EnvExample) != "API_KEY=\n" {
		t.Errorf("got %q", a.EnvExample)
	}
	b, err := Pack(tree(t, map[string]string{"a": "a"}), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Remove()
	if b.EnvExample != nil {
		t.Errorf("got %q without one", b.EnvExample)
	}
}

func TestRemove(t *testing.T) {
	a := packed(t, tree(t, map[string]string{"a": "a"}))
	if err := a.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a.Path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Remove: %v; want the file gone", err)
	}
	if err := a.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestPackRefusesFileChangedWhilePacking(t *testing.T) {
	for _, change := range []struct {
		name string
		do   func(p string) error
	}{
		{"grown", func(p string) error { return os.WriteFile(p, []byte("longer contents"), 0o600) }},
		{"replaced", func(p string) error {
			if err := os.WriteFile(p+".new", []byte("other"), 0o600); err != nil {
				return err
			}
			return os.Rename(p+".new", p)
		}},
	} {
		t.Run(change.name, func(t *testing.T) {
			dir := tree(t, map[string]string{"a": "a", "b": "short"})
			root, err := os.OpenRoot(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			entries, err := walkDir(root)
			if err != nil {
				t.Fatal(err)
			}
			if err := change.do(filepath.Join(dir, "b")); err != nil {
				t.Fatal(err)
			}
			tmp := t.TempDir()
			if _, err := write(entries, tmp); err == nil || err.Error() != `entry "b": changed while it was being packed` {
				t.Errorf("write: %v; want b refused as changed", err)
			}
			if left, _ := os.ReadDir(tmp); len(left) > 0 {
				t.Errorf("write left %d files behind", len(left))
			}
		})
	}
}
