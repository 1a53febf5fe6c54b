// Package secrets is an app's environment of secrets: a YAML mapping of
// variable names to values, encrypted with age to the recipients a config
// lists, and written for systemd's EnvironmentFile= on the hosts.
package secrets

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Env is a set of variables: name -> value.
type Env map[string]string

// Bounds of an env.
const (
	// MaxSize bounds a decrypted secrets file (and so every value).
	MaxSize = 256 << 10
	// MaxVars bounds the variables of a file.
	MaxVars = 1000
)

var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reserved are names the unit itself sets for each instance: a secret of
// that name would override it (EnvironmentFile= wins over Environment=).
var reserved = map[string]string{"PORT": "the instance's port, set by the unit"}

// ValidName checks a variable's name: letters, digits and _, not starting
// with a digit, and not one the unit sets.
func ValidName(name string) error {
	if !nameRE.MatchString(name) || len(name) > 128 {
		return fmt.Errorf("%q is not a variable name (letters, digits and _, not starting with a digit, at most 128)", truncate(name))
	}
	if why, ok := reserved[name]; ok {
		return fmt.Errorf("%s is %s; it cannot be a secret", name, why)
	}
	return nil
}

// ValidValue checks a variable's value: what systemd passes on exactly,
// valid UTF-8 without control characters other than tab and newline.
// The error names the variable, never the value.
func ValidValue(name, v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%s: the value is not valid UTF-8 (systemd drops such variables)", name)
	}
	for i, r := range v {
		if (r < 0x20 && r != '\t' && r != '\n') || r == 0x7f {
			return fmt.Errorf("%s: the value holds control character %U at byte %d; only tab and newline are passed on exactly", name, r, i)
		}
	}
	if len(v) > MaxSize {
		return fmt.Errorf("%s: the value is longer than %d bytes", name, MaxSize)
	}
	return nil
}

// Check checks every name and value of e.
func (e Env) Check() error {
	if len(e) > MaxVars {
		return fmt.Errorf("%d variables; at most %d", len(e), MaxVars)
	}
	var errs []error
	for _, name := range e.Names() {
		if err := ValidName(name); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := ValidValue(name, e[name]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Names are e's names, sorted.
func (e Env) Names() []string { return slices.Sorted(maps.Keys(e)) }

// Missing are the names of required that e lacks, in required's order.
func (e Env) Missing(required []string) []string {
	var out []string
	for _, n := range required {
		if _, ok := e[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// Parse reads a plaintext secrets file: a YAML mapping of names to
// scalar values (comments allowed), taken as written (`PORT: 0x10` is the
// string "0x10"). An empty file is an empty env.
func Parse(plain []byte) (Env, error) {
	if len(plain) > MaxSize {
		return nil, fmt.Errorf("the secrets are larger than %d bytes", MaxSize)
	}
	if !utf8.Valid(plain) {
		return nil, errors.New("the secrets are not valid UTF-8")
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(plain, &doc); err != nil {
		return nil, fmt.Errorf("the secrets are not YAML (NAME: value, one per line): %s", yamlError(err))
	}
	env := Env{}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return env, nil
	}
	m := doc.Content[0]
	if m.Kind == yaml.ScalarNode && m.Tag == "!!null" {
		return env, nil // only comments
	}
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: the secrets must be a mapping of names to values (NAME: value, one per line)", m.Line)
	}
	var errs []error
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			errs = append(errs, fmt.Errorf("line %d: a name must be a plain word", k.Line))
			continue
		}
		name := k.Value
		if err := ValidName(name); err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", k.Line, err))
			continue
		}
		if _, dup := env[name]; dup {
			errs = append(errs, fmt.Errorf("line %d: %s is set twice", k.Line, name))
			continue
		}
		switch {
		case v.Kind != yaml.ScalarNode:
			errs = append(errs, fmt.Errorf("line %d: %s: the value must be a string, not a list, mapping or alias", v.Line, name))
			continue
		case v.Tag == "!!null":
			errs = append(errs, fmt.Errorf(`line %d: %s has no value; write %s: "" for an empty one`, v.Line, name, name))
			continue
		case v.Style&yaml.TaggedStyle != 0 || v.Tag == "!!binary":
			errs = append(errs, fmt.Errorf("line %d: %s: the value must be a string, without a YAML tag", v.Line, name))
			continue
		}
		if err := ValidValue(name, v.Value); err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", v.Line, err))
			continue
		}
		env[name] = v.Value
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(env) > MaxVars {
		return nil, fmt.Errorf("%d variables; at most %d", len(env), MaxVars)
	}
	return env, nil
}

// yamlError is the YAML library's error without its "yaml: " prefix.
func yamlError(err error) string { return strings.TrimPrefix(err.Error(), "yaml: ") }

// header heads a secrets file rollout writes.
const header = "# rollout secrets: NAME: value, one per line (YAML). Quote values with\n# special characters; rollout writes them double-quoted with escapes.\n"

// Format writes e as a secrets file: sorted, every value double-quoted
// (YAML escapes newlines, quotes and control characters), so that Parse
// gives e back exactly.
func Format(e Env) ([]byte, error) {
	return Set(nil, e)
}

// Set writes into the secrets file plain the values of set (replacing a
// name's value where it is, adding new names at the end) and removes the
// names of unset, keeping the file's comments and order. It checks that
// the result reads back as the file's env with those changes.
func Set(plain []byte, set Env, unset ...string) ([]byte, error) {
	before, err := Parse(plain)
	if err != nil {
		return nil, err
	}
	if err := set.Check(); err != nil {
		return nil, err
	}
	var doc yaml.Node
	_ = yaml.Unmarshal(plain, &doc)
	if doc.Kind == 0 || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		doc = yaml.Node{Kind: yaml.DocumentNode, HeadComment: strings.TrimSuffix(header, "\n"),
			Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	m := doc.Content[0]
	var kept []*yaml.Node
	done := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := m.Content[i]
		if slices.Contains(unset, k.Value) {
			continue
		}
		if v, ok := set[k.Value]; ok {
			m.Content[i+1] = valueNode(v)
			done[k.Value] = true
		}
		kept = append(kept, k, m.Content[i+1])
	}
	for _, name := range set.Names() {
		if !done[name] {
			kept = append(kept, &yaml.Node{Kind: yaml.ScalarNode, Value: name}, valueNode(set[name]))
		}
	}
	m.Content = kept
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("write the secrets: %w", err)
	}
	_ = enc.Close()
	out := buf.Bytes()
	if len(m.Content) == 0 {
		out = []byte(header) // yaml writes an empty mapping as {}
	}
	want := maps.Clone(before)
	maps.Copy(want, set)
	for _, n := range unset {
		delete(want, n)
	}
	got, err := Parse(out)
	if err != nil || !maps.Equal(got, want) {
		return nil, errors.New("the secrets would not read back exactly as set (a bug in rollout: nothing was written)")
	}
	return out, nil
}

func valueNode(v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Style: yaml.DoubleQuotedStyle, Value: v}
}

// SystemdFile is e as systemd's EnvironmentFile= reads it: one
// NAME="value" per name, sorted, with \ " ` and $ escaped by a backslash
// and newlines as they are (systemd keeps them inside double quotes).
// e must have passed Check.
func SystemdFile(e Env) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by rollout from the release's secrets; do not edit.\n")
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "`", "\\`", `$`, `\$`)
	for _, n := range e.Names() {
		fmt.Fprintf(&b, "%s=\"%s\"\n", n, esc.Replace(e[n]))
	}
	return b.Bytes()
}

// Change is how one env differs from another, by name only.
type Change struct {
	Added   []string `json:"added,omitempty"`
	Removed []string `json:"removed,omitempty"`
	Changed []string `json:"changed,omitempty"`
}

// Diff is what changes from old to cur: names only, sorted.
func Diff(old, cur Env) Change {
	var c Change
	for _, n := range cur.Names() {
		v, ok := old[n]
		switch {
		case !ok:
			c.Added = append(c.Added, n)
		case v != cur[n]:
			c.Changed = append(c.Changed, n)
		}
	}
	for _, n := range old.Names() {
		if _, ok := cur[n]; !ok {
			c.Removed = append(c.Removed, n)
		}
	}
	return c
}

// Empty reports whether nothing changed.
func (c Change) Empty() bool { return len(c.Added)+len(c.Removed)+len(c.Changed) == 0 }

// Strings are the changes as "+NAME", "-NAME", "~NAME".
func (c Change) Strings() []string {
	var out []string
	for _, n := range c.Added {
		out = append(out, "+"+n)
	}
	for _, n := range c.Removed {
		out = append(out, "-"+n)
	}
	for _, n := range c.Changed {
		out = append(out, "~"+n)
	}
	return out
}

// String says the changes for humans: "added A; changed B" or
// "unchanged".
func (c Change) String() string {
	var parts []string
	for _, p := range []struct {
		verb  string
		names []string
	}{{"added", c.Added}, {"removed", c.Removed}, {"changed", c.Changed}} {
		if len(p.names) > 0 {
			parts = append(parts, p.verb+" "+strings.Join(p.names, ", "))
		}
	}
	if len(parts) == 0 {
		return "unchanged"
	}
	return strings.Join(parts, "; ")
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// ExampleNames are the names a .env.example lists (NAME=value lines, an
// optional "export ", # comments and blank lines skipped): the variables
// the app expects. PORT, which the unit sets, is left out.
func ExampleNames(b []byte) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		name, _, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok || !nameRE.MatchString(name) {
			return nil, fmt.Errorf(".env.example line %d: not NAME=value", i+1)
		}
		if _, r := reserved[name]; r || seen[name] {
			continue
		}
		seen[name] = true
		names = append(names, name)
	}
	return names, nil
}
