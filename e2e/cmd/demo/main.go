// Command demo is `make demo`: it boots a two-host local fleet (e2e/testbed)
// set up as in the seed article (examples/app v1 in /var/www/my-app), moves
// it to releases with `rollout setup`, then ships examples/app v2 as an
// artifact and rolls it across the fleet with bin/rollout and
// examples/rollout.yaml while 400 requests per second of GETs and POSTs go
// through both hosts' Nginx; it prints the load figures, rollout's summary
// and the releases on each host, and tears the fleet down. It needs root.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/rollout-dev/rollout/e2e/testbed"
	"github.com/rollout-dev/rollout/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	fmt.Println("demo: booting a 2-host fleet (systemd-nspawn: systemd, OpenSSH, Nginx; 4 instances of examples/app v1 each)")
	tb, err := testbed.Up(ctx, testbed.Options{Hosts: 2, Log: os.Stdout})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("demo: tearing the fleet down")
		_ = tb.Down(context.WithoutCancel(ctx))
	}()
	for _, h := range tb.Hosts {
		if err := tb.Provision(ctx, h, 3000, 4); err != nil {
			return err
		}
	}
	fmt.Println("\ndemo: rollout setup: move both hosts to releases (their v1 code becomes the first release)")
	if err := rollout(ctx, "setup", "-c", "examples/rollout.yaml"); err != nil {
		return err
	}
	build, err := os.MkdirTemp("", "rollout-demo-build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(build)
	if err := testbed.GoodRelease("v2").WriteDir(build); err != nil {
		return err
	}

	fmt.Printf("\ndemo: 400 req/s (1 in 4 a POST) through both hosts' Nginx; rollout deploy --version v2 --artifact %s (examples/app, v2)\n", build)
	var gens []*loadgen.Generator
	for _, h := range tb.Hosts {
		g, err := loadgen.Start(ctx, loadgen.Config{URL: "http://" + h.Addr, Rate: 200, PostEvery: 4})
		if err != nil {
			return err
		}
		gens = append(gens, g)
	}
	time.Sleep(time.Second)
	derr := rollout(ctx, "deploy", "-c", "examples/rollout.yaml", "--version", "v2", "--artifact", build)
	time.Sleep(time.Second)

	failed := 0
	fmt.Println("\ndemo: load during the deploy")
	for i, g := range gens {
		r := g.Stop()
		failed += r.Failed
		fmt.Printf("  %s: %s\n", tb.Hosts[i].Addr, r)
	}
	var ee *exec.ExitError
	switch {
	case errors.As(derr, &ee):
		return fmt.Errorf("rollout exited %d", ee.ExitCode())
	case derr != nil:
		return derr
	case failed > 0:
		return fmt.Errorf("%d requests failed during the deploy", failed)
	}
	fmt.Println("\ndemo: rollout releases")
	if err := rollout(ctx, "releases", "-c", "examples/rollout.yaml"); err != nil {
		return err
	}
	fmt.Println("demo: every instance now serves v2 from its release; 0 requests failed")
	return nil
}

// rollout runs bin/rollout with args, its output on ours.
func rollout(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "bin/rollout", args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}
