//go:build !linux

package sshexec

import (
	"os"
	"path/filepath"
)

// memFile holds data in a private temporary file (0600 in a 0700
// directory) until cleanup removes it; there is no memfd here.
func memFile(name string, data []byte) (path string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "rollout-")
	if err != nil {
		return "", nil, err
	}
	path = filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return path, func() { os.RemoveAll(dir) }, nil
}
