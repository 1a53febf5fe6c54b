package deployer

import (
	"go/ast"
	goparser "go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// sourceFiles are the repository's Go files (not tests, not build/).
func sourceFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "build" || d.Name() == "dist" || strings.HasPrefix(d.Name(), ".")) && path != ".." {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// The layers hold, as ARCHITECTURE.md says: a command runs on a host only
// through the remote's implementation (remote_ssh.go, over the link of
// reconnect.go), and only the balancer drivers (balancer*.go, lb*.go) and
// the config's own checks know which balancer serves a host.
func TestLayers(t *testing.T) {
	run := regexp.MustCompile(`\bconn\.Run\(|\.Run\(ctx, script\(|\.conn\.Run\(`)
	branch := regexp.MustCompile(`\.LB\b|\blbHAProxy\b|\blbNginx\b|\.Driver\b|\.Caddy\b|\.HAProxy\b|\.Traefik\b`)
	for _, path := range sourceFiles(t) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		base := filepath.Base(path)
		inDeployer := filepath.Base(filepath.Dir(path)) == "deployer"
		for n, line := range strings.Split(string(b), "\n") {
			if inDeployer && run.MatchString(line) && base != "remote_ssh.go" && base != "reconnect.go" {
				t.Errorf("%s:%d runs a command on a host outside the remote: %s", path, n+1, strings.TrimSpace(line))
			}
			driver := strings.HasPrefix(base, "balancer") || strings.HasPrefix(base, "lb")
			if inDeployer && branch.MatchString(line) && !driver && !strings.HasPrefix(base, "config") {
				t.Errorf("%s:%d branches on the balancer outside its drivers: %s", path, n+1, strings.TrimSpace(line))
			}
		}
	}
}

// No file is over 600 lines unless it is about one type: most of its lines
// are that type's declaration and methods (remote_ssh.go is sshRemote's,
// as litestream's db.go is DB's).
func TestFileSizes(t *testing.T) {
	fset := token.NewFileSet()
	for _, path := range sourceFiles(t) {
		f, err := goparser.ParseFile(fset, path, nil, goparser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		total := fset.Position(f.End()).Line
		if total <= 600 {
			continue
		}
		byType := map[string]int{}
		for _, decl := range f.Decls {
			span := fset.Position(decl.End()).Line - fset.Position(decl.Pos()).Line + 1
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if d.Recv != nil && len(d.Recv.List) == 1 {
					typ := d.Recv.List[0].Type
					if st, ok := typ.(*ast.StarExpr); ok {
						typ = st.X
					}
					if id, ok := typ.(*ast.Ident); ok {
						byType[id.Name] += span
					}
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					if ts, ok := spec.(*ast.TypeSpec); ok && len(d.Specs) == 1 {
						byType[ts.Name.Name] += span
					}
				}
			}
		}
		best, most := "", 0
		for name, n := range byType {
			if n > most {
				best, most = name, n
			}
		}
		if most*2 < total {
			t.Errorf("%s has %d lines and no central type (the most, %s, has %d): split it by concept", path, total, best, most)
		}
	}
}
