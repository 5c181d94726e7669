package hsm

import (
	"errors"
	"os"
	"path/filepath"
	"sync"

	"github.com/vfsfilter/vfsfilter/internal/settings"
	"github.com/vfsfilter/vfsfilter/layer"
	"golang.org/x/sys/unix"
)

// overwrite is a sequential overwrite of a stub in progress: the bytes
// [0, n) one handle has written so far, from offset 0 on, kept in an
// unlinked temporary file under Backing/.vfsfilter/hsm. The stub itself is
// not touched until the overwrite ends: once n reaches the real size the
// file was fully rewritten and the prefix replaces it without a recall;
// anything that needs the old data first (a read, a write elsewhere, ...)
// recalls the whole file into the stub as usual and then lays the prefix
// over [0, n). A failed recall so leaves the stub intact.
type overwrite struct {
	owner *hctx
	fd    int // the owner's backing fd (writable), valid while it is open
	size  int64

	mu   sync.Mutex
	tmp  *os.File
	n    int64
	done bool
}

func (f *Filter) overwriteOf(ino uint64) *overwrite {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.overwrites[ino]
}

// endOverwrite forgets ow (ow.mu held).
func (f *Filter) endOverwrite(ow *overwrite) {
	ow.done = true
	ow.tmp.Close()
	f.mu.Lock()
	if f.overwrites[ow.owner.ino] == ow {
		delete(f.overwrites, ow.owner.ino)
	}
	f.mu.Unlock()
}

// startOverwrite begins a sequential overwrite of the stub behind h, if
// this write can be the first one of it; nil if not.
func (f *Filter) startOverwrite(hc *hctx, h *layer.Handle, op *layer.WriteOp) *overwrite {
	hc.mu.Lock()
	ok := hc.write && !hc.resident && hc.stub != nil
	hc.mu.Unlock()
	if !ok || op.Off != 0 || op.KillSuidgid || h.Fd < 0 {
		return nil
	}
	rec, err := readRecordFd(h.Fd)
	if err != nil || rec == nil || rec.State != Migrated || f.inflight(rec.ID) != nil {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Join(f.cfg.Backing, settings.Dir, "hsm"), "overwrite-*")
	if err != nil {
		f.log.Warn("hsm: no temporary file for an overwrite; recalling instead", "err", err)
		return nil
	}
	os.Remove(tmp.Name())
	ow := &overwrite{owner: hc, fd: h.Fd, size: int64(rec.Size), tmp: tmp}
	f.mu.Lock()
	if f.overwrites[hc.ino] != nil {
		f.mu.Unlock()
		tmp.Close()
		return nil
	}
	f.overwrites[hc.ino] = ow
	f.mu.Unlock()
	return ow
}

// overwriteWrite serves op as part of a sequential overwrite if it is one
// (handled is then true).
func (f *Filter) overwriteWrite(c *layer.Call, hc *hctx, op *layer.WriteOp) (handled bool, errno layer.Errno) {
	ow := f.overwriteOf(hc.ino)
	if ow == nil {
		if ow = f.startOverwrite(hc, op.Handle, op); ow == nil {
			return false, 0
		}
	}
	if ow.owner != hc {
		return false, 0
	}
	ow.mu.Lock()
	defer ow.mu.Unlock()
	if ow.done || op.Off != ow.n || op.KillSuidgid {
		return false, 0
	}
	if err := pwriteAll(int(ow.tmp.Fd()), op.Data, op.Off); err != nil {
		return true, f.fail("overwrite (temporary file)", fdName(ow.fd, f.cfg.Backing), err)
	}
	ow.n += int64(len(op.Data))
	op.Written = uint32(len(op.Data))
	if ow.n < ow.size {
		return true, 0
	}
	// Every byte rewritten: the old data is not needed.
	name := fdName(ow.fd, f.cfg.Backing)
	if errno := f.prepareModify(c, ow.fd, true, name); errno != 0 {
		return true, errno
	}
	if err := f.copyPrefix(ow); err != nil {
		f.endOverwrite(ow)
		return true, f.fail("overwrite", name, err)
	}
	f.endOverwrite(ow)
	ow.owner.setResident()
	return true, 0
}

// copyPrefix writes [0, n) of the temporary file over the file.
func (f *Filter) copyPrefix(ow *overwrite) error {
	buf := make([]byte, min(ow.n, 1<<20))
	for off := int64(0); off < ow.n; {
		k, err := unix.Pread(int(ow.tmp.Fd()), buf[:min(int64(len(buf)), ow.n-off)], off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if k == 0 {
			return errors.New("temporary file shorter than written")
		}
		if err := pwriteAll(ow.fd, buf[:k], off); err != nil {
			return err
		}
		off += int64(k)
	}
	return nil
}

// settle ends an overwrite of inode ino in progress because the old data
// is needed: the whole file is recalled into the stub, made resident, and
// the prefix written so far laid over it. If the recall fails the stub is
// intact and the overwrite stays in progress (EIO).
func (f *Filter) settle(c *layer.Call, ino uint64) layer.Errno {
	ow := f.overwriteOf(ino)
	if ow == nil {
		return 0
	}
	ow.mu.Lock()
	defer ow.mu.Unlock()
	if ow.done {
		return 0
	}
	name := fdName(ow.fd, f.cfg.Backing)
	if errno := f.prepareModify(c, ow.fd, false, name); errno != 0 {
		return errno
	}
	err := f.copyPrefix(ow)
	f.endOverwrite(ow)
	ow.owner.setResident()
	if err != nil {
		return f.fail("overwrite", name, err)
	}
	return 0
}

// dropOverwrite discards an overwrite of ino in progress (the file is being
// truncated to 0: what was written is gone anyway).
func (f *Filter) dropOverwrite(ino uint64) {
	if ow := f.overwriteOf(ino); ow != nil {
		ow.mu.Lock()
		if !ow.done {
			f.endOverwrite(ow)
		}
		ow.mu.Unlock()
	}
}

// settleOwned settles the overwrite h owns, if any (flush, fsync).
func (f *Filter) settleOwned(c *layer.Call, h *layer.Handle) layer.Errno {
	hc := f.hctx(h)
	if hc == nil {
		return 0
	}
	if ow := f.overwriteOf(hc.ino); ow != nil && ow.owner == hc {
		return f.settle(c, hc.ino)
	}
	return 0
}

// preFlush settles the overwrite the closing handle owns. If that fails,
// close(2) reports EIO and the prefix is dropped at once, not at RELEASE,
// which the kernel sends some time after close returns: otherwise a read
// in that moment would recall the file (the store may be back by then) and
// lay over it a prefix that close already reported lost.
func (f *Filter) preFlush(c *layer.Call, op *layer.FlushOp) (layer.Status, layer.Errno) {
	if errno := f.settleOwned(c, op.Handle); errno != 0 {
		if hc := f.hctx(op.Handle); hc != nil {
			f.releaseOverwrite(hc)
		}
		return done, errno
	}
	return cont, 0
}

func (f *Filter) preFsync(c *layer.Call, op *layer.FsyncOp) (layer.Status, layer.Errno) {
	if errno := f.settleOwned(c, op.Handle); errno != 0 {
		return done, errno
	}
	return cont, 0
}

// releaseOverwrite drops the overwrite hc owns when its handle goes or its
// flush failed: the prefix is lost (close said EIO) and the stub stays as
// it was.
func (f *Filter) releaseOverwrite(hc *hctx) {
	ow := f.overwriteOf(hc.ino)
	if ow == nil || ow.owner != hc {
		return
	}
	ow.mu.Lock()
	defer ow.mu.Unlock()
	if !ow.done {
		f.log.Warn("hsm: partial overwrite of a stub dropped; the stub is unchanged", "file", fdName(ow.fd, f.cfg.Backing))
		f.endOverwrite(ow)
	}
}
