package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// manCommand prints the man page, made from the commands' own definitions
// (the packages ship it as rollout.1).
func manCommand() *cli.Command {
	return &cli.Command{
		Name:  "man",
		Usage: "print the man page (roff), made from these commands' own help",
		Description: `Examples:
   rollout man | man -l -
   rollout man > /usr/local/share/man/man1/rollout.1`,
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			writeMan(c.App.Writer, c.App)
			return nil
		},
	}
}

// writeMan writes app's man page: every command (and subcommand) with its
// usage, description and examples, and flags; then the exit codes. Text is
// escaped for roff, and every non-ASCII character written as a groff
// escape, so groff has nothing to warn about.
func writeMan(w io.Writer, app *cli.App) {
	fmt.Fprintf(w, ".TH ROLLOUT 1 \"\" \"rollout %s\" \"User Commands\"\n.nh\n.ad l\n", roff(app.Version))
	fmt.Fprintf(w, ".SH NAME\nrollout \\- %s\n", roff(app.Usage))
	fmt.Fprintf(w, ".SH SYNOPSIS\n.B rollout\n\\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGUMENTS\\fR]\n")
	desc, _, _ := strings.Cut(app.Description, "Exit codes")
	fmt.Fprintf(w, ".SH DESCRIPTION\n%s\n", roffText(strings.TrimSpace(desc)))
	fmt.Fprintf(w, ".SH COMMANDS\n")
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, cmd := range cmds {
			if cmd.Hidden {
				continue
			}
			name := strings.TrimSpace(prefix + " " + cmd.Name)
			fmt.Fprintf(w, ".SS \"rollout %s\"\n%s\n", roff(name), roff(cmd.Usage))
			if cmd.ArgsUsage != "" && strings.TrimSpace(cmd.ArgsUsage) != "" {
				fmt.Fprintf(w, ".PP\nArguments: %s\n", roff(cmd.ArgsUsage))
			}
			if d := strings.TrimSpace(cmd.Description); d != "" {
				fmt.Fprintf(w, ".PP\n%s\n", roffText(d))
			}
			for _, f := range cmd.Flags {
				writeManFlag(w, f)
			}
			walk(name, cmd.Subcommands)
		}
	}
	walk("", app.Commands)
	fmt.Fprintf(w, ".SH EXIT STATUS\nThe same for every command:\n")
	for _, e := range exitCodes {
		fmt.Fprintf(w, ".TP\n.B %d\n%s\n", e.code, roff(e.meaning))
	}
	fmt.Fprintf(w, ".SH ENVIRONMENT\nEvery flag shown with a variable takes it from that variable too. ROLLOUT_SSH_KEY and ROLLOUT_KNOWN_HOSTS give the SSH key and known_hosts lines themselves (used from memory only); ROLLOUT_AGE_KEY the age identity that opens secrets:.\n")
	fmt.Fprintf(w, ".SH SEE ALSO\n.BR ssh (1),\n.BR systemd.service (5),\n.BR nginx (8)\n")
}

// writeManFlag writes one flag: its names, its value, default and
// variable, and what it does.
func writeManFlag(w io.Writer, f cli.Flag) {
	var names []string
	for _, n := range f.Names() {
		dash := "--"
		if len(n) == 1 {
			dash = "-"
		}
		names = append(names, "\\fB"+roff(dash+n)+"\\fR")
	}
	head := strings.Join(names, ", ")
	if df, ok := f.(cli.DocGenerationFlag); ok {
		if df.TakesValue() {
			head += " \\fIvalue\\fR"
		}
		usage := df.GetUsage()
		if def := df.GetDefaultText(); df.TakesValue() && def != "" && def != `""` {
			usage += " (default: " + def + ")"
		}
		if env := df.GetEnvVars(); len(env) > 0 {
			usage += " [$" + strings.Join(env, ", $") + "]"
		}
		fmt.Fprintf(w, ".TP\n%s\n%s\n", head, roff(usage))
		return
	}
	fmt.Fprintf(w, ".TP\n%s\n", head)
}

// roffText is a description: its indented lines (examples) kept as they
// are, in a no-fill block; the rest as paragraphs.
func roffText(s string) string {
	var b strings.Builder
	inEx := false
	for _, line := range strings.Split(s, "\n") {
		example := strings.HasPrefix(line, "   ")
		switch {
		case example && !inEx:
			b.WriteString(".PP\n.EX\n")
			inEx = true
		case !example && inEx:
			b.WriteString(".EE\n")
			inEx = false
		}
		if strings.TrimSpace(line) == "" && !inEx {
			b.WriteString(".PP\n")
			continue
		}
		b.WriteString(roff(strings.TrimPrefix(line, "   ")) + "\n")
	}
	if inEx {
		b.WriteString(".EE\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// roff escapes one line of text for roff: backslashes, a leading dot or
// quote, and every non-ASCII character.
func roff(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case (r == '.' || r == '\'') && i == 0:
			b.WriteString(`\&` + string(r))
		case r > 127:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
