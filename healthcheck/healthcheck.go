// Package healthcheck checks that an app instance answers its HTTP health
// path with the expected status, once or retried until a deadline. It dials
// through whatever DialContext it is given (rollout passes a tunnel through
// the host's SSH connection, so the server needs no curl) and knows nothing
// of hosts, systemd or Nginx.
package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/sethvargo/go-retry"
)

// ErrTimeout is returned by Wait when the instance did not become healthy
// before the deadline; the error also holds the last failed attempt's cause.
var ErrTimeout = errors.New("not healthy before the deadline")

// HTTP checks instances at http://HOST:PORT/PATH.
type HTTP struct {
	// Dial opens connections; net.Dialer.DialContext when nil.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Host is the address the instances listen on, as the balancer
	// reaches them; 127.0.0.1 when empty.
	Host   string
	Path   string // e.g. "/healthz"
	Status int    // expected status, e.g. 200
	// AttemptTimeout caps one request.
	AttemptTimeout time.Duration
	// Permanent, when set, says which failures retrying cannot cure (the
	// way to the instance is gone): Wait returns them at once.
	Permanent func(error) bool
	// Explain, when set, is given each failed attempt's error (and the
	// caller's context, not the attempt's) and returns the error to act
	// on: the same, or why the instance could not be reached at all.
	Explain func(ctx context.Context, err error) error
}

// StatusError is a health response with an unexpected status.
type StatusError struct {
	Got, Want int
	Body      string // the first bytes of the body, for the user
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("health check answered %d, want %d", e.Got, e.Want)
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// Check makes one request to the instance on port and returns nil if it
// answered the expected status.
func (h HTTP) Check(ctx context.Context, port int) error {
	err := h.check(ctx, port)
	if err != nil && h.Explain != nil {
		err = h.Explain(ctx, err)
	}
	return err
}

func (h HTTP) check(ctx context.Context, port int) error {
	ctx, cancel := context.WithTimeout(ctx, h.AttemptTimeout)
	defer cancel()
	dial := h.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	client := &http.Client{
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	host := h.Host
	if host == "" {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(port)) + h.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("health check %s: %w", url, err)
	}
	req.Header.Set("User-Agent", "rollout-healthcheck")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health check %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	if resp.StatusCode != h.Status {
		return &StatusError{Got: resp.StatusCode, Want: h.Status, Body: string(body)}
	}
	return nil
}

// Wait retries Check every interval until it passes or timeout runs out.
// Before each retry it calls alive, when not nil: an error from alive (the
// process died, systemd gave up) ends the wait at once with that error.
// On timeout it returns ErrTimeout wrapped with the last real cause.
func (h HTTP) Wait(ctx context.Context, port int, timeout, interval time.Duration, alive func(context.Context) error) error {
	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last, dead error
	backoff := retry.WithMaxDuration(timeout, retry.NewConstant(interval))
	err := retry.Do(waitCtx, backoff, func(ctx context.Context) error {
		err := h.Check(ctx, port)
		if err == nil {
			return nil
		}
		if h.Permanent != nil && h.Permanent(err) {
			dead = err
			return err
		}
		// An attempt cut short by the overall deadline says nothing about
		// the instance: keep the cause of the last real attempt.
		if ctx.Err() == nil || last == nil {
			last = err
		}
		if alive != nil && ctx.Err() == nil {
			if dead = alive(ctx); dead != nil && ctx.Err() == nil {
				return dead
			}
			dead = nil
		}
		return retry.RetryableError(err)
	})
	switch {
	case err == nil:
		return nil
	case dead != nil:
		return dead
	case ctx.Err() != nil:
		return fmt.Errorf("health check: %w", ctx.Err())
	case last != nil:
		return fmt.Errorf("%w (%s): last attempt: %w", ErrTimeout, timeout, last)
	default:
		return fmt.Errorf("%w (%s): %w", ErrTimeout, timeout, err)
	}
}
