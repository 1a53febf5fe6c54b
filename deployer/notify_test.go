package deployer

import (
	"reflect"
	"testing"
	"time"
)

func TestNotifyConfig(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       *NotifyConfig
		err        string
	}{
		{"absent", "", nil, ""},
		{"defaults", "notify: {}\n", &NotifyConfig{URLEnv: "ROLLOUT_NOTIFY_URL", Format: "slack", Timeout: 5 * time.Second}, ""},
		{"telegram", "notify:\n  url_env: TG_URL\n  format: telegram\n  telegram_chat_id: \"-1001234\"\n  timeout: 2s\n",
			&NotifyConfig{URLEnv: "TG_URL", Format: "telegram", TelegramChatID: "-1001234", Timeout: 2 * time.Second}, ""},
		{"telegram channel", "notify: {format: telegram, telegram_chat_id: \"@deploys_prod\"}\n",
			&NotifyConfig{URLEnv: "ROLLOUT_NOTIFY_URL", Format: "telegram", TelegramChatID: "@deploys_prod", Timeout: 5 * time.Second}, ""},
		{"no url in the file", "notify: {url: https://hooks.slack.com/services/T/B/x}\n", nil,
			`c.yaml:7: unknown key "url" (in notify)`},
		{"bad format", "notify: {format: discord}\n", nil, `c.yaml:7: notify.format: must be slack or telegram, got "discord"`},
		{"telegram needs a chat", "notify: {format: telegram}\n", nil, "c.yaml:7: notify.telegram_chat_id: required"},
		{"bad chat", "notify: {format: telegram, telegram_chat_id: \"12; rm\"}\n", nil,
			`c.yaml:7: notify.telegram_chat_id: must be a Telegram chat id ("-100123…") or "@channelname", got "12; rm"`},
		{"chat with slack", "notify: {telegram_chat_id: \"1\"}\n", nil, "c.yaml:7: notify.telegram_chat_id: only goes with format: telegram"},
		{"bad env name", "notify: {url_env: \"MY-URL\"}\n", nil,
			`c.yaml:7: notify.url_env: must be an environment variable name (letters, digits, _), got "MY-URL"`},
		{"long timeout", "notify: {timeout: 5m}\n", nil,
			"c.yaml:7: notify.timeout: must be 100ms..1m, got 5m0s"},
		{"zero timeout", "notify: {timeout: 0s}\n", nil, "c.yaml:7: notify.timeout: must be 100ms..1m, got 0s"},
		{"not a mapping", "notify: slack\n", nil, `c.yaml:7: notify: must be a mapping of keys, got "slack"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("c.yaml", []byte(minimal+tt.yaml))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("got error %v, want %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Notify, tt.want) {
				t.Errorf("got %+v, want %+v", c.Notify, tt.want)
			}
		})
	}
}
