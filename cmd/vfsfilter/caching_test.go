package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestChooseCaching: the kernel's caches are long by default only where
// the fanotify watch invalidates them for everything users see, and what
// the user gave is kept as given.
func TestChooseCaching(t *testing.T) {
	dir := t.TempDir() // tmpfs or a local disk file system
	short := func() *mountConfig { return &mountConfig{entryTimeout: time.Second, attrTimeout: time.Second} }
	for _, tc := range []struct {
		name       string
		cfg        *mountConfig
		watcher    string
		incoherent []string
		want       caching
		why        string
	}{
		{name: "fanotify", cfg: short(), watcher: "fanotify",
			want: caching{entry: longCacheTimeout, attr: longCacheTimeout, cacheDirs: true, long: true, entryLong: true, attrLong: true, dirsLong: true}},
		{name: "no notify", cfg: &mountConfig{entryTimeout: time.Second, attrTimeout: time.Second, noNotify: true}, watcher: "",
			want: caching{entry: time.Second, attr: time.Second}, why: "no notify filter"},
		{name: "inotify", cfg: short(), watcher: "inotify",
			want: caching{entry: time.Second, attr: time.Second}, why: "inotify"},
		{name: "hsm", cfg: short(), watcher: "fanotify", incoherent: []string{"hsm changes st_blocks"},
			want: caching{entry: time.Second, attr: time.Second}, why: "hsm"},
		{name: "user timeouts", cfg: &mountConfig{entryTimeout: 2 * time.Second, entrySet: true, attrTimeout: 0, attrSet: true}, watcher: "fanotify",
			want: caching{entry: 2 * time.Second, attr: 0, cacheDirs: true, long: true, dirsLong: true}},
		{name: "user --cache-dirs=false", cfg: &mountConfig{entryTimeout: time.Second, attrTimeout: time.Second, cacheDirsSet: true}, watcher: "fanotify",
			want: caching{entry: longCacheTimeout, attr: longCacheTimeout, long: true, entryLong: true, attrLong: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := chooseCaching(tc.cfg, dir, tc.watcher, tc.incoherent)
			assert.Contains(t, got.why, tc.why)
			got.why = ""
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestChooseCachingRemoteFS: on a file system not known to be local (a
// network one, where the watch sees only this machine's changes) the
// defaults stay short.
func TestChooseCachingRemoteFS(t *testing.T) {
	got := chooseCaching(&mountConfig{entryTimeout: time.Second, attrTimeout: time.Second}, "/proc", "fanotify", nil)
	assert.False(t, got.long)
	assert.Contains(t, got.why, "not known to be local")
	assert.Equal(t, time.Second, got.entry)
}

// TestChooseCachingMountBelow: a file system mounted inside the backing
// directory is served too, but the watch covers the backing file system
// only, so the defaults stay short.
func TestChooseCachingMountBelow(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	require.NoError(t, os.Mkdir(sub, 0o755))
	require.NoError(t, unix.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { unix.Unmount(sub, 0) })
	got := chooseCaching(&mountConfig{entryTimeout: time.Second, attrTimeout: time.Second}, dir, "fanotify", nil)
	assert.False(t, got.long)
	assert.Contains(t, got.why, "mounted inside the backing directory ("+sub+")")
}
