package hsm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"
)

// Store is the secondary storage objects migrate to. Keys are opaque
// strings without "/" (a file's ID in hex). Implementations must be safe
// for concurrent use.
//
// The contract the filter relies on:
//   - Put returns nil only once the object is durable (a later crash of
//     this machine or the store's does not lose it) and complete: a reader
//     never sees a partial object under key. Put of an existing key
//     replaces it.
//   - GetRange returns exactly n bytes from off, or an error; a missing
//     object is ErrNotFound (wrapped). The reader may fail later (a
//     connection drops): callers check every read.
//   - Stat returns the object's size, or ErrNotFound.
//   - Delete removes the object; deleting a missing object is not an error.
//
// Every call honours ctx: the filter bounds each call with a timeout so
// that a store that is down fails a read with EIO instead of hanging it.
type Store interface {
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error)
	Stat(ctx context.Context, key string) (int64, error)
	Delete(ctx context.Context, key string) error
	// String names the store in logs (no secrets).
	String() string
}

// ErrNotFound says the store has no object under the key.
var ErrNotFound = errors.New("object not found in store")

// OpenStore opens the store named by spec, as given to
// "vfsfilter init --hsm-store":
//
//	/abs/path, file:///abs/path   a directory (DirStore)
//	s3://bucket/prefix            an S3-compatible bucket (S3Store),
//	                              configured from the AWS_* environment
func OpenStore(spec string) (Store, error) {
	switch {
	case strings.HasPrefix(spec, "s3://"):
		return NewS3Store(spec, nil)
	case strings.HasPrefix(spec, "file://"):
		u, err := url.Parse(spec)
		if err != nil {
			return nil, fmt.Errorf("store %q: %v", spec, err)
		}
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("store %q: file URLs must name a local path (file:///path)", spec)
		}
		return NewDirStore(u.Path)
	case filepath.IsAbs(spec):
		return NewDirStore(spec)
	}
	return nil, fmt.Errorf("store %q: want an absolute directory, file:///path or s3://bucket/prefix", spec)
}

// CanonicalStore returns spec in the form recorded in the settings: a
// plain absolute path becomes a file:// URL, anything else is checked and
// kept.
func CanonicalStore(spec string) (string, error) {
	switch {
	case strings.HasPrefix(spec, "s3://"):
		if _, _, err := parseS3URL(spec); err != nil {
			return "", err
		}
		return spec, nil
	case strings.HasPrefix(spec, "file://"):
		u, err := url.Parse(spec)
		if err != nil || !filepath.IsAbs(u.Path) || (u.Host != "" && u.Host != "localhost") {
			return "", fmt.Errorf("store %q: want file:///absolute/path", spec)
		}
		return "file://" + filepath.Clean(u.Path), nil
	case filepath.IsAbs(spec):
		return "file://" + filepath.Clean(spec), nil
	}
	return "", fmt.Errorf("store %q: want an absolute directory, file:///path or s3://bucket/prefix", spec)
}
