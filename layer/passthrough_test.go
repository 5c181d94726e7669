package layer_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"golang.org/x/sys/unix"
)

func TestPosixPassthrough(t *testing.T) {
	conformance.RunPosix(t, conformance.Passthrough, layer.MountOptions{})
}

func TestScenariosPassthrough(t *testing.T) {
	conformance.RunScenarios(t, conformance.Passthrough, layer.MountOptions{})
}

func TestScenariosPassthroughAllowOther(t *testing.T) {
	conformance.RunScenarios(t, conformance.Passthrough, layer.MountOptions{AllowOther: true})
}

// readCounter counts the reads and writes that reach the daemon.
type readCounter struct {
	reads, writes, ptOpens atomic.Int64
}

func (r *readCounter) Name() string  { return "counter" }
func (r *readCounter) Altitude() int { return 100 }
func (r *readCounter) Attach(a *layer.Attachment) error {
	layer.OnPost(a, func(c *layer.Call, op *layer.ReadOp, errno layer.Errno) layer.Errno { r.reads.Add(1); return errno })
	layer.OnPost(a, func(c *layer.Call, op *layer.WriteOp, errno layer.Errno) layer.Errno { r.writes.Add(1); return errno })
	layer.OnPost(a, func(c *layer.Call, op *layer.OpenOp, errno layer.Errno) layer.Errno {
		if errno == 0 && op.Handle.Passthrough {
			r.ptOpens.Add(1)
		}
		return errno
	})
	return nil
}

// TestFUSEPassthroughBypassesDaemon: plain files are read and written by the
// kernel directly; no read or write reaches any filter.
func TestFUSEPassthroughBypassesDaemon(t *testing.T) {
	rc := &readCounter{}
	mnt, _ := conformance.Mount(t, func(t testing.TB, backing string) *layer.Stack {
		pt, err := layer.NewPassthrough(backing)
		if err != nil {
			t.Fatal(err)
		}
		st, err := layer.NewStack(nil, pt, rc)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}, layer.MountOptions{})
	data := make([]byte, 1<<20)
	if err := os.WriteFile(mnt+"/f", data, 0644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(mnt + "/f")
	if err != nil || len(got) != len(data) {
		t.Fatalf("read back: %d bytes, %v", len(got), err)
	}
	if rc.ptOpens.Load() == 0 {
		t.Fatalf("no open used passthrough")
	}
	if r, w := rc.reads.Load(), rc.writes.Load(); r != 0 || w != 0 {
		t.Errorf("%d reads and %d writes reached the daemon; passthrough should bypass it", r, w)
	}
}

func TestExercisePassthrough(t *testing.T) {
	conformance.RunExerciser(t, conformance.Passthrough, layer.MountOptions{}, 400)
}

// TestFullDiskGivesENOSPC: a backing file system that fills up gives the
// caller ENOSPC, and what was written before stays intact.
func TestFullDiskGivesENOSPC(t *testing.T) {
	conformance.RequireFUSE(t)
	small := t.TempDir()
	conformance.SmallTmpfs(t, small, "1m")
	mnt := t.TempDir()
	st := conformance.Passthrough(t, small)
	srv, err := layer.Mount(mnt, st, layer.MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conformance.UnmountAtEnd(t, srv)
	if err := os.WriteFile(mnt+"/keep", []byte("precious"), 0644); err != nil {
		t.Fatal(err)
	}
	err = os.WriteFile(mnt+"/big", make([]byte, 4<<20), 0644)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing 4 MiB to a 1 MiB file system: %v, want ENOSPC", err)
	}
	got, err := os.ReadFile(mnt + "/keep")
	if err != nil || string(got) != "precious" {
		t.Fatalf("earlier file after ENOSPC: %q, %v", got, err)
	}
}

// TestHostileNames: names with newlines, control characters, backslashes,
// invalid UTF-8 and 255 bytes round-trip exactly, and nothing escapes.
func TestHostileNames(t *testing.T) {
	mnt, backing := conformance.Mount(t, conformance.Passthrough, layer.MountOptions{})
	names := []string{
		"new\nline", "tab\there", "back\\slash", "\x01\x7f", "bad\xff\xfeutf8",
		"-rf", " lead and trail ", "..dots..", strings.Repeat("é", 127) + "x",
	}
	for _, n := range names {
		if err := os.WriteFile(mnt+"/"+n, []byte(n), 0644); err != nil {
			t.Fatalf("create %q: %v", n, err)
		}
		got, err := os.ReadFile(backing + "/" + n)
		if err != nil || string(got) != n {
			t.Errorf("%q in backing: %q, %v", n, got, err)
		}
	}
	ents, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(names) {
		t.Errorf("listing has %d entries, want %d", len(ents), len(names))
	}
}

// TestSELinuxLabelWithoutSELinux: on a host without SELinux a missing
// label is "not supported" (so ls -l stops asking, device by device),
// while a label that exists is still returned as it is.
func TestSELinuxLabelWithoutSELinux(t *testing.T) {
	if _, err := os.Stat("/sys/fs/selinux/enforce"); err == nil {
		t.Skip("this host runs SELinux: labels are passed through unchanged")
	}
	mnt, backing := conformance.Mount(t, conformance.Passthrough, layer.MountOptions{})
	if err := os.WriteFile(mnt+"/plain", nil, 0644); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := unix.Getxattr(mnt+"/plain", "security.selinux", buf); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("missing label: %v, want EOPNOTSUPP", err)
	}
	if err := os.WriteFile(backing+"/labelled", nil, 0644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(backing+"/labelled", "security.selinux", []byte("system_u:object_r:etc_t:s0"), 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.Getxattr(mnt+"/labelled", "security.selinux", buf)
	if err != nil || string(buf[:n]) != "system_u:object_r:etc_t:s0" {
		t.Errorf("existing label: %q, %v", buf[:n], err)
	}
}

// TestCloseEndsOps: after Close, ops fail with EBADF, even when the next
// open(2) of the process reuses the number the backing directory's fd had
// (before, they resolved paths beneath whatever got that number). Close
// is idempotent.
func TestCloseEndsOps(t *testing.T) {
	backing, other := t.TempDir(), t.TempDir()
	for _, d := range []string{backing, other} {
		if err := os.WriteFile(d+"/f", []byte(d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pt, err := layer.NewPassthrough(backing)
	if err != nil {
		t.Fatal(err)
	}
	st, err := layer.NewStack(nil, pt)
	if err != nil {
		t.Fatal(err)
	}
	call := layer.InternalCall(t.Context())
	if errno := st.Do(call, &layer.LookupOp{Path: "f"}); errno != 0 {
		t.Fatalf("lookup before Close: %v", errno)
	}
	if err := pt.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pt.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	fd, err := unix.Open(other, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, op := range []layer.Op{&layer.LookupOp{Path: "f"}, &layer.UnlinkOp{Path: "f"}, &layer.OpenOp{Path: "f", Flags: syscall.O_RDONLY}} {
		if errno := st.Do(call, op); errno != syscall.EBADF {
			t.Errorf("%T after Close: %v, want EBADF", op, errno)
		}
	}
	if _, err := os.Stat(other + "/f"); err != nil {
		t.Fatalf("the directory that got the old fd number lost its file: %v", err)
	}
}

// TestStreamWriteback: a sequential stream of large writes through a
// handle starts writeback of what it wrote behind it, and random or small
// writes do not; either way the data is what was written, and the release
// waits for a writeback still running before it closes the fd.
func TestStreamWriteback(t *testing.T) {
	backing := t.TempDir()
	st := conformance.Passthrough(t, backing)
	call := layer.InternalCall(t.Context())
	const chunk = 1 << 20
	write := func(name string, offs []int64, size int) []byte {
		t.Helper()
		cr := &layer.CreateOp{Path: name, Flags: syscall.O_WRONLY, Mode: 0o644}
		if errno := st.Do(call, cr); errno != 0 {
			t.Fatalf("create: %v", errno)
		}
		var want []byte
		for _, off := range offs {
			data := bytes.Repeat([]byte{byte(off/int64(size)) + 1}, size)
			if end := int(off) + size; end > len(want) {
				want = append(want, make([]byte, end-len(want))...)
			}
			copy(want[off:], data)
			w := &layer.WriteOp{Handle: cr.Handle, Off: off, Data: data}
			if errno := st.Do(call, w); errno != 0 || int(w.Written) != size {
				t.Fatalf("write at %d: %v (%d bytes)", off, errno, w.Written)
			}
		}
		if errno := st.Do(call, &layer.ReleaseOp{Handle: cr.Handle}); errno != 0 {
			t.Fatalf("release: %v", errno)
		}
		return want
	}
	check := func(name string, want []byte) {
		t.Helper()
		got, err := os.ReadFile(backing + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: contents differ from what was written", name)
		}
	}

	var seq, random, small []int64
	for i := range 40 {
		seq = append(seq, int64(i)*chunk)
		random = append(random, int64((i*17)%40)*chunk)
	}
	for i := range 1000 {
		small = append(small, int64(i)*16<<10)
	}
	k0 := layer.StreamKicks()
	check("random", write("random", random, chunk))
	check("small", write("small", small, 16<<10))
	if k := layer.StreamKicks() - k0; k != 0 {
		t.Errorf("random and small writes started %d writebacks, want none", k)
	}
	k0 = layer.StreamKicks()
	check("seq", write("seq", seq, chunk))
	if k := layer.StreamKicks() - k0; k == 0 {
		t.Errorf("a 40 MiB sequential stream started no writeback")
	}
}

// TestKernelCacheTimeouts: the timeouts of MountOptions are what the
// kernel caches for, and only those. A change made underneath stays unseen
// for as long as the kernel may cache (names, attributes, failed lookups);
// with zero timeouts for a kind it is seen at once.
func TestKernelCacheTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   layer.MountOptions
		cached bool
	}{
		{"long", layer.MountOptions{EntryTimeout: time.Minute, AttrTimeout: time.Minute, NegativeTimeout: time.Minute}, true},
		{"none", layer.MountOptions{EntryTimeout: time.Nanosecond, AttrTimeout: time.Nanosecond}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt, backing := conformance.Mount(t, conformance.Passthrough, tc.opts)
			require.NoError(t, os.WriteFile(backing+"/f", []byte("1"), 0o644))
			st, err := os.Lstat(mnt + "/f")
			require.NoError(t, err)
			require.EqualValues(t, 1, st.Size())
			_, err = os.Lstat(mnt + "/g")
			require.True(t, os.IsNotExist(err), "g: %v", err)

			// Underneath, behind the kernel's back.
			require.NoError(t, os.WriteFile(backing+"/f", []byte("12345"), 0o644))
			require.NoError(t, os.WriteFile(backing+"/g", nil, 0o644))
			st, err = os.Lstat(mnt + "/f")
			require.NoError(t, err)
			_, gerr := os.Lstat(mnt + "/g")
			if tc.cached {
				assert.EqualValues(t, 1, st.Size(), "attributes cached")
				assert.True(t, os.IsNotExist(gerr), "failed lookup cached: %v", gerr)
			} else {
				// 1ns is rounded up to a jiffy: wait that out.
				time.Sleep(20 * time.Millisecond)
				st, err = os.Lstat(mnt + "/f")
				require.NoError(t, err)
				_, gerr = os.Lstat(mnt + "/g")
				assert.EqualValues(t, 5, st.Size(), "attributes not cached")
				assert.NoError(t, gerr, "failed lookup not cached")
			}
		})
	}
}

// TestLimitCaching: Server.LimitCaching shortens what the kernel caches from
// then on (a mount whose long caches relied on a backing watch that
// stopped), and never lengthens it again.
func TestLimitCaching(t *testing.T) {
	conformance.RequireFUSE(t)
	backing, mnt := t.TempDir(), t.TempDir()
	srv, err := layer.Mount(mnt, conformance.Passthrough(t, backing), layer.MountOptions{EntryTimeout: time.Hour, AttrTimeout: time.Hour, CacheDirs: true})
	require.NoError(t, err)
	conformance.UnmountAtEnd(t, srv)
	require.NoError(t, os.WriteFile(backing+"/cached", []byte("1"), 0o644))
	require.NoError(t, os.WriteFile(backing+"/f", []byte("1"), 0o644))
	st, err := os.Lstat(mnt + "/cached")
	require.NoError(t, err)
	require.EqualValues(t, 1, st.Size())

	srv.LimitCaching(time.Nanosecond, time.Nanosecond, false)
	srv.LimitCaching(time.Hour, time.Hour, true) // no effect: only ever lower
	st, err = os.Lstat(mnt + "/f")
	require.NoError(t, err)
	require.EqualValues(t, 1, st.Size())

	// Underneath, behind the kernel's back.
	require.NoError(t, os.WriteFile(backing+"/cached", []byte("12345"), 0o644))
	require.NoError(t, os.WriteFile(backing+"/f", []byte("12345"), 0o644))
	time.Sleep(20 * time.Millisecond) // 1ns is a jiffy to the kernel
	st, err = os.Lstat(mnt + "/f")
	require.NoError(t, err)
	assert.EqualValues(t, 5, st.Size(), "answered after LimitCaching: not cached")
	st, err = os.Lstat(mnt + "/cached")
	require.NoError(t, err)
	assert.EqualValues(t, 1, st.Size(), "answered before LimitCaching: keeps its hour")
}

// A file with two hard links, known to the kernel by one name and changed
// underneath through the other: Invalidate of the other name (which the
// kernel never looked up) still drops the cached size, pages and link
// count of the name it knows.
func TestInvalidateHardLink(t *testing.T) {
	conformance.RequireFUSE(t)
	backing, mnt := t.TempDir(), t.TempDir()
	for _, d := range []string{"a", "b", "c"} {
		require.NoError(t, os.Mkdir(backing+"/"+d, 0o755))
	}
	require.NoError(t, os.WriteFile(backing+"/a/x", []byte("1"), 0o644))
	require.NoError(t, os.Link(backing+"/a/x", backing+"/b/y"))
	srv, err := layer.Mount(mnt, conformance.Passthrough(t, backing), layer.MountOptions{EntryTimeout: time.Hour, AttrTimeout: time.Hour, CacheDirs: true})
	require.NoError(t, err)
	conformance.UnmountAtEnd(t, srv)

	stat := func() (size int64, nlink uint64) {
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(mnt+"/a/x", &st))
		return st.Size, uint64(st.Nlink)
	}
	size, nlink := stat()
	require.EqualValues(t, 1, size)
	require.EqualValues(t, 2, nlink)
	_, err = os.Stat(mnt + "/b") // the kernel knows b, not b/y (a listing would look y up)
	require.NoError(t, err)

	// Underneath, through the other name.
	require.NoError(t, os.WriteFile(backing+"/b/y", []byte("12345"), 0o644))
	size, _ = stat()
	require.EqualValues(t, 1, size, "the kernel caches a/x's attributes (else this test proves nothing)")
	srv.Invalidate(layer.Event{Kind: layer.EventModify, Path: "b/y"})
	size, _ = stat()
	assert.EqualValues(t, 5, size, "size after a write through the other link")
	got, err := os.ReadFile(mnt + "/a/x")
	require.NoError(t, err)
	assert.Equal(t, "12345", string(got))

	// A third link made underneath: the link count the kernel caches
	// for a/x changes with it. (The read above made the kernel drop
	// a/x's atime, so stat first to cache the attributes again.)
	stat()
	require.NoError(t, os.Link(backing+"/a/x", backing+"/c/z"))
	_, nlink = stat()
	require.EqualValues(t, 2, nlink, "cached")
	srv.Invalidate(layer.Event{Kind: layer.EventCreate, Path: "c/z"})
	_, nlink = stat()
	assert.EqualValues(t, 3, nlink, "link count after a link made underneath")

	// A mode change through the other link (attributes only).
	require.NoError(t, os.Chmod(backing+"/b/y", 0o600))
	srv.Invalidate(layer.Event{Kind: layer.EventAttrib, Path: "b/y"})
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(mnt+"/a/x", &st))
	assert.EqualValues(t, 0o600, st.Mode&0o7777, "mode after a chmod through the other link")

	// A rename of the other link (the kernel never looked up c/z): the
	// change time of the name it knows follows.
	require.NoError(t, unix.Lstat(mnt+"/a/x", &st))
	before := st.Ctim
	time.Sleep(10 * time.Millisecond) // a later ctime, whatever the clock's grain
	require.NoError(t, os.Rename(backing+"/c/z", backing+"/c/w"))
	require.NoError(t, unix.Lstat(mnt+"/a/x", &st))
	require.Equal(t, before, st.Ctim, "cached")
	srv.Invalidate(layer.Event{Kind: layer.EventRename, OldPath: "c/z", Path: "c/w"})
	require.NoError(t, unix.Lstat(mnt+"/a/x", &st))
	var want unix.Stat_t
	require.NoError(t, unix.Lstat(backing+"/a/x", &want))
	assert.Equal(t, want.Ctim, st.Ctim, "ctime after a rename of the other link")
}
