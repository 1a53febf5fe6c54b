package deployer

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// fuzzAddr is the server address of the fuzzed edits.
const fuzzAddr = "127.0.0.1"

// FuzzUpstreamEdit checks the upstream file's editor on any content: it
// never panics, and an edit changes only the server lines of its port in
// its block, keeping every other byte.
func FuzzUpstreamEdit(f *testing.F) {
	for _, s := range []string{
		upstreamFile,
		"# mine\nupstream other {\n  server 127.0.0.1:9000;\n}\nupstream my_app {\n    least_conn;\n    server 127.0.0.1:3000 weight=2;\n    server 127.0.0.1:3001 down; # note\n}\n",
		"upstream my_app {\n}\n",
		"upstream my_app {\r\n    server 127.0.0.1:3000;\r\n    server 127.0.0.1:3001 down;\r\n    keepalive 32;\r\n}\r\n",
		"upstream my_app {\n    server 127.0.0.1:3000 max_fails=3 fail_timeout=10s;\n    server 127.0.0.1:3001;\n}",
		"upstream my_app { # the app\n\tserver 127.0.0.1:3000\tweight=5  ;\t# tabs\n\tserver 127.0.0.1:3001  down  backup;\n} # end\n\nupstream my_app_admin {\n\tserver 127.0.0.1:3000;\n}\n",
		"upstream my_app {\n    zone my_app 64k;\n    hash $request_uri consistent;\n    server 127.0.0.1:3000 weight=1;\n    server 10.0.0.9:3000;\n    server 127.0.0.1:3001 down;\n    keepalive 16;\n    keepalive_timeout 60s;\n}\n",
		"upstream my_app {\n    server 127.0.0.1:3000; }\nupstream other {\n    server 127.0.0.1:3001;\n}\n",
		"upstream my_app {\n    server 127.0.0.1:3000; server 127.0.0.1:3001;\n}\n",
		"upstream my_app {\n    server 127.0.0.1:3000;\n",
		"",
	} {
		for _, port := range []uint16{3000, 3001, 9000} {
			f.Add([]byte(s), "my_app", port, true)
			f.Add([]byte(s), "my_app", port, false)
		}
	}
	f.Add([]byte(upstreamFile), "other", uint16(3000), true)
	f.Fuzz(func(t *testing.T, content []byte, upstream string, port16 uint16, down bool) {
		port := int(port16)
		checkServers(t, content, upstream)
		checkSetDown(t, content, upstream, port, down)
		if out, ok := checkRemove(t, content, upstream, port); ok {
			checkAdd(t, out, upstream, port)
		}
		checkAdd(t, content, upstream, port)
	})
}

// upstreamLine is what the fuzz test makes of one line of an upstream
// file, on its own terms: a block of the upstream is the lines after its
// "upstream NAME {" line up to the first with a "}" outside a comment.
type upstreamLine struct {
	inBlock bool // after the block's opening line, up to its "}" line
	port    int  // of a "server ADDR:PORT ...;" line of fuzzAddr, else -1
	down    bool // such a line's parameters include down
	alone   bool // such a line holds nothing else but a comment
}

// upstreamModel is what the fuzz test makes of each line of content, and
// whether the first block of upstream is there and closed.
func upstreamModel(content []byte, upstream string) (model []upstreamLine, closed bool) {
	inBlock, first := false, 0 // first: 0 before the first block, 1 in it, 2 after
	for _, line := range splitLines(content) {
		text := strings.TrimRight(line, "\n")
		l := upstreamLine{port: -1}
		if !inBlock {
			if m := upstreamOpenRE.FindStringSubmatch(text); m != nil && m[1] == upstream {
				inBlock = true
				first = max(first, 1)
			}
			model = append(model, l)
			continue
		}
		l.inBlock = true
		if m := serverLineRE.FindStringSubmatch(text); m != nil && m[2] == fuzzAddr {
			if port, err := strconv.Atoi(m[3]); err == nil { // as Nginx reads it: 03000 is 3000
				directive, rest, _ := strings.Cut(text, ";")
				l.port = port
				l.down = slices.Contains(strings.Fields(directive)[2:], "down")
				l.alone = strings.TrimSpace(rest) == "" || strings.HasPrefix(strings.TrimSpace(rest), "#")
			}
		}
		uncommented, _, _ := strings.Cut(text, "#")
		if strings.Contains(uncommented, "}") {
			inBlock = false
			if first == 1 {
				closed, first = true, 2
			}
		}
		model = append(model, l)
	}
	return model, closed
}

// linesOf returns the block's lines of port in model.
func linesOf(model []upstreamLine, port int) []upstreamLine {
	var lines []upstreamLine
	for _, l := range model {
		if l.inBlock && l.port == port {
			lines = append(lines, l)
		}
	}
	return lines
}

var downParamRE = regexp.MustCompile(`[ \t\r\f\v]+down([ \t\r\f\v;])`)

// withoutDown is line without its "down" parameters and the blanks before
// them.
func withoutDown(line string) string {
	for {
		next := downParamRE.ReplaceAllString(line, "$1")
		if next == line {
			return line
		}
		line = next
	}
}

// checkServers checks that upstreamServers finds the block's server lines.
func checkServers(t *testing.T, content []byte, upstream string) {
	servers, err := upstreamServers(content, upstream, fuzzAddr)
	if err != nil {
		return
	}
	model, _ := upstreamModel(content, upstream)
	want := map[int]bool{}
	for _, l := range model {
		if l.inBlock && l.port >= 0 {
			want[l.port] = l.down
		}
	}
	for port, down := range want {
		if got, ok := servers[port]; !ok || got != down {
			t.Errorf("upstreamServers: port %d: got %v (found %v), want %v", port, got, ok, down)
		}
	}
}

// checkSetDown checks setServerDown: it changes only the "down" of the
// block's lines of port, and down then up gives back the content.
func checkSetDown(t *testing.T, content []byte, upstream string, port int, down bool) {
	model, _ := upstreamModel(content, upstream)
	out, err := setServerDown(content, upstream, fuzzAddr, port, down)
	if err != nil {
		if len(linesOf(model, port)) > 0 {
			t.Errorf("setServerDown(%d, %v): %v, but the block has the line", port, down, err)
		}
		return
	}
	in, got := splitLines(content), splitLines(out)
	if len(got) != len(in) {
		t.Fatalf("setServerDown(%d, %v): %d lines, want %d:\n%q", port, down, len(got), len(in), out)
	}
	outModel, _ := upstreamModel(out, upstream)
	for i := range in {
		if got[i] == in[i] {
			continue
		}
		if !model[i].inBlock || model[i].port != port || model[i].down == down {
			t.Errorf("setServerDown(%d, %v) changed line %d %q into %q", port, down, i+1, in[i], got[i])
		} else if outModel[i].port != port || outModel[i].down != down || withoutDown(got[i]) != withoutDown(in[i]) {
			t.Errorf("setServerDown(%d, %v) made line %d %q into %q", port, down, i+1, in[i], got[i])
		}
	}
	for _, l := range linesOf(outModel, port) {
		if l.down != down {
			t.Errorf("setServerDown(%d, %v) left a line of the port as it was:\n%q", port, down, out)
		}
	}
	if !down || slices.ContainsFunc(linesOf(model, port), func(l upstreamLine) bool { return l.down }) {
		return
	}
	back, err := setServerDown(out, upstream, fuzzAddr, port, false)
	if err != nil || string(back) != string(content) {
		t.Errorf("setServerDown(%d) down then up: %v\n%q\nwant\n%q", port, err, back, content)
	}
}

// checkRemove checks removeServer: it removes whole lines, each a line of
// port in the block holding nothing else, and every such line. It returns
// the content without them, if removeServer did.
func checkRemove(t *testing.T, content []byte, upstream string, port int) ([]byte, bool) {
	model, _ := upstreamModel(content, upstream)
	out, err := removeServer(content, upstream, fuzzAddr, port)
	if err != nil {
		return nil, false
	}
	in, got := splitLines(content), splitLines(out)
	j := 0
	for i, line := range in {
		if j < len(got) && got[j] == line {
			j++
			continue
		}
		if !model[i].inBlock || model[i].port != port || !model[i].alone {
			t.Errorf("removeServer(%d) removed line %d %q:\n%q", port, i+1, line, out)
		}
	}
	if j != len(got) {
		t.Fatalf("removeServer(%d) did not only remove lines:\n%q\ngave\n%q", port, content, out)
	}
	if outModel, _ := upstreamModel(out, upstream); len(linesOf(outModel, port)) > 0 {
		t.Errorf("removeServer(%d) left a line of the port:\n%q", port, out)
	}
	return out, true
}

var addedLineRE = regexp.MustCompile(`^[ \t]*server ` + regexp.QuoteMeta(fuzzAddr) + `:(\d+);\r?\n$`)

// checkAdd checks addServer: it inserts one line, "server ADDR:PORT;", in
// the first block, and changes no other byte.
func checkAdd(t *testing.T, content []byte, upstream string, port int) {
	_, closed := upstreamModel(content, upstream)
	out, err := addServer(content, upstream, fuzzAddr, port)
	if err != nil {
		if closed {
			t.Errorf("addServer(%d): %v, but the block is there", port, err)
		}
		return
	}
	in, got := splitLines(content), splitLines(out)
	if len(got) != len(in)+1 {
		t.Fatalf("addServer(%d): %d lines, want %d:\n%q", port, len(got), len(in)+1, out)
	}
	at := 0
	for at < len(in) && got[at] == in[at] {
		at++
	}
	outModel, _ := upstreamModel(out, upstream)
	if m := addedLineRE.FindStringSubmatch(got[at]); m == nil || m[1] != strconv.Itoa(port) || !outModel[at].inBlock {
		t.Errorf("addServer(%d) added line %d %q:\n%q", port, at+1, got[at], out)
	}
	if !slices.Equal(got[at+1:], in[at:]) {
		t.Errorf("addServer(%d) changed more than one line:\n%q\ngave\n%q", port, content, out)
	}
}
