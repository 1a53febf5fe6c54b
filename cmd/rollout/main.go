// Command rollout rolls a release through a fleet of systemd template
// instances behind Nginx, one instance at a time, over SSH.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stats := startStats(os.Getenv("ROLLOUT_STATS_FILE"))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newApp(os.Stdout, os.Stderr).RunContext(ctx, os.Args)
	interrupted := ctx.Err() != nil
	stop()
	stats()
	os.Exit(exitCode(err, interrupted, os.Stderr))
}
