package deployer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"

	"github.com/rollout-dev/rollout/sshexec"
)

// commands builds every remote command rollout runs on a host, from
// validated config values, each quoted for the shell. The plan prints
// exactly these strings, and the engine runs exactly these strings.
type commands struct {
	cfg  *Config
	sudo bool
}

func newCommands(cfg *Config) commands { return commands{cfg: cfg, sudo: cfg.UseSudo()} }

// priv runs a shell script as root: through `sudo -n` (never a password
// prompt) unless the SSH user is root.
func (c commands) priv(script string) string {
	if !c.sudo {
		return "sh -c " + sshexec.Quote(script)
	}
	return "sudo -n sh -c " + sshexec.Quote(script)
}

// Preflight checks the host can be deployed to, changing nothing: sudo
// works without a password, the units exist, the upstream file is readable
// and the current Nginx config passes its test.
func (c commands) preflight() string {
	var units []string
	for _, p := range c.cfg.Ports() {
		units = append(units, sshexec.Quote(c.cfg.UnitName(p)))
	}
	script := fmt.Sprintf(`set -e
for u in %s; do
  [ "$(systemctl show -p LoadState --value -- "$u")" = loaded ] || { echo "unit $u is not installed (systemctl cat $u)" >&2; exit 1; }
done
if ! out=$(%s 2>&1); then printf 'nginx config test fails before any change:\n%%s\n' "$out" >&2; exit 1; fi
test -r %s || { echo "cannot read the upstream file %s" >&2; exit 1; }`,
		strings.Join(units, " "), c.cfg.Nginx.TestCommand,
		sshexec.Quote(c.cfg.Nginx.UpstreamFile), c.cfg.Nginx.UpstreamFile)
	return c.priv(script)
}

// inspect prints the state of every instance, then the upstream file.
func (c commands) inspect() string {
	var units []string
	for _, p := range c.cfg.Ports() {
		units = append(units, sshexec.Quote(c.cfg.UnitName(p)))
	}
	return "systemctl show -p " + unitProps + " -- " + strings.Join(units, " ") +
		" && echo " + inspectSep + " && cat -- " + sshexec.Quote(c.cfg.Nginx.UpstreamFile)
}

const inspectSep = "@@rollout-upstream@@"

// unitFiles prints every instance's unit file, each followed by a
// separator line, to find their log files.
func (c commands) unitFiles() string {
	var units []string
	for _, p := range c.cfg.Ports() {
		units = append(units, sshexec.Quote(c.cfg.UnitName(p)))
	}
	return "for u in " + strings.Join(units, " ") + `; do systemctl cat -- "$u"; echo ` + unitSep + "; done"
}

const unitSep = "@@rollout-unit@@"

// unitState prints one instance's state.
func (c commands) unitState(port int) string {
	return "systemctl show -p " + unitProps + " -- " + sshexec.Quote(c.cfg.UnitName(port))
}

// writeUpstream replaces the upstream file with new content. Its stdin is
// the SHA-256 of the content rollout expects the file to have now, on one
// line, then the new content (see upstreamInput): if someone else changed
// the file meanwhile, nothing is written and it exits 67. The previous file
// is kept in .rollout/ beside it (a directory nginx's "include dir/*" does
// not match); the Nginx config is tested and the previous file restored if
// the test fails (exit 65); then Nginx reloads: rollout signals its master
// (SIGHUP, as `nginx -s reload` does, without parsing the config a second
// time) unless nginx.reload_command is set.
//
// With a port to drain, it then waits until the workers of the old config
// have stopped taking new requests (exit 66 if they have not after 4s), and
// until no connection to that port is established (its requests in
// flight), at most drain_timeout; it prints "drained MS", or "busy MS N"
// when N connections are still open at the timeout.
func (c commands) writeUpstream(drainPort int) string {
	n := c.cfg.Nginx
	reload := `kill -HUP "$master"`
	if n.ReloadCommand != "" {
		reload = n.ReloadCommand
	}
	// Few processes: under load every fork costs milliseconds.
	dir, base := path.Split(n.UpstreamFile)
	script := fmt.Sprintf(`set -eu
f=%s
d=%s
b=%s
IFS= read -r want
have=$(sha256sum <"$f")
if [ "${have%%%% *}" != "$want" ]; then
  echo "$f was changed by someone else since rollout read it" >&2
  exit 67
fi
[ -d "$d" ] || mkdir -p -- "$d"
cp -p -- "$f" "$d/$b.new"
cat >"$d/$b.new"
ln -f -- "$f" "$d/$b.prev"
mv -f -- "$d/$b.new" "$f"
if ! out=$(%s 2>&1); then
  mv -f -- "$d/$b.prev" "$f"
  printf 'nginx config test failed; restored the previous %%s\n%%s\n' "$f" "$out" >&2
  exit 65
fi
read -r master <%s
`, sshexec.Quote(n.UpstreamFile), sshexec.Quote(dir+".rollout"), sshexec.Quote(base), n.TestCommand, sshexec.Quote(n.PIDFile))
	if drainPort == 0 {
		return c.priv(script + reload)
	}
	script += fmt.Sprintf(`old=
if [ -r "/proc/$master/task/$master/children" ]; then
  read -r old <"/proc/$master/task/$master/children" || true
else
  old=$(ps -o pid= --ppid "$master" || true)
fi
%s
i=0
while :; do
  files=
  for p in $old; do files="$files /proc/$p/cmdline"; done
  [ -z "$files" ] || [ -z "$(grep -L 'shutting down' $files 2>/dev/null)" ] && break
  i=$((i+1))
  if [ "$i" -ge 400 ]; then echo "nginx workers still on the old config after 4s" >&2; exit 66; fi
  sleep 0.01
done
conns() { ss -Htn state established %s; }
[ -z "$(conns)" ] && { echo drained 0; exit 0; }
t=$(date +%%s%%3N)
while :; do
  n=$(conns | wc -l)
  now=$(date +%%s%%3N)
  [ "$n" -eq 0 ] && { echo "drained $((now - t))"; exit 0; }
  [ "$((now - t))" -ge %d ] && { echo "busy $((now - t)) $n"; exit 0; }
  sleep 0.01
done`, reload, sshexec.Quote("( sport = :"+strconv.Itoa(drainPort)+" )"), c.cfg.DrainTimeout.Milliseconds())
	return c.priv(script)
}

// upstreamInput is writeUpstream's stdin: the checksum of the content the
// file should have now, then its new content.
func upstreamInput(current, next []byte) io.Reader {
	sum := sha256.Sum256(current)
	return io.MultiReader(strings.NewReader(hex.EncodeToString(sum[:])+"\n"), bytes.NewReader(next))
}

// connections prints how many connections to the instance are established
// (requests in flight through Nginx, or idle keep-alive ones).
func (c commands) connections(port int) string {
	return "ss -Htn state established " + sshexec.Quote("( sport = :"+strconv.Itoa(port)+" )") + " | wc -l"
}

// restart prints the host's clock in microseconds and the sizes of the
// instance's log files (so its output since the restart can be shown) and
// the unit's state, then restarts it, clearing a failed state and systemd's
// start-rate counter first, and prints its state again.
func (c commands) restart(port int, logs []string) string {
	unit := sshexec.Quote(c.cfg.UnitName(port))
	show := "systemctl show -p " + unitProps + " -- " + unit
	script := "date +%s%6N\n"
	if len(logs) > 0 {
		script += "stat -c '%s %n' -- " + sshexec.QuoteCommand(logs...) + " 2>/dev/null || true\n"
	}
	script += "echo " + restartSep + "\n" + show + "\necho " + restartSep + "\n" +
		"systemctl reset-failed -- " + unit + " 2>/dev/null || true\n" +
		"systemctl restart -- " + unit + "\n" + show
	return c.priv("set -e\n" + script)
}

const restartSep = "@@rollout-state@@"

// appOutput prints what the instance wrote to its log files since the given
// offsets, and systemd's own journal lines for it since the restart.
func (c commands) appOutput(port int, offsets map[string]int64, sinceUsec uint64, lines int) string {
	var b strings.Builder
	for _, f := range sortedKeys(offsets) {
		fmt.Fprintf(&b, "echo %s; tail -c +%d -- %s 2>/dev/null | tail -n %d\n",
			sshexec.Quote("==> "+f+" <=="), offsets[f]+1, sshexec.Quote(f), lines)
	}
	fmt.Fprintf(&b, "echo %s; journalctl --no-pager -o short-precise -n %d -u %s",
		sshexec.Quote("==> journal <=="), lines, sshexec.Quote(c.cfg.UnitName(port)))
	if sinceUsec > 0 {
		fmt.Fprintf(&b, " --since @%d.%06d", sinceUsec/1e6, sinceUsec%1e6)
	}
	return c.priv(b.String())
}

// hook runs a user's hook command with the ROLLOUT_* variables set.
func hookCommand(hook string, env []string) string {
	return "env " + sshexec.QuoteCommand(env...) + " sh -c " + sshexec.Quote(hook)
}
