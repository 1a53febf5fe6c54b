package deployer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollout-dev/rollout/internal/testenv"
)

// Every exit code a script declares is the Go side's constant of the same
// name, and every constant is declared by some script.
func TestScriptExitCodesAgree(t *testing.T) {
	goSide := map[string]int{"EX_NGINX_TEST": exitNginxTest, "EX_OLD_WORKERS": exitOldWorkers, "EX_CHANGED": exitChanged, "EX_HAPROXY": exitHAProxy, "EX_LOCK_LOST": exitLockLost,
		"EX_UNIT_MISSING": exitUnitMissing, "EX_NGINX_BROKEN": exitNginxBroken, "EX_UPSTREAM_UNREADABLE": exitUpstreamUnreadable,
		"EX_CHECKSUM": exitChecksum, "EX_PREPARE": exitPrepare, "EX_SHARED": exitShared, "EX_NO_RELEASE": exitNoRelease,
		"EX_LOG_UNREADABLE": exitLogUnreadable, "EX_STALE": exitHelperStale, "EX_REFUSED": exitRefused, "EX_SUDOERS": exitSudoers, "EX_SPECIAL": exitSpecial, "EX_NO_ENVFILE": exitNoEnvFile,
		"EX_HAPROXY_DOWN": exitHAProxyDown}
	declRE := regexp.MustCompile(`(?m)^readonly (EX_[A-Z_]+)=([0-9]+)$`)
	seen := map[string]bool{}
	files, err := fs.Glob(scriptFiles, "scripts/*.sh")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		b, _ := scriptFiles.ReadFile(f)
		for _, m := range declRE.FindAllStringSubmatch(string(b), -1) {
			code, _ := strconv.Atoi(m[2])
			want, ok := goSide[m[1]]
			if !ok || want != code {
				t.Errorf("%s: %s=%d, the Go side has %d (known: %v)", f, m[1], code, want, ok)
			}
			seen[m[1]] = true
		}
	}
	for name := range goSide {
		if !seen[name] {
			t.Errorf("%s is declared by no script", name)
		}
	}
}

// runScript runs a script locally the way a host would, with its
// positional parameters and stdin.
func runScript(t *testing.T, name, stdin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script(name, false, privilege{}, args...))
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String() + errb.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String() + errb.String(), 0
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestWriteUpstreamScript(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "up.conf")
	const before, after = "upstream a {\n    server 127.0.0.1:3000;\n}\n", "upstream a {\n    server 127.0.0.1:3000 down;\n}\n"
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A master without workers: nothing to wait for after the reload.
	sleep := exec.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleep.Process.Kill(); sleep.Wait() })
	pidFile := filepath.Join(dir, "nginx.pid")
	os.WriteFile(pidFile, []byte(strconv.Itoa(sleep.Process.Pid)+"\n"), 0o644)
	reloaded := filepath.Join(dir, "reloaded")
	reload := "touch " + reloaded

	t.Run("changed by someone else", func(t *testing.T) {
		write(before)
		out, code := runScript(t, "write-upstream", sha("something else")+"\n"+after, file, "true", reload, pidFile, "1000")
		if code != exitChanged || readFile(t, file) != before || !strings.Contains(out, "changed by someone else") {
			t.Errorf("exit %d, %q; file %q", code, out, readFile(t, file))
		}
	})
	t.Run("config test fails", func(t *testing.T) {
		write(before)
		os.Remove(reloaded)
		out, code := runScript(t, "write-upstream", sha(before)+"\n"+after, file, "echo bad config; false", reload, pidFile, "1000")
		if code != exitNginxTest || readFile(t, file) != before || !strings.Contains(out, "bad config") {
			t.Errorf("exit %d, %q; file %q", code, out, readFile(t, file))
		}
		if _, err := os.Stat(reloaded); err == nil {
			t.Error("reloaded after a failed test")
		}
	})
	t.Run("written and reloaded", func(t *testing.T) {
		write(before)
		os.Remove(reloaded)
		out, code := runScript(t, "write-upstream", sha(before)+"\n"+after, file, "true", reload, pidFile, "1000")
		if code != 0 || out != "" || readFile(t, file) != after {
			t.Errorf("exit %d, %q; file %q", code, out, readFile(t, file))
		}
		if readFile(t, filepath.Join(dir, ".rollout", "up.conf.prev")) != before {
			t.Error("the previous file was not kept in .rollout/")
		}
		if _, err := os.Stat(reloaded); err != nil {
			t.Error("not reloaded")
		}
	})
	testenv.NeedCommand(t, "ss")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	t.Run("drained", func(t *testing.T) {
		write(before)
		out, code := runScript(t, "write-upstream", sha(before)+"\n"+after, file, "true", "true", pidFile, "1000", port)
		if code != 0 || out != "drained 0\n" {
			t.Errorf("exit %d, %q", code, out)
		}
	})
	t.Run("busy at the drain timeout", func(t *testing.T) {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		write(before)
		t0 := time.Now()
		out, code := runScript(t, "write-upstream", sha(before)+"\n"+after, file, "true", "true", pidFile, "300", port)
		var ms, open int
		if n, _ := fmt.Sscanf(out, "busy %d %d", &ms, &open); code != 0 || n != 2 || open != 1 || ms < 300 {
			t.Errorf("exit %d, %q, want busy after 300ms with 1 connection open", code, out)
		}
		if time.Since(t0) > 5*time.Second {
			t.Errorf("took %s", time.Since(t0))
		}
		// On a balancer host of its own ("-"): the reload and the old
		// workers only; the instance's connections are not its to count.
		write(before)
		out, code = runScript(t, "write-upstream", sha(before)+"\n"+after, file, "true", "true", pidFile, "-", port)
		if code != 0 || out != "drained 0\n" || readFile(t, file) != after {
			t.Errorf("balancer side: exit %d, %q", code, out)
		}
		// On the app host behind balancers (no file): only the wait,
		// which sees the connection, and nothing read or written.
		write(before)
		out, code = runScript(t, "write-upstream", "", "", "", "", "", "300", port)
		if n, _ := fmt.Sscanf(out, "busy %d %d", &ms, &open); code != 0 || n != 2 || open != 1 || readFile(t, file) != before {
			t.Errorf("app host side: exit %d, %q", code, out)
		}
	})
}

// haproxy.sh against a fake socat that answers as HAProxy's runtime API
// does, from a state file: a server in maintenance is never readied, a
// socket below level admin is refused, and a drain waits for sessions.
func TestHAProxyScript(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	state := "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight\n" +
		"3 app 1 web1-3000 10.0.0.5 2 0 1 1\n3 app 2 web1-3001 10.0.0.5 0 1 1 1\n"
	os.WriteFile(filepath.Join(dir, "state"), []byte(state), 0o644)
	os.WriteFile(filepath.Join(dir, "level"), []byte("admin\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "pid"), []byte("41\n"), 0o644)
	// The fake: the command on stdin; "set server" is logged.
	fake := `#!/bin/sh
read -r cmd
case $cmd in
"show cli level") cat "$D/level" ;;
"show info") printf 'Name: HAProxy\nPid: %s\nStopping: 0\n' "$(cat "$D/pid")" ;;
"show servers state app") cat "$D/state" ;;
"show servers state"*) echo "Can't find backend." ;;
"show stat") echo "app,web1-3000,0,0,0,0" ;;
"set server"*) printf '%s\n' "$cmd" | sed 's/; /\n/g' >>"$D/log" ;;
esac
`
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	os.WriteFile(filepath.Join(bin, "socat"), []byte(fake), 0o755)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	t.Setenv("D", dir)

	out, code := runScript(t, "haproxy", "", sock, "app", "1000", "check")
	if code != 0 || out != "pid 41\n"+state {
		t.Errorf("check: exit %d, %q", code, out)
	}
	out, code = runScript(t, "haproxy", "", sock, "nope", "1000", "state")
	if code != exitHAProxy || !strings.Contains(out, "Can't find backend") {
		t.Errorf("a missing backend: exit %d, %q", code, out)
	}
	out, code = runScript(t, "haproxy", "", sock, "app", "1000", "apply", "pid:41", "ready:web1-3000", "drain:web1-3000")
	if log, _ := os.ReadFile(filepath.Join(dir, "log")); code != 0 || !strings.HasPrefix(out, "drained ") || !strings.HasSuffix(out, "\npid 41\n"+state) ||
		string(log) != "set server app/web1-3000 state ready\nset server app/web1-3000 state drain\n" {
		t.Errorf("apply: exit %d, %q, log %q", code, out, log)
	}
	os.Remove(filepath.Join(dir, "log"))
	// Another process than the one rollout read (reloaded): nothing is
	// set, and the new process's state comes back.
	os.WriteFile(filepath.Join(dir, "pid"), []byte("57\n"), 0o644)
	out, code = runScript(t, "haproxy", "", sock, "app", "1000", "apply", "pid:41", "drain:web1-3000")
	if _, err := os.Stat(filepath.Join(dir, "log")); code != 0 || out != "restarted\npid 57\n"+state || err == nil {
		t.Errorf("apply on a reloaded HAProxy: exit %d, %q; something was set: %v", code, out, err == nil)
	}
	out, code = runScript(t, "haproxy", "", sock, "app", "1000", "apply", "drain:web1-3000", "ready:web1-3001")
	if _, err := os.Stat(filepath.Join(dir, "log")); code != exitHAProxy || !strings.Contains(out, "web1-3001 is in maintenance") || err == nil {
		t.Errorf("readying a server in maintenance: exit %d, %q; something was set: %v", code, out, err == nil)
	}
	// 0x04 ("disabled" in haproxy.cfg, then readied) is no maintenance.
	os.WriteFile(filepath.Join(dir, "state"), []byte(strings.Replace(state, "web1-3001 10.0.0.5 0 1", "web1-3001 10.0.0.5 0 4", 1)), 0o644)
	out, code = runScript(t, "haproxy", "", sock, "app", "1000", "apply", "pid:57", "ready:web1-3001")
	if log, _ := os.ReadFile(filepath.Join(dir, "log")); code != 0 || string(log) != "set server app/web1-3001 state ready\n" {
		t.Errorf("readying a server with admin state 4: exit %d, %q, log %q", code, out, log)
	}
	// Nothing at the socket: HAProxy down, a code of its own.
	if out, code := runScript(t, "haproxy", "", filepath.Join(dir, "none.sock"), "app", "1000", "apply", "pid:57", "drain:web1-3000"); code != exitHAProxyDown || !strings.Contains(out, "is not a socket") {
		t.Errorf("no socket: exit %d, %q", code, out)
	}
	os.WriteFile(filepath.Join(dir, "level"), []byte("operator\n"), 0o644)
	out, code = runScript(t, "haproxy", "", sock, "app", "1000", "check")
	if code != exitHAProxy || !strings.Contains(out, "at level operator, not admin") {
		t.Errorf("level operator: exit %d, %q", code, out)
	}
}

func TestLockScripts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "my-app")
	out, _ := runScript(t, "lock-acquire", `{"token":"abc"}`+"\n", dir, "60", "false")
	if out != "acquired\n" {
		t.Fatalf("acquire: %q", out)
	}
	out, _ = runScript(t, "lock-acquire", `{"token":"def"}`+"\n", dir, "60", "true")
	if st, ok, err := parseLockState(out, time.Minute); err != nil || ok || !st.Held || st.Stale || st.Holder == nil || st.Holder.Token != "abc" {
		t.Fatalf("second acquire: %q -> %+v %v %v", out, st, ok, err)
	}
	if _, code := runScript(t, "lock-refresh", "", dir, "abc"); code != 0 {
		t.Errorf("refresh by the holder: exit %d", code)
	}
	if _, code := runScript(t, "lock-refresh", "", dir, "def"); code != exitLockLost {
		t.Errorf("refresh by another: exit %d, want %d", code, exitLockLost)
	}
	runScript(t, "lock-release", "", dir, "def") // not the holder: nothing happens
	if out, _ := runScript(t, "lock-status", "", dir); !strings.HasPrefix(out, "held ") {
		t.Errorf("status after another's release: %q", out)
	}
	runScript(t, "lock-release", "", dir, "abc")
	if out, _ := runScript(t, "lock-status", "", dir); out != "free\n" {
		t.Errorf("status after release: %q", out)
	}

	// A fresh lock whose holder is known to be dead is taken over at once,
	// naming the previous holder; another's token takes nothing.
	runScript(t, "lock-acquire", `{"token":"abc","pid":7}`+"\n", dir, "60", "false")
	out, _ = runScript(t, "lock-acquire", `{"token":"ghi"}`+"\n", dir, "60", "false", "zzz")
	if _, ok, _ := parseLockState(out, time.Minute); ok {
		t.Fatalf("took over with the wrong token: %q", out)
	}
	out, _ = runScript(t, "lock-acquire", `{"token":"ghi"}`+"\n", dir, "60", "false", "abc")
	st, ok, err := parseLockState(out, time.Minute)
	if err != nil || !ok || st.Holder == nil || st.Holder.Token != "abc" || st.Holder.PID != 7 {
		t.Fatalf("take over: %q -> %+v %v %v", out, st, ok, err)
	}
	if out, _ := runScript(t, "lock-status", "", dir); !strings.Contains(out, `"ghi"`) {
		t.Errorf("status after the take over: %q", out)
	}
}

// A holder of this machine and boot whose process is gone is dead; one
// that runs, or of another machine, is not.
func TestLockHolderDeadHere(t *testing.T) {
	host, _ := os.Hostname()
	if bootID() == "" {
		testenv.Skip(t, "no boot id on this system")
	}
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		info LockInfo
		dead bool
	}{
		{LockInfo{From: host, BootID: bootID(), PID: gone.Process.Pid}, true},
		{LockInfo{From: host, BootID: bootID(), PID: os.Getppid()}, false},
		{LockInfo{From: host, BootID: "another-boot", PID: gone.Process.Pid}, false},
		{LockInfo{From: "another-machine", BootID: bootID(), PID: gone.Process.Pid}, false},
		{LockInfo{From: host, PID: gone.Process.Pid}, false},
	} {
		if got := tt.info.deadHere(); got != tt.dead {
			t.Errorf("%+v: dead here %v, want %v", tt.info, got, tt.dead)
		}
	}
}

func TestSections(t *testing.T) {
	got := sections([]byte("ignored\n@@rollout@@ a\none\ntwo\n@@rollout@@ b\n@@rollout@@ c\nthree"))
	if len(got) != 3 || got["a"] != "one\ntwo\n" || got["b"] != "" || got["c"] != "three" {
		t.Errorf("sections %q", got)
	}
}

// host-watch.sh's json_string makes valid JSON of any text: quotes,
// backslashes, newlines and every other control character.
func TestHostWatchJSONString(t *testing.T) {
	b, err := scriptFiles.ReadFile("scripts/host-watch.sh")
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	start := strings.Index(src, "json_string() {")
	end := strings.Index(src[start:], "\n}\n")
	if start < 0 || end < 0 {
		t.Fatal("no json_string in host-watch.sh")
	}
	fn := src[start : start+end+3]
	in := "a \"quoted\" \\path\\ \x01\x02\x1b[31mred\x7f\r\nnext\tline ❌"
	out, err := exec.Command("sh", "-c", fn+`json_string "$1"`, "sh", in).Output()
	if err != nil {
		t.Fatal(err)
	}
	var got string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%q is not a JSON string: %v", out, err)
	}
	if want := "a \"quoted\" \\path\\ [31mred\x7f  next line ❌"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// drained.sh replaces the record with a whole list only: a write cut short
// (a lost connection) or an empty one leaves it as it was.
func TestDrainedScript(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state", "drained.json")
	if out, code := runScript(t, "drained", "", file, "read"); code != 0 || out != "" {
		t.Fatalf("read of no record: %d %q", code, out)
	}
	whole := `[{"port":3001,"user":"ann","from":"laptop","time":"2026-12-06T14:02:00Z"}]` + "\n"
	if out, code := runScript(t, "drained", whole, file, "write"); code != 0 {
		t.Fatalf("write: %d %s", code, out)
	}
	for _, cut := range []string{"", whole[:20], strings.TrimSuffix(whole, "\n"), "nul"} {
		if out, code := runScript(t, "drained", cut, file, "write"); code != 1 || !strings.Contains(out, "unchanged") {
			t.Errorf("write of %q: %d %s", cut, code, out)
		}
	}
	if out, code := runScript(t, "drained", "", file, "read"); code != 0 || out != whole {
		t.Errorf("read after refused writes: %d %q", code, out)
	}
	if _, code := runScript(t, "drained", "null\n", file, "write"); code != 0 {
		t.Errorf("write of null: %d", code)
	}
	if matches, _ := filepath.Glob(filepath.Dir(file) + "/*.tmp"); len(matches) != 0 {
		t.Errorf("left behind: %v", matches)
	}
}

// hostWatch is host-watch.sh in dir with vars (the settings setup
// writes, without PORTS and SPARE), a fake systemctl that prints dir/show,
// a curl that answers 200, a systemd-run that appends each post's text to
// dir/sent, and the upstream file dir/up.conf (upstream). run runs it;
// sent is every text posted.
func hostWatch(t *testing.T, ports, spare, upstream string) (dir string, run func(args ...string), sent func() string) {
	dir = t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(bin, "systemctl"), "#!/bin/sh\ncat \"$D/show\"\n", 0o755)
	writeFile(t, filepath.Join(bin, "curl"), "#!/bin/sh\nprintf 200\n", 0o755)
	// The post runs at once here: its text appended to sent.
	writeFile(t, filepath.Join(bin, "systemd-run"), "#!/bin/sh\nwhile [ \"$1\" != -- ]; do shift; done\ncat \"$4\" >>\"$D/sent\"; echo >>\"$D/sent\"; rm -f \"$4\"\n", 0o755)
	writeFile(t, filepath.Join(dir, "up.conf"), upstream, 0o644)
	body, err := scriptFiles.ReadFile("scripts/host-watch.sh")
	if err != nil {
		t.Fatal(err)
	}
	vars := "APP=my-app UNIT_PREFIX=my-app@ PORTS='" + ports + "' SPARE='" + spare + "' STATE=" + dir + "/state LOCK_STALE=60 MIN_INTERVAL=600 ENV_FILE=/nonexistent STATUS_FILE=" + dir + "/status.json " +
		"UPSTREAM_FILE=" + dir + "/up.conf UPSTREAM=my_app SERVER_ADDR=127.0.0.1 HEALTH_PATH=/ HEALTH_STATUS=200 HEALTH_TIMEOUT=2 SELF=" + dir + "/watch WORKERS='w@1 w@2'\n"
	writeFile(t, filepath.Join(dir, "watch"), "#!/bin/sh\n"+vars+strings.TrimPrefix(string(body), "#!/bin/sh\n"), 0o755)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	t.Setenv("D", dir)
	run = func(args ...string) {
		t.Helper()
		if out, err := exec.Command(filepath.Join(dir, "watch"), args...).CombinedOutput(); err != nil {
			t.Fatalf("watch %v: %v\n%s", args, err, out)
		}
	}
	sent = func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "sent"))
		return string(b)
	}
	return dir, run, sent
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// readStatusJSON reads host-watch.sh's status.json in dir.
func readStatusJSON(t *testing.T, dir string) HostStatus {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "status.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Hosts []HostStatus }
	if err := json.Unmarshal(b, &st); err != nil || len(st.Hosts) != 1 {
		t.Fatalf("status.json is not JSON of one host: %v\n%s", err, b)
	}
	return st.Hosts[0]
}

// showUnit is one unit as systemctl show prints it for host-watch.sh.
func showUnit(id, active string, pid int) string {
	sub := "running"
	if active != "active" {
		sub = "dead"
	}
	return fmt.Sprintf("Id=%s\nActiveState=%s\nSubState=%s\nMainPID=%d\nExecMainStartTimestampMonotonic=1\nNRestarts=0\nMemoryCurrent=100\n\n", id, active, sub, pid)
}

// host-watch.sh's status, with a fake systemctl, curl and systemd-run:
// status.json holds the workers beside the instances (valid JSON, the
// fields of rollout status); a worker not running is alerted once, and
// said again when it runs; worker-stop alerts a worker that crashed.
func TestHostWatchCoversWorkers(t *testing.T) {
	dir, run, sent := hostWatch(t, "3000", "", "upstream my_app {\n    server 127.0.0.1:3000;\n}\n")
	write := func(path, content string, mode os.FileMode) { writeFile(t, path, content, mode) }
	show := func(w2 string) string {
		return "Id=my-app@3000.service\nActiveState=active\nSubState=running\nMainPID=7\nExecMainStartTimestampMonotonic=1\nNRestarts=0\nMemoryCurrent=100\n\n" +
			"Id=w@1.service\nActiveState=active\nSubState=running\nMainPID=9\nExecMainStartTimestampMonotonic=1\nNRestarts=0\nMemoryCurrent=[not set]\n\n" +
			"Id=w@2.service\n" + w2 + "ExecMainStartTimestampMonotonic=0\nNRestarts=3\nMemoryCurrent=[not set]\n"
	}
	write(filepath.Join(dir, "show"), show("ActiveState=failed\nSubState=failed\nMainPID=0\n"), 0o644)

	run("status")
	if h := readStatusJSON(t, dir); len(h.Instances) != 1 || !h.Instances[0].Healthy || len(h.Workers) != 2 ||
		h.Workers[0].Unit != "w@1" || h.Workers[0].PID != 9 || h.Workers[1].State != "failed" || h.Workers[1].Restarts != 3 {
		t.Errorf("status.json: %+v", h)
	}
	run("status") // still down: no second alert
	if got := sent(); strings.Count(got, "❌") != 1 || !strings.Contains(got, "❌ worker w@2 on ") || !strings.Contains(got, " is not running: failed/failed") || strings.Contains(got, "w@1") {
		t.Errorf("alerts after two runs with w@2 failed:\n%s", got)
	}
	write(filepath.Join(dir, "show"), show("ActiveState=active\nSubState=running\nMainPID=11\n"), 0o644)
	run("status")
	if got := sent(); !strings.Contains(got, "✅ worker w@2 on ") || !strings.Contains(got, " is running again") {
		t.Errorf("no recovery:\n%s", got)
	}
	cmd := exec.Command(filepath.Join(dir, "watch"), "worker-stop", "w@1")
	cmd.Env = append(os.Environ(), "SERVICE_RESULT=exit-code", "EXIT_CODE=exited", "EXIT_STATUS=3")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("worker-stop: %v\n%s", err, out)
	}
	if got := sent(); !strings.Contains(got, "❌ worker w@1 on ") || !strings.Contains(got, " stopped: exit-code (exited 3)") {
		t.Errorf("no alert for the worker that stopped:\n%s", got)
	}
}

// With max_surge (SPARE), host-watch.sh reads each slot's live port from
// the upstream: status.json shows the ports that serve; a unit running on
// an idle port is a leftover, alerted once (not health checked); one
// stopped there is not shown.
func TestHostWatchFollowsTheSurge(t *testing.T) {
	// 3000 moved to 3002; 3001 serves from its home port.
	dir, run, sent := hostWatch(t, "3000 3001", "3002 3003", "upstream my_app {\n    server 127.0.0.1:3002;\n    server 127.0.0.1:3001;\n}\n")
	show := showUnit("my-app@3002.service", "active", 7) + showUnit("my-app@3001.service", "active", 8) +
		showUnit("my-app@3000.service", "inactive", 0) + showUnit("my-app@3003.service", "inactive", 0) +
		showUnit("w@1.service", "active", 10) + showUnit("w@2.service", "active", 11)
	writeFile(t, filepath.Join(dir, "show"), show, 0o644)
	run("status")
	h := readStatusJSON(t, dir)
	var ports []int
	for _, i := range h.Instances {
		ports = append(ports, i.Port)
		if !i.OK() {
			t.Errorf("not OK: %+v", i)
		}
	}
	if fmt.Sprint(ports) != "[3002 3001]" || sent() != "" {
		t.Errorf("instances %v (want the live ports), alerts %q", ports, sent())
	}
	writeFile(t, filepath.Join(dir, "show"), strings.Replace(show, showUnit("my-app@3000.service", "inactive", 0), showUnit("my-app@3000.service", "active", 9), 1), 0o644)
	run("status")
	run("status")
	h = readStatusJSON(t, dir)
	if n := len(h.Instances); n != 3 || !h.Instances[2].Leftover || h.Instances[2].Port != 3000 || h.Instances[2].OK() || h.Instances[2].Health != "not checked: its slot serves from 3002" {
		t.Fatalf("with 3000 running: %+v", h.Instances)
	}
	if got := sent(); strings.Count(got, "❌") != 1 || !strings.Contains(got, "❌ my-app@3000 on ") || !strings.Contains(got, "runs (active/running) but its slot serves from 3002 (strategy.max_surge)") {
		t.Errorf("alerts: %q", got)
	}
}
