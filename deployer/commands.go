package deployer

import (
	"fmt"
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

// unitFile prints the instance's unit file, to find its log files.
func (c commands) unitFile(port int) string {
	return "systemctl cat -- " + sshexec.Quote(c.cfg.UnitName(port))
}

// unitState prints one instance's state.
func (c commands) unitState(port int) string {
	return "systemctl show -p " + unitProps + " -- " + sshexec.Quote(c.cfg.UnitName(port))
}

// writeUpstream replaces the upstream file with its new content (read from
// stdin; the previous file is kept in .rollout/ beside it, a directory
// nginx's "include dir/*" does not match), tests the Nginx config and restores the previous file if the test
// fails, reloads Nginx, and waits until the workers of the old config have
// stopped taking new requests (they finish the ones they hold).
func (c commands) writeUpstream() string {
	n := c.cfg.Nginx
	script := fmt.Sprintf(`set -eu
f=%s
d=$(dirname -- "$f")/.rollout
mkdir -p -- "$d"
prev=$d/$(basename -- "$f").prev
new=$d/$(basename -- "$f").new
cp -p -- "$f" "$prev"
cp -p -- "$f" "$new"
cat >"$new"
mv -f -- "$new" "$f"
if ! out=$(%s 2>&1); then
  mv -f -- "$prev" "$f"
  printf 'nginx config test failed; restored the previous %%s\n%%s\n' "$f" "$out" >&2
  exit 65
fi
old=$(ps -o pid= --ppid "$(cat -- %s)" || true)
%s
i=0
while [ "$i" -lt 200 ]; do
  busy=0
  for p in $old; do
    case "$(tr '\0' ' ' 2>/dev/null </proc/$p/cmdline || true)" in
      *"shutting down"*|"") ;;
      *) busy=1 ;;
    esac
  done
  [ "$busy" = 0 ] && exit 0
  sleep 0.02
  i=$((i+1))
done
echo "nginx workers still on the old config after 4s" >&2
exit 66`, sshexec.Quote(n.UpstreamFile), n.TestCommand, sshexec.Quote(n.PIDFile), n.ReloadCommand)
	return c.priv(script)
}

// connections prints how many connections to the instance are established
// (requests in flight through Nginx, or idle keep-alive ones).
func (c commands) connections(port int) string {
	return "ss -Htn state established " + sshexec.Quote("( sport = :"+strconv.Itoa(port)+" )") + " | wc -l"
}

// restart prints the sizes of the instance's log files (so its output since
// the restart can be shown), then restarts it, clearing a failed state and
// systemd's start-rate counter first.
func (c commands) restart(port int, logs []string) string {
	unit := sshexec.Quote(c.cfg.UnitName(port))
	script := ""
	if len(logs) > 0 {
		script = "stat -c '%s %n' -- " + sshexec.QuoteCommand(logs...) + " 2>/dev/null || true\n"
	}
	script += "systemctl reset-failed -- " + unit + " 2>/dev/null || true\nsystemctl restart -- " + unit
	return c.priv(script)
}

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

// clock prints the host's realtime clock in microseconds.
func (c commands) clock() string { return "date +%s%6N" }

// hook runs a user's hook command with the ROLLOUT_* variables set.
func hookCommand(hook string, env []string) string {
	return "env " + sshexec.QuoteCommand(env...) + " sh -c " + sshexec.Quote(hook)
}
