package deployer

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// An environment (staging beside production) is a file beside the
// config, rollout.staging.yaml for rollout.yaml, whose keys replace the
// config's key by key: a mapping is merged into the config's mapping of
// the same key, anything else (a value, a list) replaces it whole. Its
// problems are located in the file and on the line that set the key.

// envRE is an environment's name.
var envRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// notOverridable are the keys an environment's file cannot set: an
// environment is the same app (its units, lock and history) elsewhere.
var notOverridable = map[string]string{
	"app": "an environment is the same app on other hosts (another app belongs in its own file, or in apps:)",
}

// EnvFile is the file of environment env beside the config at path.
func EnvFile(path, env string) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "." + env + ext
}

// CheckEnv checks an environment's name.
func CheckEnv(env string) error {
	return match(envRE, env, `1..32 lower-case letters, digits, "_" or "-", starting with a letter or digit`)
}

// LoadProjectEnv is LoadProject with environment env's file overlaid on
// the config ("": none).
func LoadProjectEnv(path, env string) (*Project, error) {
	merged, err := loadEnv(path, env)
	if err != nil {
		return nil, err
	}
	pr, err := parseProject(path, merged.root)
	return pr, merged.relocate(err)
}

// MergedConfig is the config at path with environment env's file
// overlaid ("": none), as YAML, each value followed by the file and line
// it came from.
func MergedConfig(path, env string) ([]byte, error) {
	merged, err := loadEnv(path, env)
	if err != nil {
		return nil, err
	}
	merged.annotate(merged.root)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(merged.root); err != nil {
		return nil, fmt.Errorf("print the config: %w", err)
	}
	return b.Bytes(), enc.Close()
}

// merged is a config with an environment's file overlaid: the overlay's
// nodes have their lines moved past the config's by offset, so that one
// tree keeps where each key came from.
type merged struct {
	root          *yaml.Node
	file, envFile string
	offset        int // 0: no environment
	seen          map[*yaml.Node]bool
}

func loadEnv(path, env string) (*merged, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	root, err := document(path, data)
	if err != nil {
		return nil, err
	}
	m := &merged{root: root, file: path, seen: map[*yaml.Node]bool{}}
	if env == "" {
		return m, nil
	}
	if err := CheckEnv(env); err != nil {
		return nil, fmt.Errorf("environment %s: %w", quoteValue(env), err)
	}
	m.envFile = EnvFile(path, env)
	over, err := readConfigFile(m.envFile)
	if err != nil {
		return nil, fmt.Errorf("environment %s: %w (its keys go in %s, beside %s)", env, err, m.envFile, path)
	}
	var doc yaml.Node
	if yaml.Unmarshal(over, &doc) == nil && (len(doc.Content) == 0 || doc.Content[0].Tag == "!!null") {
		return nil, &configError{file: m.envFile, err: fmt.Errorf("has no keys: give it those environment %s changes (hosts, at least)", env)}
	}
	top, err := document(m.envFile, over)
	if err != nil {
		return nil, err
	}
	top = deref(top)
	if err := twice(m.envFile, top, "", map[*yaml.Node]bool{}); err != nil {
		return nil, err // overlay would merge the two
	}
	if top.Kind != yaml.MappingNode {
		return nil, &configError{file: m.envFile, line: top.Line, err: fmt.Errorf("must be a mapping of the keys environment %s changes, got %s", env, describe(top))}
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		if why, ok := notOverridable[top.Content[i].Value]; ok {
			return nil, &configError{file: m.envFile, line: top.Content[i].Line, key: top.Content[i].Value, err: errors.New("cannot be set by an environment: " + why)}
		}
	}
	m.offset = bytes.Count(data, []byte("\n")) + 2
	m.shift(top)
	base := deref(root)
	if base.Kind != yaml.MappingNode {
		return m, nil // the parser says what is wrong with it
	}
	overlay(base, top)
	return m, nil
}

// twice finds a key given twice in a mapping at or under n (path is n's
// key path), as the config's parser does for the config itself.
func twice(file string, n *yaml.Node, path string, seen map[*yaml.Node]bool) error {
	n = deref(n)
	if n == nil || seen[n] {
		return nil
	}
	seen[n] = true
	first := map[string]int{}
	for i, c := range n.Content {
		key := path
		if n.Kind == yaml.MappingNode {
			if i%2 == 0 {
				if line, ok := first[c.Value]; ok {
					return &configError{file: file, line: c.Line, key: join(path, c.Value), err: fmt.Errorf("given twice (first on line %d)", line)}
				}
				first[c.Value] = c.Line
				continue
			}
			key = join(path, n.Content[i-1].Value)
		}
		if err := twice(file, c, key, seen); err != nil {
			return err
		}
	}
	return nil
}

// shift moves n's lines and those under it past the config's.
func (m *merged) shift(n *yaml.Node) {
	if n == nil || m.seen[n] {
		return
	}
	m.seen[n] = true
	n.Line += m.offset
	for _, c := range n.Content {
		m.shift(c)
	}
	m.shift(n.Alias)
}

// overlay merges mapping over into mapping base.
func overlay(base, over *yaml.Node) {
	for i := 0; i+1 < len(over.Content); i += 2 {
		k, v := over.Content[i], over.Content[i+1]
		j := pairIndex(base, k.Value)
		switch {
		case j < 0:
			base.Content = append(base.Content, k, v)
		case deref(base.Content[j+1]).Kind == yaml.MappingNode && deref(v).Kind == yaml.MappingNode && k.Tag != "!!merge":
			// A copy: an alias's target may be used elsewhere too.
			into := *deref(base.Content[j+1])
			into.Content = append([]*yaml.Node(nil), into.Content...)
			overlay(&into, deref(v))
			base.Content[j+1] = &into
		default:
			base.Content[j], base.Content[j+1] = k, v
		}
	}
}

// where is the file and line a merged line is in.
func (m *merged) where(line int) (string, int) {
	if m.offset > 0 && line >= m.offset {
		return m.envFile, line - m.offset
	}
	return m.file, line
}

// relocate puts each problem of the merged config in its file and line.
func (m *merged) relocate(err error) error {
	if err == nil || m.offset == 0 {
		return err
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	out := make([]error, len(errs))
	for i, e := range errs {
		var ce *configError
		if errors.As(e, &ce) && ce.line > 0 {
			c := *ce
			c.file, c.line = m.where(ce.line)
			e = &c
		}
		out[i] = e
	}
	return errors.Join(out...)
}

// annotate replaces n's comments with where each value came from.
func (m *merged) annotate(n *yaml.Node) {
	n = deref(n)
	n.HeadComment, n.LineComment, n.FootComment = "", "", ""
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], deref(n.Content[i+1])
			k.HeadComment, k.LineComment, k.FootComment = "", "", ""
			m.annotate(v)
			file, line := m.where(k.Line)
			if v.Kind == yaml.ScalarNode || len(v.Content) == 0 || v.Style&yaml.FlowStyle != 0 {
				v.LineComment = fmt.Sprintf("%s:%d", file, line)
			} else {
				k.LineComment = fmt.Sprintf("%s:%d", file, line)
			}
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			m.annotate(c)
		}
	}
}
