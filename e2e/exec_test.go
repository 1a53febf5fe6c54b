package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rollout exec runs a command once in the current release as the app's
// user with its env, passes its output and exit status through, runs on
// every host with --all, gives a REPL a real terminal with -t (Ctrl-C
// reaches it), stops the command on the host when rollout is interrupted,
// and records each run in the history.
func TestExecInTheRelease(t *testing.T) {
	hosts := fleet.Hosts
	ctx := context.Background()
	cfg := releaseConfig(t, hosts, "")
	moveToReleases(t, cfg, hosts)
	h := hosts[0]
	cur, err := fleet.RunRoot(ctx, h, "readlink /srv/my-app/current")
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimPrefix(strings.TrimSpace(cur), "releases/")

	// The release's version, as the app's user, in its directory, with
	// its env; the output is the command's own.
	out, code := rollout(t, "exec", "-c", cfg, "--", "node", "-p", `[require("./app.json").version, require("os").userInfo().username, process.cwd(), process.env.DATABASE_URL.split(":")[0], process.env.ROLLOUT_RELEASE].join(" ")`)
	want := fmt.Sprintf("v1 nodeuser /srv/my-app/releases/%s postgres %s\n", id, id)
	if code != 0 || out != want {
		t.Errorf("exec exited %d, printed %q; want %q", code, out, want)
	}

	// Arguments reach the command as given; its exit status is rollout's.
	out, code = rollout(t, "exec", "-c", cfg, "--", "sh", "-c", `echo "$1"; echo to-stderr >&2; exit 7`, "sh", "a 'quoted' $word; id")
	if code != 7 || !strings.Contains(out, "a 'quoted' $word; id\n") || !strings.Contains(out, "to-stderr") || strings.Contains(out, "rollout:") {
		t.Errorf("exec of a failing command exited %d (want 7, nothing of rollout's):\n%s", code, out)
	}
	if out, code = rollout(t, "exec", "-c", cfg, "--", "no-such-command"); code != 127 || !strings.Contains(out, "not found") {
		t.Errorf("exec of a command that does not exist exited %d (want 127):\n%s", code, out)
	}

	// Every host, each line prefixed with it, each given all of stdin; the
	// first failure decides.
	out, code = rolloutStdin(t, "from stdin\n", "exec", "-c", cfg, "--all", "--", "sh", "-c", `read -r w; a=$(hostname -I); echo "on ${a% } $w"; case " $a" in *" `+hosts[1].Addr+` "*) exit 4 ;; esac`)
	for _, x := range hosts {
		if !strings.Contains(out, x.Addr+" | on "+x.Addr+" from stdin\n") {
			t.Errorf("exec --all does not show %s's line, with stdin:\n%s", x.Addr, out)
		}
	}
	if code != 4 || !strings.Contains(out, "rollout: "+hosts[1].Addr+": the command exited 4") {
		t.Errorf("exec --all with a command failing on %s exited %d (want 4):\n%s", hosts[1].Addr, code, out)
	}

	// What keeps it from running is rollout's exit 2 or 3, said.
	if out, code = rollout(t, "exec", "-c", cfg, "--release", "20000101000000-gone", "--", "true"); code != 3 || !strings.Contains(out, "release 20000101000000-gone is not in /srv/my-app/releases (there: "+id) {
		t.Errorf("exec --release of a release not there exited %d (want 3):\n%s", code, out)
	}
	if out, code = rollout(t, "exec", "-c", cfg, "--host", "10.99.0.1", "--", "true"); code != 2 || !strings.Contains(out, "--host 10.99.0.1 is not one of the hosts") {
		t.Errorf("exec --host of another host exited %d (want 2):\n%s", code, out)
	}
	if out, code = rollout(t, "exec", "-c", cfg, "-t", "--", "node"); code != 2 || !strings.Contains(out, "--tty needs a terminal") {
		t.Errorf("exec -t without a terminal exited %d (want 2):\n%s", code, out)
	}

	// -t: a REPL on a real terminal (script(1) gives rollout one here),
	// and Ctrl-C reaches the command, not rollout.
	repl := onTerminal(t, cfg, "node -i", "> ", "6*7\r", "process.stdout.isTTY\r", ".exit\r")
	if !strings.Contains(repl, "42") || !strings.Contains(repl, "true") {
		t.Errorf("the REPL did not answer through its terminal:\n%s", repl)
	}
	intr := onTerminal(t, cfg, `sh -c 'trap "echo got-int; exit 5" INT; echo ready; sleep 60 & wait'`, "ready", "\x03")
	if !strings.Contains(intr, "got-int") || !strings.Contains(intr, "exit=5") {
		t.Errorf("Ctrl-C on the terminal did not reach the command (want got-int and exit 5):\n%s", intr)
	}

	// rollout interrupted: the command is stopped on the host.
	cmd := exec.Command(rolloutBin, "exec", "-c", cfg, "--", "sleep", "300")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	running := func() string {
		out, _ := fleet.Run(ctx, h, "pgrep -u nodeuser -x sleep || true")
		return strings.TrimSpace(out)
	}
	waitFor(t, "sleep 300 to run on "+h.Addr, 30*time.Second, func() bool { return running() != "" })
	_ = cmd.Process.Signal(syscall.SIGINT)
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 || !strings.Contains(buf.String(), "stopped it on the host") {
		t.Errorf("exec interrupted: %v (want exit 130, saying it stopped the command):\n%s", err, buf.String())
	}
	if p := running(); p != "" {
		t.Errorf("sleep 300 still runs on %s after rollout was interrupted: %s", h.Addr, p)
	}

	// Each run is in the host's history, with its command, never the env.
	hist, _ := rollout(t, "history", "-c", cfg, "--hosts", h.Addr, "--lines", "50")
	for _, w := range []string{"$ node -p ", "to-stderr >&2; exit 7' sh 'a ", " (exit 7)", "$ sleep 300 (context canceled: stopped it on the host)"} {
		if !strings.Contains(hist, w) {
			t.Errorf("the history does not show %q:\n%s", w, hist)
		}
	}
	if strings.Contains(hist, "postgres://") {
		t.Errorf("the history shows the env:\n%s", hist)
	}
}

// onTerminal runs rollout exec -t -c cfg -- sh -c CMD under script(1),
// which gives it a terminal; once the output shows ready, it types keys,
// and returns what the terminal showed, then "exit=N".
func onTerminal(t *testing.T, cfg, command, ready string, keys ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	line := fmt.Sprintf("%s exec -c %s -t -- %s; echo exit=$?", rolloutBin, cfg, command)
	cmd := exec.CommandContext(ctx, "script", "-qfec", line, "/dev/null")
	cmd.Env = append(cmd.Environ(), "TERM=xterm")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the terminal to show "+ready, 30*time.Second, func() bool { return strings.Contains(out.String(), ready) })
	for _, k := range keys {
		if _, err := io.WriteString(stdin, k); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "rollout exec -t to end", 30*time.Second, func() bool { return strings.Contains(out.String(), "exit=") })
	_ = stdin.Close()
	_ = cmd.Wait()
	t.Logf("on the terminal:\n%s", out.String())
	return out.String()
}

// rolloutStdin runs rollout with stdin from a pipe.
func rolloutStdin(t *testing.T, stdin string, args ...string) (string, int) {
	t.Helper()
	return rolloutWith(t, "", nil, strings.NewReader(stdin), args...)
}
