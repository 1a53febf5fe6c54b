// Package notify posts a deploy's summary to a chat webhook: Slack's
// incoming webhooks (and the many services that take the same {"text"}
// payload) or Telegram's Bot API sendMessage.
//
// The webhook URL is a secret (it carries the Slack path key or the bot
// token): it never appears in an error or a message from this package. A
// post is bounded by its timeout; callers treat a failure as a warning.
// It does not decide when to notify or read configuration.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Formats of the payload.
const (
	Slack    = "slack"    // {"text": ...}
	Telegram = "telegram" // {"chat_id": ..., "text": ...}
)

// Webhook is one receiver.
type Webhook struct {
	// URL is where to POST, e.g. https://hooks.slack.com/services/… or
	// https://api.telegram.org/bot<TOKEN>/sendMessage. Secret.
	URL    string
	Format string
	// ChatID is Telegram's chat_id.
	ChatID string
	// Timeout bounds the whole post: connecting, sending, the answer.
	Timeout time.Duration
	// Client sends the request; nil means a client that never follows
	// redirects (the payload goes only where it was told to).
	Client *http.Client
}

// Send posts text. Its error never contains the URL.
func (w Webhook) Send(ctx context.Context, text string) error {
	err := w.send(ctx, text)
	if err == nil {
		return nil
	}
	return redacted{err: err, secret: w.URL}
}

func (w Webhook) send(ctx context.Context, text string) error {
	var payload any
	switch w.Format {
	case Slack, "":
		payload = struct {
			Text string `json:"text"`
		}{text}
	case Telegram:
		payload = struct {
			ChatID                string `json:"chat_id"`
			Text                  string `json:"text"`
			DisableWebPagePreview bool   `json:"disable_web_page_preview"`
		}{w.ChatID, text, true}
	default:
		return fmt.Errorf("notify: unknown format %q", w.Format)
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	if w.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("notify %s webhook: %w", w.name(), err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "rollout")
	client := w.Client
	if client == nil {
		client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = "[redacted]"
		}
		if ctx.Err() != nil {
			return fmt.Errorf("notify %s webhook: no answer within %s: %w", w.name(), w.Timeout, ctx.Err())
		}
		return fmt.Errorf("notify %s webhook: %w", w.name(), err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
	if resp.StatusCode/100 != 2 {
		msg := strings.Join(strings.Fields(string(snippet)), " ")
		if msg != "" {
			msg = ": " + msg
		}
		return fmt.Errorf("notify %s webhook: answered %s%s", w.name(), resp.Status, msg)
	}
	return nil
}

func (w Webhook) name() string {
	if w.Format == "" {
		return Slack
	}
	return w.Format
}

// redacted hides the webhook URL, and each of its secret parts, in an
// error's text (net/http puts the whole URL in its errors).
type redacted struct {
	err    error
	secret string
}

func (r redacted) Error() string { return Redact(r.err.Error(), r.secret) }
func (r redacted) Unwrap() error { return r.err }

// Redact replaces rawURL, and its path, query and user info, in s.
func Redact(s, rawURL string) string {
	if rawURL == "" {
		return s
	}
	secrets := []string{rawURL}
	if u, err := url.Parse(rawURL); err == nil {
		secrets = append(secrets, u.String(), u.Redacted(), u.EscapedPath(), u.Path, u.RawQuery, u.User.String())
		for _, part := range strings.Split(u.Path, "/") {
			// Path segments long enough to be keys or tokens.
			if len(part) >= 8 {
				secrets = append(secrets, part, url.PathEscape(part))
			}
		}
	}
	for _, sec := range secrets {
		if len(sec) > 1 {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}
