package crypt

import (
	"bytes"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/vfsfilter/vfsfilter/layer"
)

// probe sits between crypt and the passthrough. It counts fsyncs and, when
// virtual is set, serves creations itself with handles that have no
// descriptor (as a filter's virtual file would).
type probe struct {
	virtual atomic.Bool
	fsyncs  atomic.Int32
	written []byte
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

// TestWriteSmallSettles: the small files names depend on (IVs, long-name
// side files) are made durable with sync_file_range on a real descriptor,
// without an fsync, and with an FsyncOp below when the handle has no
// descriptor.
func TestWriteSmallSettles(t *testing.T) {
	backing := t.TempDir()
	pt, err := layer.NewPassthrough(backing)
	if err != nil {
		t.Fatal(err)
	}
	defer pt.Close()
	_, keys := testKeys(t)
	f, err := New(keys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := &probe{}
	if _, err := layer.NewStack(nil, pt, p, f); err != nil {
		t.Fatal(err)
	}
	c := layer.InternalCall(t.Context())
	data := []byte("0123456789abcdef")

	created, errno := f.writeSmall(c, "real", data, 0400)
	if errno != 0 || !created {
		t.Fatalf("writeSmall: %v %v", created, errno)
	}
	if got, err := os.ReadFile(filepath.Join(backing, "real")); err != nil || !bytes.Equal(got, data) {
		t.Errorf("file below: %q %v", got, err)
	}
	if n := p.fsyncs.Load(); n != 0 {
		t.Errorf("%d fsyncs for a file with a descriptor, want 0", n)
	}
	// O_EXCL: an existing file is left alone.
	if created, errno := f.writeSmall(c, "real", []byte("other"), 0400); errno != 0 || created {
		t.Errorf("second writeSmall: %v %v", created, errno)
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
