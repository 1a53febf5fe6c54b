package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print rollout's version, the Go version it was built with, and the OS/arch",
		Description: `Examples:
   rollout version
   rollout --version        # the version alone`,
		Action: func(c *cli.Context) error {
			fmt.Fprintln(c.App.Writer, versionString())
			return nil
		},
		OnUsageError: onUsageError,
	}
}

// versionString is "rollout VERSION (GOVERSION OS/ARCH)". Without a version
// set by -ldflags, a `go install`ed binary reports its module version.
func versionString() string {
	v := version
	if v == "dev" {
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return fmt.Sprintf("rollout %s (%s %s/%s)", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
