package crypt_test

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"golang.org/x/sys/unix"
)

// behindMount mounts backing through crypt with opts and returns the
// mountpoint and the filter.
func behindMount(t *testing.T, backing string, opts crypt.Options, mopts ...layer.MountOptions) (string, *crypt.Filter) {
	t.Helper()
	conformance.RequireFUSE(t)
	pt, err := layer.NewPassthrough(backing)
	require.NoError(t, err)
	t.Cleanup(func() { pt.Close() })
	f, err := crypt.New(testKeys(), opts)
	require.NoError(t, err)
	st, err := layer.NewStack(nil, pt, f)
	require.NoError(t, err)
	mnt := t.TempDir()
	var mo layer.MountOptions
	if len(mopts) > 0 {
		mo = mopts[0]
	}
	srv, err := layer.Mount(mnt, st, mo)
	require.NoError(t, err)
	conformance.UnmountAtEnd(t, srv)
	return mnt, f
}

// openFile opens p with flags and closes it when the test ends, should
// the test fail first: a test process that exits with a file open on a
// mount it serves itself would wait for its own FLUSH forever.
func openFile(t *testing.T, p string, flags int) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, flags, 0o644)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

// writeChunks writes data to f in chunk-sized write(2)s (as dd bs=chunk
// does: each large one is one WRITE request) and returns how many bytes
// the calls reported written and the first error. Unlike os.File.Write it
// does not retry a short write, so a full disk shows as it happens.
func writeChunks(f *os.File, data []byte, chunk int) (int, error) {
	fd := int(f.Fd())
	n := 0
	for n < len(data) {
		w, err := unix.Write(fd, data[n:min(n+chunk, len(data))])
		if w > 0 {
			n += w
		}
		if err != nil {
			return n, err
		}
		if w == 0 {
			return n, syscall.EIO
		}
	}
	return n, nil
}

// cipherFile is the path below of the only regular file in backing's
// root (the ciphertext of the only file in the mount's root).
func cipherFile(t *testing.T, backing string) string {
	t.Helper()
	ents, err := os.ReadDir(backing)
	require.NoError(t, err)
	var found []string
	for _, e := range ents {
		if e.Type().IsRegular() && e.Name() != crypt.DirIVFile {
			found = append(found, filepath.Join(backing, e.Name()))
		}
	}
	require.Len(t, found, 1, "regular files below but the IV file")
	return found[0]
}

// TestWriteBehind: large writes are answered before their ciphertext is
// written below and read back exactly; O_SYNC writes, small writes and
// mounts with SyncWrites stay in the foreground.
func TestWriteBehind(t *testing.T) {
	backing := t.TempDir()
	mnt, f := behindMount(t, backing, crypt.Options{})
	data := randBytes(8<<20 + 12345)
	p := filepath.Join(mnt, "big")
	fh := openFile(t, p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	n, err := writeChunks(fh, data, 1<<20)
	require.NoError(t, err)
	require.Equal(t, len(data), n)
	started := f.BehindStarted()
	assert.GreaterOrEqual(t, started, int64(8), "1 MiB writes that went behind")
	st, err := os.Stat(p) // right after the last write: its size
	require.NoError(t, err)
	assert.Equal(t, int64(len(data)), st.Size())
	require.NoError(t, fh.Sync())
	require.NoError(t, fh.Close())
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.True(t, bytes.Equal(got, data), "read back differs")

	// O_SYNC: every write is stable when it returns, so none goes behind.
	more := randBytes(2 << 20)
	fh = openFile(t, p, os.O_WRONLY|os.O_APPEND|os.O_SYNC)
	_, err = writeChunks(fh, more, 1<<20)
	require.NoError(t, err)
	require.NoError(t, fh.Close())
	assert.Equal(t, started, f.BehindStarted(), "O_SYNC writes that went behind")

	// Small writes gain nothing from it.
	small := randBytes(1 << 20)
	fh = openFile(t, p, os.O_WRONLY|os.O_APPEND)
	_, err = writeChunks(fh, small, 64<<10)
	require.NoError(t, err)
	require.NoError(t, fh.Close())
	assert.Equal(t, started, f.BehindStarted(), "64 KiB writes that went behind")

	got, err = os.ReadFile(p)
	require.NoError(t, err)
	require.True(t, bytes.Equal(got, append(append(data, more...), small...)), "read back differs")

	// SyncWrites turns it off.
	mnt2, f2 := behindMount(t, t.TempDir(), crypt.Options{SyncWrites: true})
	require.NoError(t, os.WriteFile(filepath.Join(mnt2, "big"), data, 0o644))
	assert.Zero(t, f2.BehindStarted(), "write-behinds with SyncWrites")
}

// TestWriteBehindStat: a stat after a write answered ahead of its write
// below waits for it, so it reports the file as that write left it. The
// write-behind is held until the stat's request asks for it; without the
// wait, the stat would report the mtime (and size) from before the write,
// and the kernel would cache them. Two mounts: one with the default
// caches, where the stat is a GETATTR to which go-fuse hands one of the
// inode's open files (so crypt knows the file), and one that caches no
// names, where each stat looks the name up first (a LOOKUP reaches the
// file by path; this kernel then asks GETATTR too, so this case passes
// even without the LOOKUP's own check, which stays for kernels that
// trust the LOOKUP's attributes).
func TestWriteBehindStat(t *testing.T) {
	for _, tc := range []struct {
		name string
		mo   layer.MountOptions
	}{
		{"getattr", layer.MountOptions{}},
		{"lookup", layer.MountOptions{EntryTimeout: time.Nanosecond, AttrTimeout: time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backing := t.TempDir()
			mnt, f := behindMount(t, backing, crypt.Options{}, tc.mo)
			release := holdBehind(f)
			// Never leave a write-behind held: a deferred call runs
			// before the test's clean-ups, which close the file (its
			// FLUSH waits for the write-behind) and unmount.
			defer release()

			p := filepath.Join(mnt, "f")
			fh := openFile(t, p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
			data := randBytes(1 << 20)
			n, err := writeChunks(fh, data, len(data))
			require.NoError(t, err)
			require.Equal(t, len(data), n)
			require.Equal(t, int64(1), f.BehindStarted())

			st, err := os.Stat(p)
			require.NoError(t, err)
			release()
			require.NoError(t, fh.Sync())
			below, err := os.Stat(cipherFile(t, backing))
			require.NoError(t, err)
			assert.Equal(t, int64(len(data)), st.Size())
			assert.Equal(t, below.ModTime(), st.ModTime(), "mtime seen through the mount right after the write")
		})
	}
}

// TestWriteBehindError: a write-behind that fails (an I/O error below) is
// reported by the file's next fsync, once, and leaves the file below as
// it was before that write: no torn block, the earlier data intact.
func TestWriteBehindError(t *testing.T) {
	backing := t.TempDir()
	mnt, f := behindMount(t, backing, crypt.Options{})
	p := filepath.Join(mnt, "f")
	first := randBytes(1 << 20)
	fh := openFile(t, p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	_, err := writeChunks(fh, first, 1<<20)
	require.NoError(t, err)
	require.NoError(t, fh.Sync())

	f.SetBehindTest(func() layer.Errno { return syscall.EIO }, nil)
	_, err = writeChunks(fh, randBytes(1<<20), 1<<20)
	require.NoError(t, err, "the write is answered before its write below")
	assert.ErrorIs(t, fh.Sync(), syscall.EIO, "fsync after a failed write-behind")
	assert.NoError(t, fh.Sync(), "the error is reported once")
	f.SetBehindTest(nil, nil)
	require.NoError(t, fh.Close())

	got, err := os.ReadFile(filepath.Join(mountAgain(t, backing, layer.MountOptions{}), "f"))
	require.NoError(t, err, "reading the file in a new mount")
	assert.True(t, bytes.Equal(got, first), "the file below: %d bytes, want the %d written before", len(got), len(first))
}

// TestWriteBehindFullDisk: space is allocated before a write is answered,
// so on a file system that fills up the write(2) itself fails with
// ENOSPC (not a later close), everything answered reads back, and no
// space allocated ahead is left past the end of the file.
func TestWriteBehindFullDisk(t *testing.T) {
	conformance.RequireFUSE(t)
	small := t.TempDir()
	conformance.SmallTmpfs(t, small, "4m")
	mnt, f := behindMount(t, small, crypt.Options{})
	p := filepath.Join(mnt, "big")
	data := randBytes(8 << 20)
	fh := openFile(t, p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	n, werr := writeChunks(fh, data, 1<<20)
	assert.ErrorIs(t, werr, syscall.ENOSPC, "writing 8 MiB to a 4 MiB file system")
	assert.Positive(t, f.BehindStarted(), "writes that went behind before the disk filled")
	assert.NoError(t, fh.Sync(), "fsync: every answered write is below")
	assert.NoError(t, fh.Close(), "close: every answered write is below")

	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, n, len(got), "size: what the writes reported written")
	assert.True(t, bytes.Equal(got, data[:len(got)]), "not a prefix of what was written")
	var st unix.Stat_t
	require.NoError(t, unix.Stat(cipherFile(t, small), &st))
	assert.LessOrEqual(t, st.Blocks*512, (st.Size+4095)/4096*4096, "space allocated past the end of the file below")
	t.Logf("wrote %d of %d bytes", n, len(data))
}

// TestWriteBehindClose: closing the filter (the daemon's last step after
// its mount ends) waits for the write-behinds still running. The
// write-behind is held until Close asks for it.
func TestWriteBehindClose(t *testing.T) {
	backing := t.TempDir()
	mnt, f := behindMount(t, backing, crypt.Options{})
	gate := make(chan struct{})
	var open sync.Once
	release := func() { open.Do(func() { close(gate) }) }
	defer release() // before the clean-ups (see TestWriteBehindStat)
	f.SetBehindTest(func() layer.Errno { <-gate; return 0 }, release)

	fh := openFile(t, filepath.Join(mnt, "f"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	data := randBytes(1 << 20)
	_, err := writeChunks(fh, data, len(data))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	below, err := os.Stat(cipherFile(t, backing))
	require.NoError(t, err)
	want := int64(crypt.HeaderLen + len(data)/4096*(4096+crypt.BlockOverhead))
	assert.Equal(t, want, below.Size(), "the file below once Close returns")
}

// TestWriteBehindBeforeImmutable: chattr +i waits for a write-behind of the
// file still on its way below, which the flag would refuse: the write
// that was answered lands, and fsync reports no error.
func TestWriteBehindBeforeImmutable(t *testing.T) {
	backing := t.TempDir()
	mnt, f := behindMount(t, backing, crypt.Options{})
	release := holdBehind(f)
	defer release() // see TestWriteBehindStat

	p := filepath.Join(mnt, "f")
	fh := openFile(t, p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	data := randBytes(1 << 20)
	_, err := writeChunks(fh, data, len(data))
	require.NoError(t, err)
	require.Equal(t, int64(1), f.BehindStarted())

	ro := openFile(t, p, os.O_RDONLY)
	flags, err := unix.IoctlGetUint32(int(ro.Fd()), layer.FsIocGetflags)
	if err != nil {
		skipOutsideCI(t, "no inode flags here: %v", err)
	}
	t.Cleanup(func() {
		if b, err := os.Open(cipherFile(t, backing)); err == nil {
			unix.IoctlSetPointerInt(int(b.Fd()), layer.FsIocSetflags, int(flags))
			b.Close()
		}
	})
	require.NoError(t, unix.IoctlSetPointerInt(int(ro.Fd()), layer.FsIocSetflags, int(flags|layer.FsImmutableFl)))
	release()
	require.NoError(t, fh.Sync(), "the write answered before chattr +i")
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "contents after chattr +i")
}

// holdBehind holds f's write-behinds until the returned function runs (as
// it does by itself when an op waits for them).
func holdBehind(f *crypt.Filter) (release func()) {
	gate := make(chan struct{})
	var open sync.Once
	release = func() { open.Do(func() { close(gate) }) }
	f.SetBehindTest(func() layer.Errno { <-gate; return 0 }, release)
	return release
}
