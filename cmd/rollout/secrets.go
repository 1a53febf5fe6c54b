package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"filippo.io/age"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/rollout-dev/rollout/deployer"
	"github.com/rollout-dev/rollout/internal/secrets"
)

func secretsCommand() *cli.Command {
	flags := func() []cli.Flag {
		return []cli.Flag{appFlag(),
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: "rollout.yaml", EnvVars: []string{"ROLLOUT_CONFIG"}, Usage: "config file"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", EnvVars: []string{"ROLLOUT_OUTPUT"}, Usage: "text or json"}}
	}
	return &cli.Command{
		Name:  "secrets",
		Usage: "the app's encrypted env (secrets:): create a key, edit, set, unset, list names, diff with the hosts",
		Description: `The secrets: section names an env file encrypted with age (secrets.file) to
the public keys in secrets.recipients. The key that opens it comes from
$ROLLOUT_AGE_KEY (CI) or the file secrets.identity (default under your config
directory), never from rollout.yaml. A deploy decrypts it locally and stores it
beside the release on each host, root's (0600), where systemd reads it for the
instances of that release. No command prints a value.

Examples:
   rollout secrets keygen                    # then add the public key to secrets.recipients
   printf %s "$KEY" | rollout secrets set PAYMENT_API_KEY
   rollout secrets set DATABASE_URL          # on a terminal: asks, without echo
   rollout secrets edit                      # in $EDITOR, on a private copy removed afterwards
   rollout secrets list
   rollout secrets diff                      # names that differ from what each host runs`,
		OnUsageError: onUsageError,
		Subcommands: []*cli.Command{
			{
				Name:      "keygen",
				Usage:     "create an age key (the identity) and print its public key for secrets.recipients",
				ArgsUsage: " ",
				Flags: []cli.Flag{&cli.StringFlag{Name: "out", Value: deployer.DefaultIdentity(),
					Usage: "where to write the identity (mode 0600; an existing file is never overwritten)"}},
				OnUsageError: onUsageError,
				Action:       secretsKeygen,
			},
			{
				Name: "edit", Usage: "edit the secrets in $EDITOR (a private plaintext copy, removed afterwards, even on Ctrl-C)",
				ArgsUsage: " ", Flags: flags(), OnUsageError: onUsageError, Action: secretsEdit,
			},
			{
				Name: "set", Usage: "set NAME to the value read from stdin (never from the command line)",
				ArgsUsage: "NAME", Flags: flags(), OnUsageError: onUsageError, Action: secretsSet,
			},
			{
				Name: "unset", Usage: "remove NAME...", ArgsUsage: "NAME...", Flags: flags(), OnUsageError: onUsageError, Action: secretsUnset,
			},
			{
				Name: "list", Usage: "list the names (never the values)", ArgsUsage: " ", OnUsageError: onUsageError,
				Flags: flags(), Action: secretsList,
			},
			{
				Name:  "diff",
				Usage: "name the variables added, removed and changed between the file and what each host's current release has (never values)",
				Description: `Exits 1 when a host differs or cannot be read (it is shown as unknown),
0 when every host runs the file's secrets.`,
				ArgsUsage: " ", Flags: connFlags(), OnUsageError: onUsageError, Action: secretsDiff,
			},
		},
	}
}

// secretsFile is the config's secrets: section and its file, opened with
// the identity; a missing file is an empty one when missingOK.
type secretsFile struct {
	cfg    *deployer.Config
	path   string
	plain  []byte // nil: the file does not exist yet
	sealed []byte
	env    secrets.Env
	rcpts  []age.Recipient
	ids    []age.Identity
	from   string // where ids came from
}

// openSecretsFile reads and decrypts the app's secrets file before anything
// connects. Every problem is a usage error (exit 2).
func openSecretsFile(c *cli.Context, cfg *deployer.Config, missingOK bool) (*secretsFile, error) {
	sc := cfg.Secrets
	if sc == nil {
		return nil, usageError{fmt.Errorf("%s has no secrets: section (secrets.file, secrets.recipients)", c.String("config"))}
	}
	f := &secretsFile{cfg: cfg, path: sc.SecretsFile(c.String("config"))}
	var err error
	if f.rcpts, err = secrets.ParseRecipients(sc.Recipients); err != nil {
		return nil, usageError{fmt.Errorf("secrets.%w", err)}
	}
	sealed, err := os.ReadFile(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && missingOK:
		f.env = secrets.Env{}
		return f, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, usageError{fmt.Errorf("secrets.file %s does not exist: create it with `rollout secrets set NAME` or `rollout secrets edit`", f.path)}
	case err != nil:
		return nil, usageError{fmt.Errorf("secrets.file: %w", err)}
	}
	if f.ids, f.from, err = secrets.Identities(sc.IdentityFile(c.String("config"))); err != nil {
		return nil, usageError{err}
	}
	f.sealed = sealed
	if f.plain, err = secrets.Open(sealed, f.ids, f.from); err != nil {
		return nil, usageError{fmt.Errorf("secrets.file %s: %w", f.path, err)}
	}
	// The error names lines, never values.
	if f.env, err = secrets.Parse(f.plain); err != nil {
		return nil, usageError{fmt.Errorf("secrets.file %s: %w", f.path, err)}
	}
	return f, nil
}

// loadSecretsFile loads the config of one app (--app) and opens its
// secrets file.
func loadSecretsFile(c *cli.Context, missingOK bool) (*secretsFile, error) {
	cfg, err := loadConfig(c)
	if err != nil {
		return nil, err
	}
	return openSecretsFile(c, cfg, missingOK)
}

// write seals plain to the recipients and replaces the file atomically.
func (f *secretsFile) write(plain []byte) error {
	sealed, err := secrets.Seal(plain, f.rcpts)
	if err != nil {
		return err
	}
	return writeAtomic(f.path, sealed, 0o644)
}

// writeAtomic writes data to a new file beside path and renames it over
// path: a reader sees the old file or the new one, never half of one.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func secretsKeygen(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageError{fmt.Errorf("keygen takes no arguments, got %q", c.Args().First())}
	}
	out := c.String("out")
	if out == "" {
		return usageError{errors.New("--out: no user config directory to put the key in; give a path")}
	}
	identity, pub, err := secrets.Keygen()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return usageError{fmt.Errorf("%s exists: rollout never overwrites a key (move it away, or pass --out)", out)}
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(identity); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, pub)
	fmt.Fprintf(c.App.ErrWriter, "rollout: wrote the identity to %s (keep it secret; for CI put its content in $%s).\n"+
		"rollout: add the public key above to secrets.recipients, then run `rollout secrets edit` to encrypt the file to it too.\n", out, secrets.KeyEnv)
	return nil
}

func secretsList(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageError{fmt.Errorf("list takes no arguments, got %q", c.Args().First())}
	}
	f, err := loadSecretsFile(c, false)
	if err != nil {
		return err
	}
	env := f.env
	names := env.Names()
	if c.String("output") == "json" {
		if names == nil {
			names = []string{}
		}
		writeJSONLine(c.App.Writer, map[string]any{"file": f.path, "names": names})
		return nil
	}
	for _, n := range names {
		fmt.Fprintln(c.App.Writer, n)
	}
	return nil
}

// readSecretValue reads a value from stdin: on a terminal without echo,
// else all of it with exactly one trailing newline removed.
func readSecretValue(c *cli.Context, name string) (string, error) {
	if fd, ok := terminal(c.App.Reader); ok {
		fmt.Fprintf(c.App.ErrWriter, "%s (input hidden): ", name)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(c.App.ErrWriter)
		if err != nil {
			return "", fmt.Errorf("read the value: %w", err)
		}
		return string(b), nil
	}
	b, err := io.ReadAll(io.LimitReader(c.App.Reader, secrets.MaxSize+2))
	if err != nil {
		return "", fmt.Errorf("read the value from stdin: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	if len(b) > secrets.MaxSize {
		return "", usageError{fmt.Errorf("%s: the value on stdin is longer than %d bytes", name, secrets.MaxSize)}
	}
	return string(b), nil
}

func secretsSet(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageError{errors.New("set takes one NAME; the value comes from stdin (never from the command line)")}
	}
	name := c.Args().First()
	if strings.Contains(name, "=") {
		return usageError{errors.New("set takes NAME alone: the value comes from stdin, so that it is never in your shell history or ps")}
	}
	if err := secrets.ValidName(name); err != nil {
		return usageError{err}
	}
	f, err := loadSecretsFile(c, true)
	if err != nil {
		return err
	}
	old := f.env
	v, err := readSecretValue(c, name)
	if err != nil {
		return err
	}
	if err := secrets.ValidValue(name, v); err != nil {
		return usageError{err}
	}
	prev, had := old[name]
	if had && prev == v && f.plain != nil {
		fmt.Fprintf(c.App.ErrWriter, "rollout: %s is unchanged in %s\n", name, f.path)
		return nil
	}
	plain, err := secrets.Set(f.plain, secrets.Env{name: v})
	if err != nil {
		return usageError{err}
	}
	if err := f.write(plain); err != nil {
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	verb := "added"
	if had {
		verb = "changed"
	}
	fmt.Fprintf(c.App.ErrWriter, "rollout: %s %s in %s (encrypted to %d recipients); deploy to ship it\n", verb, name, f.path, len(f.rcpts))
	return nil
}

func secretsUnset(c *cli.Context) error {
	if c.NArg() == 0 {
		return usageError{errors.New("unset takes the NAMEs to remove")}
	}
	f, err := loadSecretsFile(c, false)
	if err != nil {
		return err
	}
	env := f.env
	names := c.Args().Slice()
	for _, n := range names {
		if _, ok := env[n]; !ok {
			return usageError{fmt.Errorf("%s is not set in %s; nothing was changed", n, f.path)}
		}
		if slices.Contains(f.cfg.Secrets.Required, n) {
			return usageError{fmt.Errorf("%s is in secrets.required: remove it there first; nothing was changed", n)}
		}
	}
	plain, err := secrets.Set(f.plain, nil, names...)
	if err != nil {
		return usageError{err}
	}
	if err := f.write(plain); err != nil {
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	fmt.Fprintf(c.App.ErrWriter, "rollout: removed %s from %s; deploy to ship it\n", strings.Join(names, ", "), f.path)
	return nil
}

// deploySecrets are the secrets a deploy of cfg ships (secrets: set):
// decrypted and checked before anything connects; example is the
// artifact's .env.example, whose names are required too.
func deploySecrets(c *cli.Context, cfg *deployer.Config, example []byte) (*deployer.Secrets, error) {
	if cfg.Secrets == nil {
		return nil, nil
	}
	f, err := openSecretsFile(c, cfg, false)
	if err != nil {
		return nil, err
	}
	env := f.env
	req := append([]string(nil), cfg.Secrets.Required...)
	if example != nil {
		names, err := secrets.ExampleNames(example)
		if err != nil {
			return nil, usageError{fmt.Errorf("the artifact's %w", err)}
		}
		for _, n := range names {
			if !slices.Contains(f.cfg.Secrets.Required, n) {
				req = append(req, n)
			}
		}
	}
	return &deployer.Secrets{Env: env, Sealed: f.sealed, Required: req, Open: func(b []byte) (secrets.Env, error) {
		plain, err := secrets.Open(b, f.ids, f.from)
		if err != nil {
			return nil, err
		}
		return secrets.Parse(plain)
	}}, nil
}
