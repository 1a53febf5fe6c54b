package dist

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// GitVersion is the version of the commit checked out in dir: "1.4.0" when
// the tag v1.4.0 is on it, else a snapshot of the next patch after the
// last such tag, "1.4.1-snapshot+abc1234" ("0.0.1-snapshot+abc1234"
// before any tag), with ".dirty" when files changed.
func GitVersion(ctx context.Context, dir string) (string, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		b, err := cmd.Output()
		return strings.TrimSpace(string(b)), err
	}
	short, err := git("rev-parse", "--short=7", "HEAD")
	if err != nil {
		return "", fmt.Errorf("git rev-parse HEAD in %s: %w (pass -version)", dir, err)
	}
	status, err := git("status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return "", fmt.Errorf("git status in %s: %w", dir, err)
	}
	if tag, err := git("describe", "--tags", "--exact-match", "--match", "v[0-9]*"); err == nil && status == "" {
		if _, ok := parseSemver(tag); ok {
			return strings.TrimPrefix(tag, "v"), nil
		}
	}
	next := [3]int{0, 0, 1}
	if tag, err := git("describe", "--tags", "--abbrev=0", "--match", "v[0-9]*"); err == nil {
		if v, ok := parseSemver(tag); ok {
			next = [3]int{v[0], v[1], v[2] + 1}
		}
	}
	s := fmt.Sprintf("%d.%d.%d-snapshot+%s", next[0], next[1], next[2], short)
	if status != "" {
		s += ".dirty"
	}
	return s, nil
}

// GitTime is the commit time of HEAD in dir.
func GitTime(ctx context.Context, dir string) (time.Time, error) {
	cmd := exec.CommandContext(ctx, "git", "log", "-1", "--format=%ct")
	cmd.Dir = dir
	b, err := cmd.Output()
	if err != nil {
		return time.Time{}, err
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(sec, 0).UTC(), nil
}

// parseSemver reads "vX.Y.Z" (no pre-release: a tag v1.4.0-rc1 is not a
// release this counts from).
func parseSemver(tag string) ([3]int, bool) {
	var v [3]int
	parts := strings.Split(strings.TrimPrefix(tag, "v"), ".")
	if len(parts) != 3 || !strings.HasPrefix(tag, "v") {
		return v, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || strconv.Itoa(n) != p {
			return v, false
		}
		v[i] = n
	}
	return v, true
}
