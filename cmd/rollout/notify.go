package main

import (
	"context"
	"fmt"
	"io"

	"github.com/rollout-dev/rollout/deployer"
	"github.com/rollout-dev/rollout/internal/notify"
)

// notifyDeploy posts the deploy's summary when the config has a notify:
// section, on success and on failure. It never changes the deploy's
// result: every problem is a warning on stderr, and the post is bounded by
// notify.timeout. The URL comes from the environment variable the config
// names, never from the file, and never appears in what is printed.
func notifyDeploy(ctx context.Context, cfg *deployer.Config, rep *deployer.Report, deployErr error, getenv func(string) string, stderr io.Writer) {
	w, ok := webhook(cfg, getenv, stderr)
	if !ok {
		return
	}
	text := notify.Redact(notify.Message(cfg.App, rep, deployErr, runURL(getenv)), w.URL)
	// Sent even after Ctrl-C: the timeout alone bounds it.
	if err := w.Send(context.WithoutCancel(ctx), text); err != nil {
		fmt.Fprintf(stderr, "rollout: warning: %v (the deploy's result is unchanged)\n", err)
	}
}

// webhook is the notify: section's receiver, its URL from the environment;
// false (with a warning when the variable is empty) when there is none.
func webhook(cfg *deployer.Config, getenv func(string) string, stderr io.Writer) (notify.Webhook, bool) {
	n := cfg.Notify
	if n == nil {
		return notify.Webhook{}, false
	}
	url := getenv(n.URLEnv)
	if url == "" {
		fmt.Fprintf(stderr, "rollout: warning: notify: $%s is empty: no notification sent\n", n.URLEnv)
		return notify.Webhook{}, false
	}
	return notify.Webhook{URL: url, Format: n.Format, ChatID: n.TelegramChatID, Timeout: n.Timeout}, true
}

// runURL is the GitHub Actions run, when rollout runs in one.
func runURL(getenv func(string) string) string {
	server, repo, id := getenv("GITHUB_SERVER_URL"), getenv("GITHUB_REPOSITORY"), getenv("GITHUB_RUN_ID")
	if server == "" || repo == "" || id == "" {
		return ""
	}
	return server + "/" + repo + "/actions/runs/" + id
}
