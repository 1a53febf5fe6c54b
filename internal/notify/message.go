package notify

import (
	"fmt"
	"strings"
	"time"

	"github.com/rollout-dev/rollout/deployer"
)

// maxText keeps a message under chat limits (Telegram's is 4096).
const maxText = 3500

// Message is the summary of a deploy of app: the result, a line per host,
// the error when no host said why, and link (e.g. the CI run) if any.
func Message(app string, rep *deployer.Report, err error, link string) string {
	var b strings.Builder
	version, took := "", time.Duration(0)
	if rep != nil {
		version, took = rep.Version, rep.Duration.Round(time.Millisecond)
	}
	op := "deploy"
	if rep != nil && rep.Op == "rollback" {
		op = "rollback"
	}
	if err == nil && rep != nil && rep.Paused != "" {
		fmt.Fprintf(&b, "⏸ %s %s paused after its canary (%s)", app, version, took)
	} else if err == nil && rep != nil {
		hosts := fmt.Sprintf("%d hosts", len(rep.Hosts))
		if len(rep.Hosts) == 1 {
			hosts = "1 host"
		}
		verb := "deployed to"
		if op == "rollback" {
			verb = "rolled back on"
		}
		fmt.Fprintf(&b, "✅ %s %s %s %s in %s", app, version, verb, hosts, took)
	} else {
		fmt.Fprintf(&b, "❌ %s %s %s FAILED after %s", app, version, op, took)
	}
	said := false
	if rep != nil && rep.Release != "" {
		fmt.Fprintf(&b, "\nrelease %s", rep.Release)
	}
	if rep != nil && rep.Reverted != "" {
		fmt.Fprintf(&b, "\n%s", oneLine(rep.Reverted))
	}
	if rep != nil {
		for _, bk := range rep.Bakes {
			fmt.Fprintf(&b, "\n%s", oneLine(bk.String()))
		}
		if rep.Paused != "" {
			fmt.Fprintf(&b, "\n%s", oneLine(rep.Paused))
		}
		for _, p := range rep.Probe {
			fmt.Fprintf(&b, "\nprobe %s: %s", p.Host, p)
		}
	}
	if rep != nil {
		for _, h := range rep.Hosts {
			fmt.Fprintf(&b, "\n%s: %s", h.Host, h.Outcome)
			if len(h.Restarted) > 0 {
				fmt.Fprintf(&b, ", restarted %s", ports(h.Restarted))
			}
			if len(h.LeftOut) > 0 {
				fmt.Fprintf(&b, ", left out of service %s", ports(h.LeftOut))
			}
			if h.Outcome != deployer.HostNotStarted {
				fmt.Fprintf(&b, " (%s)", h.Duration.Round(time.Millisecond))
			}
			if h.Error != "" {
				fmt.Fprintf(&b, ": %s", oneLine(h.Error))
				said = true
			}
		}
	}
	if err != nil && !said {
		fmt.Fprintf(&b, "\nerror: %s", oneLine(err.Error()))
	}
	if link != "" {
		b.WriteString("\n" + link)
	}
	s := b.String()
	if len(s) > maxText {
		s = strings.ToValidUTF8(s[:maxText], "") + "…"
	}
	return s
}

func ports(ps []int) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
