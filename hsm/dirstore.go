package hsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// DirStore keeps objects as files in a local directory (another disk, an
// NFS mount). Objects live in two levels of fan-out directories named after
// the key's first characters, so no directory grows past a few thousand
// entries. Put writes a temporary file, fsyncs it, renames it into place
// and fsyncs the directory: an object is either absent or complete.
type DirStore struct {
	dir string
}

// NewDirStore returns the store in dir. It does not create dir: a store
// directory that has gone (an unmounted disk, a moved directory) is a store
// that is down, whose stubs fail with EIO until it is back; recreating it
// empty would hide that. CreateDirStore makes a new one.
func NewDirStore(dir string) (*DirStore, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("store directory %q is not absolute", dir)
	}
	return &DirStore{dir: filepath.Clean(dir)}, nil
}

// CreateDirStore creates the store directory dir (0700) if needed and
// returns the store; "vfsfilter init" uses it.
func CreateDirStore(dir string) (*DirStore, error) {
	d, err := NewDirStore(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("store directory: %w", err)
	}
	return d, nil
}

// String implements Store.
func (d *DirStore) String() string { return "file://" + d.dir }

// Dir returns the store's directory.
func (d *DirStore) Dir() string { return d.dir }

func (d *DirStore) path(key string) (string, error) {
	if len(key) < 4 || filepath.Base(key) != key {
		return "", fmt.Errorf("bad object key %q", key)
	}
	return filepath.Join(d.dir, key[0:2], key[2:4], key), nil
}

// Put implements Store.
func (d *DirStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Join(d.dir, "tmp"), key+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	n, err := io.Copy(f, ctxReader{ctx, r})
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("object %s: wrote %d bytes, want %d", key, n, size)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// The shard directories only: the store's own directory must exist
	// (see NewDirStore).
	for _, dir := range []string{filepath.Dir(filepath.Dir(p)), filepath.Dir(p)} {
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	ok = true
	return syncDir(filepath.Dir(p))
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// GetRange implements Store.
func (d *DirStore) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if off < 0 || n < 0 || off+n > st.Size() {
		f.Close()
		return nil, fmt.Errorf("object %s: range %d+%d beyond its %d bytes", key, off, n, st.Size())
	}
	return &sectionCloser{io.NewSectionReader(f, off, n), f, ctx}, nil
}

type sectionCloser struct {
	*io.SectionReader
	f   *os.File
	ctx context.Context
}

func (s *sectionCloser) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	return s.SectionReader.Read(p)
}

func (s *sectionCloser) Close() error { return s.f.Close() }

// Stat implements Store.
func (d *DirStore) Stat(ctx context.Context, key string) (int64, error) {
	p, err := d.path(key)
	if err != nil {
		return 0, err
	}
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// Delete implements Store.
func (d *DirStore) Delete(ctx context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// ctxReader stops a long copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
