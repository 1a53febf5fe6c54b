package e2e

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/internal/dist"
)

// The .deb for this machine, built as `make dist` builds it (internal/dist),
// installs on a test host with its man page and completions, and runs
// `rollout version`; it removes cleanly.
func TestDebPackageInstallsAndRuns(t *testing.T) {
	const v = "0.0.1-snapshot+e2e"
	files, err := dist.Build(context.Background(), dist.Options{Root: "..", Out: t.TempDir(), Version: v,
		Targets: []dist.Target{dist.Host()}, Formats: []string{dist.Deb}})
	if err != nil {
		t.Fatal(err)
	}
	deb, err := os.Open(files[0].Path)
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
