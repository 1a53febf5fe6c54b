package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/internal/secrets"
)

// runCLIIn runs rollout with stdin.
func runCLIIn(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	app := newApp(&stdout, &stderr)
	app.Reader = strings.NewReader(stdin)
	err := app.RunContext(context.Background(), append([]string{"rollout"}, args...))
	code := exitCode(err, false, &stderr)
	return stdout.String(), stderr.String(), code
}

// secretsProject is a config with secrets: in a new directory, and the
// identity that opens them in $ROLLOUT_AGE_KEY unless key is "".
func secretsProject(t *testing.T) (cfg, keyFile, pub string) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "xdg"))
	keyFile = filepath.Join(dir, "age.key")
	out, errOut, code := runCLI(t, "secrets", "keygen", "--out", keyFile)
	if code != 0 || !strings.HasPrefix(out, "age1") {
		t.Fatalf("keygen: %d %s %s", code, out, errOut)
	}
	pub = strings.TrimSpace(out)
	cfg = filepath.Join(dir, "rollout.yaml")
	yaml := "app: my-app\nhosts: [127.0.0.1]\nports: [3000]\nnginx: {upstream_file: /etc/nginx/conf.d/my-app.conf, upstream: my_app}\n" +
		"release: {}\nsecrets:\n  file: deploy/production.env.age\n  recipients: [" + pub + "]\n  identity: age.key\n  required: [API_KEY]\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, keyFile, pub
}

func TestSecretsCLI(t *testing.T) {
	cfg, keyFile, _ := secretsProject(t)
	sealedPath := filepath.Join(filepath.Dir(cfg), "deploy", "production.env.age")
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if _, errOut, code := runCLI(t, "secrets", "keygen", "--out", keyFile); code != exitUsage || !strings.Contains(errOut, "never overwrites") {
		t.Errorf("keygen over a key: %d %s", code, errOut)
	}

	hard := map[string]string{
		"API_KEY":  "sk_live_quote\"back\\slash`tick$dollar=eq",
		"MULTI":    "line one\nline two\n",
		"UNICODE":  "päßwörd 🔑",
		"SPACES":   "  padded  ",
		"EMPTY":    "",
		"TAB_HASH": "a\tb # not a comment",
	}
	for name, v := range hard {
		// Piped: exactly one trailing newline is dropped.
		if _, errOut, code := runCLIIn(t, v+"\n", "secrets", "set", "-c", cfg, name); code != 0 {
			t.Fatalf("set %s: %d %s", name, code, errOut)
		}
	}
	out, errOut, code := runCLI(t, "secrets", "list", "-c", cfg)
	if code != 0 || out != "API_KEY\nEMPTY\nMULTI\nSPACES\nTAB_HASH\nUNICODE\n" {
		t.Fatalf("list: %d %q %s", code, out, errOut)
	}
	// What a deploy ships reads back exactly.
	sealed, _ := os.ReadFile(sealedPath)
	if strings.Contains(string(sealed), "sk_live") || !strings.HasPrefix(string(sealed), "-----BEGIN AGE ENCRYPTED FILE-----") {
		t.Fatal("the file is not armored age")
	}
	ids, from, err := secrets.Identities(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := secrets.Open(sealed, ids, from)
	if err != nil {
		t.Fatal(err)
	}
	env, err := secrets.Parse(plain)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range hard {
		if env[name] != v {
			t.Errorf("%s: got %q, want %q", name, env[name], v)
		}
	}

	// The plan shows the step, decrypting nothing.
	if out, errOut, code := runCLI(t, "plan", "-c", cfg, "--version", "v2", "--artifact", "../../examples/app", "--scripts"); code != 0 || !strings.Contains(out, "release-secrets") ||
		!strings.Contains(out, "secrets.required API_KEY") || strings.Contains(out, "sk_live") {
		t.Errorf("plan: %d %s\n%s", code, errOut, out)
	}

	// Refusals, each changing nothing and showing no value.
	before, _ := os.ReadFile(sealedPath)
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"v", []string{"set", "API-KEY"}, "is not a variable name"},
		{"v", []string{"set", "PORT"}, "set by the unit"},
		{"v", []string{"set", "A=v"}, "NAME alone"},
		{"bad\x00value", []string{"set", "NUL"}, "control character"},
		{"", []string{"unset", "NOPE"}, "NOPE is not set"},
		{"", []string{"unset", "API_KEY"}, "secrets.required"},
		{"", []string{"list", "extra"}, "takes no arguments"},
	} {
		_, errOut, code := runCLIIn(t, tc.stdin, append([]string{"secrets"}, append(tc.args[:1:1], append([]string{"-c", cfg}, tc.args[1:]...)...)...)...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) || strings.Contains(errOut, "bad\x00") {
			t.Errorf("%v: %d %s", tc.args, code, errOut)
		}
	}
	if after, _ := os.ReadFile(sealedPath); !bytes.Equal(before, after) {
		t.Error("a refused command changed the file")
	}

	// unset; a key readable by others is refused; another identity cannot open it.
	if _, errOut, code := runCLI(t, "secrets", "unset", "-c", cfg, "EMPTY", "SPACES"); code != 0 {
		t.Fatalf("unset: %s", errOut)
	}
	if out, _, _ := runCLI(t, "secrets", "list", "-c", cfg, "-o", "json"); !strings.Contains(out, `"names":["API_KEY","MULTI","TAB_HASH","UNICODE"]`) {
		t.Errorf("list json: %s", out)
	}
	_ = os.Chmod(keyFile, 0o644)
	if _, errOut, code := runCLI(t, "secrets", "list", "-c", cfg); code != exitUsage || !strings.Contains(errOut, "chmod 600") {
		t.Errorf("a readable key: %d %s", code, errOut)
	}
	_ = os.Chmod(keyFile, 0o600)
	other, _, _ := secrets.Keygen()
	t.Setenv(secrets.KeyEnv, other)
	if _, errOut, code := runCLI(t, "secrets", "list", "-c", cfg); code != exitUsage || !strings.Contains(errOut, "not encrypted to the identity from $ROLLOUT_AGE_KEY") {
		t.Errorf("another identity: %d %s", code, errOut)
	}
	t.Setenv(secrets.KeyEnv, "AGE-SECRET-KEY-1NOTAKEY")
	if _, errOut, code := runCLI(t, "secrets", "list", "-c", cfg); code != exitUsage || strings.Contains(errOut, "NOTAKEY") {
		t.Errorf("a bad $ROLLOUT_AGE_KEY: %d %s", code, errOut)
	}
	os.Unsetenv(secrets.KeyEnv)
	// A tampered file.
	tampered := bytes.Replace(before, []byte("\n"), []byte("\nAB"), 3)
	_ = os.WriteFile(sealedPath, tampered, 0o644)
	if _, errOut, code := runCLI(t, "secrets", "list", "-c", cfg); code != exitUsage || !strings.Contains(errOut, "damaged or tampered") {
		t.Errorf("tampered: %d %s", code, errOut)
	}
}

// secrets edit runs $EDITOR on a private copy, re-encrypts what it wrote,
// refuses what does not parse, and removes the plaintext in every case.
func TestSecretsEdit(t *testing.T) {
	cfg, _, _ := secretsProject(t)
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	runtime := os.Getenv("XDG_RUNTIME_DIR")
	editor := filepath.Join(t.TempDir(), "editor.sh")
	write := func(script string) {
		if err := os.WriteFile(editor, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("VISUAL", "")
	t.Setenv("EDITOR", editor)
	write(`stat -c %a "$(dirname "$1")" > ` + runtime + "/../mode\nprintf 'API_KEY: \"k1\"\\nDB: \"postgres://u:p@h/db\"\\n' >> \"$1\"\n")
	if _, errOut, code := runCLI(t, "secrets", "edit", "-c", cfg); code != 0 || !strings.Contains(errOut, "added API_KEY, DB") {
		t.Fatalf("edit: %d %s", code, errOut)
	}
	if mode, _ := os.ReadFile(filepath.Join(runtime, "..", "mode")); strings.TrimSpace(string(mode)) != "700" {
		t.Errorf("the plaintext's directory had mode %s", mode)
	}
	if left, _ := filepath.Glob(filepath.Join(runtime, "rollout-secrets-*")); len(left) != 0 {
		t.Errorf("plaintext left: %v", left)
	}
	sealedPath := filepath.Join(filepath.Dir(cfg), "deploy", "production.env.age")
	before, _ := os.ReadFile(sealedPath)
	// No change: the file is not sealed again.
	write("true\n")
	if _, errOut, code := runCLI(t, "secrets", "edit", "-c", cfg); code != 0 || !strings.Contains(errOut, "no changes") {
		t.Errorf("no change: %d %s", code, errOut)
	}
	// What does not parse changes nothing (no terminal: no second try).
	write("printf 'not: [a, list]\\n' >> \"$1\"\n")
	if _, errOut, code := runCLI(t, "secrets", "edit", "-c", cfg); code != exitUsage || !strings.Contains(errOut, "was not changed") {
		t.Errorf("bad edit: %d %s", code, errOut)
	}
	// An editor that fails changes nothing.
	write("echo 'API_KEY: x' > \"$1\"; exit 3\n")
	if _, errOut, code := runCLI(t, "secrets", "edit", "-c", cfg); code == 0 || !strings.Contains(errOut, "nothing was changed") {
		t.Errorf("failed editor: %d %s", code, errOut)
	}
	if after, _ := os.ReadFile(sealedPath); !bytes.Equal(before, after) {
		t.Error("the file changed")
	}
	if left, _ := filepath.Glob(filepath.Join(runtime, "rollout-secrets-*")); len(left) != 0 {
		t.Errorf("plaintext left: %v", left)
	}
}
