package hsm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"golang.org/x/sys/unix"
)

// rig is a mounted stack of passthrough + HSM over a directory store.
type rig struct {
	mnt, backing string
	storeDir     string
	f            *Filter
	stack        *layer.Stack
}

type rigOpts struct {
	store   func(t testing.TB) Store
	timeout time.Duration
	chunk   uint8
}

func newRig(t *testing.T, o rigOpts) *rig {
	r := &rig{}
	mk := func(t testing.TB, backing string) *layer.Stack {
		var st Store
		if o.store != nil {
			st = o.store(t)
		} else {
			r.storeDir = filepath.Join(t.TempDir(), "store")
			ds, err := CreateDirStore(r.storeDir)
			require.NoError(t, err)
			st = ds
		}
		f, err := New(Config{Store: st, Backing: backing, Timeout: o.timeout, ChunkShift: o.chunk})
		require.NoError(t, err)
		pt, err := layer.NewPassthrough(backing)
		require.NoError(t, err)
		s, err := layer.NewStack(nil, pt, f)
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		r.f, r.stack = f, s
		return s
	}
	r.mnt, r.backing = conformance.Mount(t, mk, layer.MountOptions{})
	return r
}

func (r *rig) migrate(t *testing.T, rel string) Result {
	t.Helper()
	var res Result
	err := walk(context.Background(), r.stack, []string{rel}, func(p string, fd int, err error) error {
		if err != nil {
			return err
		}
		res, err = r.f.Migrate(context.Background(), fd, nil)
		return err
	})
	require.NoError(t, err)
	return res
}

func (r *rig) status(t *testing.T, rel string) FileStatus {
	t.Helper()
	var fs FileStatus
	err := walk(context.Background(), r.stack, []string{rel}, func(p string, fd int, err error) error {
		if err != nil {
			return err
		}
		fs, err = r.f.Status(fd)
		return err
	})
	require.NoError(t, err)
	return fs
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// dropCaches makes the kernel forget cached attributes, so stat goes to the
// daemon (the tests check what the filter answers, not the cache).
func dropCaches(t *testing.T, path string) {
	time.Sleep(1100 * time.Millisecond) // default attr/entry timeout is 1s
}

func TestMigrateStatReadBack(t *testing.T) {
	r := newRig(t, rigOpts{chunk: 16}) // 64 KiB chunks: many chunks
	data := randBytes(1<<20 + 12345)
	p := filepath.Join(r.mnt, "big.bin")
	require.NoError(t, os.WriteFile(p, data, 0o640))
	mt := time.Date(2020, 1, 2, 3, 4, 5, 6000, time.UTC)
	require.NoError(t, os.Chtimes(p, mt, mt))
	before, err := os.Stat(p)
	require.NoError(t, err)

	res := r.migrate(t, "big.bin")
	require.Equal(t, OutMigrated, res.Outcome, "%v", res.Reason)

	// Underneath: an empty stub with the record.
	var bst unix.Stat_t
	require.NoError(t, unix.Stat(filepath.Join(r.backing, "big.bin"), &bst))
	assert.EqualValues(t, 0, bst.Size)
	assert.LessOrEqual(t, bst.Blocks, int64(8), "at most the record's xattr block")

	dropCaches(t, p)
	after, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, before.Size(), after.Size(), "stat shows the real size")
	assert.Equal(t, before.ModTime(), after.ModTime(), "and the real mtime")
	assert.Equal(t, before.Mode(), after.Mode())
	var st unix.Stat_t
	require.NoError(t, unix.Stat(p, &st))
	assert.LessOrEqual(t, st.Blocks, int64(8), "st_blocks shows what is local")
	ents, err := os.ReadDir(r.mnt)
	require.NoError(t, err)
	for _, e := range ents {
		if e.Name() == "big.bin" {
			info, err := e.Info()
			require.NoError(t, err)
			assert.Equal(t, before.Size(), info.Size(), "listing shows the real size")
		}
	}
	assert.Equal(t, "migrated", r.status(t, "big.bin").State)

	// The record is invisible.
	sz, err := unix.Listxattr(p, nil)
	require.NoError(t, err)
	buf := make([]byte, sz+1)
	n, _ := unix.Listxattr(p, buf)
	assert.NotContains(t, string(buf[:n]), "vfsfilter")
	_, err = unix.Getxattr(p, XattrName, make([]byte, 128))
	assert.ErrorIs(t, err, unix.ENODATA)
	assert.ErrorIs(t, unix.Setxattr(p, XattrName, []byte("x"), 0), unix.EPERM)

	// Reading recalls, byte for byte.
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "recalled data differs")
	// The recall ends (fsync, record) just after the last byte is served.
	require.Eventually(t, func() bool { return r.status(t, "big.bin").State == "premigrated" }, 5*time.Second, 10*time.Millisecond)
	fs := r.status(t, "big.bin")
	assert.Equal(t, "premigrated", fs.State)
	assert.Equal(t, int64(len(data)), fs.Size)
	assert.GreaterOrEqual(t, fs.LocalBytes, int64(len(data)))
	after2, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, before.ModTime(), after2.ModTime(), "recall keeps mtime")

	// Premigrated: release only, then read again. The recall may still
	// be in its last fsync (which holds the file like an open); Migrate
	// waits only a short grace for that, so wait for the recall here.
	r.waitRecalls(t)
	require.Equal(t, OutMigrated, r.migrate(t, "big.bin").Outcome)
	got, err = os.ReadFile(p)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got))
}

func TestConcurrentReadersOneRecall(t *testing.T) {
	r := newRig(t, rigOpts{chunk: 16})
	data := randBytes(4 << 20)
	p := filepath.Join(r.mnt, "f")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)

	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := os.ReadFile(p)
			if err == nil && !bytes.Equal(got, data) {
				err = errors.New("data differs")
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	r.waitRecalls(t)
	assert.EqualValues(t, 1, r.f.recallsStarted.Load(), "eight readers, one recall")
}

func TestRenameThenRecall(t *testing.T) {
	r := newRig(t, rigOpts{})
	data := randBytes(300000)
	require.NoError(t, os.WriteFile(filepath.Join(r.mnt, "a"), data, 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "a").Outcome)
	require.NoError(t, os.Mkdir(filepath.Join(r.mnt, "d"), 0o755))
	require.NoError(t, os.Rename(filepath.Join(r.mnt, "a"), filepath.Join(r.mnt, "d", "b")))
	require.NoError(t, os.Chmod(filepath.Join(r.mnt, "d", "b"), 0o600))
	require.NoError(t, os.Link(filepath.Join(r.mnt, "d", "b"), filepath.Join(r.mnt, "c")))
	assert.Equal(t, "migrated", r.status(t, "d/b").State, "rename, chmod and link do not recall")
	st, err := os.Stat(filepath.Join(r.mnt, "c"))
	require.NoError(t, err)
	assert.EqualValues(t, len(data), st.Size())
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	got, err := os.ReadFile(filepath.Join(r.mnt, "d", "b"))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got))
}

func TestTruncateDoesNotRecall(t *testing.T) {
	r := newRig(t, rigOpts{})
	for _, name := range []string{"otrunc", "trunc0", "create"} {
		require.NoError(t, os.WriteFile(filepath.Join(r.mnt, name), randBytes(100000), 0o644))
		require.Equal(t, OutMigrated, r.migrate(t, name).Outcome)
	}
	// The store is gone: anything that recalled would fail.
	require.NoError(t, os.RemoveAll(r.storeDir))

	require.NoError(t, os.WriteFile(filepath.Join(r.mnt, "otrunc"), []byte("new"), 0o644))
	got, err := os.ReadFile(filepath.Join(r.mnt, "otrunc"))
	require.NoError(t, err)
	assert.Equal(t, "new", string(got))
	assert.Equal(t, "resident", r.status(t, "otrunc").State)

	require.NoError(t, os.Truncate(filepath.Join(r.mnt, "trunc0"), 0))
	st, err := os.Stat(filepath.Join(r.mnt, "trunc0"))
	require.NoError(t, err)
	assert.EqualValues(t, 0, st.Size())
	assert.Equal(t, "resident", r.status(t, "trunc0").State)

	fd, err := os.OpenFile(filepath.Join(r.mnt, "create"), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	require.NoError(t, err)
	fd.Write([]byte("x"))
	require.NoError(t, fd.Close())
	got, err = os.ReadFile(filepath.Join(r.mnt, "create"))
	require.NoError(t, err)
	assert.Equal(t, "x", string(got))
}

func TestPartialWriteRecalls(t *testing.T) {
	r := newRig(t, rigOpts{})
	data := randBytes(200000)
	p := filepath.Join(r.mnt, "f")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)
	fd, err := os.OpenFile(p, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = fd.WriteAt([]byte("HELLO"), 1000)
	require.NoError(t, err)
	require.NoError(t, fd.Close())
	copy(data[1000:], "HELLO")
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got))
	assert.Equal(t, "resident", r.status(t, "f").State)

	// Truncate to a non-zero size recalls what it keeps.
	require.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)
	require.NoError(t, os.Truncate(p, 5000))
	got, err = os.ReadFile(p)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data[:5000], got))
}

func TestStoreDownEIO(t *testing.T) {
	r := newRig(t, rigOpts{})
	data := randBytes(100000)
	p := filepath.Join(r.mnt, "f")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)
	require.NoError(t, os.Rename(r.storeDir, r.storeDir+".away"))
	_, err := os.ReadFile(p)
	assert.ErrorIs(t, err, syscall.EIO)
	var bst unix.Stat_t
	require.NoError(t, unix.Stat(filepath.Join(r.backing, "f"), &bst))
	assert.EqualValues(t, 0, bst.Size, "stub unchanged")
	assert.Equal(t, "migrated", r.status(t, "f").State)
	// Back up: the next read works.
	require.NoError(t, os.Rename(r.storeDir+".away", r.storeDir))
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got))
}

func TestChecksumMismatchEIO(t *testing.T) {
	r := newRig(t, rigOpts{chunk: 14})
	data := randBytes(100000)
	p := filepath.Join(r.mnt, "f")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)
	id := r.status(t, "f").ID
	obj := filepath.Join(r.storeDir, id[0:2], id[2:4], id)
	b, err := os.ReadFile(obj)
	require.NoError(t, err)
	b[50000] ^= 1 // one bit in the fourth chunk
	require.NoError(t, os.WriteFile(obj, b, 0o600))

	fd, err := os.Open(p)
	require.NoError(t, err)
	defer fd.Close()
	buf := make([]byte, len(data))
	_, err = io.ReadFull(fd, buf)
	assert.ErrorIs(t, err, syscall.EIO)
	var bst unix.Stat_t
	require.NoError(t, unix.Stat(filepath.Join(r.backing, "f"), &bst))
	assert.EqualValues(t, 0, bst.Size, "stub unchanged, never a truncated or zero-filled file")
}

func TestMigrateRefusesOpenFile(t *testing.T) {
	r := newRig(t, rigOpts{})
	p := filepath.Join(r.mnt, "f")
	require.NoError(t, os.WriteFile(p, randBytes(1000), 0o644))
	fd, err := os.OpenFile(p, os.O_RDWR, 0)
	require.NoError(t, err)
	res := r.migrate(t, "f")
	assert.Equal(t, OutSkipped, res.Outcome)
	assert.ErrorIs(t, res.Reason, ErrOpen)
	fd.Close()
	assert.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)
}

func TestPinned(t *testing.T) {
	r := newRig(t, rigOpts{})
	p := filepath.Join(r.mnt, "f")
	data := randBytes(5000)
	require.NoError(t, os.WriteFile(p, data, 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)
	err := walk(context.Background(), r.stack, []string{"f"}, func(p string, fd int, err error) error {
		return r.f.SetPinned(context.Background(), fd, true)
	})
	require.NoError(t, err)
	fs := r.status(t, "f")
	assert.True(t, fs.Pinned)
	assert.Equal(t, "premigrated", fs.State)
	res := r.migrate(t, "f")
	assert.ErrorIs(t, res.Reason, ErrPinned)
}

func TestUnlinkDeletesObject(t *testing.T) {
	r := newRig(t, rigOpts{})
	p := filepath.Join(r.mnt, "f")
	require.NoError(t, os.WriteFile(p, randBytes(5000), 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)
	id := r.status(t, "f").ID
	require.NoError(t, os.Remove(p))
	obj := filepath.Join(r.storeDir, id[0:2], id[2:4], id)
	require.Eventually(t, func() bool { _, err := os.Stat(obj); return os.IsNotExist(err) }, 5*time.Second, 20*time.Millisecond)
}

// TestReleaseWaitsForRecallToLeave: a recall flips its record to
// premigrated a moment before it leaves the table of recalls in flight
// (its last fsync runs in between). A release (re-migration) of the same
// object in that window would leave a stale recall whose mark says "all
// data local" over a file that is a stub again: the next reader joins it
// and reads the empty stub. The window is held open here by putting the
// recall back into the table; a release must skip the file.
func TestReleaseWaitsForRecallToLeave(t *testing.T) {
	r, data, rec := recalledOnce(t)
	p := filepath.Join(r.mnt, "f")
	stale := r.holdRecall(rec, int64(len(data)))
	res := r.migrate(t, "f")
	assert.Equal(t, OutSkipped, res.Outcome, "no release while a recall of the object is in flight")
	assert.ErrorIs(t, res.Reason, ErrOpen)
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got), "read %d bytes of %d during the recall's last step", len(got), len(data))

	// The recall leaves; now the release goes ahead and a read recalls
	// afresh.
	r.endRecall(stale)
	require.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)
	got, err = os.ReadFile(p)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got), "read %d bytes of %d", len(got), len(data))
}

// TestReleaseGraceForFinishingRecall: a recall that has flipped the
// record to premigrated but is still in the table (its last fsync) holds
// the file only for a moment. A migrate that comes right after a read, as
// soon as the status says premigrated, waits for it and releases the file
// instead of skipping it as open.
func TestReleaseGraceForFinishingRecall(t *testing.T) {
	r, data, rec := recalledOnce(t)
	p := filepath.Join(r.mnt, "f")
	// Put a finishing recall back in the table; it leaves a moment
	// after the migrate starts, as a real one does after its fsync.
	finishing := r.holdRecall(rec, int64(len(data)))
	left := make(chan struct{})
	go func() {
		defer close(left)
		time.Sleep(closeGrace / 5)
		r.endRecall(finishing)
	}()
	res := r.migrate(t, "f")
	<-left
	assert.Equal(t, OutMigrated, res.Outcome, "reason: %v", res.Reason)
	assert.Equal(t, "migrated", r.status(t, "f").State)
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got), "read %d bytes of %d", len(got), len(data))
}

// recalledOnce sets up a rig with a file f that was migrated and then read
// back (recalled, premigrated), with its recall over, and returns the rig,
// f's data and its record.
func recalledOnce(t *testing.T) (*rig, []byte, *Record) {
	r := newRig(t, rigOpts{chunk: 16})
	data := randBytes(300000)
	p := filepath.Join(r.mnt, "f")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got))
	r.waitRecalls(t)
	require.Equal(t, "premigrated", r.status(t, "f").State)
	rec, err := readRecordPathBelow(filepath.Join(r.backing, "f"))
	require.NoError(t, err)
	return r, data, rec
}

// holdRecall puts a recall of rec whose mark says mark bytes are local
// into the table of recalls in flight, as a real one is between flipping
// the record and its last fsync; endRecall takes it out and finishes it.
func (r *rig) holdRecall(rec *Record, mark int64) *recall {
	rc := &recall{f: r.f, rec: *rec, mark: mark, wake: make(chan struct{})}
	r.f.mu.Lock()
	r.f.recalls[rec.ID] = rc
	r.f.mu.Unlock()
	return rc
}

func (r *rig) endRecall(rc *recall) {
	r.f.mu.Lock()
	delete(r.f.recalls, rc.rec.ID)
	r.f.mu.Unlock()
	rc.finish(nil)
}

// waitRecalls waits until no recall is in flight (a recall's last fsync
// may still run after its reader has all the data).
func (r *rig) waitRecalls(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		r.f.mu.Lock()
		defer r.f.mu.Unlock()
		return len(r.f.recalls) == 0
	}, 10*time.Second, 10*time.Millisecond)
}

func readRecordPathBelow(path string) (*Record, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return readRecordFd(fd)
}

// TestHolesSurviveMigration: a sparse file's holes are where they were
// while it is a stub (SEEK_DATA/SEEK_HOLE answered from the object's
// extent map) and after a recall (the data is written back extent by
// extent), through the mount and in the backing file.
func TestHolesSurviveMigration(t *testing.T) {
	r := newRig(t, rigOpts{chunk: 16})
	p := filepath.Join(r.mnt, "sparse")
	f, err := os.Create(p)
	require.NoError(t, err)
	for _, off := range []int64{0, 1 << 20, 5<<20 + 4096} {
		_, err := f.WriteAt(randBytes(8192), off)
		require.NoError(t, err)
	}
	require.NoError(t, f.Truncate(8<<20)) // and a hole at the end
	require.NoError(t, f.Close())
	want := dataSegments(t, p)
	require.Len(t, want, 3, "this file system must report holes for the test to mean anything")

	require.Equal(t, OutMigrated, r.migrate(t, "sparse").Outcome)
	assert.Equal(t, want, dataSegments(t, p), "stub")
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Len(t, got, 8<<20)
	require.Eventually(t, func() bool { return r.status(t, "sparse").State == "premigrated" }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, want, dataSegments(t, p), "recalled, through the mount")
	assert.Equal(t, want, dataSegments(t, filepath.Join(r.backing, "sparse")), "recalled, backing file")
}

// dataSegments is the file's [data, hole) ranges as SEEK_DATA/SEEK_HOLE
// report them.
func dataSegments(t *testing.T, path string) [][2]int64 {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var segs [][2]int64
	for off := int64(0); ; {
		d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			return segs
		}
		require.NoError(t, err)
		h, err := unix.Seek(int(f.Fd()), d, unix.SEEK_HOLE)
		require.NoError(t, err)
		segs = append(segs, [2]int64{d, h})
		off = h
	}
}

// TestRecallOnFullDisk: a recall that runs out of local space fails with
// EIO (and a log line), leaves the stub as it was (empty, migrated, its
// object in the store), and succeeds once there is room again.
func TestRecallOnFullDisk(t *testing.T) {
	r := newRig(t, rigOpts{chunk: 16})
	// A small file system inside the backing directory (the passthrough
	// resolves paths beneath its root, mounts included).
	small := filepath.Join(r.backing, "small")
	require.NoError(t, os.Mkdir(small, 0o755))
	conformance.SmallTmpfs(t, small, "2m")

	data := randBytes(1536 << 10)
	p := filepath.Join(r.mnt, "small", "f")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "small/f").Outcome)
	// Fill what the stub gave back.
	filler := filepath.Join(r.mnt, "small", "filler")
	err := os.WriteFile(filler, make([]byte, 3<<20), 0o644)
	require.ErrorIs(t, err, syscall.ENOSPC)

	_, err = os.ReadFile(p)
	assert.ErrorIs(t, err, syscall.EIO)
	var bst unix.Stat_t
	require.NoError(t, unix.Stat(filepath.Join(small, "f"), &bst))
	assert.EqualValues(t, 0, bst.Size, "stub unchanged")
	assert.EqualValues(t, 0, bst.Blocks, "no recalled data left behind")
	assert.Equal(t, "migrated", r.status(t, "small/f").State)
	st, err := os.Stat(p)
	require.NoError(t, err)
	assert.EqualValues(t, len(data), st.Size(), "users still see the real size")

	require.NoError(t, os.Remove(filler))
	// The space comes back when the daemon closes the filler's backing
	// file, at the RELEASE the kernel sends a moment after close(2).
	require.Eventually(t, func() bool {
		var sfs unix.Statfs_t
		return unix.Statfs(small, &sfs) == nil && sfs.Bavail*uint64(sfs.Bsize) >= uint64(len(data))
	}, 10*time.Second, 10*time.Millisecond)
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got))
}

// TestDamagedStubRecordEIO: a stub whose record is damaged (bit rot, a
// hand edit below) answers EIO to stat, open and read, with a log line,
// and changes nothing: not the stub, not its object, not other files.
func TestDamagedStubRecordEIO(t *testing.T) {
	r := newRig(t, rigOpts{})
	data := randBytes(100000)
	p := filepath.Join(r.mnt, "f")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(r.mnt, "other"), []byte("fine"), 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)
	below := filepath.Join(r.backing, "f")
	good := make([]byte, RecordSize+16)
	n, err := unix.Getxattr(below, XattrName, good)
	require.NoError(t, err)
	good = good[:n]
	bad := bytes.Clone(good)
	bad[len(bad)/2] ^= 0x40
	require.NoError(t, unix.Setxattr(below, XattrName, bad, 0))
	dropCaches(t, p)

	_, err = os.Stat(p)
	assert.ErrorIs(t, err, syscall.EIO, "stat")
	_, err = os.ReadFile(p)
	assert.ErrorIs(t, err, syscall.EIO, "read")
	got, err := os.ReadFile(filepath.Join(r.mnt, "other"))
	require.NoError(t, err)
	assert.Equal(t, "fine", string(got))
	now := make([]byte, RecordSize+16)
	n, err = unix.Getxattr(below, XattrName, now)
	require.NoError(t, err)
	assert.Equal(t, bad, now[:n], "the damaged record is left for fsck or the user")

	// Repaired (the record back as it was): the file reads again.
	require.NoError(t, unix.Setxattr(below, XattrName, good, 0))
	dropCaches(t, p)
	got, err = os.ReadFile(p)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got))
}
