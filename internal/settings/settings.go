// Package settings keeps a stack's settings in the backing directory, in
// BACKING/.vfsfilter/settings.json. They travel with the data on purpose: a
// stub without its store, or ciphertext without its wrapped key, is useless.
//
// Each filter owns one section, a JSON object it defines and versions itself
// ("hsm", "crypt"). The file may hold secrets (a wrapped master key), so it
// and its directory are 0600/0700, and it is replaced atomically (write to a
// temporary file, fsync, rename, fsync the directory) so a crash leaves the
// old or the new settings, never a torn file.
package settings

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vfsfilter/vfsfilter/internal/durable"
)

// Dir is the name of the stack's directory in the backing root. Every stack
// hides it from the mounted view.
const Dir = ".vfsfilter"

// File is the settings file's name inside Dir.
const File = "settings.json"

// Version is the format version this code writes and reads.
const Version = 1

// Settings is the parsed settings file.
type Settings struct {
	Version  int                        `json:"version"`
	Sections map[string]json.RawMessage `json:"sections"`
}

// ErrNone is returned (wrapped, with fs.ErrNotExist) by Load when BACKING
// holds no settings: a plain backing directory.
var ErrNone = fmt.Errorf("no %s/%s: %w", Dir, File, fs.ErrNotExist)

// Path returns the settings file's path for backing.
func Path(backing string) string { return filepath.Join(backing, Dir, File) }

// Load reads backing's settings. A missing file gives ErrNone; a damaged one
// an error that names the file.
func Load(backing string) (*Settings, error) {
	p := Path(backing)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNone
	}
	if err != nil {
		return nil, err
	}
	var s Settings
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s is damaged: %v", p, err)
	}
	if s.Version != Version {
		return nil, fmt.Errorf("%s has format version %d; this vfsfilter reads version %d", p, s.Version, Version)
	}
	if s.Sections == nil {
		s.Sections = map[string]json.RawMessage{}
	}
	return &s, nil
}

// New returns empty settings.
func New() *Settings {
	return &Settings{Version: Version, Sections: map[string]json.RawMessage{}}
}

// Section decodes section name into v. It reports false when there is no
// such section.
func (s *Settings) Section(name string, v any) (bool, error) {
	raw, ok := s.Sections[name]
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("settings section %q is damaged: %v", name, err)
	}
	return true, nil
}

// Has reports whether section name exists.
func (s *Settings) Has(name string) bool {
	_, ok := s.Sections[name]
	return ok
}

// SetSection stores v as section name.
func (s *Settings) SetSection(name string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.Sections[name] = raw
	return nil
}

// Save writes the settings to backing atomically, mode 0600 in a 0700 dir.
func (s *Settings) Save(backing string) error {
	dir := filepath.Join(backing, Dir)
	if err := os.MkdirAll(dir, 0700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, File), append(data, '\n'), 0600)
}

// WriteFileAtomic replaces path with data: temporary file in the same
// directory, fsync, rename over path, fsync of the directory.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := durable.WriteClose(f, data); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
