package secrets

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
)

// hard are values that must round-trip exactly.
var hard = Env{
	"NEWLINES":  "line one\nline two\n\nlast\n",
	"QUOTES":    `it's "quoted" and 'single' and \"escaped\"`,
	"EQUALS":    "a=b=c==",
	"UNICODE":   "pâté 🚀 日本語 \u00a0nbsp",
	"SHELL":     "$HOME `id` $(rm -rf /) ${X} \\n not a newline \\",
	"SPACES":    "  leading and trailing  ",
	"TABS":      "\tx\ty\t",
	"EMPTY":     "",
	"YAMLISH":   "- [a, b]: {c: d} # not a comment",
	"NUMBER":    "0x10",
	"BOOL":      "yes",
	"NULLWORD":  "null",
	"PEM":       "-----BEGIN KEY-----\nMIIB\n-----END KEY-----",
	"BACKSLASH": `C:\path\to\`,
}

func TestFormatRoundTrips(t *testing.T) {
	out, err := Format(hard)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(out)
	if err != nil {
		t.Fatalf("Parse(Format): %v\n%s", err, out)
	}
	if !maps.Equal(got, hard) {
		for n := range hard {
			if got[n] != hard[n] {
				t.Errorf("%s: got %q, want %q", n, got[n], hard[n])
			}
		}
	}
}

func FuzzFormatRoundTrips(f *testing.F) {
	for n, v := range hard {
		f.Add(n, v)
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		e := Env{name: value}
		out, err := Format(e)
		if e.Check() != nil {
			if err == nil {
				t.Fatalf("Format accepted %q=%q, which Check refuses", name, value)
			}
			return
		}
		if err != nil {
			t.Fatalf("Format(%q=%q): %v", name, value, err)
		}
		got, err := Parse(out)
		if err != nil || !maps.Equal(got, e) {
			t.Fatalf("round trip of %q=%q: got %q, %v", name, value, got, err)
		}
	})
}

func TestParseReadsValuesAsWritten(t *testing.T) {
	e, err := Parse([]byte("# a comment\nA: 0x10\nB: yes\nC: 'single'\nD: |\n  two\n  lines\nE: \"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Env{"A": "0x10", "B": "yes", "C": "single", "D": "two\nlines\n", "E": ""}
	if !maps.Equal(e, want) {
		t.Fatalf("got %q, want %q", e, want)
	}
	for _, empty := range []string{"", "# only a comment\n", "\n\n"} {
		if e, err := Parse([]byte(empty)); err != nil || len(e) != 0 {
			t.Errorf("Parse(%q) = %v, %v; want an empty env", empty, e, err)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"1BAD: x\n", "not a variable name"},
		{"BAD-NAME: x\n", "not a variable name"},
		{"A: x\nA: y\n", "set twice"},
		{"A:\n", "has no value"},
		{"A: [1, 2]\n", "must be a string"},
		{"A: {b: c}\n", "must be a string"},
		{"A: &x v\nB: *x\n", "must be a string"},
		{"A: !!binary aGVsbG8=\n", "without a YAML tag"},
		{"- a\n- b\n", "must be a mapping"},
		{"A: \"unterminated\n", "not YAML"},
		{"PORT: 1\n", "instance's port"},
		{"A: \"bell\\a\"\n", "control character"},
		{"A: \"nul\\0\"\n", "control character"},
		{"A: \"cr\\r\"\n", "control character"},
		{"<<: {A: b}\n", "not a variable name"},
	} {
		_, err := Parse([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", c.in, err, c.want)
		}
	}
	if _, err := Parse([]byte{0xff, 0xfe}); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Errorf("invalid UTF-8: %v", err)
	}
	if _, err := Parse([]byte("A: " + strings.Repeat("x", MaxSize))); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Errorf("too large: %v", err)
	}
}

func TestErrorsNeverShowValues(t *testing.T) {
	const secret = "s3cr3t-value-\a"
	if err := ValidValue("API_KEY", secret); err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("ValidValue: %v", err)
	}
	if _, err := Parse([]byte("API_KEY: \"s3cr3t-value-\\a\"\n")); err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("Parse: %v", err)
	}
	if _, err := Format(Env{"API_KEY": secret}); err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("Format: %v", err)
	}
}

func TestSetKeepsCommentsAndOrder(t *testing.T) {
	plain := []byte("# database\nDB_URL: postgres://a\n# payments\nPAY_KEY: old # inline\nOTHER: x\n")
	out, err := Set(plain, Env{"PAY_KEY": "new\nvalue", "NEW": "n"}, "OTHER")
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{"# database", "# payments", "DB_URL: postgres://a"} {
		if !strings.Contains(s, want) {
			t.Errorf("lost %q:\n%s", want, s)
		}
	}
	if strings.Index(s, "DB_URL") > strings.Index(s, "PAY_KEY") || strings.Index(s, "PAY_KEY") > strings.Index(s, "NEW") {
		t.Errorf("order changed:\n%s", s)
	}
	got, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Env{"DB_URL": "postgres://a", "PAY_KEY": "new\nvalue", "NEW": "n"}); !maps.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	empty, err := Set(out, nil, "DB_URL", "PAY_KEY", "NEW")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := Parse(empty); err != nil || len(e) != 0 {
		t.Fatalf("after unsetting all: %q, %v\n%s", e, err, empty)
	}
	if _, err := Set(nil, Env{"1X": "y"}); err == nil {
		t.Fatal("Set accepted a bad name")
	}
}

func TestSystemdFileEscapes(t *testing.T) {
	got := string(SystemdFile(Env{"A": "x\"y\\z`$w\nnext", "B": "plain"}))
	want := "# Written by rollout from the release's secrets; do not edit.\nA=\"x\\\"y\\\\z\\`\\$w\nnext\"\nB=\"plain\"\n"
	if got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}

func TestDiffNamesOnly(t *testing.T) {
	c := Diff(Env{"A": "1", "B": "2", "C": "3"}, Env{"A": "1", "B": "changed", "D": "4"})
	if got := strings.Join(c.Strings(), " "); got != "+D -C ~B" {
		t.Fatalf("got %q", got)
	}
	if got := c.String(); got != "added D; removed C; changed B" {
		t.Fatalf("got %q", got)
	}
	if !Diff(Env{"A": "1"}, Env{"A": "1"}).Empty() {
		t.Fatal("equal envs differ")
	}
}

func keys(t *testing.T) (age.Identity, age.Recipient) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id, id.Recipient()
}

func TestSealOpen(t *testing.T) {
	id, rcpt := keys(t)
	other, _ := keys(t)
	plain, _ := Format(hard)
	sealed, err := Seal(plain, []age.Recipient{rcpt})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "line one") {
		t.Fatal("the sealed file holds plaintext")
	}
	got, err := Open(sealed, []age.Identity{id}, "test")
	if err != nil || string(got) != string(plain) {
		t.Fatalf("Open: %v", err)
	}
	if _, err := Open(sealed, []age.Identity{other}, "$ROLLOUT_AGE_KEY"); err == nil || !strings.Contains(err.Error(), "not encrypted to the identity from $ROLLOUT_AGE_KEY") {
		t.Errorf("other identity: %v", err)
	}
	tampered := []byte(strings.Replace(string(sealed), "\n", "\nA", 2))
	if _, err := Open(tampered, []age.Identity{id}, "test"); err == nil {
		t.Error("a tampered file opened")
	}
	body := sealed[:len(sealed)-len("-----END AGE ENCRYPTED FILE-----\n")-20]
	if _, err := Open(body, []age.Identity{id}, "test"); err == nil {
		t.Error("a truncated file opened")
	}
	// One flipped bit in the payload (binary form).
	var bin bytes.Buffer
	w, err := age.Encrypt(&bin, rcpt)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(plain)
	_ = w.Close()
	if got, err := Open(bin.Bytes(), []age.Identity{id}, "test"); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("binary form: %v", err)
	}
	flipped := bytes.Clone(bin.Bytes())
	flipped[len(flipped)-5] ^= 1
	if _, err := Open(flipped, []age.Identity{id}, "test"); err == nil {
		t.Error("a file with one flipped bit opened")
	}
	if _, err := Open([]byte("not age at all"), []age.Identity{id}, "test"); err == nil || !strings.Contains(err.Error(), "not an age file") {
		t.Errorf("garbage: %v", err)
	}
}

func TestIdentities(t *testing.T) {
	dir := t.TempDir()
	text, pub, err := Keygen()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pub, "age1") {
		t.Fatalf("recipient %q", pub)
	}
	if _, err := ParseRecipients([]string{pub}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]string{nil, {"age1nope"}, {"AGE-SECRET-KEY-1X"}, {pub + "\n" + pub}} {
		if _, err := ParseRecipients(bad); err == nil {
			t.Errorf("ParseRecipients(%q) accepted", bad)
		}
	}
	file := filepath.Join(dir, "age.key")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(KeyEnv, "")
	os.Unsetenv(KeyEnv)
	if _, _, err := Identities(file); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable identity: %v", err)
	}
	_ = os.Chmod(file, 0o600)
	if ids, from, err := Identities(file); err != nil || len(ids) != 1 || from != file {
		t.Fatalf("Identities: %v %v %v", ids, from, err)
	}
	if _, _, err := Identities(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "keygen") {
		t.Fatalf("missing identity: %v", err)
	}
	t.Setenv(KeyEnv, "AGE-SECRET-KEY-1NOTAKEY")
	if _, from, err := Identities(file); err == nil || from != "$"+KeyEnv || strings.Contains(err.Error(), "NOTAKEY") {
		t.Fatalf("bad $%s: %v (the error must not show it)", KeyEnv, err)
	}
	t.Setenv(KeyEnv, text)
	if _, from, err := Identities(""); err != nil || from != "$"+KeyEnv {
		t.Fatalf("$%s: %v", KeyEnv, err)
	}
}

func TestExampleNames(t *testing.T) {
	got, err := ExampleNames([]byte("# the app's env\nDATABASE_URL=postgres://\n\nexport API_KEY=\nPORT=3000\n  SPACED = x\nAPI_KEY=again\n"))
	if err != nil || strings.Join(got, ",") != "DATABASE_URL,API_KEY,SPACED" {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := ExampleNames([]byte("A=1\nnot a line\n")); err == nil || err.Error() != ".env.example line 2: not NAME=value" {
		t.Errorf("bad line: %v", err)
	}
}
