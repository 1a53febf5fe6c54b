package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rollout-dev/rollout/internal/dashboard"
)

func dashboardCommand() *cli.Command {
	return &cli.Command{
		Name:  "dashboard",
		Usage: "serve a live page of every host and instance (state, PID, uptime, memory, restarts, Nginx, health, release, recent deploys)",
		Description: `The page updates itself (server-sent events) from the same polls as rollout
watch: one SSH connection per host, kept open. It is one embedded file: no
fonts or scripts from elsewhere. It listens on loopback; any other address
needs a token (--token or ROLLOUT_DASHBOARD_TOKEN), which the page's
address carries. Ctrl-C stops it.

Examples:
   rollout dashboard                         # http://127.0.0.1:8080/
   rollout dashboard --listen 127.0.0.1:9000 --interval 10s
   ROLLOUT_DASHBOARD_TOKEN=$(openssl rand -hex 16) rollout dashboard --listen 0.0.0.0:8080`,
		Flags: append(connFlags(),
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8080", EnvVars: []string{"ROLLOUT_DASHBOARD_LISTEN"}, Usage: "address to serve the page on"},
			&cli.StringFlag{Name: "token", EnvVars: []string{"ROLLOUT_DASHBOARD_TOKEN"}, Usage: "required in every request (?token=…); needed to listen beyond loopback"},
			&cli.DurationFlag{Name: "interval", Value: 10 * time.Second, EnvVars: []string{"ROLLOUT_WATCH_INTERVAL"}, Usage: "time between polls"}),
		OnUsageError: onUsageError,
		Action:       dashboardAction,
	}
}

// loopbackOnly says whether addr (host:port) listens on loopback alone.
func loopbackOnly(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	if host == "localhost" {
		return true, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false, fmt.Errorf("%q is not an IP address", host)
	}
	return ip.IsLoopback(), nil
}

func dashboardAction(c *cli.Context) error {
	addr, token := c.String("listen"), c.String("token")
	loop, err := loopbackOnly(addr)
	if err != nil {
		return usageError{fmt.Errorf("--listen %s: %w", addr, err)}
	}
	if !loop && len(token) < 16 {
		return usageError{fmt.Errorf("--listen %s is beyond loopback: give a token of at least 16 characters (--token or ROLLOUT_DASHBOARD_TOKEN)", addr)}
	}
	w, interval, err := newWatcher(c, 10)
	if err != nil {
		return err
	}
	defer w.Close()
	cfg := w.Config
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return usageError{fmt.Errorf("--listen: %w", err)}
	}
	srv := dashboard.New(cfg.App, interval, token)
	// Ctrl-C ends the pages' event streams too.
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return c.Context }}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	url := "http://" + ln.Addr().String() + "/"
	if token != "" {
		url += "?token=…"
	}
	fmt.Fprintf(c.App.Writer, "rollout dashboard for %s on %s (polling %d host(s) every %s; Ctrl-C stops it)\n", cfg.App, url, len(cfg.Hosts), interval)

	for {
		srv.Update(w.Poll(c.Context))
		select {
		case <-c.Context.Done():
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = hs.Shutdown(ctx)
			return nil
		case err := <-served:
			if !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve the dashboard: %w", err)
			}
			return nil
		case <-time.After(interval):
		}
	}
}
