// Package secretfile reads small key files with a size bound and writes
// secret files with mode 0600, for the trust packages.
package secretfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// MaxSize bounds what Read reads: key and identity files are far smaller.
const MaxSize = 1 << 20

// Read returns the content of path, refusing a file over MaxSize before
// reading it.
func Read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	if st.Size() > MaxSize {
		return nil, fmt.Errorf("trust: %s is %d bytes; a key or identity file is at most %d", path, st.Size(), MaxSize)
	}
	// One Read may return less than the whole file, and a file's size may
	// change meanwhile: read to the end, within the bound.
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("trust: reading %s: %w", path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("trust: %s is over %d bytes; a key or identity file is at most %d", path, MaxSize, MaxSize)
	}
	return b, nil
}

// Write writes b to path with mode 0600. Without force it fails if path
// exists; with force it replaces it atomically.
func Write(path string, b []byte, force bool) error {
	if !force {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("trust: %s already exists (use --force to overwrite)", path)
			}
			return fmt.Errorf("trust: %w", err)
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			os.Remove(path)
			return fmt.Errorf("trust: writing %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("trust: writing %s: %w", path, err)
		}
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("trust: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("trust: writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("trust: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	return nil
}
