package main

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/rollout-dev/rollout/deployer"
)

// docFiles are the README and every page under docs/.
func docFiles(t *testing.T) []string {
	t.Helper()
	pages, _ := filepath.Glob("../../docs/*.md")
	return append([]string{"../../README.md"}, pages...)
}

// snippet is a fenced block of a doc: its language, first line and text.
type snippet struct {
	file, lang string
	line       int
	text       string
	skip       bool // preceded by <!-- not checked: … -->
}

func snippets(t *testing.T, file string) []snippet {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []snippet
	var cur *snippet
	skipNext := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```") && len(trimmed) > 3:
			cur = &snippet{file: file, lang: strings.TrimPrefix(trimmed, "```"), line: n + 1, skip: skipNext}
			skipNext = false
		case cur == nil && strings.HasPrefix(trimmed, "<!-- not checked"):
			skipNext = true
		case cur != nil && trimmed == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// docBase is what a partial snippet (a section or two) is checked on top
// of: the snippet's top-level keys replace these (and haproxy:, caddy: or
// traefik: replaces nginx:).
const docBase = `app: my-app
hosts: [10.0.0.5, 10.0.0.6]
base_port: 3000
instances: 4
nginx: {upstream_file: /etc/nginx/conf.d/my-app-upstream.conf, upstream: my_app}
`

// Every YAML block of the docs is a config rollout reads (a partial one on
// top of docBase): a snippet that breaks when copied fails here.
func TestDocsYAMLBlocksParse(t *testing.T) {
	checked := 0
	for _, file := range docFiles(t) {
		for _, s := range snippets(t, file) {
			if s.lang != "yaml" || s.skip {
				continue
			}
			checked++
			var doc yaml.Node
			if err := yaml.Unmarshal([]byte(s.text), &doc); err != nil {
				t.Errorf("%s:%d: not YAML: %v", s.file, s.line, err)
				continue
			}
			text := s.text
			if doc.Content[0].Kind == yaml.MappingNode && !hasKey(doc.Content[0], "app") && !hasKey(doc.Content[0], "apps") {
				text = overlay(t, docBase, doc.Content[0]) + text
			}
			path := filepath.Join(t.TempDir(), "rollout.yaml")
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := deployer.LoadProject(path); err != nil {
				t.Errorf("%s:%d: the block is refused:\n%v\n%s", s.file, s.line, err, text)
			}
		}
	}
	if checked < 5 {
		t.Fatalf("only %d YAML blocks found", checked)
	}
}

func hasKey(m *yaml.Node, key string) bool {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return true
		}
	}
	return false
}

// overlay is base without the top-level keys the snippet gives.
func overlay(t *testing.T, base string, snip *yaml.Node) string {
	t.Helper()
	var out strings.Builder
	for _, line := range strings.SplitAfter(base, "\n") {
		key, _, _ := strings.Cut(line, ":")
		// haproxy:, caddy: and traefik: are the balancer in nginx:'s place.
		if line != "" && !hasKey(snip, key) && !(key == "nginx" && (hasKey(snip, "haproxy") || hasKey(snip, "caddy") || hasKey(snip, "traefik"))) {
			out.WriteString(line)
		}
	}
	return out.String()
}

// Every "rollout …" line of the docs' shell blocks names a command that
// exists, with flags that command has.
func TestDocsCommandLinesParse(t *testing.T) {
	app := newApp(os.Stdout, os.Stderr)
	checked := 0
	for _, file := range docFiles(t) {
		for _, s := range snippets(t, file) {
			if (s.lang != "sh" && s.lang != "bash") || s.skip {
				continue
			}
			for i, line := range strings.Split(s.text, "\n") {
				args := commandLine(line)
				if args == nil {
					continue
				}
				checked++
				if err := checkCommandLine(app.Commands, args); err != "" {
					t.Errorf("%s:%d: %s: %s", s.file, s.line+i, strings.TrimSpace(line), err)
				}
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d command lines found", checked)
	}
}

// commandLine is the arguments after "rollout" on a shell line (its
// comment and any VAR=value before it dropped), nil if it runs no rollout.
func commandLine(line string) []string {
	if i := strings.Index(line, " #"); i >= 0 {
		line = line[:i]
	}
	fields := strings.Fields(line)
	for len(fields) > 0 && strings.Contains(fields[0], "=") && !strings.HasPrefix(fields[0], "-") {
		fields = fields[1:]
	}
	if len(fields) < 2 || fields[0] != "rollout" {
		return nil
	}
	var args []string
	for _, f := range fields[1:] {
		if f == "|" || f == ">" || f == "&&" || f == ";" {
			break
		}
		// [--flag VALUE] marks what is optional.
		if f = strings.Trim(f, "[]"); f != "" && f != "…" && f != "..." {
			args = append(args, f)
		}
	}
	return args
}

// checkCommandLine says what is wrong with args, "" if nothing.
func checkCommandLine(cmds []*cli.Command, args []string) string {
	var cmd *cli.Command
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		var next *cli.Command
		for _, c := range cmds {
			if slices.Contains(c.Names(), args[0]) {
				next = c
			}
		}
		if next == nil {
			if cmd != nil && cmd.ArgsUsage != "" {
				break // the command's own arguments
			}
			return "no command " + args[0]
		}
		cmd, cmds, args = next, next.Subcommands, args[1:]
	}
	if cmd == nil {
		if len(args) > 0 && (args[0] == "--version" || args[0] == "--help" || args[0] == "-h" || args[0] == "-v") {
			return ""
		}
		return "no command"
	}
	names := []string{"help", "h"}
	for _, f := range cmd.Flags {
		names = append(names, f.Names()...)
	}
	for _, a := range args {
		if a == "--" {
			break // the rest is a command's (rollout exec -- CMD ARGS)
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !slices.Contains(names, name) {
			return "rollout " + cmd.Name + " has no flag " + a
		}
	}
	return ""
}

// Every link of the README and docs to a file of the repository names a
// file that exists, and a heading of it that exists.
func TestDocsLinksResolve(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	heading := regexp.MustCompile(`(?m)^#{1,6} (.+)$`)
	anchors := func(file string) map[string]bool {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil
		}
		out := map[string]bool{}
		inBlock := false
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "```") {
				inBlock = !inBlock
			}
			if m := heading.FindStringSubmatch(line); m != nil && !inBlock {
				out[slug(m[1])] = true
			}
		}
		return out
	}
	checked := 0
	for _, file := range docFiles(t) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			path, anchor, _ := strings.Cut(target, "#")
			dest := file
			if path != "" {
				dest = filepath.Join(filepath.Dir(file), path)
			}
			if _, err := os.Stat(dest); err != nil {
				t.Errorf("%s: link %s: %v", file, target, err)
				continue
			}
			if anchor != "" && strings.HasSuffix(dest, ".md") && !anchors(dest)[anchor] {
				t.Errorf("%s: link %s: no such heading in %s", file, target, dest)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d links found", checked)
	}
}

// slug is GitHub's anchor for a heading.
func slug(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}
