// Package dist builds rollout's release files into one directory: for each
// platform a .tar.gz (the binary, README.md, the man page and the bash, zsh
// and fish completions), for each Linux architecture a .deb and an .rpm
// (built with nfpm's library from nfpm.yaml beside this file), and
// checksums.txt. `make dist` runs it for every platform, and the package
// tests run it for the machine they are on. It builds; it publishes
// nothing.
package dist

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

//go:embed nfpm.yaml
var nfpmConfig []byte

// Target is a platform rollout is built for.
type Target struct{ OS, Arch string }

func (t Target) String() string { return t.OS + "_" + t.Arch }

// Targets are the platforms a release has.
var Targets = []Target{{"linux", "amd64"}, {"linux", "arm64"}, {"darwin", "amd64"}, {"darwin", "arm64"}}

// Host is the platform this program runs on.
func Host() Target { return Target{runtime.GOOS, runtime.GOARCH} }

// The file formats Build makes.
const (
	TarGz = "tar.gz"
	Deb   = "deb"
	RPM   = "rpm"
)

// Options say what Build makes and where.
type Options struct {
	// Root is the module's root directory (holding go.mod, README.md and
	// cmd/rollout).
	Root string
	// Out is the directory the files go to; it is created, and files of
	// the same names in it are replaced.
	Out string
	// Version is stamped into the binary (`rollout version`) and names
	// the files: "1.4.0", or a snapshot's "0.0.0-snapshot+abc1234".
	// It must start with a digit (Debian's and RPM's rule).
	Version string
	// Targets to build; every one in Targets when empty.
	Targets []Target
	// Formats to make (TarGz, Deb, RPM); all when empty. Packages are made
	// for linux targets only.
	Formats []string
	// MTime is every file's time in the archives and packages, so the
	// same commit builds the same files; the Unix epoch when zero.
	MTime time.Time
	// Log gets a line per file made; nothing when nil.
	Log io.Writer
}

// File is one file Build made.
type File struct {
	Path   string // in Options.Out
	Target Target
	Format string
	SHA256 string
}

// Build compiles rollout for each target and makes the files, then writes
// checksums.txt naming every one. A failure leaves no checksums.txt.
func Build(ctx context.Context, o Options) ([]File, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if len(o.Targets) == 0 {
		o.Targets = Targets
	}
	if len(o.Formats) == 0 {
		o.Formats = []string{TarGz, Deb, RPM}
	}
	if o.MTime.IsZero() {
		o.MTime = time.Unix(0, 0).UTC()
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", o.Out, err)
	}
	_ = os.Remove(filepath.Join(o.Out, "checksums.txt"))
	work, err := os.MkdirTemp("", "rollout-dist-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	// The man page and completions come from the CLI's own definitions:
	// a binary that runs here prints them.
	extras := filepath.Join(work, "extras")
	hostBin := filepath.Join(work, "host", "rollout")
	if err := compile(ctx, o.Root, Host(), o.Version, hostBin); err != nil {
		return nil, err
	}
	if err := writeExtras(ctx, hostBin, extras); err != nil {
		return nil, err
	}
	var made []File
	for _, t := range o.Targets {
		dir := filepath.Join(work, t.String())
		bin := filepath.Join(dir, "rollout")
		if t == Host() {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			if err := os.Link(hostBin, bin); err != nil {
				return nil, fmt.Errorf("link the %s binary: %w", t, err)
			}
		} else if err := compile(ctx, o.Root, t, o.Version, bin); err != nil {
			return nil, err
		}
		if err := copyExtras(extras, dir); err != nil {
			return nil, err
		}
		for _, format := range o.Formats {
			if format != TarGz && t.OS != "linux" {
				continue
			}
			f, err := o.make(format, t, dir)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", t, format, err)
			}
			fmt.Fprintf(o.Log, "dist: %s\n", f.Path)
			made = append(made, f)
		}
	}
	if err := writeChecksums(o.Out, made); err != nil {
		return nil, err
	}
	return made, nil
}

func (o Options) check() error {
	if o.Root == "" || o.Out == "" {
		return errors.New("dist: Root and Out must be set")
	}
	if o.Version == "" || o.Version[0] < '0' || o.Version[0] > '9' {
		return fmt.Errorf("dist: version %q must start with a digit (1.4.0, not v1.4.0)", o.Version)
	}
	for _, f := range o.Formats {
		if f != TarGz && f != Deb && f != RPM {
			return fmt.Errorf("dist: unknown format %q (want %s, %s or %s)", f, TarGz, Deb, RPM)
		}
	}
	for _, t := range o.Targets {
		if !slices.Contains(Targets, t) {
			return fmt.Errorf("dist: unknown target %s", t)
		}
	}
	return nil
}

// compile builds cmd/rollout for t into out, as a release is built: no cgo,
// no local paths, no symbols, the version stamped.
func compile(ctx context.Context, root string, t Target, version, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
		"-ldflags", "-s -w -X main.version="+version, "-o", out, "./cmd/rollout")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+t.OS, "GOARCH="+t.Arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build rollout for %s: %w\n%s", t, err, b)
	}
	return nil
}

// extraFiles are the man page and the completions, with the command that
// prints each.
var extraFiles = []struct {
	name string
	args []string
}{
	{"rollout.1.gz", []string{"man"}},
	{"rollout.bash", []string{"completion", "bash"}},
	{"_rollout", []string{"completion", "zsh"}},
	{"rollout.fish", []string{"completion", "fish"}},
}

func writeExtras(ctx context.Context, bin, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, e := range extraFiles {
		var out, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, e.args...)
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("rollout %s: %w\n%s", strings.Join(e.args, " "), err, stderr.Bytes())
		}
		if out.Len() == 0 {
			return fmt.Errorf("rollout %s printed nothing", strings.Join(e.args, " "))
		}
		b := out.Bytes()
		if strings.HasSuffix(e.name, ".gz") {
			var z bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression) // no name, no time: the same bytes every build
			zw.Write(b)
			if err := zw.Close(); err != nil {
				return err
			}
			b = z.Bytes()
		}
		if err := os.WriteFile(filepath.Join(dir, e.name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func copyExtras(from, to string) error {
	for _, e := range extraFiles {
		if err := os.Link(filepath.Join(from, e.name), filepath.Join(to, e.name)); err != nil {
			return fmt.Errorf("copy %s: %w", e.name, err)
		}
	}
	return nil
}

// make makes one file of format for t from dir (the binary and extras).
func (o Options) make(format string, t Target, dir string) (File, error) {
	var name string
	var body bytes.Buffer
	switch format {
	case TarGz:
		name = fmt.Sprintf("rollout_%s_%s.tar.gz", o.Version, t)
		if err := o.archive(&body, dir); err != nil {
			return File{}, err
		}
	default:
		info, err := o.packageInfo(format, t, dir)
		if err != nil {
			return File{}, err
		}
		p, err := nfpm.Get(format)
		if err != nil {
			return File{}, err
		}
		name = p.ConventionalFileName(info)
		if err := p.Package(info, &body); err != nil {
			return File{}, err
		}
	}
	path := filepath.Join(o.Out, name)
	if err := os.WriteFile(path, body.Bytes(), 0o644); err != nil {
		return File{}, err
	}
	sum := sha256.Sum256(body.Bytes())
	return File{Path: path, Target: t, Format: format, SHA256: hex.EncodeToString(sum[:])}, nil
}

// archive writes a .tar.gz of the binary, README.md and the extras, each at
// the archive's top.
func (o Options) archive(w io.Writer, dir string) error {
	zw, _ := gzip.NewWriterLevel(w, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	add := func(name, path string, mode int64) error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: name, Mode: mode, Size: int64(len(b)), ModTime: o.MTime,
			Typeflag: tar.TypeReg, Uname: "root", Gname: "root", Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	}
	if err := add("rollout", filepath.Join(dir, "rollout"), 0o755); err != nil {
		return err
	}
	if err := add("README.md", filepath.Join(o.Root, "README.md"), 0o644); err != nil {
		return err
	}
	for _, e := range extraFiles {
		if err := add(e.name, filepath.Join(dir, e.name), 0o644); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// packageInfo is nfpm.yaml for t, with the binary and extras from dir.
func (o Options) packageInfo(format string, t Target, dir string) (*nfpm.Info, error) {
	vars := map[string]string{"VERSION": o.Version, "ARCH": t.Arch, "BUILD": dir}
	cfg, err := nfpm.ParseWithEnvMapping(bytes.NewReader(nfpmConfig), func(k string) string { return vars[k] })
	if err != nil {
		return nil, fmt.Errorf("nfpm.yaml: %w", err)
	}
	info, err := cfg.Get(format)
	if err != nil {
		return nil, fmt.Errorf("nfpm.yaml: %w", err)
	}
	info.MTime = o.MTime
	if err := nfpm.PrepareForPackager(info, format); err != nil {
		return nil, fmt.Errorf("nfpm.yaml: %w", err)
	}
	return info, nil
}

// writeChecksums writes checksums.txt as sha256sum does: "SUM  NAME".
func writeChecksums(out string, files []File) error {
	lines := make([]string, len(files))
	for i, f := range files {
		lines[i] = f.SHA256 + "  " + filepath.Base(f.Path) + "\n"
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i][66:] < lines[j][66:] })
	return os.WriteFile(filepath.Join(out, "checksums.txt"), []byte(strings.Join(lines, "")), 0o644)
}
