package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The man page carries every command with its description and examples,
// every flag, and the exit code table; it is plain ASCII roff that groff
// reads without a warning.
func TestManPage(t *testing.T) {
	page, errOut, code := runCLI(t, "man")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for i, r := range page {
		if r > 127 {
			t.Fatalf("non-ASCII %q at %d", r, i)
		}
	}
	app := newApp(os.Stdout, os.Stderr)
	for _, cmd := range app.Commands {
		if !strings.Contains(page, `.SS "rollout `+roff(cmd.Name)+`"`) {
			t.Errorf("no section for %s", cmd.Name)
		}
		for _, line := range strings.Split(cmd.Description, "\n") {
			if strings.HasPrefix(line, "   rollout ") && !strings.Contains(page, roff(strings.TrimPrefix(line, "   "))) {
				t.Errorf("%s: the example %q is missing", cmd.Name, line)
			}
		}
		for _, f := range cmd.Flags {
			if !strings.Contains(page, `\fB`+roff("--"+f.Names()[0])+`\fR`) && len(f.Names()[0]) > 1 {
				t.Errorf("%s: flag --%s missing", cmd.Name, f.Names()[0])
			}
		}
	}
	for _, e := range exitCodes {
		if !strings.Contains(page, roff(e.meaning)) {
			t.Errorf("exit code %d missing", e.code)
		}
	}
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Log("groff is not installed: the page was checked for ASCII only")
		return
	}
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(page)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("groff: %v\n%s", err, stderr.String())
	}
}

// Completion offers a command's flags after the command, and the commands
// at the top.
func TestCompletionOffersCommandsAndFlags(t *testing.T) {
	// urfave/cli's default completion reads os.Args, not the arguments.
	saved := os.Args
	t.Cleanup(func() { os.Args = saved })
	os.Args = []string{"rollout", "--generate-bash-completion"}
	out, _, _ := runCLI(t, "deploy", "--generate-bash-completion")
	for _, want := range []string{"--version", "--dry-run", "--artifact", "--scripts"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("after rollout deploy: no %s in\n%s", want, out)
		}
	}
	out, _, _ = runCLI(t, "--generate-bash-completion")
	for _, want := range []string{"deploy", "plan", "status", "secrets"} {
		if !strings.Contains(out, want) {
			t.Errorf("at the top: no %s in\n%s", want, out)
		}
	}
	out, _, _ = runCLI(t, "secrets", "--generate-bash-completion")
	if !strings.Contains(out, "keygen") || !strings.Contains(out, "edit") {
		t.Errorf("after rollout secrets: %s", out)
	}
}
