package testbed

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

//go:embed rootfs.sh
var rootfsRecipe []byte

// recipeHash names the cached rootfs: a changed recipe is a new directory.
func recipeHash() string {
	sum := sha256.Sum256(rootfsRecipe)
	return hex.EncodeToString(sum[:6])
}

// EnsureRootfs returns the directory of the testbed's rootfs of a Debian
// release (suite), building it with debootstrap when it is missing or its
// recipe (rootfs.sh) changed. Builds are serialised by a lock file, so
// concurrent callers wait for one build. Rootfs directories of the suite's
// older recipes are removed.
func EnsureRootfs(ctx context.Context, cacheDir, suite string, log io.Writer) (string, error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("create rootfs cache %s: %w", cacheDir, err)
	}
	unlock, err := lockFile(filepath.Join(cacheDir, ".build.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()

	dir := filepath.Join(cacheDir, "rootfs-"+suite+"-"+recipeHash())
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir, nil
	}
	tmp := dir + ".building"
	if err := os.RemoveAll(tmp); err != nil {
		return "", fmt.Errorf("remove partial rootfs %s: %w", tmp, err)
	}
	fmt.Fprintf(log, "testbed: building the %s rootfs %s with debootstrap (once per recipe change)\n", suite, dir)
	t0 := time.Now()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", "-s", "--", tmp, suite)
	cmd.Stdin = bytes.NewReader(rootfsRecipe)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build rootfs: %w\n%s", err, tail(out.String(), 40))
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return "", fmt.Errorf("mark rootfs complete: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("install rootfs %s: %w", dir, err)
	}
	fmt.Fprintf(log, "testbed: built the %s rootfs in %.0fs\n", suite, time.Since(t0).Seconds())
	old, _ := filepath.Glob(filepath.Join(cacheDir, "rootfs-*"))
	for _, o := range old {
		// Another suite's, or a recipe before suites (rootfs-HASH): kept
		// when it is another suite's current one.
		base := strings.TrimPrefix(filepath.Base(o), "rootfs-")
		if o != dir && (strings.HasPrefix(base, suite+"-") || !strings.Contains(base, "-")) {
			_ = os.RemoveAll(o)
		}
	}
	return dir, nil
}

// lockFile takes an exclusive flock on path, waiting for it; the returned
// func releases it. The kernel drops the lock if the process dies.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
