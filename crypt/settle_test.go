package crypt

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/vfsfilter/vfsfilter/layer"
	"golang.org/x/sys/unix"
)

// probe sits between crypt and the passthrough. It counts fsyncs; when
// virtual is set, it serves creations itself with handles that have no
// descriptor (as a filter's virtual file would); when noXattrs is set, it
// refuses to set extended attributes (as a file system without them
// would).
type probe struct {
	virtual  atomic.Bool
	noXattrs atomic.Bool
	fsyncs   atomic.Int32
	written  []byte
}

func (p *probe) Name() string  { return "probe" }
func (p *probe) Altitude() int { return layer.AltitudeCrypt - 50 }
func (p *probe) Attach(a *layer.Attachment) error {
	layer.OnPre(a, func(c *layer.Call, op *layer.CreateOp) (layer.Status, layer.Errno) {
		if p.virtual.Load() {
			op.Handle = layer.NewHandle(-1, op.Flags)
			return layer.Complete, 0
		}
		return layer.ContinueNoPost, 0
	})
	layer.OnPre(a, func(c *layer.Call, op *layer.WriteOp) (layer.Status, layer.Errno) {
		if op.Handle.Fd < 0 {
			p.written = append(p.written, op.Data...)
			op.Written = uint32(len(op.Data))
			return layer.Complete, 0
		}
		return layer.ContinueNoPost, 0
	})
	layer.OnPre(a, func(c *layer.Call, op *layer.SetxattrOp) (layer.Status, layer.Errno) {
		if p.noXattrs.Load() {
			return layer.Complete, syscall.EOPNOTSUPP
		}
		return layer.ContinueNoPost, 0
	})
	layer.OnPre(a, func(c *layer.Call, op *layer.FsyncOp) (layer.Status, layer.Errno) {
		p.fsyncs.Add(1)
		if op.Handle.Fd < 0 {
			return layer.Complete, 0
		}
		return layer.ContinueNoPost, 0
	})
	layer.OnPre(a, func(c *layer.Call, op *layer.ReleaseOp) (layer.Status, layer.Errno) {
		if op.Handle.Fd < 0 {
			return layer.Complete, 0
		}
		return layer.ContinueNoPost, 0
	})
	return nil
}

// TestWriteSmallDurable: the small files names depend on (IVs, long-name
// side files) get a copy of their content in CopyXattr, and then need no
// sync at all; where the copy cannot be set, they are made durable with
// sync_file_range on a real descriptor (no fsync), and with an FsyncOp
// below when the handle has no descriptor. readSmall prefers the copy.
func TestWriteSmallDurable(t *testing.T) {
	backing := t.TempDir()
	f, p := probedCrypt(t, backing)
	c := layer.InternalCall(t.Context())
	data := []byte("0123456789abcdef")
	copyOf := func(name string) []byte { return copyBelow(backing, name) }
	any16 := func(b []byte) bool { return len(b) == 16 }

	created, errno := f.writeSmall(c, "real", data, 0400)
	if errno != 0 || !created {
		t.Fatalf("writeSmall: %v %v", created, errno)
	}
	if got, err := os.ReadFile(filepath.Join(backing, "real")); err != nil || !bytes.Equal(got, data) {
		t.Errorf("file below: %q %v", got, err)
	}
	if got := copyOf("real"); !bytes.Equal(got, data) {
		t.Errorf("copy below: %q", got)
	}
	if n := p.fsyncs.Load(); n != 0 {
		t.Errorf("%d fsyncs for a file with a copy, want 0", n)
	}
	// The copy is what is read: a content a crash left zero-filled does
	// not matter.
	if err := os.WriteFile(filepath.Join(backing, "real"), make([]byte, 16), 0); err != nil {
		t.Fatal(err)
	}
	if got, errno := f.readSmall(c, "real", 17, any16); errno != 0 || !bytes.Equal(got, data) {
		t.Errorf("readSmall with a zeroed content: %q %v", got, errno)
	}
	// O_EXCL: an existing file is left alone.
	if created, errno := f.writeSmall(c, "real", []byte("other"), 0400); errno != 0 || created {
		t.Errorf("second writeSmall: %v %v", created, errno)
	}

	// No extended attributes below: settled on the descriptor, no copy;
	// the content is read.
	p.noXattrs.Store(true)
	if created, errno := f.writeSmall(c, "noxattr", data, 0400); errno != 0 || !created {
		t.Fatalf("writeSmall (no xattrs): %v %v", created, errno)
	}
	if got := copyOf("noxattr"); got != nil {
		t.Errorf("copy set although refused: %q", got)
	}
	if n := p.fsyncs.Load(); n != 0 {
		t.Errorf("%d fsyncs for a file with a descriptor, want 0", n)
	}
	if got, errno := f.readSmall(c, "noxattr", 17, any16); errno != 0 || !bytes.Equal(got, data) {
		t.Errorf("readSmall without a copy: %q %v", got, errno)
	}
	p.noXattrs.Store(false)

	// A damaged copy (wrong length) falls back to the content.
	if err := unix.Lsetxattr(filepath.Join(backing, "noxattr"), CopyXattr, []byte("short"), 0); err != nil {
		t.Fatal(err)
	}
	if got, errno := f.readSmall(c, "noxattr", 17, any16); errno != 0 || !bytes.Equal(got, data) {
		t.Errorf("readSmall with a damaged copy: %q %v", got, errno)
	}
	if _, errno := f.readSmall(c, "missing", 17, any16); errno != syscall.ENOENT {
		t.Errorf("readSmall of a missing file: %v, want ENOENT", errno)
	}

	p.virtual.Store(true)
	created, errno = f.writeSmall(c, "virtual", data, 0400)
	if errno != 0 || !created {
		t.Fatalf("writeSmall (virtual): %v %v", created, errno)
	}
	if !bytes.Equal(p.written, data) {
		t.Errorf("virtual file got %q", p.written)
	}
	if n := p.fsyncs.Load(); n != 1 {
		t.Errorf("%d fsyncs for a handle without a descriptor, want 1", n)
	}
	if _, err := os.Stat(filepath.Join(backing, "virtual")); !os.IsNotExist(err) {
		t.Errorf("virtual file reached the backing directory: %v", err)
	}
}

// probedCrypt is crypt over a probe over the passthrough of backing.
func probedCrypt(t *testing.T, backing string) (*Filter, *probe) {
	t.Helper()
	pt, err := layer.NewPassthrough(backing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pt.Close() })
	_, keys := testKeys(t)
	f, err := New(keys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := &probe{}
	if _, err := layer.NewStack(nil, pt, p, f); err != nil {
		t.Fatal(err)
	}
	return f, p
}

// copyBelow is the CopyXattr of the file name in backing, or nil.
func copyBelow(backing, name string) []byte {
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(filepath.Join(backing, name), CopyXattr, buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// TestWriteSmallUnprivileged: a daemon without CAP_DAC_OVERRIDE (one a user
// mounted through fusermount) may not set a user.* attribute on the
// read-only files crypt writes; writeSmall lends the owner write
// permission for the call, and the file ends with its own mode. The test
// runs its binary again as uid 65534 for that part.
func TestWriteSmallUnprivileged(t *testing.T) {
	const env = "VFSFILTER_TEST_UNPRIVILEGED_DIR"
	if dir := os.Getenv(env); dir != "" {
		// The child, as nobody: no fsync, no settle needed.
		f, p := probedCrypt(t, dir)
		if created, errno := f.writeSmall(layer.InternalCall(t.Context()), "iv", []byte("0123456789abcdef"), 0440); errno != 0 || !created {
			t.Fatalf("writeSmall as uid %d: %v %v", os.Geteuid(), created, errno)
		}
		if n := p.fsyncs.Load(); n != 0 {
			t.Errorf("%d fsyncs", n)
		}
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child as another user")
	}
	dir := t.TempDir()
	backing := filepath.Join(dir, "backing")
	if err := os.Mkdir(backing, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(backing, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	AsNobody(t, "^TestWriteSmallUnprivileged$", env, backing, dir)
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(backing, "iv"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 65534 || st.Mode&0o7777 != 0o440 {
		t.Errorf("file below: uid %d mode %o, want 65534 and 440", st.Uid, st.Mode&0o7777)
	}
	if got := copyBelow(backing, "iv"); string(got) != "0123456789abcdef" {
		t.Errorf("copy below: %q", got)
	}
}
