package crypt

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/vfsfilter/vfsfilter/layer"
	"golang.org/x/sys/unix"
)

// fileState is what crypt keeps per file (per inode below) while it is
// open: the block lock and the file id read from the header.
//
// It is keyed by inode number rather than stored in the layer's node
// context because Create has no node yet when its callbacks run, and every
// handle of one file, hard links included, must share one lock.
type fileState struct {
	// mu is the block lock: writers (write, truncate, fallocate) take it
	// exclusively, since a write of part of a block reads, changes and
	// rewrites the whole block; readers share it.
	mu   sync.RWMutex
	ino  uint64
	refs int // guarded by Filter.filesMu

	idMu sync.Mutex
	id   FileID
	idOK bool

	// lastBad is the last damaged block logged (+1; 0 is none), so that
	// the kernel's retries of one bad page give one log line.
	lastBad atomic.Uint64

	// opens counts the opens of the file (through this mount) since the
	// state was made. The write cache is only used by the same
	// generation of opens that filled it.
	opens atomic.Uint64

	// The write cache: what crypt's own last write left below, so that
	// the next one (sequential writes: tar, cp, logs) needs neither an
	// fstat for the size nor a read of the partial last block it
	// continues. Guarded by mu held exclusively; only writers use it.
	// See writeSize for when it is trusted.
	wc writeCache

	// The write-behind (behind.go): wbDone is closed when the running
	// one ends (nil: none runs); wbErr is the error of a failed one that
	// no flush or fsync has reported yet. Guarded by wbMu.
	wbMu   sync.Mutex
	wbDone chan struct{}
	wbErr  layer.Errno
}

// writeCache is a fileState's memory of its own last write.
type writeCache struct {
	ok    bool   // csize (and gen) are valid
	gen   uint64 // fileState.opens when filled
	csize uint64 // ciphertext size below after the write
	// tailOK says tail is the plaintext of the file's partial last
	// block (the plaintext size is not a multiple of the block size):
	// exactly its plaintext size % block size bytes.
	tailOK bool
	tail   []byte
}

// drop forgets the write cache. Callers hold the block lock exclusively.
func (w *writeCache) drop() { w.ok, w.tailOK, w.tail = false, false, w.tail[:0] }

// openFile is crypt's context on a Handle of a regular file.
type openFile struct {
	st   *fileState
	path string // plaintext path at open, for log lines
}

func (f *Filter) acquire(ino uint64) *fileState {
	f.filesMu.Lock()
	defer f.filesMu.Unlock()
	st := f.files[ino]
	if st == nil {
		st = &fileState{ino: ino}
		f.files[ino] = st
	}
	st.refs++
	return st
}

func (f *Filter) release(st *fileState) {
	f.filesMu.Lock()
	defer f.filesMu.Unlock()
	if st.refs--; st.refs == 0 {
		delete(f.files, st.ino)
	}
}

func (f *Filter) openFile(h *layer.Handle) *openFile {
	if h == nil {
		return nil
	}
	of, _ := f.att.HandleContext(h).(*openFile)
	return of
}

func (st *fileState) setID(id FileID) {
	st.idMu.Lock()
	st.id, st.idOK = id, true
	st.idMu.Unlock()
}

func (st *fileState) forgetID() {
	st.idMu.Lock()
	st.idOK = false
	st.idMu.Unlock()
}

// backingFlags are the flags a file is opened with below. crypt reads
// partial blocks to rewrite them, so write-only becomes read-write; it
// chooses every ciphertext offset itself, so O_APPEND (which would make the
// backing pwrite ignore the offset) is dropped: the kernel already sends an
// O_APPEND write at the end of the file. O_DIRECT is dropped because
// ciphertext offsets are not aligned.
func backingFlags(flags uint32) uint32 {
	flags &^= syscall.O_APPEND | syscall.O_DIRECT
	if flags&syscall.O_ACCMODE == syscall.O_WRONLY {
		flags = flags&^syscall.O_ACCMODE | syscall.O_RDWR
	}
	return flags
}

// adopt makes h crypt's: the kernel must send its I/O to the daemon (no
// passthrough) and may keep its page cache across opens, which is correct
// because every change to the plaintext passes through this mount (changes
// made below it change mtime and size, which invalidate the cache, see
// doc.go).
func (f *Filter) adopt(h *layer.Handle, ino uint64, path string) {
	h.Passthrough = false
	h.KeepCache = true
	st := f.acquire(ino)
	// An open may have changed the file (O_TRUNC, a recall below):
	// writes after it do not trust what earlier ones left (writeSize).
	st.opens.Add(1)
	f.att.SetHandleContext(h, &openFile{st: st, path: path})
}

func (f *Filter) open(c *layer.Call, op *layer.OpenOp) (layer.Status, layer.Errno) {
	e, errno := f.path(c, op.Path)
	if errno != 0 {
		return done, errno
	}
	op.Path = e.cpath
	if op.Flags&syscall.O_DIRECTORY != 0 {
		// An open directory carries its IV (openDir): its listings
		// decrypt with the IV of the directory they list, even once it
		// has been renamed.
		d, errno := f.dir(c, e.plain)
		if errno != 0 {
			return done, errno
		}
		c.Context = withDir(c.Context, d)
		return cont, 0
	}
	if op.Flags&syscall.O_TRUNC != 0 {
		f.waitFile(c, e.cpath, nil) // or the write would land after the truncation
	}
	op.Flags = backingFlags(op.Flags)
	c.Context = withPlain(c.Context, e.plain)
	return cont, 0
}

func (f *Filter) postOpen(c *layer.Call, op *layer.OpenOp, errno layer.Errno) layer.Errno {
	if errno != 0 || op.Handle == nil {
		return errno
	}
	if d, ok := dirOf(c.Context); ok {
		f.att.SetHandleContext(op.Handle, &openDir{dirInfo: d})
		return 0
	}
	ga := &layer.GetattrOp{Path: op.Path, Handle: op.Handle}
	if errno := f.att.Below.Do(layer.InternalCall(c.Context), ga); errno != 0 {
		f.att.Below.Do(layer.InternalCall(c.Context), &layer.ReleaseOp{Handle: op.Handle})
		return errno
	}
	if ga.Out.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return 0
	}
	f.adopt(op.Handle, ga.Out.Ino, plainOf(c.Context))
	if op.Flags&syscall.O_TRUNC != 0 {
		f.openFile(op.Handle).st.forgetID()
	}
	return 0
}

func (f *Filter) create(c *layer.Call, op *layer.CreateOp) (layer.Status, layer.Errno) {
	e, errno := f.path(c, op.Path)
	if errno != 0 {
		return done, errno
	}
	undo, errno := f.writeSide(c, &e)
	if errno != 0 {
		return done, errno
	}
	if op.Flags&syscall.O_TRUNC != 0 {
		f.waitFile(c, e.cpath, nil) // or the write would land after the truncation
	}
	sub := *op
	sub.Path = e.cpath
	sub.Flags = backingFlags(op.Flags)
	if errno := f.att.Below.Do(c, &sub); errno != 0 {
		undo()
		return done, errno
	}
	op.Out, op.Handle = sub.Out, sub.Handle
	f.adopt(op.Handle, op.Out.Ino, op.Path)
	if op.Flags&syscall.O_TRUNC != 0 {
		f.openFile(op.Handle).st.forgetID()
	}
	f.fixAttr(&op.Out)
	return done, 0
}

// postCreate is registered for symmetry with Open; create completes.
func (f *Filter) postCreate(c *layer.Call, op *layer.CreateOp, errno layer.Errno) layer.Errno {
	return errno
}

func (f *Filter) tmpfile(c *layer.Call, op *layer.TmpfileOp) (layer.Status, layer.Errno) {
	d, errno := f.dir(c, op.Path)
	if errno != 0 {
		return done, errno
	}
	op.Path = d.cpath
	op.Flags = backingFlags(op.Flags)
	return cont, 0
}

func (f *Filter) postTmpfile(c *layer.Call, op *layer.TmpfileOp, errno layer.Errno) layer.Errno {
	if errno == 0 {
		f.adopt(op.Handle, op.Out.Ino, "(O_TMPFILE)")
		f.fixAttr(&op.Out)
	}
	return errno
}

func (f *Filter) postRelease(c *layer.Call, op *layer.ReleaseOp, errno layer.Errno) layer.Errno {
	if of := f.openFile(op.Handle); of != nil {
		f.att.SetHandleContext(op.Handle, nil)
		f.release(of.st)
	}
	return errno
}

// ioBufSize holds the ciphertext of the largest request the kernel sends
// (1 MiB, the mount's max_write and max_pages) plus a header and a block
// on either side.
func (f *Filter) ioBufSize() int {
	return HeaderLen + int((1<<20/f.content.bs+2)*f.content.cbs)
}

// buf returns a buffer of n bytes from the pool (or a new one for larger
// requests) and the function that gives it back.
func (f *Filter) buf(n int) ([]byte, func()) {
	size := f.ioBufSize()
	if n > size {
		return make([]byte, n), func() {}
	}
	p, _ := f.bufs.Get().(*[]byte)
	if p == nil {
		b := make([]byte, size)
		p = &b
	}
	return (*p)[:n], func() { f.bufs.Put(p) }
}

// cipherSize is the size of the open file below (fstat on its handle).
func (f *Filter) cipherSize(c *layer.Call, h *layer.Handle) (uint64, layer.Errno) {
	ga := &layer.GetattrOp{Path: DirIVFile + "/gone", Handle: h}
	errno := f.att.Below.Do(layer.InternalCall(c.Context), ga)
	return ga.Out.Size, errno
}

// readBelow reads up to len(dst) bytes of ciphertext at off.
func (f *Filter) readBelow(c *layer.Call, h *layer.Handle, dst []byte, off uint64) ([]byte, layer.Errno) {
	rd := &layer.ReadOp{Handle: h, Off: int64(off), Dest: dst}
	if errno := f.att.Below.Do(c, rd); errno != 0 {
		return nil, errno
	}
	if rd.Out == nil {
		return nil, 0
	}
	b, st := rd.Out.Bytes(dst)
	if !st.Ok() {
		return nil, layer.Errno(st)
	}
	return b, 0
}

// writeBelow writes all of data at off.
func (f *Filter) writeBelow(c *layer.Call, h *layer.Handle, data []byte, off uint64, kill bool) layer.Errno {
	w := &layer.WriteOp{Handle: h, Off: int64(off), Data: data, KillSuidgid: kill}
	if errno := f.att.Below.Do(c, w); errno != 0 {
		return errno
	}
	if int(w.Written) != len(data) {
		// A short write below (disk full) would leave a torn block.
		return syscall.ENOSPC
	}
	return 0
}

// fileID returns the file's id, reading the header once per open file.
func (f *Filter) fileID(c *layer.Call, h *layer.Handle, of *openFile) (FileID, layer.Errno) {
	st := of.st
	st.idMu.Lock()
	defer st.idMu.Unlock()
	if st.idOK {
		return st.id, 0
	}
	var hdr [HeaderLen]byte
	b, errno := f.readBelow(c, h, hdr[:], 0)
	if errno != 0 {
		return FileID{}, errno
	}
	id, err := ParseHeader(b)
	if err != nil {
		f.log.Error("file header is damaged", "file", of.path, "error", err)
		return FileID{}, syscall.EIO
	}
	st.id, st.idOK = id, true
	return id, 0
}

// damaged logs a block that failed authentication, once per block in a
// row, and returns EIO.
func (f *Filter) damaged(of *openFile, err error) layer.Errno {
	var be *BlockError
	if errors.As(err, &be) {
		if of.st.lastBad.Swap(be.Block+1) != be.Block+1 {
			f.log.Error("block failed authentication", "file", of.path, "block", be.Block, "offset", be.Block*f.content.bs)
		}
	} else {
		f.log.Error("cannot decrypt", "file", of.path, "error", err)
	}
	return syscall.EIO
}

func (f *Filter) read(c *layer.Call, op *layer.ReadOp) (layer.Status, layer.Errno) {
	of := f.openFile(op.Handle)
	if of == nil {
		return pass, 0
	}
	of.st.rlock()
	n, errno := f.readAt(c, op.Handle, of, op.Dest, uint64(op.Off))
	of.st.mu.RUnlock()
	if errno != 0 {
		return done, errno
	}
	op.Out = fuse.ReadResultData(op.Dest[:n])
	return done, 0
}

// readAt reads the plaintext at off into dst with one read below: the
// blocks that cover the range (and the header, when the range starts in
// block 0, which saves a second read on a file's first access). The
// plaintext is decrypted straight into dst when the range is block-aligned,
// as the kernel's page-sized reads are. It returns fewer bytes than
// len(dst) only at the end of the file.
func (f *Filter) readAt(c *layer.Call, h *layer.Handle, of *openFile, dst []byte, off uint64) (int, layer.Errno) {
	if len(dst) == 0 {
		return 0, 0
	}
	bs, cbs := f.content.bs, f.content.cbs
	b0, b1 := off/bs, (off+uint64(len(dst))-1)/bs
	nb := b1 - b0 + 1
	coff, clen := f.content.BlockOff(b0), nb*cbs
	if b0 == 0 {
		coff, clen = 0, clen+HeaderLen
	}
	cbuf, put := f.buf(int(clen))
	defer put()
	ct, errno := f.readBelow(c, h, cbuf, coff)
	if errno != 0 {
		return 0, errno
	}
	var id FileID
	if b0 == 0 {
		if len(ct) == 0 {
			return 0, 0
		}
		var err error
		if id, err = ParseHeader(ct); err != nil {
			f.log.Error("file header is damaged", "file", of.path, "error", err)
			return 0, syscall.EIO
		}
		of.st.setID(id)
		ct = ct[HeaderLen:]
	} else {
		if len(ct) == 0 {
			return 0, 0
		}
		if id, errno = f.fileID(c, h, of); errno != 0 {
			return 0, errno
		}
	}
	skip := off - b0*bs
	if skip == 0 && uint64(cap(dst)) >= nb*bs {
		pt, err := f.content.DecryptTo(dst, ct, b0, &id)
		if err != nil {
			return 0, f.damaged(of, err)
		}
		return min(len(pt), len(dst)), 0
	}
	pbuf, put2 := f.buf(int(nb * bs))
	defer put2()
	pt, err := f.content.DecryptTo(pbuf, ct, b0, &id)
	if err != nil {
		return 0, f.damaged(of, err)
	}
	if uint64(len(pt)) <= skip {
		return 0, 0
	}
	return copy(dst, pt[skip:]), 0
}

// readBlock returns the plaintext of block b, and hole true when its
// ciphertext is all zeros (a hole, which stays one unless written).
func (f *Filter) readBlock(c *layer.Call, h *layer.Handle, of *openFile, id *FileID, b uint64) (pt []byte, hole bool, errno layer.Errno) {
	cbuf := make([]byte, f.content.cbs)
	ct, errno := f.readBelow(c, h, cbuf, f.content.BlockOff(b))
	if errno != 0 {
		return nil, false, errno
	}
	if len(ct) == 0 {
		return nil, false, 0
	}
	if IsHole(ct) {
		return make([]byte, max(len(ct)-BlockOverhead, 0)), true, 0
	}
	pt, err := f.content.DecryptBlock(nil, ct, b, id)
	if err != nil {
		return nil, false, f.damaged(of, err)
	}
	return pt, false, 0
}

func (f *Filter) write(c *layer.Call, op *layer.WriteOp) (layer.Status, layer.Errno) {
	of := f.openFile(op.Handle)
	if of == nil {
		return pass, 0
	}
	of.st.lock()
	n, errno := f.writeAt(c, op.Handle, of, op.Data, uint64(op.Off), op.KillSuidgid)
	of.st.mu.Unlock()
	op.Written = uint32(n)
	return done, errno
}

// header returns the file's id, writing a new header first when the file
// is empty below (csize 0). Callers hold the block lock exclusively.
func (f *Filter) header(c *layer.Call, h *layer.Handle, of *openFile, csize uint64) (FileID, []byte, layer.Errno) {
	if csize == 0 {
		hdr, id, err := NewHeader()
		if err != nil {
			return id, nil, syscall.EIO
		}
		of.st.setID(id)
		return id, hdr, 0
	}
	id, errno := f.fileID(c, h, of)
	return id, nil, errno
}

// writeSize returns the ciphertext size below for a write. The size that
// crypt's own last write left (the write cache) is trusted when
//
//   - no open of the file came between (opens: an O_TRUNC open, or a
//     recall by a filter below on open, changes the file without a write
//     through crypt);
//   - no truncate or fallocate came between (resize and allocate drop the
//     cache; so does a write that failed);
//   - the file's size below still agrees: one lseek(SEEK_END) through the
//     layers below, cheaper than the fstat it replaces, catches changes
//     made below the mount by other programs (a truncation, an append, a
//     restore) that would otherwise make crypt write a block at the wrong
//     place or without a header. A size below that differs is not an
//     error: the cache is dropped and the size asked as before.
//
// What the size check cannot see is a change below that keeps the size
// (another program rewriting the last block in place): the next write
// through the mount then merges its data with the partial last block as
// crypt last wrote it, a lost update of the other program's bytes but
// valid ciphertext under the file id crypt holds. crypt keeps the file id
// per open file already, so such concurrent writers were never supported
// (doc.go: one mount per backing directory).
//
// fromCache tells the caller that st.wc.tail, if tailOK, is valid too.
func (f *Filter) writeSize(c *layer.Call, h *layer.Handle, st *fileState, gen uint64) (csize uint64, fromCache bool, errno layer.Errno) {
	if wc := &st.wc; wc.ok && wc.gen == gen {
		ls := &layer.LseekOp{Handle: h, Whence: unix.SEEK_END}
		if f.att.Below.Do(layer.InternalCall(c.Context), ls) == 0 && ls.Out == wc.csize {
			return wc.csize, true, 0
		}
	}
	st.wc.drop()
	csize, errno = f.cipherSize(c, h)
	return csize, false, errno
}

// writeAt writes data at plaintext offset off with one write below: the
// blocks it covers, the partial first and last ones merged with their old
// contents (read-modify-write; the partial last block of the file comes
// from the write cache when it holds it). Callers hold the block lock
// exclusively.
func (f *Filter) writeAt(c *layer.Call, h *layer.Handle, of *openFile, data []byte, off uint64, kill bool) (int, layer.Errno) {
	if len(data) == 0 {
		return 0, 0
	}
	st := of.st
	gen := st.opens.Load()
	csize, cached, errno := f.writeSize(c, h, st, gen)
	if errno != 0 {
		return 0, errno
	}
	// The partial last block as crypt last wrote it, when the cache
	// holds. Whatever happens below from here, the cache describes the
	// file again only if the write succeeds.
	var tail []byte
	tailOK := cached && st.wc.tailOK
	if tailOK {
		tail = st.wc.tail
	}
	st.wc.drop()
	oldP, _ := f.content.PlainSize(csize)
	id, hdr, errno := f.header(c, h, of, csize)
	if errno != 0 {
		return 0, errno
	}
	bs := f.content.bs
	end := off + uint64(len(data))
	b0, b1 := off/bs, (end-1)/bs
	// old returns the plaintext of block b as it is below: from the
	// write cache for the partial last block, else read.
	old := func(b uint64) ([]byte, bool, layer.Errno) {
		if tailOK && b == oldP/bs && oldP%bs != 0 && uint64(len(tail)) == oldP%bs {
			return tail, false, 0
		}
		return f.readBlock(c, h, of, &id, b)
	}
	// Writing past a partial last block: it becomes a full block now
	// (zero-padded), or the file would have a short block in its middle.
	// unpad undoes that if this write fails.
	var unpad func() layer.Errno
	if oldP%bs != 0 && oldP/bs < b0 {
		last, hole, errno := old(oldP / bs)
		if errno != 0 {
			return 0, errno
		}
		if !hole {
			unpad = func() layer.Errno { return f.padLast(c, h, of, &id, oldP, oldP, last, false) }
		}
		if errno := f.padLast(c, h, of, &id, oldP, (oldP/bs+1)*bs, last, hole); errno != 0 {
			f.cutBack(c, h, csize, unpad) // the padding may be torn
			return 0, errno
		}
	}
	plainEnd := max(end, min(oldP, (b1+1)*bs))
	// The new plaintext of blocks b0..b1. When data starts at a block
	// boundary and keeps nothing of the old last block (the kernel's
	// page-aligned writes), it is data itself: no copy.
	pbuf := data
	if off != b0*bs || plainEnd != end {
		var put func()
		pbuf, put = f.buf(int(plainEnd - b0*bs))
		defer put()
		clear(pbuf)
		if off > b0*bs && b0*bs < oldP {
			p, _, errno := old(b0)
			if errno != 0 {
				return 0, errno
			}
			copy(pbuf, p)
		}
		if lastStart := b1 * bs; (b1 != b0 || off == b0*bs) && end < min(oldP, lastStart+bs) {
			p, _, errno := old(b1)
			if errno != 0 {
				return 0, errno
			}
			copy(pbuf[lastStart-b0*bs:], p)
		}
		copy(pbuf[off-b0*bs:], data)
	}
	nb := b1 - b0 + 1
	cbuf, put2 := f.buf(HeaderLen + int(nb*f.content.cbs))
	behind := false // cbuf is the write-behind's now
	defer func() {
		if !behind {
			put2()
		}
	}()
	coff := f.content.BlockOff(b0)
	ct := cbuf[:0]
	if hdr != nil {
		if b0 == 0 {
			copy(cbuf, hdr)
			ct, coff = cbuf[:HeaderLen], 0
		} else if errno := f.writeBelow(c, h, hdr, 0, false); errno != 0 {
			return 0, errno
		}
	}
	body, err := f.content.EncryptTo(cbuf[len(ct):], pbuf, b0, &id)
	if err != nil {
		return 0, syscall.EIO
	}
	hdrLen := uint64(len(ct))
	ct = cbuf[:len(ct)+len(body)]
	w := &layer.WriteOp{Handle: h, Off: int64(coff), Data: ct, KillSuidgid: kill}
	if f.canBehind(h, len(data), unpad != nil) && f.reserveBehind(c, h, coff, uint64(len(ct)), csize) {
		behind = true
		f.wrote(st, gen, pbuf, oldP, b0, b1, end, tail, tailOK)
		f.writeBehind(c, of, w, put2, func(bc *layer.Call, written uint64, errno layer.Errno) {
			f.shortWrite(bc, h, csize, coff, hdrLen, written, uint64(len(ct)), b0, off, end, nil, errno)
		})
		return len(data), 0
	}
	if errno := f.att.Below.Do(c, w); errno != 0 || int(w.Written) != len(ct) {
		return f.shortWrite(c, h, csize, coff, hdrLen, uint64(w.Written), uint64(len(ct)), b0, off, end, unpad, errno)
	}
	f.wrote(st, gen, pbuf, oldP, b0, b1, end, tail, tailOK)
	return len(data), 0
}

// wrote fills the write cache after a write that ended at plaintext
// offset end and rewrote blocks b0..b1 (whose new plaintext pbuf holds) of
// a file of plaintext size oldP: the file below is now the old one with
// those blocks replaced (and the old partial last block padded, before
// b0). tail and tailOK are what the cache held of the old partial last
// block. A write-behind counts as written here; if it fails, it drops the
// cache again.
func (f *Filter) wrote(st *fileState, gen uint64, pbuf []byte, oldP, b0, b1, end uint64, tail []byte, tailOK bool) {
	bs := f.content.bs
	newP := max(oldP, end)
	wc := &st.wc
	wc.ok, wc.gen, wc.csize = true, gen, f.content.CipherSize(newP)
	switch lb := newP / bs; {
	case newP%bs == 0:
		// No partial last block: the next write needs none.
		wc.tailOK = false
	case lb == b1:
		// This write made the last block: pbuf holds it whole.
		wc.tail = append(wc.tail[:0], pbuf[(lb-b0)*bs:newP-b0*bs]...)
		wc.tailOK = true
	default:
		// The last block is untouched (newP == oldP, lb > b1): as
		// it was.
		wc.tail, wc.tailOK = tail, tailOK
	}
}

// shortWrite cleans up after a write below that failed or wrote only
// written of its n bytes (a full disk), so that no torn ciphertext block is
// left to fail authentication on every later read. The write began at
// cipher offset coff with hdrLen bytes of header, then the blocks from b0;
// csize is the file's cipher size before it (before any padding of the old
// last block, which unpad, if not nil, undoes). Complete blocks stay: the
// caller gets the plaintext bytes of data they hold, or the error (ENOSPC
// for a short write) when they hold none. The torn block is punched back
// to the hole it was (on a full disk only a write that needed new space
// fails, so it was a hole), and whatever the write added past the old end
// beyond its complete blocks is cut off again.
func (f *Filter) shortWrite(c *layer.Call, h *layer.Handle, csize, coff, hdrLen, written, n, b0, off, end uint64, unpad func() layer.Errno, errno layer.Errno) (int, layer.Errno) {
	if errno == 0 {
		errno = syscall.ENOSPC
	}
	cbs, bs := f.content.cbs, f.content.bs
	var k uint64 // complete blocks written
	if written > hdrLen {
		k = (written - hdrLen) / cbs
	}
	torn := coff + hdrLen + k*cbs
	if written > torn-coff {
		punch := &layer.AllocateOp{Handle: h, Off: torn, Size: min(cbs, coff+n-torn), Mode: unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE}
		if e := f.att.Below.Do(c, punch); e != 0 {
			f.log.Error("cannot undo a torn block after a failed write", "error", e)
		}
	}
	if k == 0 {
		f.cutBack(c, h, csize, unpad) // no complete block: as it was
	} else {
		f.cutBack(c, h, max(csize, torn), nil)
	}
	if k == 0 || (b0+k)*bs <= off {
		return 0, errno
	}
	return int(min((b0+k)*bs, end) - off), 0
}

// cutBack cuts the file below back to cipher size keep if a failed write
// left it longer, then runs unpad (if not nil) to rewrite the old partial
// last block that the write had padded to a full one.
func (f *Filter) cutBack(c *layer.Call, h *layer.Handle, keep uint64, unpad func() layer.Errno) {
	now, e := f.cipherSize(c, h)
	if e == 0 && now > keep {
		in := fuse.SetAttrIn{}
		in.Valid, in.Size = fuse.FATTR_SIZE, keep
		e = f.att.Below.Do(c, &layer.SetattrOp{Path: DirIVFile + "/gone", Handle: h, In: in})
		if e == 0 && unpad != nil {
			e = unpad()
		}
	}
	if e != 0 {
		f.log.Error("cannot restore the size after a failed write", "error", e)
	}
}

// padLast rewrites the partial last block of a file of plaintext size oldP,
// whose plaintext is old, so that it reaches min(newEnd, the block's end),
// zero-filled. A hole stays a hole: extending the file below extends it
// with zeros.
func (f *Filter) padLast(c *layer.Call, h *layer.Handle, of *openFile, id *FileID, oldP, newEnd uint64, old []byte, hole bool) layer.Errno {
	if hole {
		return 0
	}
	bs := f.content.bs
	lb := oldP / bs
	pt := make([]byte, min(bs, newEnd-lb*bs))
	copy(pt, old)
	ct, err := f.content.Encrypt(nil, pt, lb, id)
	if err != nil {
		return syscall.EIO
	}
	return f.writeBelow(c, h, ct, f.content.BlockOff(lb), false)
}

// resize sets the plaintext size of an open file to newP. Callers hold the
// block lock exclusively.
func (f *Filter) resize(c *layer.Call, h *layer.Handle, of *openFile, cpath string, newP uint64, kill bool) layer.Errno {
	of.st.wc.drop()
	csize, errno := f.cipherSize(c, h)
	if errno != 0 {
		return errno
	}
	oldP, _ := f.content.PlainSize(csize)
	bs := f.content.bs
	switch {
	case newP == 0:
		of.st.forgetID()
	case newP < oldP && newP%bs != 0:
		// The new last block is a prefix of an old one: rewrite it
		// shorter (its tag covers its length).
		id, errno := f.fileID(c, h, of)
		if errno != 0 {
			return errno
		}
		lb := newP / bs
		old, hole, errno := f.readBlock(c, h, of, &id, lb)
		if errno != 0 {
			return errno
		}
		if !hole {
			ct, err := f.content.Encrypt(nil, old[:newP-lb*bs], lb, &id)
			if err != nil {
				return syscall.EIO
			}
			if errno := f.writeBelow(c, h, ct, f.content.BlockOff(lb), false); errno != 0 {
				return errno
			}
		}
	case newP > oldP:
		id, hdr, errno := f.header(c, h, of, csize)
		if errno != 0 {
			return errno
		}
		if hdr != nil {
			if errno := f.writeBelow(c, h, hdr, 0, false); errno != 0 {
				return errno
			}
		} else if oldP%bs != 0 {
			old, hole, errno := f.readBlock(c, h, of, &id, oldP/bs)
			if errno != 0 {
				return errno
			}
			if errno := f.padLast(c, h, of, &id, oldP, newP, old, hole); errno != 0 {
				// A full disk may have torn the padded block.
				f.cutBack(c, h, csize, func() layer.Errno { return f.padLast(c, h, of, &id, oldP, oldP, old, hole) })
				return errno
			}
		}
	}
	in := fuse.SetAttrIn{}
	in.Valid = fuse.FATTR_SIZE
	if kill {
		in.Valid |= fuse.FATTR_KILL_SUIDGID
	}
	in.Size = f.content.CipherSize(newP)
	return f.att.Below.Do(c, &layer.SetattrOp{Path: cpath, Handle: h, In: in})
}

// withWritable runs fn with an open file for the file at cpath: h when it
// is crypt's and writable, else one opened below for the occasion.
func (f *Filter) withWritable(c *layer.Call, h *layer.Handle, cpath, plain string, fn func(h *layer.Handle, of *openFile) layer.Errno) layer.Errno {
	if of := f.openFile(h); of != nil && h.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return fn(h, of)
	}
	ic := layer.InternalCall(c.Context)
	op := &layer.OpenOp{Path: cpath, Flags: syscall.O_RDWR}
	if errno := f.att.Below.Do(ic, op); errno != 0 {
		return errno
	}
	defer f.att.Below.Do(ic, &layer.ReleaseOp{Handle: op.Handle})
	ga := &layer.GetattrOp{Path: cpath, Handle: op.Handle}
	if errno := f.att.Below.Do(ic, ga); errno != 0 {
		return errno
	}
	if ga.Out.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return syscall.EINVAL
	}
	of := &openFile{st: f.acquire(ga.Out.Ino), path: plain}
	defer f.release(of.st)
	return fn(op.Handle, of)
}

func (f *Filter) setattr(c *layer.Call, op *layer.SetattrOp) (layer.Status, layer.Errno) {
	plain := op.Path
	if st, errno := f.handlePath(c, &op.Path, op.Handle); st == done {
		return st, errno
	}
	// A write-behind landing after this would undo new times (its write
	// sets mtime) and the new size.
	f.waitFile(c, op.Path, op.Handle)
	if op.In.Valid&fuse.FATTR_SIZE == 0 {
		return cont, 0
	}
	kill := op.In.Valid&fuse.FATTR_KILL_SUIDGID != 0
	errno := f.withWritable(c, op.Handle, op.Path, plain, func(h *layer.Handle, of *openFile) layer.Errno {
		of.st.lock()
		defer of.st.mu.Unlock()
		return f.resize(c, h, of, op.Path, op.In.Size, kill)
	})
	if errno != 0 {
		return done, errno
	}
	// The size is set; the rest (mode, owner, times) continues down.
	op.In.Valid &^= fuse.FATTR_SIZE | fuse.FATTR_KILL_SUIDGID
	return cont, 0
}

func (f *Filter) postSetattr(c *layer.Call, op *layer.SetattrOp, errno layer.Errno) layer.Errno {
	if errno == 0 {
		f.fixAttr(&op.Out)
	}
	return errno
}

// allocate is fallocate(2) in plaintext terms. Allocating writes encrypted
// zeros into the holes of the range: that reserves the ciphertext space a
// later write needs, which is fallocate's promise. Zeroing rewrites the
// range as encrypted zeros; punching makes whole blocks holes below. The
// resulting holes and data match ext4's SEEK_HOLE/SEEK_DATA answers.
func (f *Filter) allocate(c *layer.Call, op *layer.AllocateOp) (layer.Status, layer.Errno) {
	of := f.openFile(op.Handle)
	if of == nil {
		return pass, 0
	}
	of.st.lock()
	defer of.st.mu.Unlock()
	of.st.wc.drop()
	csize, errno := f.cipherSize(c, op.Handle)
	if errno != 0 {
		return done, errno
	}
	oldP, _ := f.content.PlainSize(csize)
	end := op.Off + op.Size
	keep := op.Mode&unix.FALLOC_FL_KEEP_SIZE != 0
	mode := op.Mode &^ unix.FALLOC_FL_KEEP_SIZE
	switch mode {
	case unix.FALLOC_FL_PUNCH_HOLE:
		if op.Off < oldP {
			return done, f.zeroRange(c, op.Handle, of, op.Off, min(end, oldP), csize)
		}
		return done, 0
	case 0, unix.FALLOC_FL_ZERO_RANGE:
	default:
		return done, syscall.EOPNOTSUPP
	}
	if mode == unix.FALLOC_FL_ZERO_RANGE {
		if errno := f.zeroRangeSupported(c, op.Handle, csize); errno != 0 {
			return done, errno
		}
	}
	if mode == unix.FALLOC_FL_ZERO_RANGE && op.Off < oldP {
		// Whole blocks become holes, partial ones are rewritten; the
		// allocation below then makes the holes unwritten extents, as
		// ext4's ZERO_RANGE leaves them. Before any extension: zeroRange
		// treats a partial last block by the size it has now.
		if errno := f.zeroRange(c, op.Handle, of, op.Off, min(end, oldP), csize); errno != 0 {
			return done, errno
		}
	}
	// Space first: a full disk fails the call before the size changes,
	// as on ext4.
	if errno := f.reserve(c, op.Handle, op.Off, end); errno != 0 {
		return done, errno
	}
	if !keep && end > oldP {
		return done, f.resize(c, op.Handle, of, DirIVFile+"/gone", end, false)
	}
	return done, 0
}

// zeroRangeSupported answers EOPNOTSUPP when the backing file system does
// not do FALLOC_FL_ZERO_RANGE (tmpfs, for one), as a plain file there
// would. crypt could emulate the mode anywhere, but a stack should offer
// what the file system underneath offers. The first call asks below once,
// with a zeroing allocation of one page past the end of the ciphertext of
// the file at hand (KEEP_SIZE: invisible, and zeros are what an extension
// would read there anyway).
func (f *Filter) zeroRangeSupported(c *layer.Call, h *layer.Handle, csize uint64) layer.Errno {
	switch f.zeroRangeBelow.Load() {
	case 1:
		return 0
	case 2:
		return syscall.EOPNOTSUPP
	}
	const page = 4096
	probe := &layer.AllocateOp{Handle: h, Off: (csize + page - 1) / page * page, Size: page, Mode: unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE}
	switch errno := f.att.Below.Do(c, probe); errno {
	case 0:
		f.zeroRangeBelow.Store(1)
		return 0
	case syscall.EOPNOTSUPP:
		f.zeroRangeBelow.Store(2)
		return errno
	default:
		return errno // ENOSPC and the like: ask again next time
	}
}

// reserve allocates the ciphertext of the plaintext blocks that meet
// [s, e) below, without changing the file's size or content: fallocate's
// promise (a later write there does not fail for lack of space) kept
// without writing anything. Unallocated ciphertext becomes unwritten
// extents, which read as zeros, so holes stay holes (all-zero ciphertext
// reads as zeros and SEEK_DATA skips it), as ext4 reports the unwritten
// extents of its own fallocate.
func (f *Filter) reserve(c *layer.Call, h *layer.Handle, s, e uint64) layer.Errno {
	bs := f.content.bs
	from := f.content.BlockOff(s / bs)
	if s < bs {
		from = 0 // the header too
	}
	to := f.content.BlockOff((e + bs - 1) / bs)
	return f.att.Below.Do(c, &layer.AllocateOp{Handle: h, Off: from, Size: to - from, Mode: unix.FALLOC_FL_KEEP_SIZE})
}

// zeroRange makes [s, e) of the plaintext read as zeros: whole blocks are
// punched below (holes), partial ones rewritten.
func (f *Filter) zeroRange(c *layer.Call, h *layer.Handle, of *openFile, s, e, csize uint64) layer.Errno {
	if s >= e {
		return 0
	}
	id, errno := f.fileID(c, h, of)
	if errno != 0 {
		return errno
	}
	bs := f.content.bs
	oldP, _ := f.content.PlainSize(csize)
	// whole blocks: [k0, k1)
	k0 := (s + bs - 1) / bs
	k1 := e / bs
	if e == oldP {
		k1 = (e + bs - 1) / bs // the partial last block is covered whole
	}
	partial := func(b, from, to uint64) layer.Errno {
		old, hole, errno := f.readBlock(c, h, of, &id, b)
		if errno != 0 || hole || len(old) == 0 {
			return errno
		}
		lo, hi := from-b*bs, min(to-b*bs, uint64(len(old)))
		if lo >= hi {
			return 0
		}
		clear(old[lo:hi])
		ct, err := f.content.Encrypt(nil, old, b, &id)
		if err != nil {
			return syscall.EIO
		}
		return f.writeBelow(c, h, ct, f.content.BlockOff(b), false)
	}
	if k0 > k1 {
		// Within one block. (k0 == k1 is a range across one block
		// boundary with no whole block in it: two partial blocks,
		// below.)
		return partial(s/bs, s, e)
	}
	if s < k0*bs {
		if errno := partial(s/bs, s, k0*bs); errno != 0 {
			return errno
		}
	}
	if k1*bs < e {
		if errno := partial(k1, k1*bs, e); errno != 0 {
			return errno
		}
	}
	from := f.content.BlockOff(k0)
	to := min(f.content.BlockOff(k1), csize)
	if to > from {
		return f.att.Below.Do(c, &layer.AllocateOp{Handle: h, Off: from, Size: to - from, Mode: unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE})
	}
	return 0
}

// lseek serves SEEK_DATA and SEEK_HOLE in plaintext blocks: a block is a
// hole when its ciphertext is all zeros (what reads as zeros without being
// written), which matches ext4 for a 4 KiB block size. Below SEEK_DATA
// skips large holes without reading them.
func (f *Filter) lseek(c *layer.Call, op *layer.LseekOp) (layer.Status, layer.Errno) {
	of := f.openFile(op.Handle)
	if of == nil {
		return pass, 0
	}
	if op.Whence != unix.SEEK_DATA && op.Whence != unix.SEEK_HOLE {
		return done, syscall.EINVAL
	}
	of.st.rlock()
	defer of.st.mu.RUnlock()
	csize, errno := f.cipherSize(c, op.Handle)
	if errno != 0 {
		return done, errno
	}
	size, _ := f.content.PlainSize(csize)
	if op.Off >= size {
		return done, syscall.ENXIO
	}
	bs, cbs := f.content.bs, f.content.cbs
	b := op.Off / bs
	last := (size - 1) / bs
	if op.Whence == unix.SEEK_DATA {
		ls := &layer.LseekOp{Handle: op.Handle, Off: f.content.BlockOff(b), Whence: unix.SEEK_DATA}
		switch errno := f.att.Below.Do(c, ls); errno {
		case 0:
			if ls.Out > f.content.BlockOff(b) {
				b = (ls.Out - HeaderLen) / cbs
			}
		case syscall.ENXIO:
			return done, syscall.ENXIO
		}
	}
	const chunk = 256
	cbuf, put := f.buf(int(chunk * cbs))
	defer put()
	for b <= last {
		ct, errno := f.readBelow(c, op.Handle, cbuf[:chunk*cbs], f.content.BlockOff(b))
		if errno != 0 {
			return done, errno
		}
		if len(ct) == 0 {
			break
		}
		for len(ct) > 0 && b <= last {
			blk := ct[:min(uint64(len(ct)), cbs)]
			ct = ct[len(blk):]
			if IsHole(blk) == (op.Whence == unix.SEEK_HOLE) {
				op.Out = max(op.Off, b*bs)
				return done, 0
			}
			b++
		}
	}
	if op.Whence == unix.SEEK_DATA {
		return done, syscall.ENXIO
	}
	op.Out = size
	return done, 0
}

// copyFileRange copies through plaintext: ciphertext cannot be copied
// between files, since every block is bound to its file id and position.
func (f *Filter) copyFileRange(c *layer.Call, op *layer.CopyFileRangeOp) (layer.Status, layer.Errno) {
	in, out := f.openFile(op.In), f.openFile(op.Out)
	if in == nil || out == nil {
		return done, syscall.EXDEV
	}
	total := min(op.Len, 1<<30)
	buf := make([]byte, min(total, 1<<20))
	var copied uint64
	for copied < total {
		n := min(uint64(len(buf)), total-copied)
		in.st.rlock()
		r, errno := f.readAt(c, op.In, in, buf[:n], op.OffIn+copied)
		in.st.mu.RUnlock()
		if errno != 0 {
			if copied > 0 {
				break
			}
			return done, errno
		}
		if r == 0 {
			break
		}
		out.st.lock()
		w, errno := f.writeAt(c, op.Out, out, buf[:r], op.OffOut+copied, false)
		out.st.mu.Unlock()
		copied += uint64(w)
		if errno != 0 {
			if copied > 0 {
				break
			}
			return done, errno
		}
		if uint64(r) < n {
			break
		}
	}
	op.Copied = uint32(copied)
	return done, 0
}

// openDir is crypt's context on a Handle of an open directory: the
// directory as it was opened.
type openDir struct{ dirInfo }

type dirKey struct{}

// withDir carries an opened directory from open to postOpen.
func withDir(ctx context.Context, d dirInfo) context.Context {
	return context.WithValue(ctx, dirKey{}, d)
}

func dirOf(ctx context.Context) (dirInfo, bool) {
	d, ok := ctx.Value(dirKey{}).(dirInfo)
	return d, ok
}

// plainKey carries an op's plaintext path from Open's pre-callback to its
// post-callback (OpenOp has no field for it), for log lines.
type plainKey struct{}

func withPlain(ctx context.Context, p string) context.Context {
	return context.WithValue(ctx, plainKey{}, p)
}

func plainOf(ctx context.Context) string {
	p, _ := ctx.Value(plainKey{}).(string)
	return p
}

// ioctl refuses to make a file append-only (chattr +a) with EOPNOTSUPP,
// ext4's answer for a flag it cannot honour: crypt rewrites a file's last
// block in place when it appends to it, which an append-only file below
// forbids, so every append through the mount would fail. A file made
// append-only underneath keeps the flag through other changes. Directories
// may be append-only: crypt only adds their entries.
func (f *Filter) ioctl(c *layer.Call, op *layer.IoctlOp) (layer.Status, layer.Errno) {
	set, _, appendOnly := op.IoctlSets()
	if !set {
		return pass, 0
	}
	// A write answered but still on its way below (write-behind) must
	// land before the file becomes immutable, which would refuse it.
	f.waitFile(c, "", op.Handle)
	if !appendOnly || f.openFile(op.Handle) == nil {
		return pass, 0
	}
	get := uint32(layer.FsIocGetflags)
	if op.Cmd == layer.FsIocFssetxattr {
		get = layer.FsIocFsgetxattr
	}
	cur := &layer.IoctlOp{Handle: op.Handle, Cmd: get, Arg: make([]byte, layer.IoctlArgSize(get))}
	if errno := f.att.Below.Do(c, cur); errno != 0 {
		return done, errno
	}
	cur.Cmd = op.Cmd // read the current flags as a change to them
	if _, _, already := cur.IoctlSets(); !already {
		return done, syscall.EOPNOTSUPP
	}
	return pass, 0
}
