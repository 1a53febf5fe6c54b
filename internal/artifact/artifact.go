// Package artifact turns a release artifact, a directory or a gzipped
// tarball, into one normalized .tar.gz that rollout streams to each server
// and extracts there with "tar -xzf - --no-same-owner".
//
// Pack checks every entry before it returns, so nothing is uploaded from an
// artifact that has a bad entry anywhere in it. It refuses names that are
// absolute or have a ".." component, symlinks that could lead out of the
// release directory, hard links, devices, FIFOs, sockets, duplicate names
// and anything placed under a symlink or a file. The output holds only
// directories, regular files and symlinks, in sorted name order, owned by
// uid/gid 0 with normalized modes and modification times cut to the second,
// so the same input always packs to the same bytes.
package artifact

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// maxNameLen is the longest entry name or symlink target accepted, in bytes.
const maxNameLen = 4096

// maxEntries is the most entries an artifact may have. It is a variable so
// that tests can lower it.
var maxEntries = 1_000_000

// Modes of the entries in the packed archive.
const (
	dirMode     = 0o750
	execMode    = 0o750 // a regular file with any execute bit set
	fileMode    = 0o640 // any other regular file
	symlinkMode = 0o777
)

const notTarball = "not a directory or a readable .tar.gz"

// Artifact is a packed release: a normalized .tar.gz in a temporary file.
type Artifact struct {
	Path   string // the normalized .tar.gz (temporary; Remove deletes it)
	SHA256 string // hex sha256 of the file at Path
	Size   int64  // bytes of the file at Path
	Files  int    // regular files in it
	// EnvExample is the release's top-level .env.example, if any: the
	// variables the app expects (see secrets.ExampleNames).
	EnvExample []byte
}

// maxEnvExample bounds the .env.example Pack keeps.
const maxEnvExample = 64 << 10

// Reserved is the top-level name rollout keeps in each release on the
// hosts (the release's secrets): an artifact must not hold it.
const Reserved = ".rollout"

// entry is one checked entry of an artifact, before it is written out.
type entry struct {
	name  string // cleaned, relative, never "."
	typ   byte   // tar.TypeDir, tar.TypeReg or tar.TypeSymlink
	exec  bool   // a regular file with an execute bit set
	mtime time.Time
	link  string // a symlink's target
	size  int64  // a regular file's size
	// open returns a regular file's contents, exactly size bytes.
	open func() (io.ReadCloser, error)
}

// Pack reads src (a directory, or a .tar.gz/.tgz file), checks every entry
// and writes the normalized archive into a new temporary file in tmpDir (""
// = os.TempDir()). The caller must Remove the returned Artifact.
//
// A directory src is walked without following the symlinks in it (src itself
// may be a symlink to a directory). A tarball's file contents are spooled to
// a temporary file in tmpDir while it is read, since its entries have to be
// sorted; that file is gone when Pack returns. On error no file is left in
// tmpDir.
func Pack(src, tmpDir string) (*Artifact, error) {
	if tmpDir == "" {
		tmpDir = os.TempDir()
	}
	a, err := pack(src, tmpDir)
	if err != nil {
		return nil, fmt.Errorf("artifact %s: %w", src, err)
	}
	return a, nil
}

func pack(src, tmpDir string) (*Artifact, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, withoutPath(err)
	}
	switch {
	case fi.IsDir():
		root, err := os.OpenRoot(src)
		if err != nil {
			return nil, withoutPath(err)
		}
		defer root.Close()
		entries, err := walkDir(root)
		if err != nil {
			return nil, err
		}
		return write(entries, tmpDir)
	case fi.Mode().IsRegular():
		return packTarball(src, tmpDir)
	default:
		return nil, fmt.Errorf("not a directory or a regular file: it %s", modeProblem(fi.Mode().Type()))
	}
}

// withoutPath drops the operation and path from an *fs.PathError about src,
// since the caller's message names src already.
func withoutPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// walkDir checks the entries of the directory under root, in sorted order,
// without following symlinks.
func walkDir(root *os.Root) ([]entry, error) {
	var entries []entry
	err := fs.WalkDir(root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name == "." {
			return nil
		}
		if len(entries) >= maxEntries {
			return fmt.Errorf("has more than %d entries", maxEntries)
		}
		if _, err := cleanName(name); err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{name: name, mtime: info.ModTime()}
		switch t := d.Type(); {
		case t.IsDir():
			e.typ = tar.TypeDir
		case t.IsRegular():
			e.typ = tar.TypeReg
			e.exec = info.Mode().Perm()&0o111 != 0
			e.size = info.Size()
			e.open = func() (io.ReadCloser, error) { return openSame(root, name, info) }
		case t&fs.ModeSymlink != 0:
			e.typ = tar.TypeSymlink
			if e.link, err = root.Readlink(name); err != nil {
				return err
			}
			if err := checkSymlink(name, e.link); err != nil {
				return err
			}
		default:
			return fmt.Errorf("entry %q: %s", name, modeProblem(t))
		}
		entries = append(entries, e)
		return nil
	})
	return entries, err
}

// openSame opens the regular file name under root and makes sure it is still
// the file that was walked, with the same size and modification time.
func openSame(root *os.Root, name string, walked fs.FileInfo) (io.ReadCloser, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() || !os.SameFile(fi, walked) ||
		fi.Size() != walked.Size() || !fi.ModTime().Equal(walked.ModTime()) {
		f.Close()
		return nil, errors.New("changed while it was being packed")
	}
	return f, nil
}

// modeProblem says why a directory entry of type t is refused.
func modeProblem(t fs.FileMode) string {
	switch {
	case t&fs.ModeNamedPipe != 0:
		return "is a FIFO"
	case t&fs.ModeSocket != 0:
		return "is a socket"
	case t&fs.ModeDevice != 0:
		return "is a device"
	default:
		return fmt.Sprintf("is not a directory, regular file or symlink (%v)", t)
	}
}

// packTarball checks the gzipped tarball src and writes it out normalized.
func packTarball(src, tmpDir string) (*Artifact, error) {
	lower := strings.ToLower(src)
	if !strings.HasSuffix(lower, ".tar.gz") && !strings.HasSuffix(lower, ".tgz") {
		return nil, fmt.Errorf("%s: name does not end in .tar.gz or .tgz", notTarball)
	}
	f, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", notTarball, withoutPath(err))
	}
	defer f.Close()
	spool, err := os.CreateTemp(tmpDir, "rollout-spool-*")
	if err != nil {
		return nil, fmt.Errorf("spooling the tarball: %w", err)
	}
	defer func() {
		spool.Close()
		os.Remove(spool.Name())
	}()
	entries, err := readTarball(f, spool)
	if err != nil {
		return nil, err
	}
	return write(entries, tmpDir)
}

// readTarball checks the entries of the gzipped tarball r and copies the
// contents of its regular files one after the other into spool.
func readTarball(r io.Reader, spool *os.File) ([]entry, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", notTarball, err)
	}
	tr := tar.NewReader(zr)
	var entries []entry
	var off int64
	for n := 1; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		// With GODEBUG=tarinsecurepath=0 the reader refuses some names
		// itself; cleanName below refuses them with a clearer message.
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return nil, fmt.Errorf("%s: %w", notTarball, err)
		}
		if n > maxEntries {
			return nil, fmt.Errorf("has more than %d entries", maxEntries)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // metadata such as git archive's commit id, not a file
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return nil, err
		}
		if name == "." {
			if hdr.Typeflag != tar.TypeDir {
				return nil, fmt.Errorf("entry %q: is the release directory itself but not a directory", hdr.Name)
			}
			continue
		}
		e := entry{name: name, mtime: hdr.ModTime}
		switch hdr.Typeflag {
		case tar.TypeDir:
			e.typ = tar.TypeDir
		case tar.TypeReg:
			e.typ = tar.TypeReg
			e.exec = hdr.Mode&0o111 != 0
			rr := &readErr{r: tr}
			size, err := io.Copy(spool, rr)
			if rr.err != nil {
				return nil, fmt.Errorf("%s: entry %q: %w", notTarball, hdr.Name, rr.err)
			}
			if err != nil {
				return nil, fmt.Errorf("spooling the tarball: %w", err)
			}
			start := off
			off += size
			e.size = size
			e.open = func() (io.ReadCloser, error) {
				return io.NopCloser(io.NewSectionReader(spool, start, size)), nil
			}
		case tar.TypeSymlink:
			e.typ = tar.TypeSymlink
			e.link = hdr.Linkname
			if err := checkSymlink(name, e.link); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("entry %q: %s", hdr.Name, typeProblem(hdr))
		}
		entries = append(entries, e)
	}
	// Read to the end of the gzip stream, which checks its checksum.
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return nil, fmt.Errorf("%s: %w", notTarball, err)
	}
	return entries, nil
}

// readErr remembers the error of the reader it wraps, so that a broken
// tarball is told apart from a failing write to the spool.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// typeProblem says why a tarball entry of a type other than directory,
// regular file or symlink is refused.
func typeProblem(hdr *tar.Header) string {
	switch hdr.Typeflag {
	case tar.TypeLink:
		return fmt.Sprintf("is a hard link (to %q); hard links are refused", hdr.Linkname)
	case tar.TypeChar:
		return "is a character device"
	case tar.TypeBlock:
		return "is a block device"
	case tar.TypeFifo:
		return "is a FIFO"
	default:
		return fmt.Sprintf("has type %q; only directories, regular files and symlinks are allowed", hdr.Typeflag)
	}
}

// cleanName checks an entry name and returns it cleaned: relative, without
// "./" or a trailing slash, "." for the release directory itself.
func cleanName(raw string) (string, error) {
	switch {
	case raw == "":
		return "", errors.New(`entry "": has an empty name`)
	case len(raw) > maxNameLen:
		return "", fmt.Errorf("entry %q...: name is longer than %d bytes", raw[:64], maxNameLen)
	case strings.ContainsAny(raw, "\x00\n"):
		return "", fmt.Errorf("entry %q: name contains a NUL or a newline", raw)
	case path.IsAbs(raw):
		return "", fmt.Errorf("entry %q: is an absolute path", raw)
	}
	name := path.Clean(raw)
	if name == ".." || strings.HasPrefix(name, "../") {
		return "", fmt.Errorf("entry %q: escapes the release directory", raw)
	}
	if slices.Contains(strings.Split(raw, "/"), "..") {
		return "", fmt.Errorf(`entry %q: has a ".." component`, raw)
	}
	return name, nil
}

// checkSymlink checks that the symlink name to target cannot lead out of the
// release directory once extracted.
//
// The target is resolved lexically relative to the link's own directory. That
// is only sound if each ".." in it goes up through a real directory, so ".."
// is allowed only at the start of a target: with "s -> .", a target
// "s/s/../../etc" is lexically "etc" but really two levels above the release.
// The rule in checkTree that nothing lies under a symlink makes the link's
// own directory a real one.
func checkSymlink(name, target string) error {
	bad := func(why string) error {
		return fmt.Errorf("entry %q: symlink to %q %s", name, target, why)
	}
	switch {
	case target == "":
		return fmt.Errorf("entry %q: symlink with an empty target", name)
	case len(target) > maxNameLen:
		return fmt.Errorf("entry %q: symlink target is longer than %d bytes", name, maxNameLen)
	case strings.ContainsAny(target, "\x00\n"):
		return bad("has a NUL or a newline")
	case path.IsAbs(target):
		return bad("is absolute")
	}
	to := path.Join(path.Dir(name), target)
	if to == ".." || strings.HasPrefix(to, "../") {
		return bad("escapes the release directory")
	}
	named := false
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if named {
				return bad(`has ".." after a name; ".." is allowed only at the start`)
			}
		default:
			named = true
		}
	}
	return nil
}

// checkTree sorts entries by name and checks them as a whole: no name twice,
// nothing under a symlink or a regular file, at least one regular file. It
// returns the number of regular files.
func checkTree(entries []entry) (int, error) {
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	isDir := make(map[string]bool, len(entries))
	for i, e := range entries {
		if i > 0 && entries[i-1].name == e.name {
			return 0, fmt.Errorf("entry %q: appears more than once", e.name)
		}
		isDir[e.name] = e.typ == tar.TypeDir
	}
	files := 0
	for _, e := range entries {
		if e.name == Reserved || strings.HasPrefix(e.name, Reserved+"/") {
			return 0, fmt.Errorf("entry %q: %s is where rollout keeps the release's secrets on the hosts; rename it", e.name, Reserved)
		}
		for p := path.Dir(e.name); p != "."; p = path.Dir(p) {
			if dir, ok := isDir[p]; ok && !dir {
				return 0, fmt.Errorf("entry %q: is under %q, which is not a directory", e.name, p)
			}
		}
		if e.typ == tar.TypeReg {
			files++
		}
	}
	if files == 0 {
		return 0, errors.New("has no files")
	}
	return files, nil
}

// write checks entries as a whole and writes them, sorted by name, as a
// normalized .tar.gz into a new temporary file in tmpDir.
func write(entries []entry, tmpDir string) (_ *Artifact, err error) {
	files, err := checkTree(entries)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(tmpDir, "rollout-artifact-*.tar.gz")
	if err != nil {
		return nil, fmt.Errorf("creating the packed archive: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	sum := sha256.New()
	zw := gzip.NewWriter(io.MultiWriter(f, sum)) // no name, zero ModTime
	tw := tar.NewWriter(zw)
	var example []byte
	for _, e := range entries {
		if err := writeEntry(tw, e); err != nil {
			return nil, err
		}
		if e.name == ".env.example" && e.typ == tar.TypeReg {
			if example, err = readExample(e); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return &Artifact{
		Path:       f.Name(),
		SHA256:     hex.EncodeToString(sum.Sum(nil)),
		Size:       fi.Size(),
		Files:      files,
		EnvExample: example,
	}, nil
}

// readExample reads the .env.example entry e, bounded.
func readExample(e entry) ([]byte, error) {
	if e.size > maxEnvExample {
		return nil, fmt.Errorf("entry %q: larger than %d bytes", e.name, maxEnvExample)
	}
	r, err := e.open()
	if err != nil {
		return nil, fmt.Errorf("entry %q: %w", e.name, err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, maxEnvExample+1))
	if err != nil {
		return nil, fmt.Errorf("entry %q: %w", e.name, err)
	}
	return b, nil
}

// writeEntry writes e's normalized header and, for a regular file, its
// contents.
func writeEntry(tw *tar.Writer, e entry) error {
	hdr := &tar.Header{
		Typeflag: e.typ,
		Name:     e.name,
		ModTime:  e.mtime.Truncate(time.Second),
		Format:   tar.FormatPAX,
	}
	switch e.typ {
	case tar.TypeDir:
		hdr.Name += "/"
		hdr.Mode = dirMode
	case tar.TypeSymlink:
		hdr.Linkname = e.link
		hdr.Mode = symlinkMode
	case tar.TypeReg:
		hdr.Size = e.size
		hdr.Mode = fileMode
		if e.exec {
			hdr.Mode = execMode
		}
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("entry %q: %w", e.name, err)
	}
	if e.typ != tar.TypeReg {
		return nil
	}
	r, err := e.open()
	if err != nil {
		return fmt.Errorf("entry %q: %w", e.name, err)
	}
	defer r.Close()
	if _, err := io.CopyN(tw, r, e.size); err != nil {
		if err == io.EOF {
			err = errors.New("changed while it was being packed")
		}
		return fmt.Errorf("entry %q: %w", e.name, err)
	}
	if n, _ := io.CopyN(io.Discard, r, 1); n > 0 {
		return fmt.Errorf("entry %q: changed while it was being packed", e.name)
	}
	return nil
}

// Open opens the packed archive for reading.
func (a *Artifact) Open() (io.ReadCloser, error) {
	return os.Open(a.Path)
}

// Remove deletes the packed archive. Removing it again is not an error.
func (a *Artifact) Remove() error {
	if err := os.Remove(a.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
