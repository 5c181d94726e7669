package hsm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/vfsfilter/vfsfilter/internal/settings"
	"github.com/vfsfilter/vfsfilter/layer"
	"golang.org/x/sys/unix"
)

// Config configures a Filter.
type Config struct {
	// Store receives migrated data. Required.
	Store Store
	// Backing is the backing directory. The filter keeps its journal in
	// Backing/.vfsfilter/hsm (hidden from users by the namespace filter).
	Backing string
	// Timeout bounds every store call and every stall of a recall: a store
	// that is down turns reads into EIO after at most this long. Default
	// 30s.
	Timeout time.Duration
	// ChunkShift is log2 of the chunk size new objects are written with
	// (default DefaultChunkShift, 1 MiB).
	ChunkShift uint8
	// ReadWindow: a read of a stub that lies at most this far past the
	// recall's progress waits for the recall; a read further ahead is
	// served from the store directly by a ranged read. Default 32 MiB.
	ReadWindow int64
}

// Filter is the HSM filter: it keeps migrated files' stubs looking like the
// files they were and brings their data back when it is needed. See
// doc.go for the model, the on-disk formats and the crash behaviour.
type Filter struct {
	cfg   Config
	store Store
	att   *layer.Attachment
	log   *slog.Logger
	jdir  string

	ctx    context.Context // the filter's lifetime; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // recalls and object deletions in flight

	// mu guards the maps below. It is held for map updates only, never
	// across I/O, so work on one file never waits for another.
	mu sync.Mutex
	// recalls are the recalls in flight, one per file id: every reader
	// of a stub shares it.
	recalls map[ID]*recall
	// opens counts the open user handles per backing inode. Migration
	// refuses open files: a reader in passthrough mode cannot be made to
	// wait for a recall, and a writer could change the data under it.
	opens map[uint64]int
	// migrating are the migrations in flight, by backing inode.
	migrating map[uint64]*migration
	// overwrites are the sequential overwrites of stubs in progress, by
	// backing inode (see overwrite).
	overwrites map[uint64]*overwrite

	// sizes caches the sizes fixSize found, by inode and ctime.
	sizes sizeCache

	// recallsStarted counts recalls (for tests and stats).
	recallsStarted atomic.Int64
}

// New returns an HSM filter. The journal directory is created and crash
// recovery runs when the filter is attached to a stack.
func New(cfg Config) (*Filter, error) {
	if cfg.Store == nil {
		return nil, errors.New("hsm: no store")
	}
	if cfg.Backing == "" {
		return nil, errors.New("hsm: no backing directory")
	}
	abs, err := filepath.Abs(cfg.Backing)
	if err != nil {
		return nil, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	cfg.Backing = abs
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.ChunkShift == 0 {
		cfg.ChunkShift = DefaultChunkShift
	}
	if cfg.ChunkShift < 12 || cfg.ChunkShift > 30 {
		return nil, fmt.Errorf("hsm: chunk shift %d out of range 12..30", cfg.ChunkShift)
	}
	if cfg.ReadWindow <= 0 {
		cfg.ReadWindow = 32 << 20
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Filter{
		cfg:        cfg,
		store:      cfg.Store,
		jdir:       filepath.Join(cfg.Backing, settings.Dir, "hsm", "journal"),
		ctx:        ctx,
		cancel:     cancel,
		recalls:    map[ID]*recall{},
		opens:      map[uint64]int{},
		migrating:  map[uint64]*migration{},
		overwrites: map[uint64]*overwrite{},
		log:        slog.Default(),
	}, nil
}

// Name implements layer.Filter.
func (f *Filter) Name() string { return "hsm" }

// Altitude implements layer.Filter.
func (f *Filter) Altitude() int { return layer.AltitudeHSM }

// Store returns the filter's store.
func (f *Filter) Store() Store { return f.store }

// Close stops recalls in flight (each rolls its file back to an intact
// stub) and waits for them.
func (f *Filter) Close() error {
	f.cancel()
	f.wg.Wait()
	return nil
}

// Attach implements layer.Filter. It finishes or rolls back the work a
// crashed daemon left in the journal, then registers the callbacks.
func (f *Filter) Attach(a *layer.Attachment) error {
	f.att = a
	f.log = a.Log
	if err := os.MkdirAll(f.jdir, 0o700); err != nil {
		return fmt.Errorf("hsm journal: %w", err)
	}
	f.recover()

	layer.OnPost(a, f.postLookup)
	layer.OnPost(a, f.postGetattr)
	layer.OnPre(a, f.preSetattr)
	layer.OnPost(a, f.postSetattr)
	layer.OnPost(a, f.postLink)
	layer.OnPre(a, f.preUnlink)
	layer.OnPre(a, f.preCreate)
	layer.OnPost(a, f.postCreate)
	layer.OnPre(a, f.preOpen)
	layer.OnPost(a, f.postOpen)
	layer.OnPre(a, f.preGetxattr)
	layer.OnPre(a, f.preSetxattr)
	layer.OnPre(a, f.preRemovexattr)
	layer.OnPre(a, f.preListxattr)
	layer.OnPre(a, f.preRead)
	layer.OnPre(a, f.preWrite)
	layer.OnPre(a, f.preRelease)
	layer.OnPre(a, f.preLseek)
	layer.OnPre(a, f.preAllocate)
	layer.OnPre(a, f.preCopyFileRange)
	layer.OnPre(a, f.preFlush)
	layer.OnPre(a, f.preFsync)
	layer.OnPre(a, f.preIoctl)
	return nil
}

const (
	cont    = layer.ContinueNoPost
	post    = layer.Continue
	done    = layer.Complete
	eio     = layer.Errno(syscall.EIO)
	eperm   = layer.Errno(syscall.EPERM)
	enodata = layer.Errno(syscall.ENODATA)
)

// selfKey marks the context of the HSM's own calls through the top of the
// stack (the control methods open files there to find them by the names
// users see); such opens are not users' opens.
type selfKey struct{}

func isSelf(c *layer.Call) bool { return c.Context != nil && c.Value(selfKey{}) != nil }

// fail logs one line naming the file and returns EIO: the fail-closed
// answer for a stub whose data cannot be had.
func (f *Filter) fail(what, name string, err error) layer.Errno {
	if errors.Is(err, context.Canceled) && f.ctx.Err() == nil {
		return layer.Errno(syscall.EINTR)
	}
	f.log.Error("hsm: "+what, "file", name, "store", f.store.String(), "err", err)
	return eio
}

// ---- attributes ---------------------------------------------------------

// fixSize puts a stub's real size into out. Only an empty regular file can
// be a stub that shows the wrong size: a premigrated file has its data, and
// a stub being recalled is extended to its real size before the first
// byte arrives. So resident files with data cost nothing here, and empty
// files one getxattr.
func (f *Filter) fixSize(c *layer.Call, path string, h *layer.Handle, out *layer.Attr) layer.Errno {
	if out.Mode&syscall.S_IFMT != syscall.S_IFREG || out.Size != 0 {
		return 0
	}
	key := sizeKey{out.Ino, int64(out.Ctime)*1e9 + int64(out.Ctimensec)}
	if size, ok := f.sizes.get(key); ok {
		out.Size = size
		return 0
	}
	var rec *Record
	var err error
	if h != nil && h.Fd >= 0 {
		rec, err = readRecordFd(h.Fd)
	} else {
		rec, err = f.readRecordPath(c.Context, path)
	}
	if err != nil {
		if errors.Is(err, ErrBadRecord) {
			return f.fail("stub record", path, err)
		}
		return 0 // the file went away; the caller's result stands
	}
	if rec != nil && rec.State == Migrated {
		out.Size = rec.Size
	}
	f.sizes.put(key, out.Size)
	return 0
}

// sizeKey names one version of an inode's metadata: every change of a
// record (setxattr, removexattr) and of the size moves ctime, so a cached
// answer for (inode, ctime) cannot be stale. The filter also drops an
// inode's entry itself whenever it changes the inode's record, so even a
// file system whose ctime is too coarse to tell two changes apart (Linux
// before multigrain timestamps) cannot serve a stale size after the
// filter's own changes.
type sizeKey struct {
	ino   uint64
	ctime int64
}

type sizeEntry struct {
	ctime int64
	size  uint64
}

// sizeCache remembers the size to show for empty files: the real size of
// a stub, or 0 for a file that is really empty. It saves the getxattr of
// repeated lookups and stats (ls -lR, make) of stubs.
type sizeCache struct {
	mu sync.Mutex
	m  map[uint64]sizeEntry
}

const sizeCacheMax = 1 << 20

func (c *sizeCache) get(k sizeKey) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k.ino]
	return e.size, ok && e.ctime == k.ctime
}

func (c *sizeCache) put(k sizeKey, v uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= sizeCacheMax {
		c.m = map[uint64]sizeEntry{} // crude, bounded, and rare
	}
	c.m[k.ino] = sizeEntry{k.ctime, v}
}

// forget drops what is cached for the inode of fd.
func (c *sizeCache) forget(fd int) {
	if st, err := fstat(fd); err == nil {
		c.mu.Lock()
		delete(c.m, st.Ino)
		c.mu.Unlock()
	}
}

func (f *Filter) postLookup(c *layer.Call, op *layer.LookupOp, errno layer.Errno) layer.Errno {
	if errno != 0 {
		return errno
	}
	return f.fixSize(c, op.Path, nil, &op.Out)
}

func (f *Filter) postGetattr(c *layer.Call, op *layer.GetattrOp, errno layer.Errno) layer.Errno {
	if errno != 0 {
		return errno
	}
	return f.fixSize(c, op.Path, op.Handle, &op.Out)
}

func (f *Filter) postSetattr(c *layer.Call, op *layer.SetattrOp, errno layer.Errno) layer.Errno {
	if errno != 0 {
		return errno
	}
	return f.fixSize(c, op.Path, op.Handle, &op.Out)
}

func (f *Filter) postLink(c *layer.Call, op *layer.LinkOp, errno layer.Errno) layer.Errno {
	if errno != 0 {
		return errno
	}
	return f.fixSize(c, op.NewPath, nil, &op.Out)
}

// preSetattr makes a truncate of a stub work without (to 0) or after (to
// any other size) a recall. chmod, chown and utimes pass untouched: they
// never need the data.
func (f *Filter) preSetattr(c *layer.Call, op *layer.SetattrOp) (layer.Status, layer.Errno) {
	if op.In.Valid&fuse.FATTR_SIZE == 0 {
		return post, 0
	}
	h := op.Handle
	if h == nil || h.Fd < 0 {
		var err error
		h, err = f.openBelow(c.Context, op.Path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
		if err != nil {
			return post, 0 // let the layer below give the error
		}
		defer f.releaseBelow(h)
	}
	st, err := fstat(h.Fd)
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return post, 0
	}
	if op.In.Size == 0 {
		f.dropOverwrite(st.Ino)
	} else if errno := f.settle(c, st.Ino); errno != 0 {
		return done, errno
	}
	if errno := f.prepareModify(c, h.Fd, op.In.Size == 0, op.Path); errno != 0 {
		return done, errno
	}
	if hc := f.hctx(op.Handle); hc != nil {
		hc.setResident()
	}
	return post, 0
}

// prepareModify readies the file behind fd for a change of its data: the
// record goes (the file becomes resident) and, unless discard says the old
// data is not needed (truncate to 0, O_TRUNC), the data is recalled first.
func (f *Filter) prepareModify(c *layer.Call, fd int, discard bool, name string) layer.Errno {
	rec, err := readRecordFd(fd)
	if err != nil {
		return f.fail("stub record", name, err)
	}
	if rec == nil || rec.State == Resident {
		return 0
	}
	if rec.State == Migrated {
		if discard {
			// A recall in flight writes into this file: let it end
			// (either way) before the data goes.
			if r := f.inflight(rec.ID); r != nil {
				if err := r.wait(c.Context); err != nil && errors.Is(err, context.Canceled) {
					return layer.Errno(syscall.EINTR)
				}
			}
		} else {
			r, err := f.recallFor(fd, rec)
			if err != nil {
				return f.fail("recall", name, err)
			}
			if err := r.wait(c.Context); err != nil {
				if c.Context.Err() != nil {
					return layer.Errno(syscall.EINTR)
				}
				return eio // the recall logged why
			}
		}
	}
	if err := f.makeResident(fd); err != nil {
		return f.fail("mark resident", name, err)
	}
	return 0
}

// makeResident drops fd's record (keeping the pinned flag, if set) and
// deletes the object it named, which no longer matches the file.
func (f *Filter) makeResident(fd int) error {
	rec, err := readRecordFd(fd)
	if err != nil || rec == nil || rec.State == Resident {
		return err
	}
	if rec.Pinned() {
		err = writeRecordFd(fd, &Record{State: Resident, Flags: FlagPinned})
	} else {
		err = removeRecordFd(fd)
	}
	f.sizes.forget(fd)
	if err != nil {
		return err
	}
	f.deleteObject(rec.ID)
	return nil
}

// deleteObject removes an object in the background (best effort: a failure
// leaves garbage in the store, never a damaged file).
func (f *Filter) deleteObject(id ID) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Timeout)
		defer cancel()
		if err := f.store.Delete(ctx, id.String()); err != nil {
			f.log.Warn("hsm: could not delete an unused object; it stays in the store", "object", id.String(), "err", err)
		}
	}()
}

// preUnlink deletes the object of a stub (or premigrated file) whose last
// name goes, unless the file is still open: then the object stays, as
// garbage, because an open stub may still need a recall.
func (f *Filter) preUnlink(c *layer.Call, op *layer.UnlinkOp) (layer.Status, layer.Errno) {
	rec, err := f.readRecordPath(c.Context, op.Path)
	if err != nil || rec == nil || rec.State == Resident {
		return cont, 0
	}
	lk := &layer.LookupOp{Path: op.Path}
	if f.att.Below.Do(layer.InternalCall(c.Context), lk) != 0 {
		return cont, 0
	}
	if errno := f.att.Below.Do(c, op); errno != 0 {
		return done, errno
	}
	f.mu.Lock()
	open := f.opens[lk.Out.Ino] > 0
	f.mu.Unlock()
	if lk.Out.Nlink == 1 && !open {
		f.deleteObject(rec.ID)
	}
	return done, 0
}

// ---- xattrs -------------------------------------------------------------

func (f *Filter) preGetxattr(c *layer.Call, op *layer.GetxattrOp) (layer.Status, layer.Errno) {
	if op.Name == XattrName && !c.Internal {
		return done, enodata
	}
	return cont, 0
}

func (f *Filter) preSetxattr(c *layer.Call, op *layer.SetxattrOp) (layer.Status, layer.Errno) {
	if op.Name == XattrName && !c.Internal {
		return done, eperm
	}
	return cont, 0
}

func (f *Filter) preRemovexattr(c *layer.Call, op *layer.RemovexattrOp) (layer.Status, layer.Errno) {
	if op.Name == XattrName && !c.Internal {
		return done, eperm
	}
	return cont, 0
}

// preListxattr answers listxattr itself, from the full list below minus the
// record's name, so sizes and ERANGE agree with what users see.
func (f *Filter) preListxattr(c *layer.Call, op *layer.ListxattrOp) (layer.Status, layer.Errno) {
	if c.Internal {
		return cont, 0
	}
	var list []byte
	for size := uint32(256); ; size *= 4 {
		sub := &layer.ListxattrOp{Node: op.Node, Path: op.Path, Handle: op.Handle, Dest: make([]byte, size)}
		errno := f.att.Below.Do(c, sub)
		if errno == syscall.ERANGE && size < 1<<20 {
			continue
		}
		if errno != 0 {
			return done, errno
		}
		list = sub.Dest[:sub.Size]
		break
	}
	out := list[:0]
	for len(list) > 0 {
		i := 0
		for i < len(list) && list[i] != 0 {
			i++
		}
		name := list[:i]
		if i < len(list) {
			i++
		}
		if string(name) != XattrName {
			out = append(out, list[:i]...)
		}
		list = list[i:]
	}
	op.Size = uint32(len(out))
	if len(op.Dest) == 0 {
		return done, 0
	}
	if len(out) > len(op.Dest) {
		return done, layer.Errno(syscall.ERANGE)
	}
	copy(op.Dest, out)
	return done, 0
}

// ---- opens --------------------------------------------------------------

// hctx is the HSM's context on an open file.
type hctx struct {
	ino   uint64
	write bool

	mu sync.Mutex
	// stub is the record the file had when it was opened as a stub; nil
	// for a file that was (or has become) local: reads and writes then
	// go straight to the backing fd.
	stub *Record
	// resident says writes need no more preparation.
	resident bool
}

func (h *hctx) stubRec() *Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stub
}

// setLocal records that the data is local now (the recall finished).
func (h *hctx) setLocal() {
	h.mu.Lock()
	h.stub = nil
	h.mu.Unlock()
}

func (h *hctx) setResident() {
	h.mu.Lock()
	h.stub, h.resident = nil, true
	h.mu.Unlock()
}

func (f *Filter) hctx(h *layer.Handle) *hctx {
	if h == nil {
		return nil
	}
	hc, _ := f.att.HandleContext(h).(*hctx)
	return hc
}

// preOpen prepares opens that change the data: O_TRUNC discards a stub's
// data without recalling it. (Opens for writing without O_TRUNC recall on
// their first write, in preWrite.)
func (f *Filter) preOpen(c *layer.Call, op *layer.OpenOp) (layer.Status, layer.Errno) {
	if isSelf(c) {
		return cont, 0
	}
	if op.Flags&syscall.O_TRUNC != 0 && op.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		if errno := f.truncateOnOpen(c, op.Path); errno != 0 {
			return done, errno
		}
	}
	return post, 0
}

func (f *Filter) truncateOnOpen(c *layer.Call, path string) layer.Errno {
	rec, err := f.readRecordPath(c.Context, path)
	if err != nil || rec == nil || rec.State == Resident {
		return 0 // a missing file or no record: nothing to prepare
	}
	h, err := f.openBelow(c.Context, path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
	if err != nil {
		return 0
	}
	defer f.releaseBelow(h)
	if st, err := fstat(h.Fd); err == nil {
		f.dropOverwrite(st.Ino)
	}
	return f.prepareModify(c, h.Fd, true, path)
}

func (f *Filter) postOpen(c *layer.Call, op *layer.OpenOp, errno layer.Errno) layer.Errno {
	if errno != 0 || op.Handle == nil {
		return errno
	}
	return f.opened(c, op.Path, op.Handle, op.Flags)
}

func (f *Filter) preCreate(c *layer.Call, op *layer.CreateOp) (layer.Status, layer.Errno) {
	// CREATE normally makes a new file, but O_CREAT without O_EXCL may
	// meet an existing one (a race with another creator).
	if op.Flags&syscall.O_TRUNC != 0 && op.Flags&syscall.O_EXCL == 0 {
		if errno := f.truncateOnOpen(c, op.Path); errno != 0 {
			return done, errno
		}
	}
	return post, 0
}

func (f *Filter) postCreate(c *layer.Call, op *layer.CreateOp, errno layer.Errno) layer.Errno {
	if errno != 0 || op.Handle == nil {
		return errno
	}
	if errno := f.opened(c, op.Path, op.Handle, op.Flags); errno != 0 {
		return errno
	}
	return f.fixSize(c, op.Path, op.Handle, &op.Out)
}

// opened is the post-callback of Open and Create: it counts the open,
// keeps passthrough only for local data, and makes a premigrated file
// resident when it is opened for writing.
func (f *Filter) opened(c *layer.Call, path string, h *layer.Handle, flags uint32) layer.Errno {
	if h.Fd < 0 || isSelf(c) {
		return 0
	}
	st, err := fstat(h.Fd)
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0
	}
	hc := &hctx{ino: st.Ino, write: flags&syscall.O_ACCMODE != syscall.O_RDONLY}
	var wait chan struct{}
	f.mu.Lock()
	if m := f.migrating[st.Ino]; m != nil {
		if m.releasing {
			// The data is being released: wait (a few syscalls),
			// then see the file as the stub it has become.
			wait = m.done
		} else {
			m.aborted = true
		}
	}
	f.opens[st.Ino]++
	f.mu.Unlock()
	f.att.SetHandleContext(h, hc)
	if wait != nil {
		<-wait
	}
	rec, err := readRecordFd(h.Fd)
	if err != nil {
		f.untrack(hc)
		f.att.Below.Do(layer.InternalCall(context.Background()), &layer.ReleaseOp{Handle: h})
		return f.fail("stub record", path, err)
	}
	switch {
	case rec == nil || rec.State == Resident:
		hc.resident = true
	case rec.State == Premigrated:
		if hc.write {
			if err := f.makeResident(h.Fd); err != nil {
				f.untrack(hc)
				f.att.Below.Do(layer.InternalCall(context.Background()), &layer.ReleaseOp{Handle: h})
				return f.fail("mark resident", path, err)
			}
			hc.resident = true
		}
	case rec.State == Migrated:
		// The filter must see this file's reads: daemon mode for
		// every open of the inode until the last one is released (the
		// bridge keeps later opens in the same mode).
		h.Passthrough = false
		hc.stub = rec
	}
	return 0
}

func (f *Filter) untrack(hc *hctx) {
	f.mu.Lock()
	if f.opens[hc.ino]--; f.opens[hc.ino] <= 0 {
		delete(f.opens, hc.ino)
	}
	f.mu.Unlock()
}

func (f *Filter) preRelease(c *layer.Call, op *layer.ReleaseOp) (layer.Status, layer.Errno) {
	if hc := f.hctx(op.Handle); hc != nil {
		f.releaseOverwrite(hc)
		f.att.SetHandleContext(op.Handle, nil)
		f.untrack(hc)
	}
	return cont, 0
}

// ---- data ---------------------------------------------------------------

func (f *Filter) preRead(c *layer.Call, op *layer.ReadOp) (layer.Status, layer.Errno) {
	hc := f.hctx(op.Handle)
	if hc == nil {
		return cont, 0
	}
	rec := hc.stubRec()
	if rec == nil {
		return cont, 0
	}
	if f.overwriteOf(hc.ino) != nil {
		if errno := f.settle(c, hc.ino); errno != 0 {
			return done, errno
		}
		hc.setLocal()
		return cont, 0
	}
	size := int64(rec.Size)
	if op.Off >= size || len(op.Dest) == 0 {
		op.Out = fuse.ReadResultData(nil)
		return done, 0
	}
	end := min(op.Off+int64(len(op.Dest)), size)
	r, err := f.recallFor(op.Handle.Fd, rec)
	if err != nil {
		return done, f.fail("recall", fdName(op.Handle.Fd, f.cfg.Backing), err)
	}
	for {
		mark, finished, rerr, idx, wake := r.snapshot()
		switch {
		case finished && rerr != nil:
			return done, eio // the recall logged why, once
		case finished:
			hc.setLocal()
			return cont, 0
		case end <= mark:
			// Verified and written: the backing fd has it, unless
			// the recall fails and rolls back meanwhile.
			r.data.RLock()
			_, _, rerr, _, _ = r.snapshot()
			if rerr != nil {
				r.data.RUnlock()
				return done, eio
			}
			errno := f.att.Below.Do(c, op)
			r.data.RUnlock()
			return done, errno
		case idx != nil && op.Off >= mark+f.cfg.ReadWindow:
			n, err := r.readDirect(c.Context, idx.sums, op.Dest[:end-op.Off], op.Off)
			if err != nil {
				if c.Context.Err() != nil {
					return done, layer.Errno(syscall.EINTR)
				}
				return done, f.fail("read from store", r.name, err)
			}
			op.Out = fuse.ReadResultData(op.Dest[:n])
			return done, 0
		}
		select {
		case <-wake:
		case <-c.Done():
			return done, layer.Errno(syscall.EINTR)
		}
	}
}

// preIoctl recalls a migrated file before it becomes immutable or
// append-only: a recall writes the data back in place, which either flag
// would then forbid, and the file could no longer be read.
func (f *Filter) preIoctl(c *layer.Call, op *layer.IoctlOp) (layer.Status, layer.Errno) {
	if set, immutable, appendOnly := op.IoctlSets(); set && (immutable || appendOnly) {
		if errno := f.needData(c, op.Handle); errno != 0 {
			return done, errno
		}
	}
	return cont, 0
}

// needData recalls the whole file behind h (if it is a stub) and makes it
// resident before a change of its data.
func (f *Filter) needData(c *layer.Call, h *layer.Handle) layer.Errno {
	hc := f.hctx(h)
	if hc == nil {
		return 0
	}
	if errno := f.settle(c, hc.ino); errno != 0 {
		return errno
	}
	hc.mu.Lock()
	ready := hc.resident
	hc.mu.Unlock()
	if ready {
		return 0
	}
	if errno := f.prepareModify(c, h.Fd, false, fdName(h.Fd, f.cfg.Backing)); errno != 0 {
		return errno
	}
	hc.setResident()
	return 0
}

// needLocal waits until the data behind h is local (for copy_file_range
// from a stub), without making it resident.
func (f *Filter) needLocal(c *layer.Call, h *layer.Handle) layer.Errno {
	hc := f.hctx(h)
	if hc == nil {
		return 0
	}
	if errno := f.settle(c, hc.ino); errno != 0 {
		return errno
	}
	rec := hc.stubRec()
	if rec == nil {
		return 0
	}
	r, err := f.recallFor(h.Fd, rec)
	if err != nil {
		return f.fail("recall", fdName(h.Fd, f.cfg.Backing), err)
	}
	if err := r.wait(c.Context); err != nil {
		if c.Context.Err() != nil {
			return layer.Errno(syscall.EINTR)
		}
		return eio
	}
	hc.setLocal()
	return 0
}

func (f *Filter) preWrite(c *layer.Call, op *layer.WriteOp) (layer.Status, layer.Errno) {
	if hc := f.hctx(op.Handle); hc != nil {
		if handled, errno := f.overwriteWrite(c, hc, op); handled {
			return done, errno
		}
	}
	if errno := f.needData(c, op.Handle); errno != 0 {
		return done, errno
	}
	return cont, 0
}

func (f *Filter) preAllocate(c *layer.Call, op *layer.AllocateOp) (layer.Status, layer.Errno) {
	if errno := f.needData(c, op.Handle); errno != 0 {
		return done, errno
	}
	return cont, 0
}

func (f *Filter) preCopyFileRange(c *layer.Call, op *layer.CopyFileRangeOp) (layer.Status, layer.Errno) {
	if errno := f.needLocal(c, op.In); errno != 0 {
		return done, errno
	}
	if errno := f.needData(c, op.Out); errno != 0 {
		return done, errno
	}
	return cont, 0
}

// preLseek answers SEEK_DATA and SEEK_HOLE for a stub from the extent map
// recorded at migration, so a stub reports the holes the file had.
func (f *Filter) preLseek(c *layer.Call, op *layer.LseekOp) (layer.Status, layer.Errno) {
	hc := f.hctx(op.Handle)
	if hc == nil {
		return cont, 0
	}
	rec := hc.stubRec()
	if rec == nil || (op.Whence != unix.SEEK_DATA && op.Whence != unix.SEEK_HOLE) {
		return cont, 0
	}
	if f.overwriteOf(hc.ino) != nil {
		if errno := f.settle(c, hc.ino); errno != 0 {
			return done, errno
		}
		hc.setLocal()
		return cont, 0
	}
	var idx *index
	if r := f.inflight(rec.ID); r != nil {
		_, finished, _, x, _ := r.snapshot()
		if finished {
			return cont, 0 // the file has its data and holes back
		}
		idx = x
	}
	if idx == nil {
		var err error
		if idx, err = f.fetchIndex(c.Context, rec); err != nil {
			return done, f.fail("read the object's extent map", fdName(op.Handle.Fd, f.cfg.Backing), err)
		}
	}
	off, ok := idx.seek(int64(rec.Size), int64(op.Off), op.Whence == unix.SEEK_DATA)
	if !ok {
		return done, layer.Errno(syscall.ENXIO)
	}
	op.Out = uint64(off)
	return done, 0
}
