package deployer

import (
	"strings"
	"testing"
)

const upstreamFile = `# managed by hand, down flags by rollout
upstream other {
    server 127.0.0.1:3000;
}

upstream my_app {
    least_conn;
    server 127.0.0.1:3000;
    server 127.0.0.1:3001 weight=2;   # the big one
    server 127.0.0.1:3002 down;
    server 10.0.0.9:3003;
    keepalive 16;
}
`

func TestUpstreamServers(t *testing.T) {
	got, err := upstreamServers([]byte(upstreamFile), "my_app", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]bool{3000: false, 3001: false, 3002: true}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for p, d := range want {
		if got[p] != d {
			t.Errorf("port %d down=%v, want %v", p, got[p], d)
		}
	}
}

func TestSetServerDown(t *testing.T) {
	tests := []struct {
		name    string
		port    int
		down    bool
		changed string // the line that must appear
		wantErr string
	}{
		{name: "drain", port: 3000, down: true, changed: "    server 127.0.0.1:3000 down;\n"},
		{name: "drain keeps params and comment", port: 3001, down: true, changed: "    server 127.0.0.1:3001 weight=2 down;   # the big one\n"},
		{name: "undrain", port: 3002, down: false, changed: "    server 127.0.0.1:3002;\n"},
		{name: "already down", port: 3002, down: true, changed: "    server 127.0.0.1:3002 down;\n"},
		{name: "missing port", port: 3009, down: true, wantErr: `upstream "my_app" has no line "server 127.0.0.1:3009;"`},
		{name: "other address is not ours", port: 3003, down: true, wantErr: "no line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := setServerDown([]byte(upstreamFile), "my_app", "127.0.0.1", tt.port, tt.down)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(got), tt.changed) {
				t.Errorf("missing %q in\n%s", tt.changed, got)
			}
			// Only that line changes; the other upstream is untouched.
			if gotLines, wantLines := strings.Count(string(got), "\n"), strings.Count(upstreamFile, "\n"); gotLines != wantLines {
				t.Errorf("line count %d, want %d", gotLines, wantLines)
			}
			if !strings.Contains(string(got), "upstream other {\n    server 127.0.0.1:3000;\n}") {
				t.Errorf("other upstream changed:\n%s", got)
			}
		})
	}
}

func TestSetServerDownRoundTrip(t *testing.T) {
	down, err := setServerDown([]byte(upstreamFile), "my_app", "127.0.0.1", 3000, true)
	if err != nil {
		t.Fatal(err)
	}
	up, err := setServerDown(down, "my_app", "127.0.0.1", 3000, false)
	if err != nil {
		t.Fatal(err)
	}
	if string(up) != upstreamFile {
		t.Errorf("drain then undrain changed the file:\n%s", up)
	}
}

func TestUpstreamMissing(t *testing.T) {
	_, err := upstreamServers([]byte(upstreamFile), "nope", "127.0.0.1")
	if err == nil || !strings.Contains(err.Error(), `upstream "nope" not found`) {
		t.Fatalf("err = %v", err)
	}
}

func TestAddRemoveServer(t *testing.T) {
	in := "# mine\nupstream other {\n  server 127.0.0.1:9000;\n}\nupstream my_app {\n    least_conn;\n    server 127.0.0.1:3000 weight=2;\n    server 127.0.0.1:3001 down; # note\n}\n"
	got, err := addServer([]byte(in), "my_app", "127.0.0.1", 3002)
	if err != nil {
		t.Fatal(err)
	}
	want := "# mine\nupstream other {\n  server 127.0.0.1:9000;\n}\nupstream my_app {\n    least_conn;\n    server 127.0.0.1:3000 weight=2;\n    server 127.0.0.1:3001 down; # note\n    server 127.0.0.1:3002;\n}\n"
	if string(got) != want {
		t.Errorf("add:\n%s\nwant:\n%s", got, want)
	}
	back, err := removeServer(got, "my_app", "127.0.0.1", 3002)
	if err != nil || string(back) != in {
		t.Errorf("remove: %v\n%s", err, back)
	}
	if _, err := removeServer([]byte(in), "my_app", "127.0.0.1", 9000); err == nil {
		t.Error("removed a server of another upstream")
	}
	empty, err := addServer([]byte("upstream my_app {\n}\n"), "my_app", "127.0.0.1", 3000)
	if err != nil || string(empty) != "upstream my_app {\n    server 127.0.0.1:3000;\n}\n" {
		t.Errorf("add to an empty block: %v %q", err, empty)
	}
	if _, err := addServer([]byte(in), "nope", "127.0.0.1", 1); err == nil {
		t.Error("added to a missing upstream")
	}
}

// TestUpstreamEditKeepsBytes checks the cases the fuzz test found: a block
// closed by a "}" that is not alone on its line, parameters written with
// more than one blank, several directives on a line, CRLF line endings.
func TestUpstreamEditKeepsBytes(t *testing.T) {
	type edit func(content []byte) ([]byte, error)
	down := func(port int, d bool) edit {
		return func(c []byte) ([]byte, error) { return setServerDown(c, "my_app", "127.0.0.1", port, d) }
	}
	add := func(port int) edit {
		return func(c []byte) ([]byte, error) { return addServer(c, "my_app", "127.0.0.1", port) }
	}
	remove := func(port int) edit {
		return func(c []byte) ([]byte, error) { return removeServer(c, "my_app", "127.0.0.1", port) }
	}
	tests := []struct {
		name, in string
		edit     edit
		want     string // the content, or the error
	}{
		{name: "a comment after the closing brace", edit: down(3000, true),
			in:   "upstream my_app {\n    server 127.0.0.1:3001;\n} # end\nupstream my_app_admin {\n    server 127.0.0.1:3000;\n}\n",
			want: `upstream "my_app" has no line "server 127.0.0.1:3000;"`},
		{name: "the closing brace after a server", edit: down(3001, true),
			in:   "upstream my_app {\n    server 127.0.0.1:3000; }\nupstream other {\n    server 127.0.0.1:3001;\n}\n",
			want: `upstream "my_app" has no line "server 127.0.0.1:3001;"`},
		{name: "drain keeps the blanks", edit: down(3000, true),
			in:   "upstream my_app {\n\tserver 127.0.0.1:3000\tweight=5  ;\t# tabs\n}\n",
			want: "upstream my_app {\n\tserver 127.0.0.1:3000\tweight=5 down  ;\t# tabs\n}\n"},
		{name: "undrain keeps the blanks", edit: down(3001, false),
			in:   "upstream my_app {\n    server 127.0.0.1:3001  down  backup;\n}\n",
			want: "upstream my_app {\n    server 127.0.0.1:3001  backup;\n}\n"},
		{name: "drain a server on the closing line", edit: down(3000, true),
			in:   "upstream my_app {\n    server 127.0.0.1:3000; }\n",
			want: "upstream my_app {\n    server 127.0.0.1:3000 down; }\n"},
		{name: "remove a server sharing the closing line", edit: remove(3000),
			in:   "upstream my_app {\n    server 127.0.0.1:3000; }\n",
			want: `upstream "my_app": line 2 has more than "server 127.0.0.1:3000;" on it; put it on a line of its own`},
		{name: "remove a server sharing its line", edit: remove(3000),
			in:   "upstream my_app {\n    server 127.0.0.1:3000; server 127.0.0.1:3001;\n}\n",
			want: `upstream "my_app": line 2 has more than "server 127.0.0.1:3000;" on it; put it on a line of its own`},
		{name: "remove a port written with a leading 0", edit: remove(3000),
			in:   "upstream my_app {\n    server 127.0.0.1:03000; # old\n    server 127.0.0.1:3001;\n}\n",
			want: "upstream my_app {\n    server 127.0.0.1:3001;\n}\n"},
		{name: "add before a closing brace after a server", edit: add(3001),
			in:   "upstream my_app {\n    server 127.0.0.1:3000; }\n",
			want: "upstream my_app {\n    server 127.0.0.1:3001;\n    server 127.0.0.1:3000; }\n"},
		{name: "add with CRLF", edit: add(3001),
			in:   "upstream my_app {\r\n  server 127.0.0.1:3000;\r\n}\r\n",
			want: "upstream my_app {\r\n  server 127.0.0.1:3000;\r\n  server 127.0.0.1:3001;\r\n}\r\n"},
		{name: "add to a block closed by }0", edit: add(3001),
			in:   "upstream my_app{\n}0",
			want: "upstream my_app{\n    server 127.0.0.1:3001;\n}0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := tt.edit([]byte(tt.in))
			got := string(out)
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}
