package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/rollout-dev/rollout/internal/secrets"
)

// privateDir is a new directory only this user can read, in memory when
// the system has a tmpfs for it, for a plaintext copy.
func privateDir() (string, error) {
	base := ""
	for _, d := range []string{os.Getenv("XDG_RUNTIME_DIR"), "/dev/shm"} {
		if fi, err := os.Stat(d); d != "" && err == nil && fi.IsDir() {
			base = d
			break
		}
	}
	dir, err := os.MkdirTemp(base, "rollout-secrets-")
	if err != nil {
		return "", err
	}
	return dir, os.Chmod(dir, 0o700)
}

func secretsEdit(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageError{fmt.Errorf("edit takes no arguments, got %q", c.Args().First())}
	}
	f, err := loadSecretsFile(c, true)
	if err != nil {
		return err
	}
	start := f.plain
	if start == nil {
		if start, err = secrets.Format(secrets.Env{}); err != nil {
			return err
		}
	}
	// The plaintext copy goes whatever happens short of SIGKILL: Ctrl-C
	// and SIGTERM cancel c.Context (main), a closed terminal sends SIGHUP.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	dir, err := privateDir()
	if err != nil {
		return fmt.Errorf("make a private directory for the plaintext: %w", err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(tmp, start, 0o600); err != nil {
		return err
	}
	for {
		if err := runEditor(c.Context, tmp); err != nil {
			return err
		}
		if c.Context.Err() != nil || len(hup) > 0 {
			return fmt.Errorf("interrupted: %s was not changed and the plaintext copy is removed", f.path)
		}
		edited, err := os.ReadFile(tmp)
		if err != nil {
			return err
		}
		if bytes.Equal(edited, start) {
			fmt.Fprintf(c.App.ErrWriter, "rollout: no changes; %s is as it was\n", f.path)
			return nil
		}
		env, perr := secrets.Parse(edited)
		if perr == nil {
			old, _ := secrets.Parse(f.plain)
			if err := f.write(edited); err != nil {
				return fmt.Errorf("write %s: %w", f.path, err)
			}
			fmt.Fprintf(c.App.ErrWriter, "rollout: %s: %s (%d variables, encrypted to %d recipients); deploy to ship it\n",
				f.path, secrets.Diff(old, env), len(env), len(f.rcpts))
			return nil
		}
		fmt.Fprintf(c.App.ErrWriter, "rollout: the secrets do not read: %v\n", perr)
		if _, ok := terminal(c.App.Reader); !ok || !askYes(c, "edit again? (no: keep the file as it was) [Y/n] ") {
			return usageError{fmt.Errorf("%s was not changed: %w", f.path, perr)}
		}
		start = nil
	}
}

// terminal is r's descriptor when r is a terminal.
func terminal(r io.Reader) (int, bool) {
	f, ok := r.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0, false
	}
	return int(f.Fd()), true
}

// askYes asks on the terminal; only an explicit "n" is no.
func askYes(c *cli.Context, q string) bool {
	fmt.Fprint(c.App.ErrWriter, q)
	line, _ := bufio.NewReader(c.App.Reader).ReadString('\n')
	return !strings.HasPrefix(strings.ToLower(strings.TrimSpace(line)), "n")
}

// runEditor runs $VISUAL or $EDITOR (default vi) on file, on the terminal.
func runEditor(ctx context.Context, file string) error {
	editor := os.Getenv("VISUAL")
	if editor == "" {
		editor = os.Getenv("EDITOR")
	}
	if editor == "" {
		editor = "vi"
	}
	// sh -c, so that EDITOR may hold arguments ("code --wait"); the file
	// is a positional parameter, never part of the command string.
	cmd := exec.Command("sh", "-c", editor+` "$1"`, "rollout-editor", file)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr // the terminal
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted; the plaintext copy is removed")
		}
		return fmt.Errorf("the editor (%s) failed: %w; nothing was changed", editor, err)
	}
	return nil
}
