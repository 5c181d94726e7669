package crypt

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vfsfilter/vfsfilter/layer"
)

// Filter is the crypt filter: it encrypts names, symlink targets, file
// contents and (in trees with FeatureXattr) user.* extended attributes on
// their way down and decrypts them on their way up. Only ciphertext
// reaches the layers below it (HSM, the passthrough).
//
// Path-carrying ops are rewritten in place and continue down; creations of
// long names write the name's side file first; mkdir, rmdir and readdir
// are completed here because a directory below holds crypt's IV file
// besides the user's entries; reads, writes, truncation, fallocate, lseek
// and copy_file_range are completed here with I/O on the file's handle
// below, in ciphertext offsets; the xattr ops on user.* attributes are
// completed here too (xattr.go).
type Filter struct {
	content *Content
	names   *nameCache
	xattrs  *Xattrs // nil: extended attributes pass through (xattr.go)
	att     *layer.Attachment
	log     *slog.Logger
	rootMu  sync.Mutex
	rootIV  atomic.Pointer[[]byte]
	dirs    *dirCache

	filesMu sync.Mutex
	files   map[uint64]*fileState // by inode number below

	bufs sync.Pool // *[]byte of ioBufSize

	// zeroRangeBelow says whether the backing file system does
	// FALLOC_FL_ZERO_RANGE (0: not known yet, 1: yes, 2: no): crypt
	// offers the mode only where the file system underneath does.
	zeroRangeBelow atomic.Int32

	// Write-behind (behind.go): how many run now, how many ever started
	// and ended, whether the backing file system cannot allocate ahead
	// (1: fallocate is not supported, so nothing goes behind), and
	// whether the options turned it off.
	behind        atomic.Int64
	behindStarted atomic.Int64  // tests read it; stale's fast path too
	behindEnded   atomic.Uint64 // how many ever ended (see stale)
	noReserve     atomic.Int32
	syncWrites    bool
	// testHooks are tests' hooks into write-behind; nil otherwise.
	testHooks atomic.Pointer[behindHooks]
}

// Options tune a Filter. The zero value is the default.
type Options struct {
	// DirCacheTTL bounds how long a directory's IV and ciphertext path
	// are remembered (default 1s, the kernel's default attribute
	// timeout). See dirCache for why it only matters for changes made
	// directly in the backing directory.
	DirCacheTTL time.Duration
	// SyncWrites answers every write only once its ciphertext is written
	// below (into the backing file's page cache), without write-behind
	// (behind.go). Large sequential writes then take about a quarter
	// longer; what it buys is that a daemon killed by SIGKILL cannot
	// lose a write it has answered.
	SyncWrites bool
}

// New returns a crypt filter using keys. The filter keeps ciphers made
// from the keys, not the key bytes: the caller may Wipe keys afterwards.
func New(keys *Keys, opts Options) (*Filter, error) {
	content, err := keys.Content()
	if err != nil {
		return nil, err
	}
	names, err := keys.Names()
	if err != nil {
		return nil, err
	}
	xattrs, err := keys.Xattrs()
	if err != nil {
		return nil, err
	}
	if opts.DirCacheTTL == 0 {
		opts.DirCacheTTL = time.Second
	}
	return &Filter{
		content: content,
		names:   newNameCache(names, nameCacheMax),
		xattrs:  xattrs,
		dirs:    newDirCache(opts.DirCacheTTL, 8192),
		files:   map[uint64]*fileState{},

		syncWrites: opts.SyncWrites,
	}, nil
}

// Name implements layer.Filter.
func (f *Filter) Name() string { return "crypt" }

// Altitude implements layer.Filter.
func (f *Filter) Altitude() int { return layer.AltitudeCrypt }

// Attach implements layer.Filter. The root directory's IV is read on first
// use (see root): the layers below cannot serve requests while the stack is
// being built.
func (f *Filter) Attach(a *layer.Attachment) error {
	f.att = a
	f.log = a.Log
	layer.OnPre(a, f.lookup)
	layer.OnPost(a, f.postLookup)
	layer.OnPre(a, f.getattr)
	layer.OnPost(a, f.postGetattr)
	layer.OnPre(a, f.setattr)
	layer.OnPost(a, f.postSetattr)
	layer.OnPre(a, f.access)
	layer.OnPre(a, f.readlink)
	layer.OnPost(a, f.postReadlink)
	layer.OnPre(a, f.mknod)
	layer.OnPre(a, f.mkdir)
	layer.OnPre(a, f.symlink)
	layer.OnPre(a, f.link)
	layer.OnPre(a, f.unlink)
	layer.OnPre(a, f.rmdir)
	layer.OnPre(a, f.rename)
	layer.OnPre(a, f.create)
	layer.OnPost(a, f.postCreate)
	layer.OnPre(a, f.tmpfile)
	layer.OnPost(a, f.postTmpfile)
	layer.OnPre(a, f.open)
	layer.OnPost(a, f.postOpen)
	layer.OnPre(a, f.readdir)
	layer.OnPre(a, f.statfs)
	layer.OnPre(a, f.getxattr)
	layer.OnPre(a, f.setxattr)
	layer.OnPre(a, f.listxattr)
	layer.OnPre(a, f.removexattr)
	layer.OnPre(a, f.read)
	layer.OnPre(a, f.write)
	layer.OnPre(a, f.flush)
	layer.OnPre(a, f.fsync)
	layer.OnPre(a, f.releaseOp)
	layer.OnPost(a, f.postRelease)
	layer.OnPre(a, f.lseek)
	layer.OnPre(a, f.allocate)
	layer.OnPre(a, f.copyFileRange)
	layer.OnPre(a, f.ioctl)
	return nil
}

// FilterEvent implements layer.EventFilter: events found below carry
// ciphertext paths; they leave in plaintext, and events about crypt's own
// files (IVs, long-name side files) or names that do not decrypt are
// dropped.
func (f *Filter) FilterEvent(ev *layer.Event) bool {
	c := layer.InternalCall(context.Background())
	p, ok := f.decryptPath(c, ev.Path)
	if !ok {
		return false
	}
	if ev.Kind == layer.EventRename {
		old, ok := f.decryptPath(c, ev.OldPath)
		if !ok {
			ev.Kind, ev.OldPath = layer.EventCreate, ""
		} else {
			ev.OldPath = old
		}
	}
	ev.Path = p
	if ev.Kind == layer.EventRename || ev.Kind == layer.EventRemove {
		f.dirs.invalidate(p)
		if ev.OldPath != "" {
			f.dirs.invalidate(ev.OldPath)
		}
	}
	return true
}

var (
	cont = layer.Continue
	pass = layer.ContinueNoPost
	done = layer.Complete
)

// fixAttr turns the attributes of a ciphertext entry into the plaintext
// ones: file sizes from the ciphertext size, symlink sizes from the
// encrypted target's length. Nothing is read.
func (f *Filter) fixAttr(a *layer.Attr) {
	switch a.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		a.Size, _ = f.content.PlainSize(a.Size)
	case syscall.S_IFLNK:
		a.Size = LinkPlainLen(a.Size)
	}
}

// simple rewrites *p and continues without a post-callback.
func (f *Filter) simple(c *layer.Call, p *string) (layer.Status, layer.Errno) {
	e, errno := f.path(c, *p)
	if errno != 0 {
		return done, errno
	}
	*p = e.cpath
	return pass, 0
}

// handlePath rewrites the path of an op that may carry an open file. An
// fstat through an open file must work after the file's name is gone, and
// the layers below use the handle then, so a path that no longer resolves
// is not an error here.
func (f *Filter) handlePath(c *layer.Call, p *string, h *layer.Handle) (layer.Status, layer.Errno) {
	e, errno := f.path(c, *p)
	if errno != 0 {
		if h != nil && h.Fd >= 0 {
			*p = DirIVFile + "/gone" // never resolves; the handle is used
			return cont, 0
		}
		return done, errno
	}
	*p = e.cpath
	return cont, 0
}

// cpathVia is the backing path of an op that may carry an open file (see
// handlePath): a path that no longer resolves is no error when it does.
func (f *Filter) cpathVia(c *layer.Call, path string, h *layer.Handle) (string, layer.Errno) {
	if st, errno := f.handlePath(c, &path, h); st == done {
		return "", errno
	}
	return path, 0
}

// simpleVia is simple for an op that may carry an open file.
func (f *Filter) simpleVia(c *layer.Call, p *string, h *layer.Handle) (layer.Status, layer.Errno) {
	cpath, errno := f.cpathVia(c, *p, h)
	if errno != 0 {
		return done, errno
	}
	*p = cpath
	return pass, 0
}

func (f *Filter) lookup(c *layer.Call, op *layer.LookupOp) (layer.Status, layer.Errno) {
	f.markBehind(c)
	e, errno := f.path(c, op.Path)
	if errno != 0 {
		return done, errno
	}
	op.Path = e.cpath
	return cont, 0
}

func (f *Filter) postLookup(c *layer.Call, op *layer.LookupOp, errno layer.Errno) layer.Errno {
	if errno == 0 && op.Out.Mode&syscall.S_IFMT == syscall.S_IFREG && f.stale(c, op.Out.Ino) {
		again := &layer.LookupOp{Path: op.Path}
		if errno = f.att.Below.Do(c, again); errno == 0 {
			op.Out = again.Out
		}
	}
	if errno == 0 {
		f.fixAttr(&op.Out)
	}
	return errno
}

func (f *Filter) getattr(c *layer.Call, op *layer.GetattrOp) (layer.Status, layer.Errno) {
	if of := f.openFile(op.Handle); of != nil {
		// An fstat (or a stat that go-fuse gave an open file of the
		// inode): its file is known.
		f.await(of.st)
	} else {
		f.markBehind(c)
	}
	return f.handlePath(c, &op.Path, op.Handle)
}

func (f *Filter) postGetattr(c *layer.Call, op *layer.GetattrOp, errno layer.Errno) layer.Errno {
	if errno == 0 && op.Out.Mode&syscall.S_IFMT == syscall.S_IFREG && f.stale(c, op.Out.Ino) {
		again := &layer.GetattrOp{Node: op.Node, Path: op.Path, Handle: op.Handle}
		if errno = f.att.Below.Do(c, again); errno == 0 {
			op.Out = again.Out
		}
	}
	if errno == 0 {
		f.fixAttr(&op.Out)
	}
	return errno
}

func (f *Filter) access(c *layer.Call, op *layer.AccessOp) (layer.Status, layer.Errno) {
	return f.simple(c, &op.Path)
}

func (f *Filter) statfs(c *layer.Call, op *layer.StatfsOp) (layer.Status, layer.Errno) {
	return f.simple(c, &op.Path)
}

func (f *Filter) readlink(c *layer.Call, op *layer.ReadlinkOp) (layer.Status, layer.Errno) {
	e, errno := f.path(c, op.Path)
	if errno != 0 {
		return done, errno
	}
	op.Path = e.cpath
	return cont, 0
}

func (f *Filter) postReadlink(c *layer.Call, op *layer.ReadlinkOp, errno layer.Errno) layer.Errno {
	if errno != 0 {
		return errno
	}
	t, err := f.content.DecryptLink(string(op.Out))
	if err != nil {
		f.log.Error("symlink target does not decrypt", "path", op.Path, "error", err)
		return syscall.EIO
	}
	op.Out = []byte(t)
	return 0
}

// maxLinkTarget is the longest encoded target the backing file system
// stores (PATH_MAX less the terminating NUL).
const maxLinkTarget = 4095

func (f *Filter) symlink(c *layer.Call, op *layer.SymlinkOp) (layer.Status, layer.Errno) {
	e, errno := f.path(c, op.Path)
	if errno != 0 {
		return done, errno
	}
	if uint64(len(op.Target)) > f.content.BlockSize() {
		return done, syscall.ENAMETOOLONG
	}
	t, err := f.content.EncryptLink(op.Target)
	if err != nil {
		return done, layer.ToErrno(err)
	}
	if len(t) > maxLinkTarget {
		return done, syscall.ENAMETOOLONG
	}
	undo, errno := f.writeSide(c, &e)
	if errno != 0 {
		return done, errno
	}
	sub := &layer.SymlinkOp{Path: e.cpath, Target: t}
	if errno := f.att.Below.Do(c, sub); errno != 0 {
		undo()
		return done, errno
	}
	op.Out = sub.Out
	f.fixAttr(&op.Out)
	return done, 0
}

func (f *Filter) mknod(c *layer.Call, op *layer.MknodOp) (layer.Status, layer.Errno) {
	e, errno := f.path(c, op.Path)
	if errno != 0 {
		return done, errno
	}
	undo, errno := f.writeSide(c, &e)
	if errno != 0 {
		return done, errno
	}
	sub := *op
	sub.Path = e.cpath
	if errno := f.att.Below.Do(c, &sub); errno != 0 {
		undo()
		return done, errno
	}
	op.Out = sub.Out
	f.fixAttr(&op.Out)
	return done, 0
}

// mkdir creates the directory and its IV file. A directory without its IV
// file would be unusable, so a failure to write it removes the directory.
func (f *Filter) mkdir(c *layer.Call, op *layer.MkdirOp) (layer.Status, layer.Errno) {
	e, errno := f.path(c, op.Path)
	if errno != 0 {
		return done, errno
	}
	iv, err := NewDirIV()
	if err != nil {
		return done, syscall.EIO
	}
	undo, errno := f.writeSide(c, &e)
	if errno != 0 {
		return done, errno
	}
	sub := &layer.MkdirOp{Path: e.cpath, Mode: op.Mode}
	if errno := f.att.Below.Do(c, sub); errno != 0 {
		undo()
		return done, errno
	}
	if _, errno := f.writeSmall(c, join(e.cpath, DirIVFile), iv, 0440); errno != 0 {
		f.att.Below.Do(layer.InternalCall(c.Context), &layer.RmdirOp{Path: e.cpath})
		undo()
		return done, errno
	}
	f.dirs.put(op.Path, dirInfo{cpath: e.cpath, iv: iv})
	op.Out = sub.Out
	return done, 0
}

// emptyDir checks that the ciphertext directory cpath holds nothing but
// its IV file, as an empty directory does.
func (f *Filter) emptyDir(c *layer.Call, cpath string) layer.Errno {
	rd := &layer.ReaddirOp{Path: cpath}
	if errno := f.att.Below.Do(layer.InternalCall(c.Context), rd); errno != 0 {
		return errno
	}
	for _, e := range rd.Entries {
		if e.Name != DirIVFile {
			return syscall.ENOTEMPTY
		}
	}
	return 0
}

// dropIV removes the IV file of the empty ciphertext directory cpath (the
// plaintext directory plain) so that it can be removed or replaced, and
// returns a function that puts the IV back if that fails. The kernel holds
// the directory's lock during rmdir and rename, so nothing can be created
// in it meanwhile.
//
// The IV to put back is the cached one where there is one: the directory
// has usually just been listed (rm -rf) and so resolved. Reading it again
// would cost a request below per removed directory, and as the directory
// holds no entry no name depends on the IV yet.
func (f *Filter) dropIV(c *layer.Call, plain, cpath string) (restore func(), errno layer.Errno) {
	if errno := f.emptyDir(c, cpath); errno != 0 {
		return nil, errno
	}
	ic := layer.InternalCall(c.Context)
	var iv []byte
	if d, ok := f.dirs.get(plain); ok && d.cpath == cpath {
		iv = d.iv
	} else if iv, errno = f.readIV(c, cpath); errno != 0 {
		return nil, errno
	}
	if errno := f.att.Below.Do(ic, &layer.UnlinkOp{Path: join(cpath, DirIVFile)}); errno != 0 && errno != syscall.ENOENT {
		return nil, errno
	}
	return func() {
		if _, errno := f.writeSmall(c, join(cpath, DirIVFile), iv, 0440); errno != 0 {
			f.log.Error("could not restore a directory's IV file", "dir", cpath, "errno", errno)
		}
	}, 0
}

func (f *Filter) rmdir(c *layer.Call, op *layer.RmdirOp) (layer.Status, layer.Errno) {
	e, errno := f.path(c, op.Path)
	if errno != 0 {
		return done, errno
	}
	restore, errno := f.dropIV(c, op.Path, e.cpath)
	if errno != 0 {
		return done, errno
	}
	if errno := f.att.Below.Do(c, &layer.RmdirOp{Path: e.cpath}); errno != 0 {
		restore()
		return done, errno
	}
	f.dirs.forget(op.Path)
	f.removeSide(c, &e)
	return done, 0
}

func (f *Filter) unlink(c *layer.Call, op *layer.UnlinkOp) (layer.Status, layer.Errno) {
	e, errno := f.path(c, op.Path)
	if errno != 0 {
		return done, errno
	}
	if errno := f.att.Below.Do(c, &layer.UnlinkOp{Path: e.cpath}); errno != 0 {
		return done, errno
	}
	f.removeSide(c, &e)
	return done, 0
}

func (f *Filter) link(c *layer.Call, op *layer.LinkOp) (layer.Status, layer.Errno) {
	ocpath, errno := f.cpathVia(c, op.OldPath, op.Handle)
	if errno != 0 {
		return done, errno
	}
	ne, errno := f.path(c, op.NewPath)
	if errno != 0 {
		return done, errno
	}
	undo, errno := f.writeSide(c, &ne)
	if errno != 0 {
		return done, errno
	}
	sub := &layer.LinkOp{Node: op.Node, OldPath: ocpath, NewPath: ne.cpath, Handle: op.Handle}
	if errno := f.att.Below.Do(c, sub); errno != 0 {
		undo()
		return done, errno
	}
	op.Out = sub.Out
	f.fixAttr(&op.Out)
	return done, 0
}

func (f *Filter) rename(c *layer.Call, op *layer.RenameOp) (layer.Status, layer.Errno) {
	oe, errno := f.path(c, op.OldPath)
	if errno != 0 {
		return done, errno
	}
	ne, errno := f.path(c, op.NewPath)
	if errno != 0 {
		return done, errno
	}
	ic := layer.InternalCall(c.Context)
	restore := func() {}
	if op.Flags&unix_RENAME_EXCHANGE == 0 && oe.cpath != ne.cpath {
		// A directory replacing an empty directory: the target holds
		// its IV file, which would make the rename fail with
		// ENOTEMPTY.
		src, dst := &layer.LookupOp{Path: oe.cpath}, &layer.LookupOp{Path: ne.cpath}
		if f.att.Below.Do(ic, src) == 0 && src.Out.Mode&syscall.S_IFMT == syscall.S_IFDIR &&
			f.att.Below.Do(ic, dst) == 0 && dst.Out.Mode&syscall.S_IFMT == syscall.S_IFDIR &&
			op.Flags&unix_RENAME_NOREPLACE == 0 {
			if restore, errno = f.dropIV(c, op.NewPath, ne.cpath); errno != 0 {
				return done, errno
			}
		}
	}
	undo, errno := f.writeSide(c, &ne)
	if errno != 0 {
		restore()
		return done, errno
	}
	if errno := f.att.Below.Do(c, &layer.RenameOp{OldPath: oe.cpath, NewPath: ne.cpath, Flags: op.Flags}); errno != 0 {
		undo()
		restore()
		return done, errno
	}
	f.dirs.invalidate(op.OldPath)
	f.dirs.invalidate(op.NewPath)
	// After an exchange both names still exist, each with its own side
	// file (side files belong to names, not to what they name).
	if op.Flags&unix_RENAME_EXCHANGE == 0 && oe.cpath != ne.cpath {
		f.removeSide(c, &oe)
	}
	return done, 0
}

// renameat2 flags (golang.org/x/sys/unix names, kept local to avoid the
// import in this file).
const (
	unix_RENAME_NOREPLACE = 1 << 0
	unix_RENAME_EXCHANGE  = 1 << 1
)

// readdir lists the ciphertext directory and decrypts the names. crypt's
// own files and names that do not decrypt (not made with this key, or
// damaged) are left out; fsck reports them.
func (f *Filter) readdir(c *layer.Call, op *layer.ReaddirOp) (layer.Status, layer.Errno) {
	var d dirInfo
	if od, ok := f.att.HandleContext(op.Handle).(*openDir); ok {
		d = od.dirInfo
	} else {
		var errno layer.Errno
		if d, errno = f.dir(c, op.Path); errno != 0 {
			return done, errno
		}
	}
	sub := &layer.ReaddirOp{Node: op.Node, Path: d.cpath, Handle: op.Handle, Entries: op.Entries}
	if errno := f.att.Below.Do(c, sub); errno != 0 {
		return done, errno
	}
	ents := sub.Entries[:0]
	for _, e := range sub.Entries {
		if Reserved(e.Name, op.Path == "") {
			continue
		}
		name, err := f.decryptName(c, d.cpath, d.iv, e.Name)
		if err != nil {
			f.log.Debug("hiding an entry whose name does not decrypt", "dir", op.Path, "stored", e.Name, "error", err)
			continue
		}
		e.Name = name
		ents = append(ents, e)
	}
	op.Entries = ents
	return done, 0
}

// root returns the root directory's IV, reading it on first use. A new
// backing root (empty but for the stack's settings directory) gets one;
// a root with entries but no IV is damaged or not an encrypted tree, and
// every request fails with EIO and a log line.
func (f *Filter) root(c *layer.Call) ([]byte, layer.Errno) {
	if p := f.rootIV.Load(); p != nil {
		return *p, 0
	}
	f.rootMu.Lock()
	defer f.rootMu.Unlock()
	if p := f.rootIV.Load(); p != nil {
		return *p, 0
	}
	iv, err := f.loadRoot(layer.InternalCall(c.Context))
	if err != nil {
		f.log.Error("cannot use the backing directory", "error", err)
		return nil, syscall.EIO
	}
	f.rootIV.Store(&iv)
	return iv, 0
}

func (f *Filter) loadRoot(c *layer.Call) ([]byte, error) {
	iv, errno := f.readSmall(c, DirIVFile, DirIVLen+1, validIV)
	switch {
	case errno == syscall.ENOENT:
		rd := &layer.ReaddirOp{Path: ""}
		if errno := f.att.Below.Do(c, rd); errno != 0 {
			return nil, fmt.Errorf("list backing root: %w", errno)
		}
		if err := CheckNewRoot(rd.Entries); err != nil {
			return nil, err
		}
		iv, err := NewDirIV()
		if err != nil {
			return nil, err
		}
		if _, errno := f.writeSmall(c, DirIVFile, iv, 0440); errno != 0 {
			return nil, fmt.Errorf("create root %s: %w", DirIVFile, errno)
		}
		return iv, nil
	case errno != 0:
		return nil, fmt.Errorf("read root %s: %w", DirIVFile, errno)
	case len(iv) != DirIVLen:
		return nil, fmt.Errorf("root %s is damaged (%d bytes, want %d)", DirIVFile, len(iv), DirIVLen)
	}
	return iv, nil
}

// CheckNewRoot reports whether a backing root without an IV file may get
// one: it must hold nothing but the stack's settings directory. Otherwise
// its names were not made by crypt (or its IV file was lost), and making a
// new IV would hide them for good.
func CheckNewRoot(entries []layer.DirEntry) error {
	for _, e := range entries {
		if e.Name != settingsDir {
			return fmt.Errorf("the backing directory is not an encrypted tree or is damaged: it has entries (%q) but no %s", e.Name, DirIVFile)
		}
	}
	return nil
}
