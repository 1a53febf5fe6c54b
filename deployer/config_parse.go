package deployer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Bounds of a config: a real rollout.yaml is a few KB, and its longest
// values (hooks, commands) a line or a short script.
const (
	maxConfigSize = 1 << 20 // bytes of the file
	maxValueLen   = 4096    // characters of any one scalar value
	maxQuoted     = 200     // bytes of a value quoted in an error
	maxErrors     = 20      // problems listed; the rest are counted
)

// sizeError refuses the file named name, of size bytes.
func sizeError(name string, size int64) error {
	return &configError{file: name, err: fmt.Errorf("the file is %d bytes; a config is at most 1 MiB (%d bytes)", size, maxConfigSize)}
}

// quoteValue quotes a user's value for an error message: at most its first
// maxQuoted bytes (cut on a rune boundary), then its length when cut.
func quoteValue(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := 0 // after the last rune (or invalid byte) that fits
	for cut < len(s) {
		_, size := utf8.DecodeRuneInString(s[cut:])
		if cut+size > maxQuoted {
			break
		}
		cut += size
	}
	return fmt.Sprintf("%s…(%d bytes)", strconv.Quote(s[:cut]), len(s))
}

// configError is one problem, located as precisely as known.
type configError struct {
	file string
	line int
	key  string // dotted path, e.g. "hosts[1]" or "health.timeout"
	err  error
}

func (e *configError) Error() string {
	var b strings.Builder
	if e.file != "" {
		b.WriteString(e.file)
		if e.line > 0 {
			fmt.Fprintf(&b, ":%d", e.line)
		}
		b.WriteString(": ")
	}
	if e.key != "" {
		b.WriteString(e.key + ": ")
	}
	b.WriteString(e.err.Error())
	return b.String()
}

func (e *configError) Unwrap() error { return e.err }

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document returns the root node of the file's only YAML document.
func document(name string, data []byte) (*yaml.Node, error) {
	empty := &configError{file: name, err: errors.New("the file is empty; it needs at least app, hosts, ports and nginx")}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, empty
	} else if err != nil {
		return nil, withPlaceholderHint(syntaxError(name, err), data)
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return nil, &configError{file: name, line: next.Line, err: errors.New("only one YAML document is allowed")}
	} else if !errors.Is(err, io.EOF) {
		return nil, syntaxError(name, err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Tag == "!!null" {
		return nil, empty
	}
	return doc.Content[0], nil
}

// placeholderInFlowRE is an unquoted {port} or {app} inside [ … ], which
// YAML reads as a mapping.
var placeholderInFlowRE = regexp.MustCompile(`\[[^\]"']*[^"'\[]\{(port|app)\}`)

// withPlaceholderHint says how to write {port} in a [ … ] list when a
// syntax error is on such a line.
func withPlaceholderHint(err error, data []byte) error {
	var ce *configError
	if !errors.As(err, &ce) || ce.line < 1 {
		return err
	}
	lines := strings.Split(string(data), "\n")
	if ce.line > len(lines) || !placeholderInFlowRE.MatchString(lines[ce.line-1]) {
		return err
	}
	ce.err = fmt.Errorf(`%w: a {port} inside [ ] is read as a YAML mapping: quote the item ("/var/log/my-app/{port}.log") or write the list one "- item" per line`, ce.err)
	return ce
}

// syntaxError locates a yaml.v3 error in the file named name.
func syntaxError(name string, err error) error {
	m := yamlLineRE.FindStringSubmatch(err.Error())
	if m == nil {
		return &configError{file: name, err: errors.New(strings.TrimPrefix(err.Error(), "yaml: "))}
	}
	line, _ := strconv.Atoi(m[1])
	// yaml.v3 counts lines from 0 in parser errors (not in scanner errors);
	// these are all its parser errors.
	switch m[2] {
	case "did not find expected <document start>", "did not find expected node content",
		"did not find expected '-' indicator", "did not find expected key",
		"did not find expected ',' or ']'", "did not find expected ',' or '}'",
		"found undefined tag handle", "found duplicate %YAML directive",
		"found incompatible YAML document", "found duplicate %TAG directive":
		line++
	}
	return &configError{file: name, line: line, err: errors.New(m[2])}
}

// parser turns the YAML tree into a Config, noting each key's node and line
// and which keys had the wrong type.
type parser struct {
	file  string
	errs  []*configError
	nodes map[string]*yaml.Node // by key path
	lines map[string]int        // by key path: the key's line, or the list item's
	bad   map[string]bool       // key paths that had the wrong type, or too long a value
	// badUnder holds each bad key path and its ancestors but the top
	// level: the key paths with a bad one at or below them.
	badUnder map[string]bool
	// scope names the keys of one app of apps: (nil: a file of one app).
	scope *appScope
}

// newParser is a parser of the file named file.
func newParser(file string) *parser {
	return &parser{file: file, nodes: map[string]*yaml.Node{}, lines: map[string]int{}, bad: map[string]bool{}, badUnder: map[string]bool{}}
}

// fail reports that key has the wrong type (or value).
func (p *parser) fail(key string, err error) {
	p.bad[key] = true
	for k := key; k != ""; k = parent(k) {
		p.badUnder[k] = true
	}
	p.errs = append(p.errs, &configError{file: p.file, line: p.lineOf(key), key: key, err: err})
}

// lineOf is the line of key, or of its closest ancestor in the file.
func (p *parser) lineOf(key string) int {
	for key != "" {
		if line, ok := p.lines[key]; ok {
			return line
		}
		key = parent(key)
	}
	return 0
}

// parent is the key path of the mapping or list holding key: "health" for
// "health.timeout", "hosts" for "hosts[1]", "" for "hosts".
func parent(key string) string {
	return key[:max(strings.LastIndexAny(key, ".["), 0)]
}

// node is the node at key, if given. A scalar longer than maxValueLen
// characters is refused (once) and counts as absent: the key then has no
// other problem.
func (p *parser) node(key string) (*yaml.Node, bool) {
	n, ok := p.nodes[key]
	if !ok {
		return nil, false
	}
	if n.Kind == yaml.ScalarNode && len(n.Value) > maxValueLen {
		if chars := utf8.RuneCountInString(n.Value); chars > maxValueLen {
			if !p.bad[key] {
				p.fail(key, fmt.Errorf("is %d characters long; at most %d", chars, maxValueLen))
			}
			return nil, false
		}
	}
	return n, true
}

// report adds the problems Validate finds, located in the file, except
// those that only repeat a type error.
func (p *parser) report(problems []problem) {
	for _, pr := range problems {
		if !p.skip(pr) {
			p.errs = append(p.errs, &configError{file: p.file, line: p.lineOf(pr.key), key: pr.key, err: pr.err})
		}
	}
}

// skip says whether a validation problem only repeats a type error: one
// of its key or deps is a bad key, or is above or below one. It takes a
// look-up per ancestor of each, not one per bad key: a file may have many.
func (p *parser) skip(pr problem) bool {
	if p.bad[""] {
		return true // the file is not a mapping: nothing else is worth saying
	}
	for _, key := range append([]string{pr.key}, pr.deps...) {
		if p.badUnder[key] {
			return true
		}
		for k := key; k != ""; k = parent(k) {
			if p.bad[k] {
				return true
			}
		}
	}
	return false
}

// err joins the errors found, in line order (the first maxErrors of
// them); nil if there is none.
func (p *parser) err() error {
	slices.SortStableFunc(p.errs, func(a, b *configError) int { return a.line - b.line })
	return joinProblems(p.file, p.errs)
}

// joinProblems joins the first maxErrors of errs, one per line, and then
// counts the others in a last line naming file (if not empty).
func joinProblems(file string, errs []*configError) error {
	var joined []error
	for _, e := range errs[:min(len(errs), maxErrors)] {
		joined = append(joined, e)
	}
	switch more := len(errs) - maxErrors; {
	case more == 1:
		joined = append(joined, &configError{file: file, err: errors.New("and 1 more problem")})
	case more > 1:
		joined = append(joined, &configError{file: file, err: fmt.Errorf("and %d more problems", more)})
	}
	return errors.Join(joined...)
}

// mapping records the children of the mapping at path, reporting unknown and
// repeated keys. It returns false if path is absent or not a mapping.
func (p *parser) mapping(path string, known ...string) bool {
	n, ok := p.nodes[path]
	if !ok {
		return false
	}
	if n.Kind != yaml.MappingNode {
		p.fail(path, fmt.Errorf("must be a mapping of keys, got %s", describe(n)))
		return false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := join(path, k.Value)
		switch first, dup := p.lines[key]; {
		case k.Value == "<<" && k.Tag == "!!merge":
			p.errs = append(p.errs, &configError{file: p.file, line: k.Line, key: path,
				err: errors.New("YAML merge keys (<<) are not read: write the keys out (with apps:, the top level is already shared by every app)")})
		case !slices.Contains(known, k.Value):
			msg := fmt.Sprintf("unknown key %s (in %s)", quoteValue(k.Value), p.scope.where(path, k.Line))
			if s := closest(k.Value, known); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			p.errs = append(p.errs, &configError{file: p.file, line: k.Line, err: errors.New(msg)})
		case dup:
			p.errs = append(p.errs, &configError{file: p.file, line: k.Line, key: key, err: fmt.Errorf("given twice (first on line %d)", first)})
		default:
			p.nodes[key], p.lines[key] = deref(v), k.Line
		}
	}
	return true
}

// join is the key path of name in the mapping at path.
func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// list records the items of the list at key as key[0], key[1], ...
func (p *parser) list(key string) (int, bool) {
	n, ok := p.nodes[key]
	if !ok {
		return 0, false
	}
	if n.Kind != yaml.SequenceNode {
		p.fail(key, fmt.Errorf("must be a list, got %s", describe(n)))
		return 0, false
	}
	for i, item := range n.Content {
		k := fmt.Sprintf("%s[%d]", key, i)
		p.nodes[k], p.lines[k] = deref(item), item.Line
	}
	return len(n.Content), true
}

// readStr reads the string at key, if given.
func (p *parser) readStr(key string, dst *string) {
	n, ok := p.node(key)
	switch {
	case !ok:
	case n.Kind != yaml.ScalarNode || n.Tag == "!!null":
		p.fail(key, fmt.Errorf("must be a string, got %s", describe(n)))
	default:
		*dst = n.Value
	}
}

// readStrs reads the list of strings at key, if given.
func (p *parser) readStrs(key string, dst *[]string) {
	n, ok := p.list(key)
	if !ok {
		return
	}
	*dst = nil
	for i := range n {
		var s string // "" for a wrong type: indexes stay those of the file
		p.readStr(fmt.Sprintf("%s[%d]", key, i), &s)
		*dst = append(*dst, s)
	}
}

// readInt reads the whole number at key; false if absent or not one.
func (p *parser) readInt(key string, dst *int) bool {
	n, ok := p.node(key)
	if !ok {
		return false
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(dst) != nil {
		p.fail(key, fmt.Errorf("must be a whole number, got %s", describe(n)))
		return false
	}
	return true
}

// readBool reads true or false at key, if given.
func (p *parser) readBool(key string, dst *bool) {
	if n, ok := p.node(key); ok && (n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(dst) != nil) {
		p.fail(key, fmt.Errorf("must be true or false, got %s", describe(n)))
	}
}

// readDuration reads the duration at key, if given.
func (p *parser) readDuration(key string, dst *time.Duration) {
	n, ok := p.node(key)
	if !ok {
		return
	}
	_, numErr := strconv.ParseFloat(n.Value, 64)
	d, err := time.ParseDuration(n.Value)
	switch {
	case n.Kind != yaml.ScalarNode || numErr == nil || err != nil:
		p.fail(key, fmt.Errorf(`must be a duration like "30s", got %s`, describe(n)))
	case d < 0:
		p.fail(key, fmt.Errorf("must not be negative, got %s", quoteValue(n.Value)))
	default:
		*dst = d
	}
}

// readSudo reads auto, true or false, the last two also as YAML booleans.
func (p *parser) readSudo(key string, dst *string) {
	n, ok := p.node(key)
	if !ok {
		return
	}
	var b bool
	switch {
	case n.Kind == yaml.ScalarNode && n.Tag == "!!bool" && n.Decode(&b) == nil:
		*dst = strconv.FormatBool(b)
	case n.Kind == yaml.ScalarNode && n.Tag == "!!str" && slices.Contains([]string{"auto", "true", "false", sudoHelper}, n.Value):
		*dst = n.Value
	default:
		p.fail(key, fmt.Errorf("must be auto, true, false or helper, got %s", describe(n)))
	}
}

// readInstances reads the top level's ports, or its base_port with
// instances; Validate checks the resulting ports.
func (p *parser) readInstances(dst *Instances) {
	_, hasList := p.nodes["ports"]
	_, hasBase := p.nodes["base_port"]
	count, hasCount := p.nodes["instances"]
	switch {
	case hasList && (hasBase || hasCount):
		p.fail("ports", errors.New("give either ports or base_port with instances, not both"))
	case hasList:
		if n, _ := p.list("ports"); tooManyInstances(n) != nil {
			p.fail("ports", tooManyInstances(n))
			return
		}
		dst.List = p.readPorts("ports")
	case !hasCount && hasBase:
		p.fail("base_port", errors.New("needs instances too"))
	case hasCount && !hasBase:
		p.fail("instances", errors.New("needs base_port too"))
	case hasCount && count.Kind == yaml.ScalarNode && count.Value == "auto":
		var base int
		if p.readInt("base_port", &base) {
			if err := validPort(base); err != nil {
				p.fail("base_port", err)
			}
			*dst = Instances{Base: base, Auto: true}
		}
	case hasCount:
		p.readBaseCount(dst)
	}
}

// readPorts reads the list of ports at key; an item of the wrong type is
// 0, so that indexes stay those of the file.
func (p *parser) readPorts(key string) []int {
	n, _ := p.list(key)
	var ports []int
	for i := range n {
		var port int
		p.readInt(fmt.Sprintf("%s[%d]", key, i), &port)
		ports = append(ports, port)
	}
	return ports
}

// readBaseCount reads base_port with a number of instances.
func (p *parser) readBaseCount(dst *Instances) {
	var base, count int
	okBase, okCount := p.readInt("base_port", &base), p.readInt("instances", &count)
	switch {
	case !okBase || !okCount:
	case validPort(base) != nil:
		p.fail("base_port", validPort(base))
	case count < 1:
		p.fail("instances", fmt.Errorf("must be at least 1, got %d", count))
	case tooManyInstances(count) != nil:
		p.fail("instances", tooManyInstances(count))
	case base+count-1 > maxPort:
		p.fail("instances", fmt.Errorf("%d instances from base_port %d run past port 65535", count, base))
	default:
		*dst = Instances{Base: base, Count: count}
	}
}

// deref follows aliases to the node they name.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// describe names a node's value for an error message.
func describe(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Tag == "!!null":
		return "nothing"
	}
	return quoteValue(n.Value)
}

// field is a key of a mapping, or a few keys read together, and how to read
// it. The known keys of a mapping are the names of its fields, so each key
// is declared once.
type field struct {
	names []string
	read  func(p *parser, path string) // path: the mapping's
}

// fields reads the mapping at path, reporting the keys that are none of
// the fields'. It returns false if path is absent or not a mapping.
func (p *parser) fields(path string, fields []field) bool {
	var known []string
	for _, f := range fields {
		known = append(known, f.names...)
	}
	if !p.mapping(path, known...) {
		return false
	}
	for _, f := range fields {
		f.read(p, path)
	}
	return true
}

// one is the field name, read by read from its key path.
func one(name string, read func(p *parser, key string)) field {
	return field{names: []string{name}, read: func(p *parser, path string) { read(p, join(path, name)) }}
}

// section is a mapping of fields.
func section(name string, fields ...field) field {
	return one(name, func(p *parser, key string) { p.fields(key, fields) })
}

// str is a string.
func str(name string, dst *string) field {
	return one(name, func(p *parser, key string) { p.readStr(key, dst) })
}

// strs is a list of strings.
func strs(name string, dst *[]string) field {
	return one(name, func(p *parser, key string) { p.readStrs(key, dst) })
}

// integer is a whole number.
func integer(name string, dst *int) field {
	return one(name, func(p *parser, key string) { p.readInt(key, dst) })
}

// optInteger is a whole number whose absence is told apart from 0.
func optInteger(name string, dst **int) field {
	return one(name, func(p *parser, key string) {
		var n int
		if p.readInt(key, &n) {
			*dst = &n
		}
	})
}

// boolean is true or false.
func boolean(name string, dst *bool) field {
	return one(name, func(p *parser, key string) { p.readBool(key, dst) })
}

// duration is a duration like "30s", not negative.
func duration(name string, dst *time.Duration) field {
	return one(name, func(p *parser, key string) { p.readDuration(key, dst) })
}

// sudo is auto, true, false or helper.
func sudo(dst *string) field {
	return one("sudo", func(p *parser, key string) { p.readSudo(key, dst) })
}

// instances are ports, or base_port with instances: one value, read at
// the top level.
func instances(dst *Instances) field {
	return field{names: []string{"ports", "base_port", "instances"}, read: func(p *parser, _ string) { p.readInstances(dst) }}
}
