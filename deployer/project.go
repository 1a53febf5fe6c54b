package deployer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
	"gopkg.in/yaml.v3"
)

// Project is a rollout.yaml: one app, or several under apps:, each a
// whole Config made of the top level's keys (shared) with the app's own
// on top of them.
type Project struct {
	// Apps in the file's order; one for a file without apps:.
	Apps []*Config
	// Multi says the file has apps: (even with one app in it).
	Multi bool
	// AppsParallel is how many apps deploy at once (apps_parallel).
	AppsParallel int
}

// Keys of the top level that only a file with apps: has, or only an app.
const (
	appsKey         = "apps"
	appsParallelKey = "apps_parallel"
	pathsKey        = "paths"
)

// LoadProject reads and checks the config file at path, with one app or
// several. A file over 1 MiB is refused without being read.
func LoadProject(path string) (*Project, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	return ParseProject(path, data)
}

// readConfigFile reads the file at path, refusing one over 1 MiB.
func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if info.Size() > maxConfigSize {
		return nil, sizeError(path, info.Size())
	}
	// One byte more than allowed, in case the file grew since Stat.
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > maxConfigSize {
		size := int64(len(data))
		if info, err := f.Stat(); err == nil {
			size = max(size, info.Size())
		}
		return nil, sizeError(path, size)
	}
	return data, nil
}

// ParseProject parses and checks a config of at most 1 MiB with one app
// or several; name is the file's name in errors, which are located and
// ordered as ParseConfig's, a key of an app named apps.NAME.KEY.
func ParseProject(name string, data []byte) (*Project, error) {
	if len(data) > maxConfigSize {
		return nil, sizeError(name, int64(len(data)))
	}
	root, err := document(name, data)
	if err != nil {
		return nil, err
	}
	return parseProject(name, root)
}

// parseProject parses a config's root node, from the file named name.
func parseProject(name string, root *yaml.Node) (*Project, error) {
	top := deref(root)
	if top.Kind != yaml.MappingNode || mappingValue(top, appsKey) == nil {
		for _, k := range []string{appsParallelKey, pathsKey} {
			if key := mappingKey(top, k); key != nil {
				return nil, &configError{file: name, line: key.Line, key: k, err: errors.New("only in a file with apps: (" + map[string]string{appsParallelKey: "how many apps deploy at once", pathsKey: "the files of one app, under apps.NAME"}[k] + ")")}
			}
		}
		c, err := parseConfig(name, root)
		if err != nil {
			return nil, err
		}
		return &Project{Apps: []*Config{c}, AppsParallel: 1}, nil
	}
	return parseApps(name, top)
}

// parseApps reads a top level with apps:.
func parseApps(name string, top *yaml.Node) (*Project, error) {
	pr := &Project{Multi: true, AppsParallel: 1}
	var errs []*configError
	fail := func(line int, key string, err error) {
		errs = append(errs, &configError{file: name, line: line, key: key, err: err})
	}
	shared := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: top.Line, Column: top.Column}
	var apps *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], deref(top.Content[i+1])
		switch k.Value {
		case appsKey:
			apps = v
		case appsParallelKey:
			if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || v.Decode(&pr.AppsParallel) != nil || pr.AppsParallel < 1 {
				fail(k.Line, k.Value, fmt.Errorf("must be a whole number of at least 1, got %s", describe(v)))
			}
		case "app":
			fail(k.Line, k.Value, errors.New("with apps:, each app's name is its key under apps"))
		case pathsKey:
			fail(k.Line, k.Value, errors.New("only under apps.NAME (the files of one app)"))
		default:
			shared.Content = append(shared.Content, k, top.Content[i+1])
		}
	}
	if apps.Kind != yaml.MappingNode || len(apps.Content) == 0 {
		fail(apps.Line, appsKey, fmt.Errorf("must be a mapping of app names to their keys, got %s", describe(apps)))
		return nil, joinProblems(name, errs)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(apps.Content); i += 2 {
		k, v := apps.Content[i], deref(apps.Content[i+1])
		key := appsKey + "." + k.Value
		if first, dup := seen[k.Value]; dup {
			fail(k.Line, key, fmt.Errorf("given twice (first on line %d)", first))
			continue
		}
		seen[k.Value] = k.Line
		if err := match(appRE, k.Value, `lower-case letters, digits, "_", "." or "-", starting with a letter or digit`); err != nil {
			fail(k.Line, key, fmt.Errorf("an app's name: %w", err))
			continue
		}
		switch {
		case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			v = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: k.Line}
		case v.Kind != yaml.MappingNode:
			fail(k.Line, key, fmt.Errorf("must be a mapping of the app's keys, got %s", describe(v)))
			continue
		}
		if ak := mappingKey(v, "app"); ak != nil {
			fail(ak.Line, key+".app", errors.New("an app's name is its key under apps"))
			continue
		}
		c, appErrs := parseApp(name, k, shared, v)
		errs = append(errs, appErrs...)
		if c != nil {
			pr.Apps = append(pr.Apps, c)
		}
	}
	if len(errs) == 0 {
		errs = append(errs, pr.overlaps(name, apps)...)
	}
	if len(errs) > 0 {
		return nil, joinProblems(name, dedupe(errs))
	}
	pr.linkNeighbors()
	return pr, nil
}

// parseApp parses one app: the shared keys with the app's on top, and its
// name as app. Problems on the app's own lines are named apps.NAME.KEY.
func parseApp(file string, name *yaml.Node, shared, own *yaml.Node) (*Config, []*configError) {
	merged := mergeMappings(shared, own)
	merged.Content = append([]*yaml.Node{
		{Kind: yaml.ScalarNode, Tag: "!!str", Value: "app", Line: name.Line, Column: name.Column},
		{Kind: yaml.ScalarNode, Tag: "!!str", Value: name.Value, Line: name.Line, Column: name.Column},
	}, merged.Content...)
	p := newParser(file)
	p.scope = &appScope{name: name.Value, first: name.Line, last: lastLine(own, name.Line)}
	c := p.config(merged)
	p.report(c.problems())
	for _, e := range p.errs {
		if e.line == 0 { // a key missing for this app
			e.line = name.Line
		}
		e.key = p.scope.key(e.key, e.line)
	}
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	if c.UnitTemplate == "" {
		c.UnitTemplate = c.App + "@{port}"
	}
	for i, g := range c.Paths {
		if !doublestar.ValidatePattern(g) {
			return nil, []*configError{{file: file, line: p.lineOf(fmt.Sprintf("%s[%d]", pathsKey, i)), key: p.scope.key(fmt.Sprintf("%s[%d]", pathsKey, i), name.Line), err: fmt.Errorf("not a valid glob: %s", quoteValue(g))}}
		}
	}
	return c, nil
}

// appScope names the keys of one app under apps: those given on its own
// lines (first to last) are apps.NAME.KEY; the shared ones keep their name.
type appScope struct {
	name        string
	first, last int
}

// key is the name of key, given on line, in errors.
func (s *appScope) key(key string, line int) string {
	if s == nil || line < s.first || line > s.last || key == "" {
		return key
	}
	switch key {
	case "app":
		return appsKey + "." + s.name
	}
	return appsKey + "." + s.name + "." + key
}

// where names the mapping at path, whose key is on line, in an unknown
// key's error.
func (s *appScope) where(path string, line int) string {
	if path == "" {
		path = "app" // the app's own mapping: apps.NAME
	}
	if k := s.key(path, line); k != "app" {
		return k
	}
	return "the top level"
}

// lastLine is the last line of n or any node under it (at least floor).
func lastLine(n *yaml.Node, floor int) int {
	last := max(n.Line, floor)
	for _, c := range n.Content {
		last = max(last, lastLine(deref(c), last))
	}
	return last
}

// mergeMappings is base with over on top: a key in both is over's, merged
// key by key when both values are mappings. A key over gives twice stays
// twice, for the parser to report.
func mergeMappings(base, over *yaml.Node) *yaml.Node {
	out := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: over.Line, Column: over.Column}
	out.Content = slices.Clone(base.Content)
	seen := map[string]bool{}
	for i := 0; i+1 < len(over.Content); i += 2 {
		k, v := over.Content[i], over.Content[i+1]
		j := -1
		if !seen[k.Value] {
			j = pairIndex(out, k.Value)
		}
		seen[k.Value] = true
		switch {
		case j < 0:
			out.Content = append(out.Content, k, v)
		case deref(out.Content[j+1]).Kind == yaml.MappingNode && deref(v).Kind == yaml.MappingNode:
			out.Content[j], out.Content[j+1] = k, mergeMappings(deref(out.Content[j+1]), deref(v))
		default:
			out.Content[j], out.Content[j+1] = k, v
		}
	}
	return out
}

// pairIndex is the index of key's key node in mapping n, or -1.
func pairIndex(n *yaml.Node, key string) int {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return i
		}
	}
	return -1
}

// mappingKey is the key node of key in mapping n, if there.
func mappingKey(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	if i := pairIndex(n, key); i >= 0 {
		return n.Content[i]
	}
	return nil
}

// mappingValue is the value of key in mapping n, if there.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	if i := pairIndex(n, key); i >= 0 {
		return deref(n.Content[i+1])
	}
	return nil
}

// dedupe drops errors said already (a shared key's problem is found once
// per app) and keeps line order.
func dedupe(errs []*configError) []*configError {
	seen := map[string]bool{}
	var out []*configError
	for _, e := range errs {
		if s := e.Error(); !seen[s] {
			seen[s] = true
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b *configError) int { return a.line - b.line })
	return out
}

// neighbor is another app of the file on some of the same hosts: its
// ports there must not be this app's.
type neighbor struct {
	app       string
	hosts     []string
	instances Instances
}

// shares says whether two host lists have a host in common.
func shares(a, b []string) bool {
	return slices.ContainsFunc(a, func(h string) bool { return slices.Contains(b, h) })
}

// overlaps reports two apps on a common host whose ports overlap whatever
// the host's cores (instances: auto counted as its base_port only; the
// rest is checked per host: checkNeighbors), or that share an upstream.
func (pr *Project) overlaps(file string, apps *yaml.Node) []*configError {
	var errs []*configError
	for j, b := range pr.Apps {
		line := 0
		if i := pairIndex(apps, b.App); i >= 0 {
			line = apps.Content[i].Line
		}
		for _, a := range pr.Apps[:j] {
			if !shares(a.Hosts, b.Hosts) {
				continue
			}
			if common := intersect(a.Instances.Resolve(1), b.Instances.Resolve(1)); len(common) > 0 {
				errs = append(errs, &configError{file: file, line: line, key: appsKey + "." + b.App,
					err: fmt.Errorf("ports %s of app %s are also app %s's, on the same hosts", PortRanges(common), b.App, a.App)})
			}
			if a.Nginx.UpstreamFile == b.Nginx.UpstreamFile && a.Nginx.Upstream == b.Nginx.Upstream {
				errs = append(errs, &configError{file: file, line: line, key: appsKey + "." + b.App + ".nginx.upstream",
					err: fmt.Errorf("apps %s and %s name the same upstream %q in %s, on the same hosts: give each app its own", a.App, b.App, b.Nginx.Upstream, b.Nginx.UpstreamFile)})
			}
		}
	}
	return errs
}

// linkNeighbors tells each app the others on its hosts.
func (pr *Project) linkNeighbors() {
	for _, a := range pr.Apps {
		for _, b := range pr.Apps {
			if a != b && shares(a.Hosts, b.Hosts) {
				a.neighbors = append(a.neighbors, neighbor{app: b.App, hosts: slices.Clone(b.Hosts), instances: b.Instances})
			}
		}
	}
}

// checkNeighbors checks, with host's cores, that no other app of the file
// on host has a port of cfg (resolved for the host; auto: from
// instances: auto).
func checkNeighbors(cfg *Config, host string, auto bool, cores func() (int, error)) error {
	var errs []error
	for _, nb := range cfg.neighbors {
		if !slices.Contains(nb.hosts, host) {
			continue
		}
		n := 1
		if nb.instances.Auto || auto {
			var err error
			if n, err = cores(); err != nil {
				return fmt.Errorf("count CPU cores for app %s's instances: auto: %w", nb.app, err)
			}
		}
		theirs := nb.instances.Resolve(n)
		if common := intersect(cfg.AllPorts(), theirs); len(common) > 0 {
			how := ""
			if cfg.surging() {
				how = " (with the spare ports of strategy.max_surge)"
			}
			if nb.instances.Auto || auto {
				how += fmt.Sprintf(" (instances: auto, %d cores here)", n)
			}
			errs = append(errs, fmt.Errorf("ports %s of app %s are also app %s's here (%s: %s)%s: give them ranges that do not meet",
				PortRanges(common), cfg.App, nb.app, nb.app, PortRanges(theirs), how))
		}
	}
	return errors.Join(errs...)
}

// intersect is the ports in both a and b, in a's order.
func intersect(a, b []int) []int {
	var out []int
	for _, p := range a {
		if slices.Contains(b, p) {
			out = append(out, p)
		}
	}
	return out
}

// PortRanges writes ports for people, sorted, runs joined: "3000-3003,
// 3005" ("" for none).
func PortRanges(ports []int) string {
	ps := slices.Sorted(slices.Values(ports))
	var parts []string
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", ps[i], ps[j]))
		} else {
			parts = append(parts, fmt.Sprint(ps[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// Select is the apps named, in the file's order; unknown names are an
// error listing the apps there are.
func (pr *Project) Select(names []string) ([]*Config, error) {
	want := map[string]bool{}
	var unknown []string
	for _, n := range names {
		if !slices.ContainsFunc(pr.Apps, func(c *Config) bool { return c.App == n }) {
			unknown = append(unknown, quoteValue(n))
		}
		want[n] = true
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("no app %s in the config (its apps: %s)", strings.Join(unknown, ", "), strings.Join(pr.Names(), ", "))
	}
	var out []*Config
	for _, c := range pr.Apps {
		if want[c.App] {
			out = append(out, c)
		}
	}
	return out, nil
}

// Names are the apps' names in the file's order.
func (pr *Project) Names() []string {
	var names []string
	for _, c := range pr.Apps {
		names = append(names, c.App)
	}
	return names
}

// Changed is the apps of from whose paths match a changed file (a path
// relative to the repository's top, with "/"), and for each the first
// file that matched. An app without paths is an error: it could never be
// chosen, nor skipped knowingly.
func Changed(from []*Config, files []string) ([]*Config, map[string]string, error) {
	var none []string
	for _, c := range from {
		if len(c.Paths) == 0 {
			none = append(none, c.App)
		}
	}
	if len(none) > 0 {
		return nil, nil, fmt.Errorf("app %s has no paths: (the globs of its files); give it some, or paths: [\"**\"] to deploy it on any change", strings.Join(none, ", "))
	}
	var out []*Config
	why := map[string]string{}
	for _, c := range from {
	files:
		for _, f := range files {
			for _, g := range c.Paths {
				if doublestar.MatchUnvalidated(g, f) {
					out = append(out, c)
					why[c.App] = f
					break files
				}
			}
		}
	}
	return out, why, nil
}
