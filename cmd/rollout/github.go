package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rollout-dev/rollout/deployer"
)

// GitHub Actions output (GITHUB_ACTIONS=true): each host's progress in a
// collapsible ::group::, an ::error:: annotation per failure, and a
// Markdown job summary appended to $GITHUB_STEP_SUMMARY. See
// https://docs.github.com/actions/reference/workflow-commands-for-github-actions

// githubGroup opens (host start) or closes (host done) a host's group. With
// parallel > 1 the host's lines are buffered and written as one group when
// it finishes, so hosts never interleave. Called with p.mu held.
func (p *printer) githubGroup(e deployer.Event) {
	if p.opt.JSON {
		return
	}
	if e.Status == deployer.StatusStart {
		if p.opt.Parallel > 1 {
			p.group[e.Host] = &bytes.Buffer{}
			return
		}
		fmt.Fprintf(p.stderr, "::group::%s\n", escapeData(p.where(e.Host)))
		return
	}
	line := p.line(e)
	if b := p.group[e.Host]; b != nil {
		delete(p.group, e.Host)
		fmt.Fprintf(p.stderr, "::group::%s\n%s%s::endgroup::\n", escapeData(p.where(e.Host)), b.String(), line)
		return
	}
	fmt.Fprintf(p.stderr, "%s::endgroup::\n", line)
}

// githubReport writes an annotation per failure and the job summary.
// Called with p.mu held.
func (p *printer) githubReport(rep *deployer.Report, err error) {
	for _, f := range failures(err) {
		title := "rollout deploy failed"
		var se *deployer.StepError
		if errors.As(f, &se) {
			where := deployer.Where(se.Host, se.Port, se.Worker)
			title = fmt.Sprintf("rollout: %s failed on %s", se.Step, where)
		}
		fmt.Fprintf(p.stderr, "::error title=%s::%s\n", escapeProperty(title), escapeData(f.Error()))
	}
	if p.opt.SummaryFile == "" {
		return
	}
	f, ferr := os.OpenFile(p.opt.SummaryFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if ferr == nil {
		_, ferr = f.WriteString(jobSummary(p.appTitle(), rep, err))
		if cerr := f.Close(); ferr == nil {
			ferr = cerr
		}
	}
	if ferr != nil {
		fmt.Fprintf(p.stderr, "rollout: warning: job summary: %v\n", ferr)
	}
}

// jobSummary is the Markdown summary of a deploy (of "app NAME " with
// apps:): a table of hosts, then what each failed instance said.
func jobSummary(appTitle string, rep *deployer.Report, err error) string {
	var b strings.Builder
	result := "ok"
	if err != nil {
		result = "FAILED"
	}
	if rep != nil {
		op := rep.Op
		if op == "" {
			op = "deploy"
		}
		fmt.Fprintf(&b, "### rollout %s%s `%s`: %s in %s\n\n", appTitle, op, strings.ReplaceAll(rep.Version, "`", "'"), result, rep.Duration.Round(time.Millisecond))
		if rep.Release != "" {
			fmt.Fprintf(&b, "Release `%s`.", rep.Release)
			if rep.Reverted != "" {
				fmt.Fprintf(&b, " **%s.**", mdCell(rep.Reverted))
			}
			b.WriteString("\n\n")
		}
		b.WriteString("| host | outcome | restarted | left out | time | error |\n|---|---|---|---|---|---|\n")
		for _, h := range rep.Hosts {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", mdCell(h.Host), mdCell(string(h.Outcome)), ports(h.Restarted), ports(h.LeftOut), h.Duration.Round(time.Millisecond), mdCell(h.Error))
		}
		for _, bk := range rep.Bakes {
			fmt.Fprintf(&b, "\n%s\n", mdCell(bk.String()))
		}
		if rep.Paused != "" {
			fmt.Fprintf(&b, "\n**%s**\n", mdCell(rep.Paused))
		}
		if len(rep.Probe) > 0 {
			b.WriteString("\nThe probe, through each host's Nginx during the " + op + ":\n\n")
			for _, r := range rep.Probe {
				fmt.Fprintf(&b, "- **%s**: %s\n", mdCell(r.Host), mdCell(r.String()))
			}
		}
	} else {
		fmt.Fprintf(&b, "### rollout %sdeploy: %s\n", appTitle, result)
	}
	if rep == nil || len(rep.Hosts) == 0 || allNotStarted(rep) {
		if err != nil {
			fmt.Fprintf(&b, "\n%s\n", mdCell(err.Error()))
		}
	}
	for _, f := range appFailures(err) {
		fence := codeFence(f.Output)
		fmt.Fprintf(&b, "\n**%s did not come up**; what it said since the restart:\n\n%stext\n%s\n%s\n", mdCell(deployer.Where(f.Host, f.Port, f.Worker)), fence, strings.TrimRight(f.Output, "\n"), fence)
	}
	if rep != nil {
		for _, h := range rep.Hosts {
			if h.Next != "" {
				fmt.Fprintf(&b, "\n**Next, for %s:** %s\n", mdCell(h.Host), mdCell(h.Next))
			}
		}
	}
	b.WriteString("\n")
	return b.String()
}

func allNotStarted(rep *deployer.Report) bool {
	for _, h := range rep.Hosts {
		if h.Outcome != deployer.HostNotStarted {
			return false
		}
	}
	return true
}

// mdCell makes s safe in a Markdown table cell: one line, pipes escaped.
func mdCell(s string) string {
	s = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ", "|", `\|`).Replace(s)
	return strings.TrimSpace(s)
}

// codeFence is a run of backticks longer than any in s.
func codeFence(s string) string {
	longest, run := 0, 0
	for _, r := range s {
		if r == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	return strings.Repeat("`", max(3, longest+1))
}

// escapeData escapes a workflow command's message.
func escapeData(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A").Replace(s)
}

// escapeProperty escapes a workflow command's property value.
func escapeProperty(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C").Replace(s)
}
