package sshexec

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// memFile holds data in an anonymous memory file (memfd): it is on no
// filesystem, so no other process finds it by path. The path it returns
// opens it while this process holds it; cleanup frees it.
func memFile(name string, data []byte) (path string, cleanup func(), err error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return "", nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return "", nil, err
	}
	return fmt.Sprintf("/proc/self/fd/%d", fd), func() { f.Close() }, nil
}
