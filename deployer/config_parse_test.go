package deployer

import "testing"

// TestParseConfigKeys checks that every section reports the keys it does
// not know, with a suggestion when one is close, and the keys given twice.
func TestParseConfigKeys(t *testing.T) {
	tests := []struct {
		name string
		add  string // appended to minimal, from line 7 (inside nginx:)
		want string
	}{
		{name: "top level", add: "parralel: 2\n",
			want: `rollout.yaml:7: unknown key "parralel" (in the top level); did you mean "parallel"?`},
		{name: "top level, a grouped key", add: "base_prot: 3000\n",
			want: `rollout.yaml:7: unknown key "base_prot" (in the top level); did you mean "base_port"?`},
		{name: "top level, a section", add: "notfy: {}\n",
			want: `rollout.yaml:7: unknown key "notfy" (in the top level); did you mean "notify"?`},
		{name: "ssh", add: "ssh:\n  usr: deploy\n",
			want: `rollout.yaml:8: unknown key "usr" (in ssh); did you mean "user"?`},
		{name: "ssh, nothing close", add: "ssh:\n  password: hunter2\n",
			want: `rollout.yaml:8: unknown key "password" (in ssh)`},
		{name: "nginx", add: "  pidfile: /run/nginx.pid\n",
			want: `rollout.yaml:7: unknown key "pidfile" (in nginx); did you mean "pid_file"?`},
		{name: "health", add: "health:\n  stauts: 204\n",
			want: `rollout.yaml:8: unknown key "stauts" (in health); did you mean "status"?`},
		{name: "hooks", add: "hooks:\n  befor: [make]\n",
			want: `rollout.yaml:8: unknown key "befor" (in hooks); did you mean "before"?`},
		{name: "notify", add: "notify:\n  formt: slack\n",
			want: `rollout.yaml:8: unknown key "formt" (in notify); did you mean "format"?`},
		{name: "notify, a key of another section", add: "notify:\n  path: /x\n",
			want: `rollout.yaml:8: unknown key "path" (in notify)`},
		{name: "setup", add: "setup:\n  exec_stat: /usr/bin/node\n",
			want: `rollout.yaml:8: unknown key "exec_stat" (in setup); did you mean "exec_start"?`},
		{name: "setup, nothing close", add: "setup:\n  colour: blue\n",
			want: `rollout.yaml:8: unknown key "colour" (in setup)`},
		{name: "several, in line order", add: "health:\n  timout: 5s\nssh:\n  prot: 22\n",
			want: "rollout.yaml:8: unknown key \"timout\" (in health); did you mean \"timeout\"?\n" +
				`rollout.yaml:10: unknown key "prot" (in ssh); did you mean "port"?`},

		{name: "twice at the top level", add: "parallel: 2\nparallel: 3\n",
			want: `rollout.yaml:8: parallel: given twice (first on line 7)`},
		{name: "twice in ssh", add: "ssh:\n  port: 22\n  port: 2222\n",
			want: `rollout.yaml:9: ssh.port: given twice (first on line 8)`},
		{name: "twice in nginx", add: "  upstream: other\n",
			want: `rollout.yaml:7: nginx.upstream: given twice (first on line 6)`},
		{name: "twice in notify", add: "notify:\n  timeout: 2s\n  timeout: 3s\n",
			want: `rollout.yaml:9: notify.timeout: given twice (first on line 8)`},
		{name: "twice in setup", add: "setup:\n  listen: 80\n  listen: 8080\n",
			want: `rollout.yaml:9: setup.listen: given twice (first on line 8)`},
		{name: "a grouped key twice", add: "ports: [4000]\n",
			want: `rollout.yaml:7: ports: given twice (first on line 3)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := minimal + tt.add
			cfg, err := ParseConfig("rollout.yaml", []byte(data))
			if err == nil {
				t.Fatalf("no error, config %+v; want\n%s", cfg, tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("config:\n%s\ngot:\n%s\nwant:\n%s", data, got, tt.want)
			}
		})
	}
}

// TestParseConfigSections checks that the sections' values land where
// they belong.
func TestParseConfigSections(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(minimal+"notify: {format: telegram, telegram_chat_id: \"-100\"}\n"+
		"setup:\n  listen: 8080\n  restart_sec: 5s\nssh: {jump: \"ops@bastion:2200\", port: 2222}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Notify == nil || cfg.Notify.Format != NotifyTelegram || cfg.Notify.TelegramChatID != "-100" || cfg.Notify.URLEnv != "ROLLOUT_NOTIFY_URL" {
		t.Errorf("notify: %+v", cfg.Notify)
	}
	if cfg.Setup.Listen != 8080 || cfg.Setup.RestartDelay.String() != "5s" || cfg.Setup.User != "" {
		t.Errorf("setup: %+v", cfg.Setup)
	}
	if cfg.SSH.Jump != "ops@bastion:2200" || cfg.SSH.Port != 2222 || cfg.SSH.User != "" {
		t.Errorf("ssh: %+v", cfg.SSH)
	}
	if noNotify, err := ParseConfig("rollout.yaml", []byte(minimal)); err != nil || noNotify.Notify != nil {
		t.Errorf("without notify: %v, %+v", err, noNotify.Notify)
	}
}

func TestParseConfigBadJump(t *testing.T) {
	_, err := ParseConfig("rollout.yaml", []byte(minimal+"ssh:\n  jump: \"bastion, ops@b:99999\"\n"))
	want := `rollout.yaml:8: ssh.jump: bastion " ops@b:99999": must be a port 1..65535, got 99999`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}
