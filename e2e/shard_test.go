package e2e

import (
	"bufio"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// defaultDuration is what a test missing from testdata/durations.tsv is
// taken to last.
const defaultDuration = 30.0

// selectTests narrows the tests this process runs: on a release other
// than bookworm only the core tests (TestCore*); with shard "i/n" its
// share of the tests, balanced by their times in testdata/durations.tsv
// (the longest first, each to the share with the least so far). It sets
// -test.run, keeping a -run given: a test runs when it matches both.
func selectTests(suite, shard string) error {
	if suite == testbed.Bookworm && shard == "" {
		return nil
	}
	names, err := testNames(".")
	if err != nil {
		return err
	}
	if suite != testbed.Bookworm {
		names = slices.DeleteFunc(names, func(n string) bool { return !strings.HasPrefix(n, "TestCore") })
	}
	if shard != "" {
		var i, n int
		if _, err := fmt.Sscanf(shard, "%d/%d", &i, &n); err != nil || n < 1 || i < 1 || i > n {
			return fmt.Errorf("ROLLOUT_E2E_SHARD=%q: want i/n with 1 <= i <= n", shard)
		}
		durations, err := readDurations("testdata/durations.tsv")
		if err != nil {
			return err
		}
		names = share(names, durations, i, n)
	}
	run := flag.Lookup("test.run").Value.String()
	top, sub, _ := strings.Cut(run, "/")
	if top != "" {
		re, err := regexp.Compile(top)
		if err != nil {
			return fmt.Errorf("-run %q: %w", run, err)
		}
		names = slices.DeleteFunc(names, func(n string) bool { return !re.MatchString(n) })
	}
	pattern := "^(" + strings.Join(names, "|") + ")$"
	if len(names) == 0 {
		pattern = "^$" // nothing here for this process
	}
	if sub != "" {
		pattern += "/" + sub
	}
	return flag.Set("test.run", pattern)
}

// share is the i-th of n shares of the tests (names), balanced by their
// durations.
func share(names []string, durations map[string]float64, i, n int) []string {
	d := func(name string) float64 {
		if v, ok := durations[name]; ok {
			return v
		}
		return defaultDuration
	}
	sorted := slices.Clone(names)
	sort.SliceStable(sorted, func(a, b int) bool { return d(sorted[a]) > d(sorted[b]) })
	loads := make([]float64, n)
	var mine []string
	for _, name := range sorted {
		least := 0
		for k := range loads {
			if loads[k] < loads[least] {
				least = k
			}
		}
		loads[least] += d(name)
		if least == i-1 {
			mine = append(mine, name)
		}
	}
	slices.Sort(mine)
	return mine
}

// testNames are the top-level tests of the package in dir.
func testNames(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		return nil, err
	}
	var names []string
	fset := token.NewFileSet()
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, decl := range af.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if ok && fd.Recv == nil && strings.HasPrefix(fd.Name.Name, "Test") && fd.Name.Name != "TestMain" {
				names = append(names, fd.Name.Name)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// readDurations reads "NAME SECONDS" lines ("#" starts a comment).
func readDurations(path string) (map[string]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s:%d: want NAME SECONDS", path, n)
		}
		v, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		out[fields[0]] = v
	}
	return out, sc.Err()
}

func envInt(name string, def int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: not a number", name, v)
	}
	return n, nil
}
