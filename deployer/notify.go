package deployer

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// NotifyConfig is the notify: section: where a summary is posted after
// each deploy. The webhook URL is a secret (a Slack webhook URL or a
// Telegram bot token), so the file only names the environment variable
// that holds it.
type NotifyConfig struct {
	URLEnv         string // the environment variable holding the URL
	Format         string // "slack" ({"text"}) or "telegram" (sendMessage)
	TelegramChatID string
	Timeout        time.Duration // the whole post, connection included
}

// Notify formats.
const (
	NotifySlack    = "slack"
	NotifyTelegram = "telegram"
)

func defaultNotify() *NotifyConfig {
	return &NotifyConfig{URLEnv: "ROLLOUT_NOTIFY_URL", Format: NotifySlack, Timeout: 5 * time.Second}
}

var (
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	chatIDRE  = regexp.MustCompile(`^(-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{4,31})$`)
)

// notifySection is the notify: section; without one c.Notify stays nil.
func notifySection(c *Config) field {
	n := defaultNotify()
	fields := []field{
		str("url_env", &n.URLEnv),
		str("format", &n.Format),
		str("telegram_chat_id", &n.TelegramChatID),
		duration("timeout", &n.Timeout),
	}
	return one("notify", func(p *parser, key string) {
		if p.fields(key, fields) {
			c.Notify = n
		}
	})
}

func (n *NotifyConfig) problems(check func(key string, err error, deps ...string)) {
	if n == nil {
		return
	}
	check("notify.url_env", match(envNameRE, n.URLEnv, "an environment variable name (letters, digits, _)"))
	switch n.Format {
	case NotifySlack:
		if n.TelegramChatID != "" {
			check("notify.telegram_chat_id", errors.New(`only goes with format: telegram`), "notify.format")
		}
	case NotifyTelegram:
		check("notify.telegram_chat_id", match(chatIDRE, n.TelegramChatID, `a Telegram chat id ("-100123…") or "@channelname"`), "notify.format")
	default:
		check("notify.format", fmt.Errorf("must be slack or telegram, got %s", quoteValue(n.Format)))
	}
	// A notification never holds up the deploy for long.
	check("notify.timeout", within(n.Timeout, 100*time.Millisecond, time.Minute))
}
