package deployer

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rollout-dev/rollout/sshexec"
)

// fakeStreamer answers each command with one line naming it, and records
// the commands.
type fakeStreamer struct {
	mu   sync.Mutex
	cmds []string
}

func (s *fakeStreamer) Stream(_ context.Context, cmd string, stdout, _ io.Writer) error {
	s.mu.Lock()
	s.cmds = append(s.cmds, cmd)
	s.mu.Unlock()
	if strings.Contains(cmd, "missing.log") {
		return &sshexec.ExitError{Code: 1} // tail of a file that is not there
	}
	name := strings.Fields(strings.TrimPrefix(strings.TrimPrefix(cmd, "sudo -n "), "sh -c '"))[0]
	_, err := io.WriteString(stdout, name+" said hello")
	return err
}

func TestLogsPrefixesEveryLineAndQuotes(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(`app: my-app
hosts: [web1]
ssh: {user: deploy}
ports: [3000, 3001]
nginx: {upstream_file: /etc/nginx/conf.d/up.conf, upstream: my_app}
logs: ["/var/log/my-app/app-{port}.log", /var/log/my-app/missing.log]
`))
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeStreamer{}
	var b strings.Builder
	o := LogsOptions{Ports: []int{3001}, Lines: 5, Since: "10 min ago"}
	if err := o.Validate(cfg); err != nil {
		t.Fatal(err)
	}
	if err := Logs(testCtx(t), cfg, "web1", nil, s, o, NewLineWriter(&b)); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"sudo -n journalctl --no-pager -o short-iso -n 5 -u my-app@3001 --since '10 min ago'",
		"sudo -n sh -c 'tail -n 5 -- /var/log/my-app/app-3001.log 2>/dev/null'",
		"sudo -n sh -c 'tail -n 5 -- /var/log/my-app/missing.log 2>/dev/null'",
	}
	if !slices.Equal(s.cmds, want) {
		t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(s.cmds, "\n"), strings.Join(want, "\n"))
	}
	if got := b.String(); got != "web1:3001 journalctl said hello\nweb1:3001 tail said hello\n" {
		t.Errorf("output %q", got)
	}
	if err := (LogsOptions{Ports: []int{4000}, Lines: 5}).Validate(cfg); err == nil {
		t.Error("a port that is not an instance was accepted")
	}
	if err := (LogsOptions{Lines: 5, Since: "'; reboot"}).Validate(cfg); err == nil {
		t.Error("a --since with shell characters was accepted")
	}
}
