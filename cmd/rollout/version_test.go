package main

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

func TestVersionCommand(t *testing.T) {
	out, errOut, code := runCLI(t, "version")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := "rollout " + version + " (" + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	if out != want {
		t.Errorf("got %q, want %q", out, want)
	}
}

func TestCompletion(t *testing.T) {
	tests := []struct {
		shell string
		want  string
	}{
		{"bash", "complete -o bashdefault -o default -F _rollout_complete rollout"},
		{"zsh", "compdef _rollout rollout"},
		{"fish", "complete -r -c rollout -n '__fish_rollout_no_subcommand' -a 'deploy'"},
	}
	for _, tt := range tests {
		t.Run(tt.shell, func(t *testing.T) {
			out, errOut, code := runCLI(t, "completion", tt.shell)
			if code != exitOK || !strings.Contains(out, tt.want) {
				t.Fatalf("exit %d, stderr %q; output lacks %q:\n%s", code, errOut, tt.want, out)
			}
		})
	}
	// The bash script is valid bash.
	if bash, err := exec.LookPath("bash"); err == nil {
		out, _, _ := runCLI(t, "completion", "bash")
		cmd := exec.Command(bash, "-n")
		cmd.Stdin = strings.NewReader(out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("bash -n: %v\n%s", err, b)
		}
	}
	for _, args := range [][]string{{"completion"}, {"completion", "tcsh"}, {"completion", "bash", "zsh"}} {
		if _, errOut, code := runCLI(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, errOut)
		}
	}
}

// The shell scripts call rollout with --generate-bash-completion; what it
// answers is what the user sees.
func TestCompletionCandidates(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--generate-bash-completion"}, []string{"deploy", "plan", "version", "completion"}},
		{[]string{"deploy", "--dr", "--generate-bash-completion"}, []string{"--dry-run", "--drain-timeout"}},
	}
	// urfave/cli reads os.Args to tell flags from commands here.
	defer func(a []string) { os.Args = a }(os.Args)
	for _, tt := range tests {
		os.Args = append([]string{"rollout"}, tt.args...)
		out, errOut, code := runCLI(t, tt.args...)
		if code != exitOK {
			t.Fatalf("%v: exit %d: %s", tt.args, code, errOut)
		}
		got := strings.Fields(out)
		for _, w := range tt.want {
			if !contains(got, w) {
				t.Errorf("%v: candidates %v lack %q", tt.args, got, w)
			}
		}
	}
}

// Every command's --help has an Examples section.
func TestHelpHasExamples(t *testing.T) {
	app := newApp(nil, nil)
	for _, c := range app.Commands {
		if c.Name == "help" {
			continue
		}
		t.Run(c.Name, func(t *testing.T) {
			out, errOut, code := runCLI(t, c.Name, "--help")
			_, examples, found := strings.Cut(out, "Examples:\n")
			if code != exitOK || !found || !strings.Contains(examples, "rollout "+c.Name) {
				t.Errorf("exit %d (%s); help lacks examples:\n%s", code, errOut, out)
			}
		})
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
