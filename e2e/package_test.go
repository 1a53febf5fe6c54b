package e2e

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// snapshotVersion is the version `make release-snapshot` stamped into
// ../dist (dist/metadata.json).
func snapshotVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../dist/metadata.json")
	if errors.Is(err, os.ErrNotExist) {
		t.Fatal("no ../dist/metadata.json: run make release-snapshot first (make test does)")
	}
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ Version string }
	if err := json.Unmarshal(b, &m); err != nil || m.Version == "" {
		t.Fatalf("dist/metadata.json: %v %q", err, b)
	}
	return m.Version
}

// The snapshot's linux/amd64 .deb installs on a test host with its man
// page and completions, and runs `rollout version`; it removes cleanly.
func TestDebPackageInstallsAndRuns(t *testing.T) {
	v := snapshotVersion(t)
	debs, _ := filepath.Glob("../dist/rollout_*_amd64.deb")
	if len(debs) != 1 {
		t.Fatalf("want one amd64 .deb in ../dist, got %v", debs)
	}
	deb, err := os.Open(debs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer deb.Close()
	h := fleet.Hosts[0]
	ctx := context.Background()
	if out, err := fleet.RunInput(ctx, h, "cat >/tmp/rollout.deb", deb); err != nil {
		t.Fatalf("copy the .deb to %s: %v\n%s", h.Name, err, out)
	}
	out, err := fleet.Run(ctx, h, `set -e
sudo -n dpkg -i /tmp/rollout.deb >/dev/null
command -v rollout
rollout version
ls /usr/share/man/man1/rollout.1.gz /usr/share/bash-completion/completions/rollout /usr/share/zsh/vendor-completions/_rollout /usr/share/fish/vendor_completions.d/rollout.fish
zcat /usr/share/man/man1/rollout.1.gz | grep -c '^\.SH'`)
	t.Cleanup(func() {
		_, _ = fleet.Run(context.Background(), h, "sudo -n dpkg -r rollout >/dev/null; rm -f /tmp/rollout.deb")
	})
	if err != nil {
		t.Fatalf("install and run the .deb on %s: %v\n%s", h.Name, err, out)
	}
	if !strings.Contains(out, "/usr/bin/rollout\n") || !strings.Contains(out, "rollout "+v+" (go") || !strings.Contains(out, "linux/amd64)") {
		t.Fatalf("the installed rollout does not say version %s:\n%s", v, out)
	}
	if out, err := fleet.Run(ctx, h, "sudo -n dpkg -r rollout >/dev/null && ! command -v rollout && ! test -e /usr/share/man/man1/rollout.1.gz"); err != nil {
		t.Fatalf("remove the package: %v\n%s", err, out)
	}
}

// Each archive holds the binary, the README, the man page and the
// completions.
func TestSnapshotArchives(t *testing.T) {
	v := snapshotVersion(t)
	for _, target := range []string{"linux_amd64", "linux_arm64", "darwin_amd64", "darwin_arm64"} {
		path := "../dist/rollout_" + v + "_" + target + ".tar.gz"
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var names []string
		tr := tar.NewReader(zr)
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			names = append(names, hdr.Name)
		}
		f.Close()
		for _, want := range []string{"rollout", "README.md", "rollout.1.gz", "rollout.bash", "_rollout", "rollout.fish"} {
			if !slices.Contains(names, want) {
				t.Errorf("%s lacks %s (has %v)", path, want, names)
			}
		}
	}
	sums, err := os.ReadFile("../dist/checksums.txt")
	if err != nil || strings.Count(string(sums), "\n") < 8 {
		t.Fatalf("checksums.txt: %v\n%s", err, sums)
	}
}
