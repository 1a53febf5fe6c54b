// Command dist is `make dist`: every archive and package of a release into
// one directory (dist/ by default), named by the version that git says this
// commit is. Nothing is published.
//
//	go run ./internal/dist/cmd/dist [-out dist] [-version 1.4.0] [-target linux_amd64,...] [-format tar.gz,deb,rpm]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rollout-dev/rollout/internal/dist"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dist:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dist", flag.ContinueOnError)
	out := fs.String("out", "dist", "the directory the files go to")
	version := fs.String("version", "", "the version (default: from git: the tag vX.Y.Z on this commit, else the next patch's snapshot)")
	targets := fs.String("target", "", "comma-separated OS_ARCH (default: every one)")
	formats := fs.String("format", "", "comma-separated tar.gz, deb, rpm (default: all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o := dist.Options{Root: ".", Out: *out, Version: *version, Log: os.Stderr}
	if o.Version == "" {
		v, err := dist.GitVersion(ctx, ".")
		if err != nil {
			return err
		}
		o.Version = v
	}
	if t, err := dist.GitTime(ctx, "."); err == nil {
		o.MTime = t
	} else {
		o.MTime = time.Now().UTC().Truncate(time.Second)
	}
	for _, s := range split(*targets) {
		osName, arch, ok := strings.Cut(s, "_")
		if !ok {
			return fmt.Errorf("-target %q: want OS_ARCH, e.g. linux_amd64", s)
		}
		o.Targets = append(o.Targets, dist.Target{OS: osName, Arch: arch})
	}
	o.Formats = split(*formats)
	files, err := dist.Build(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "dist: %d files of rollout %s and checksums.txt in %s\n", len(files), o.Version, o.Out)
	return nil
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
