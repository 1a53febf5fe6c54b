package secrets

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
	"filippo.io/age/armor"
)

// KeyEnv is the variable that holds an identity (CI): the identity file's
// text, one AGE-SECRET-KEY-1… per line.
const KeyEnv = "ROLLOUT_AGE_KEY"

// maxSealed bounds an encrypted secrets file.
const maxSealed = 2 * MaxSize

// ParseRecipients parses the config's recipients (age1…, one public key
// each). The error names the entry.
func ParseRecipients(list []string) ([]age.Recipient, error) {
	var out []age.Recipient
	for i, s := range list {
		rs, err := age.ParseRecipients(strings.NewReader(s))
		if err != nil || len(rs) != 1 || strings.ContainsAny(s, "\n#") {
			return nil, fmt.Errorf("recipients[%d]: %q is not an age public key (age1…, as `rollout secrets keygen` prints)", i, truncate(s))
		}
		out = append(out, rs[0])
	}
	if len(out) == 0 {
		return nil, errors.New("recipients: list at least one age public key (age1…)")
	}
	return out, nil
}

// Identities are the identities that open the secrets: from $ROLLOUT_AGE_KEY
// when it is set, else from file, which must be private to its owner.
// Where they come from is said in errors; the key never is.
func Identities(file string) ([]age.Identity, string, error) {
	if v, ok := os.LookupEnv(KeyEnv); ok {
		ids, err := age.ParseIdentities(strings.NewReader(v))
		if err != nil {
			return nil, "$" + KeyEnv, fmt.Errorf("$%s does not hold an age identity (AGE-SECRET-KEY-1…): %v", KeyEnv, err)
		}
		return ids, "$" + KeyEnv, nil
	}
	if file == "" {
		return nil, "", fmt.Errorf("no age identity: set $%s or secrets.identity, or create one with `rollout secrets keygen`", KeyEnv)
	}
	fi, err := os.Stat(file)
	if err != nil {
		return nil, file, fmt.Errorf("no age identity: %w (set $%s, or create one with `rollout secrets keygen`)", err, KeyEnv)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, file, fmt.Errorf("the identity %s is readable by others (mode %04o): chmod 600 %s", file, fi.Mode().Perm(), file)
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, file, fmt.Errorf("read the identity: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, file, fmt.Errorf("the identity %s is not an age identity file: %v", file, err)
	}
	return ids, file, nil
}

// Keygen makes a new identity: the identity file's text and its public
// key (the recipient to list in the config).
func Keygen() (identity, recipient string, err error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", "", err
	}
	pub := id.Recipient().String()
	return fmt.Sprintf("# rollout secrets identity; public key: %s\n%s\n", pub, id), pub, nil
}

// Seal encrypts plain to recipients, ASCII-armored (a text file a
// repository diffs as changed, never as what changed).
func Seal(plain []byte, recipients []age.Recipient) ([]byte, error) {
	var buf bytes.Buffer
	a := armor.NewWriter(&buf)
	w, err := age.Encrypt(a, recipients...)
	if err != nil {
		return nil, fmt.Errorf("encrypt the secrets: %w", err)
	}
	if _, err := w.Write(plain); err != nil {
		return nil, fmt.Errorf("encrypt the secrets: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encrypt the secrets: %w", err)
	}
	if err := a.Close(); err != nil {
		return nil, fmt.Errorf("encrypt the secrets: %w", err)
	}
	return buf.Bytes(), nil
}

// Open decrypts a secrets file (armored or binary) with ids; from says
// where the ids came from, for the error. It returns the plaintext.
func Open(sealed []byte, ids []age.Identity, from string) ([]byte, error) {
	if len(sealed) > maxSealed {
		return nil, fmt.Errorf("it is larger than %d bytes", maxSealed)
	}
	var src io.Reader = bytes.NewReader(sealed)
	if bytes.HasPrefix(bytes.TrimLeft(sealed, " \t\r\n"), []byte(armor.Header)) {
		src = armor.NewReader(bytes.NewReader(bytes.TrimLeft(sealed, " \t\r\n")))
	}
	r, err := age.Decrypt(src, ids...)
	var nomatch *age.NoIdentityMatchError
	switch {
	case errors.As(err, &nomatch):
		return nil, fmt.Errorf("it is not encrypted to the identity from %s (encrypted to other recipients: ask someone who can open it to add your public key to secrets.recipients and run `rollout secrets edit`)", from)
	case err != nil:
		return nil, fmt.Errorf("it is not an age file, or it is damaged or tampered with: %v", err)
	}
	plain, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("it is damaged or tampered with (or cut short): %v", err)
	}
	if len(plain) > MaxSize {
		return nil, fmt.Errorf("its secrets are larger than %d bytes", MaxSize)
	}
	return plain, nil
}
