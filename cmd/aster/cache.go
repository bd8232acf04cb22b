package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/contract"
)

// The contract cache lets shell completion offer service and method names
// without connecting: every command that fetches a contract saves it as
// <cache>/contracts/<endpoint id>.json (the manifest form), where <cache>
// is os.UserCacheDir()/aster ($XDG_CACHE_HOME/aster or ~/.cache/aster on
// Linux, ~/Library/Caches/aster on macOS) or $ASTER_CACHE_DIR. It keeps at
// most maxCachedContracts files, dropping the least recently changed, and
// reads none larger than maxCachedContract. Deleting it is always safe.
// Failing to write it is never an error.
const (
	maxCachedContracts = 32
	maxCachedContract  = 4 << 20
)

// cacheDir returns the contract cache directory, or "" when there is none.
func cacheDir() string {
	if d := os.Getenv("ASTER_CACHE_DIR"); d != "" {
		return filepath.Join(d, "contracts")
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "aster", "contracts")
}

// saveCachedContract stores ct for the endpoint of addr, best effort.
func saveCachedContract(addr aster.Address, ct *contract.Contract, id string) {
	dir := cacheDir()
	if dir == "" {
		return
	}
	b, err := (&contract.Manifest{ContractID: id, Contract: ct}).MarshalIndent()
	if err != nil || len(b) > maxCachedContract {
		return
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	final := filepath.Join(dir, addr.ID.String()+".json")
	if old, err := readCapped(final); err == nil && bytes.Equal(old, b) {
		return // unchanged: scripts calling in a loop do not rewrite it
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if werr != nil || cerr != nil || os.Rename(tmp.Name(), final) != nil {
		os.Remove(tmp.Name())
		return
	}
	pruneCache(dir)
}

// pruneCache removes the oldest cached contracts beyond the bound.
func pruneCache(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	type file struct {
		name string
		mod  int64
	}
	var files []file
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		if fi, err := e.Info(); err == nil {
			files = append(files, file{e.Name(), fi.ModTime().UnixNano()})
		}
	}
	if len(files) <= maxCachedContracts {
		return
	}
	slices.SortFunc(files, func(a, b file) int { return int(min(max(b.mod-a.mod, -1), 1)) })
	for _, f := range files[maxCachedContracts:] {
		os.Remove(filepath.Join(dir, f.name))
	}
}

// cachedContract returns the cached contract of the endpoint at rawAddr,
// or nil.
func cachedContract(rawAddr string) *contract.Contract {
	dir := cacheDir()
	addr, err := aster.ParseAddress(rawAddr)
	if dir == "" || err != nil {
		return nil
	}
	b, err := readCapped(filepath.Join(dir, addr.ID.String()+".json"))
	if err != nil {
		return nil
	}
	m, err := contract.ParseManifest(b)
	if err != nil || m.Contract == nil {
		return nil
	}
	return m.Contract
}

// readCapped reads a cache file of at most maxCachedContract bytes.
func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCachedContract+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCachedContract {
		return nil, errors.New("cached contract too large")
	}
	return b, nil
}
