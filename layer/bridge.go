package layer

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// bridge turns go-fuse node callbacks into stack ops. It owns no file-system
// logic: it computes paths, carries results back with the configured cache
// timeouts and keeps the per-inode passthrough rule (see node.openMode).
type bridge struct {
	stack *Stack
	log   *slog.Logger
	// entryTTL, attrTTL (nanoseconds) and cacheDir are what the kernel
	// is told to cache from now on; Server.LimitCaching lowers them while
	// the mount serves, so they are atomics.
	entryTTL atomic.Int64
	attrTTL  atomic.Int64
	negTTL   time.Duration
	cacheDir atomic.Bool
	// replay recognises the notify filter's replay thread, whose requests
	// are answered without touching the backing dir (replay_notify.go).
	replay replayGate
	// links finds the nodes of non-directories by inode number, for
	// Invalidate (inoindex.go).
	links inoIndex
}

func (b *bridge) entryTimeout() time.Duration { return time.Duration(b.entryTTL.Load()) }
func (b *bridge) attrTimeout() time.Duration  { return time.Duration(b.attrTTL.Load()) }

// node is the go-fuse inode of one entry the kernel knows.
type node struct {
	fs.Inode
	Node
	br *bridge

	mu sync.Mutex
	// Open handles by mode. The kernel decides passthrough per inode:
	// once a file is open in passthrough mode a non-passthrough open fails
	// (and the reverse), so every open of an inode uses one mode until all
	// its handles are released.
	ptOpen, daemonOpen int
	// dirs are the open directory handles of this node, files its open
	// file handles. Ops the kernel sends without a handle borrow one
	// (borrow): a change of mode, owner or times (chmod, chown, utimes),
	// every xattr op, a statx that wants the birth time and the link of
	// an O_TMPFILE file. The bottom layer then uses its fd, which still
	// reaches the file when its name is gone or leads to another file,
	// and saves resolving the path again. Getattr without a handle falls
	// back on a duplicate of a directory's fd (dupDirHandle). fileUse is
	// held shared while an op borrows a handle and exclusively by Release
	// and Releasedir while they take theirs out, so a borrowed fd is never
	// closed (and its number reused for another file) under the op.
	dirs    []*Handle
	files   []*Handle
	fileUse sync.RWMutex
}

var (
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeAccesser       = (*node)(nil)
	_ fs.NodeReadlinker     = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeReaddirer      = (*node)(nil)
	_ fs.NodeStatfser       = (*node)(nil)
	_ fs.NodeGetxattrer     = (*node)(nil)
	_ fs.NodeStatxer        = (*node)(nil)
	_ fs.NodeIoctler        = (*node)(nil)
	_ fs.NodeSetxattrer     = (*node)(nil)
	_ fs.NodeListxattrer    = (*node)(nil)
	_ fs.NodeRemovexattrer  = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
	_ fs.NodeTmpfiler       = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
)

func (n *node) call(ctx context.Context) *Call {
	c := &Call{Context: ctx}
	if fc, ok := ctx.(*fuse.Context); ok {
		c.Uid, c.Gid, c.Pid = fc.Uid, fc.Gid, fc.Pid
	}
	// The replay thread's requests re-enact changes already made
	// underneath: never the user's, never reported again.
	_, c.Internal = n.br.replaying(ctx)
	return c
}

// path is the node's path relative to the root. A node that is in no
// directory (unlinked, or replaced under its name) gets a path that no
// entry has, so path-based ops on it fail with ENOENT rather than act on
// the root or on the file now under its old name.
func (n *node) path() string { return n.pathWith("") }

// child is the path of the entry name in the node's directory.
func (n *node) child(name string) string { return n.pathWith(name) }

// pathWith is the node's path followed by "/"+name (by name alone for the
// root, the path alone for an empty name), built in one allocation for
// paths of up to 24 components: it is computed for every request. It
// walks the parents as fs.Inode.Path does, and checks at each step that
// the parent still has the node under that name: go-fuse can leave a node
// a name it lost (see displace), and a path built from it would lead to
// another file.
func (n *node) pathWith(name string) string {
	var arr [24]string
	segs := arr[:0]
	size := len(name)
	root := n.Root()
	for in := n.EmbeddedInode(); in != root; {
		seg, parent := in.Parent()
		if parent == nil || parent.GetChild(seg) != in {
			return unreachable(name)
		}
		segs = append(segs, seg)
		size += len(seg) + 1
		in = parent
	}
	k := len(segs)
	if k == 0 {
		return name
	}
	if name == "" {
		size--
	}
	var b strings.Builder
	b.Grow(size)
	for i := k - 1; i >= 0; i-- {
		b.WriteString(segs[i])
		if i > 0 || name != "" {
			b.WriteByte('/')
		}
	}
	b.WriteString(name)
	return b.String()
}

// unreachable returns a path below a directory no backing tree has,
// followed by name. Unreachable recognises it.
func unreachable(name string) string {
	if name == "" {
		return unreachableRoot
	}
	return unreachableRoot + "/" + name
}

// unreachableRoot is the path of a node without a name: a name that no
// user can guess, so no real entry can have it (see Unreachable). The
// random part is drawn once per process from crypto/rand.
var unreachableRoot = ".vfsfilter." + rand.Text() + "/deleted"

// Unreachable reports whether p is the path the bridge gives an op on a
// node that has no name left (an open file unlinked, or replaced under its
// name): no entry has it, so path-based work fails with ENOENT, and the op
// reaches its file only through its Handle. Filters that route or report
// by path (namespace, notify) treat such an op as one on no name.
func Unreachable(p string) bool {
	return strings.HasPrefix(p, unreachableRoot) && (len(p) == len(unreachableRoot) || p[len(unreachableRoot)] == '/')
}

func (n *node) do(ctx context.Context, op Op) (*Call, Errno) {
	c := n.call(ctx)
	errno := n.br.stack.Do(c, op)
	return c, errno
}

// newChild returns the inode for the entry name, looked up or linked, of
// attributes a. One inode per backing inode number: go-fuse keeps the node
// it knows for that number, so hard links share it.
func (n *node) newChild(ctx context.Context, name string, a *Attr, out *fuse.EntryOut) *fs.Inode {
	return n.placeChild(ctx, name, a, out, false)
}

// newCreated returns the inode for the entry name that the request
// created (MKNOD, MKDIR, SYMLINK, CREATE): go-fuse registers it as a new
// node, whatever it knew of that inode number.
func (n *node) newCreated(ctx context.Context, name string, a *Attr, out *fuse.EntryOut) *fs.Inode {
	return n.placeChild(ctx, name, a, out, true)
}

func (n *node) placeChild(ctx context.Context, name string, a *Attr, out *fuse.EntryOut, created bool) *fs.Inode {
	n.fillEntry(a, out)
	_, in := n.newNode(ctx, fs.StableAttr{Mode: a.Mode & syscall.S_IFMT, Ino: a.Ino})
	n.displace(name, in, created)
	return in
}

// displace takes the node go-fuse has under name out of its tree when the
// reply will put another node there (in, if created; else a node of in's
// identity). go-fuse itself would only overwrite the name: the old node
// would keep it as its newest parent, and its path (pathWith) would then
// lead to the new entry. The old node is still in use when the kernel
// holds it open or by another hard link, so its xattr ops, its chmod once
// closed, would change the wrong file. The kernel no longer has it under
// this name (it asked, or created the name), so neither do we.
func (n *node) displace(name string, in *fs.Inode, created bool) {
	old := n.GetChild(name)
	if old == nil || old == in || !created && old.StableAttr() == in.StableAttr() {
		return
	}
	n.RmChild(name)
}

// fillEntry sets out to a with the configured cache timeouts.
func (n *node) fillEntry(a *Attr, out *fuse.EntryOut) {
	out.Attr = *a
	out.SetEntryTimeout(n.br.entryTimeout())
	out.SetAttrTimeout(n.br.attrTimeout())
}

// newNode makes a node for an entry of identity st. go-fuse keeps it only
// if it knows no node of that identity yet (hard links share one). Every
// node of a non-directory goes into the inode-number index (inoindex.go),
// whichever way it was made.
func (n *node) newNode(ctx context.Context, st fs.StableAttr) (*node, *fs.Inode) {
	ch := &node{br: n.br}
	in := n.NewInode(ctx, ch, st)
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		// Only now: NewInode initialises the fields the invalidator
		// reads, and the index's mutex orders those writes before it.
		n.br.links.add(st.Ino, ch)
	}
	return ch, in
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, Errno) {
	if rop, ok := n.br.replaying(ctx); ok {
		if ch, errno, handled := n.replayLookup(ctx, rop, name, out); handled {
			return ch, errno
		}
	}
	return n.lookup(ctx, n.call(ctx), name, out)
}

// lookup looks name up through the stack as c.
func (n *node) lookup(ctx context.Context, c *Call, name string, out *fuse.EntryOut) (*fs.Inode, Errno) {
	op := &LookupOp{Path: n.child(name)}
	if errno := n.br.stack.Do(c, op); errno != 0 {
		if errno == syscall.ENOENT && n.GetChild(name) != nil {
			// Gone (underneath): the kernel drops its dentry on
			// this answer, and a node it still holds by another
			// name or an open file must not keep this one for its
			// path, or it would reach the next file of that name.
			n.RmChild(name)
		}
		// A failed lookup is cached for MountOptions.NegativeTimeout by
		// go-fuse (mount.go), as long as out's timeout stays zero.
		return nil, errno
	}
	return n.newChild(ctx, name, &op.Out, out), 0
}

func handleOf(f fs.FileHandle) *Handle {
	switch h := f.(type) {
	case *fileHandle:
		return h.h
	case *ptFileHandle:
		return h.h
	case *dirHandle:
		return h.h
	}
	return nil
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) Errno {
	op, errno := n.getattr(ctx, handleOf(f), false)
	if errno != 0 {
		return errno
	}
	out.Attr = op.Out
	out.SetTimeout(n.br.attrTimeout())
	return 0
}

// Statx is getattr for a statx(2) that asked for more than stat(2) gives:
// the kernel sends it only then (it caches the rest from every other
// reply), and answers the birth time from what it caches here.
func (n *node) Statx(ctx context.Context, f fs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) Errno {
	h := handleOf(f)
	if h == nil {
		// statx(2) of an open file by fd or by /proc/self/fd comes
		// without one (for GETATTR, go-fuse lends one; here it does
		// not), and the file's name may be gone.
		var put func()
		h, put = n.borrow()
		defer put()
	}
	op, errno := n.getattr(ctx, h, true)
	if errno != 0 {
		return errno
	}
	a := &op.Out
	sx := &out.Statx
	sx.Mask = unix.STATX_BASIC_STATS
	if op.HasBirth {
		sx.Mask |= unix.STATX_BTIME
		sx.Btime = op.Birth
	}
	sx.Blksize, sx.Nlink, sx.Uid, sx.Gid = a.Blksize, a.Nlink, a.Uid, a.Gid
	sx.Mode, sx.Ino, sx.Size, sx.Blocks = uint16(a.Mode), a.Ino, a.Size, a.Blocks
	sx.Atime = fuse.SxTime{Sec: a.Atime, Nsec: a.Atimensec}
	sx.Mtime = fuse.SxTime{Sec: a.Mtime, Nsec: a.Mtimensec}
	sx.Ctime = fuse.SxTime{Sec: a.Ctime, Nsec: a.Ctimensec}
	sx.RdevMajor, sx.RdevMinor = unix.Major(uint64(a.Rdev)), unix.Minor(uint64(a.Rdev))
	out.SetTimeout(n.br.attrTimeout())
	return 0
}

// getattr runs a GetattrOp for the node, through h when not nil. When the
// path is gone but an open directory still has an fd, it runs through a
// duplicate of that: fstat(2) of it must work, as on a local file system.
func (n *node) getattr(ctx context.Context, h *Handle, birth bool) (*GetattrOp, Errno) {
	op := &GetattrOp{Node: &n.Node, Path: n.path(), Handle: h, WantBirth: birth}
	_, errno := n.do(ctx, op)
	if errno == syscall.ENOENT && op.Handle == nil {
		if h := n.dupDirHandle(); h != nil {
			defer unix.Close(h.Fd)
			op = &GetattrOp{Node: &n.Node, Path: n.path(), Handle: h, WantBirth: birth}
			_, errno = n.do(ctx, op)
		}
	}
	return op, errno
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) Errno {
	if rop, ok := n.br.replaying(ctx); ok {
		return n.replaySetattr(ctx, rop, f, out)
	}
	op := &SetattrOp{Node: &n.Node, Path: n.path(), Handle: handleOf(f), In: *in, Touch: in.Valid&SetattrChanges == 0}
	if op.Handle == nil && in.Valid&fuse.FATTR_SIZE == 0 {
		// chmod, chown or utimes of an open file or directory: through
		// one of its handles (see borrow), which still reach it when its
		// name is gone or leads to another file now. A truncate by path
		// keeps its path: filters treat a size change through a handle
		// as ftruncate.
		var put func()
		op.Handle, put = n.borrow()
		defer put()
	}
	if _, errno := n.do(ctx, op); errno != 0 {
		return errno
	}
	out.Attr = op.Out
	out.SetTimeout(n.br.attrTimeout())
	return 0
}

// borrow returns one of the node's open file or directory handles with an
// fd (nil if it has none) for an operation that arrived without a handle,
// and the function that gives it back. Until then Release and Releasedir
// cannot take the handle out of node.files or node.dirs or close its fd
// (fileUse), so the fd stays this node's. A borrow must never nest (no op
// run under one may borrow again): a second RLock waits for a Release
// that waits for the first.
func (n *node) borrow() (*Handle, func()) {
	n.fileUse.RLock()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, hs := range [][]*Handle{n.files, n.dirs} {
		for _, h := range hs {
			if h.Fd >= 0 {
				return h, n.fileUse.RUnlock
			}
		}
	}
	// Nothing to protect: let Release go ahead at once.
	n.fileUse.RUnlock()
	return nil, func() {}
}

func (n *node) Access(ctx context.Context, mask uint32) Errno {
	_, errno := n.do(ctx, &AccessOp{Node: &n.Node, Path: n.path(), Mask: mask})
	return errno
}

func (n *node) Readlink(ctx context.Context) ([]byte, Errno) {
	op := &ReadlinkOp{Node: &n.Node, Path: n.path()}
	_, errno := n.do(ctx, op)
	return op.Out, errno
}

func (n *node) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fs.Inode, Errno) {
	if rop, ok := n.br.replaying(ctx); ok {
		return n.replayCreate(ctx, rop, name, mode, out)
	}
	op := &MknodOp{Path: n.child(name), Mode: mode, Rdev: dev}
	if _, errno := n.do(ctx, op); errno != 0 {
		return nil, errno
	}
	return n.newCreated(ctx, name, &op.Out, out), 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, Errno) {
	if rop, ok := n.br.replaying(ctx); ok {
		return n.replayCreate(ctx, rop, name, syscall.S_IFDIR, out)
	}
	op := &MkdirOp{Path: n.child(name), Mode: mode}
	if _, errno := n.do(ctx, op); errno != 0 {
		return nil, errno
	}
	return n.newCreated(ctx, name, &op.Out, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, Errno) {
	if rop, ok := n.br.replaying(ctx); ok {
		return n.replayCreate(ctx, rop, name, syscall.S_IFLNK, out)
	}
	op := &SymlinkOp{Path: n.child(name), Target: target}
	if _, errno := n.do(ctx, op); errno != 0 {
		return nil, errno
	}
	return n.newCreated(ctx, name, &op.Out, out), 0
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, Errno) {
	if _, ok := n.br.replaying(ctx); ok {
		return nil, syscall.EPERM
	}
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	op := &LinkOp{Node: &t.Node, OldPath: t.path(), NewPath: n.child(name)}
	if Unreachable(op.OldPath) {
		// A file without a name in the tree: an O_TMPFILE file given
		// one, or a file replaced underneath that still has links
		// below (the kernel refuses files whose link count is 0 and
		// that are not O_TMPFILE ones), linked through its fd.
		var put func()
		op.Handle, put = t.borrow()
		defer put()
		if op.Handle == nil {
			return nil, syscall.ENOENT
		}
	}
	if _, errno := n.do(ctx, op); errno != 0 {
		return nil, errno
	}
	return n.newChild(ctx, name, &op.Out, out), 0
}

func (n *node) Unlink(ctx context.Context, name string) Errno {
	if rop, ok := n.br.replaying(ctx); ok {
		return replayAck(rop, kindsRemove, n.child(name))
	}
	_, errno := n.do(ctx, &UnlinkOp{Path: n.child(name)})
	return errno
}

func (n *node) Rmdir(ctx context.Context, name string) Errno {
	if rop, ok := n.br.replaying(ctx); ok {
		return replayAck(rop, kindsRemove, n.child(name))
	}
	_, errno := n.do(ctx, &RmdirOp{Path: n.child(name)})
	return errno
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if rop, ok := n.br.replaying(ctx); ok {
		if flags != 0 {
			return syscall.EPERM
		}
		return replayAck(rop, kindsRename, n.child(name), np.child(newName))
	}
	_, errno := n.do(ctx, &RenameOp{OldPath: n.child(name), NewPath: np.child(newName), Flags: flags})
	return errno
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, Errno) {
	if _, ok := n.br.replaying(ctx); ok {
		return nil, nil, 0, syscall.EPERM
	}
	op := &CreateOp{Path: n.child(name), Flags: flags, Mode: mode}
	c, errno := n.do(ctx, op)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	ch := n.newCreated(ctx, name, &op.Out, out)
	fh, fflags, errno := ch.Operations().(*node).adopt(c, op.Handle)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, fh, fflags, 0
}

func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, Errno) {
	if _, ok := n.br.replaying(ctx); ok {
		return nil, nil, 0, syscall.EPERM
	}
	op := &TmpfileOp{Path: n.path(), Flags: flags, Mode: mode}
	c, errno := n.do(ctx, op)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	out.Attr = op.Out
	out.SetEntryTimeout(n.br.entryTimeout())
	out.SetAttrTimeout(n.br.attrTimeout())
	ch, ino := n.newNode(ctx, fs.StableAttr{Mode: syscall.S_IFREG, Ino: op.Out.Ino})
	fh, fflags, errno := ch.adopt(c, op.Handle)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ino, fh, fflags, 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, Errno) {
	if _, ok := n.br.replaying(ctx); ok {
		return nil, 0, syscall.EPERM
	}
	op := &OpenOp{Node: &n.Node, Path: n.path(), Flags: flags}
	c, errno := n.do(ctx, op)
	if errno != 0 {
		return nil, 0, errno
	}
	return n.adopt(c, op.Handle)
}

// adopt wraps a handle from Open/Create in the go-fuse file type that
// matches the inode's mode (see node.ptOpen).
func (n *node) adopt(c *Call, h *Handle) (fs.FileHandle, uint32, Errno) {
	if h == nil {
		return nil, 0, syscall.EIO
	}
	var fflags uint32
	if h.KeepCache {
		fflags |= fuse.FOPEN_KEEP_CACHE
	}
	if h.DirectIO {
		fflags |= fuse.FOPEN_DIRECT_IO
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	pt := h.Passthrough && h.Fd >= 0 && n.daemonOpen == 0 && !h.DirectIO
	if !pt && n.ptOpen > 0 {
		// A filter needs to see this file's I/O but the kernel has it
		// open in passthrough mode; mixing would give EIO on the next
		// read. Refuse clearly instead.
		n.br.log.Warn("open refused: file is open in passthrough mode", "path", n.path())
		n.br.stack.Do(InternalCall(c.Context), &ReleaseOp{Handle: h})
		return nil, 0, syscall.EBUSY
	}
	fh := &fileHandle{n: n, h: h, pt: pt}
	n.files = append(n.files, h)
	if pt {
		n.ptOpen++
		return &ptFileHandle{fileHandle: fh}, fflags, 0
	}
	n.daemonOpen++
	return fh, fflags, 0
}

// dupDirHandle returns a handle on a duplicate of the fd of one of the
// node's open directories, or nil. The duplicate is taken under n.mu, and
// Releasedir drops its handle from n.dirs under n.mu before closing it, so
// the fd cannot be closed (or reused for another file) under us.
func (n *node) dupDirHandle() *Handle {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, h := range n.dirs {
		if h.Fd < 0 {
			continue
		}
		fd, err := unix.Dup(h.Fd)
		if err != nil {
			return nil
		}
		return NewHandle(fd, h.Flags)
	}
	return nil
}

// OpendirHandle opens the directory below as well, so the open directory
// keeps an fd: fstat and fsync on it work after it was renamed or removed.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, Errno) {
	op := &OpenOp{Node: &n.Node, Path: n.path(), Flags: syscall.O_RDONLY | syscall.O_DIRECTORY}
	if _, errno := n.do(ctx, op); errno != 0 {
		return nil, 0, errno
	}
	n.mu.Lock()
	n.dirs = append(n.dirs, op.Handle)
	n.mu.Unlock()
	var fflags uint32
	if n.br.cacheDir.Load() {
		fflags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	}
	return &dirHandle{n: n, h: op.Handle}, fflags, 0
}

// dirHandle is an open directory: a listing taken through the stack on the
// first read (and again on rewinddir), plus the handle from the stack.
type dirHandle struct {
	n  *node
	h  *Handle
	mu sync.Mutex
	ds fs.DirStream
	// scope is the lookup scope of the READDIRPLUS request being served
	// (or last served): its lookups share one resolution of the
	// directory at the bottom.
	scope *lookupScope
}

var (
	_ fs.FileLookuper     = (*dirHandle)(nil)
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileReleasedirer = (*dirHandle)(nil)
	_ fs.FileFsyncdirer   = (*dirHandle)(nil)
)

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ds == nil {
		ds, errno := d.n.readdir(ctx, d.h)
		if errno != 0 {
			return nil, errno
		}
		d.ds = ds
	}
	if !d.ds.HasNext() {
		return nil, 0
	}
	e, errno := d.ds.Next()
	return &e, errno
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off == 0 || d.ds == nil {
		// rewinddir must show entries created since the first read.
		ds, errno := d.n.readdir(ctx, d.h)
		if errno != 0 {
			return errno
		}
		d.ds = ds
		if off == 0 {
			return 0
		}
	}
	if sd, ok := d.ds.(fs.FileSeekdirer); ok {
		return sd.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) Errno {
	_, errno := d.n.do(ctx, &FsyncOp{Handle: d.h, Flags: flags})
	return errno
}

// Lookup implements fs.FileLookuper: go-fuse calls it, instead of the
// node's Lookup, for every entry it puts in a READDIRPLUS reply, one after
// the other and all with the request's context. The lookups of one request
// run in one lookupScope, so the bottom layer resolves the directory once
// per request instead of once per entry.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, Errno) {
	n := d.n
	if _, ok := n.br.replaying(ctx); ok {
		return n.Lookup(ctx, name, out)
	}
	d.mu.Lock()
	s := d.scope
	if s == nil || s.Context != ctx {
		// A new request: the previous one is over.
		s.end()
		s = newLookupScope(ctx)
		d.scope = s
	}
	d.mu.Unlock()
	c := n.call(ctx)
	c.Context = s
	s.begin()
	defer s.finish()
	return n.lookup(ctx, c, name, out)
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	d.mu.Lock()
	d.scope.end()
	d.scope = nil
	d.mu.Unlock()
	d.n.fileUse.Lock() // see borrow
	d.n.mu.Lock()
	d.n.dirs = slices.DeleteFunc(d.n.dirs, func(h *Handle) bool { return h == d.h })
	d.n.mu.Unlock()
	d.n.fileUse.Unlock()
	d.n.do(ctx, &ReleaseOp{Handle: d.h})
}

// Readdir implements fs.NodeReaddirer for go-fuse's callers without an
// open directory; opendir(3) streams use their handle (dirHandle).
func (n *node) Readdir(ctx context.Context) (fs.DirStream, Errno) { return n.readdir(ctx, nil) }

// readdir lists the directory through the stack: the open directory h when
// it is set, else the one at the node's path.
func (n *node) readdir(ctx context.Context, h *Handle) (fs.DirStream, Errno) {
	op := &ReaddirOp{Node: &n.Node, Path: n.path(), Handle: h}
	if _, errno := n.do(ctx, op); errno != 0 {
		return nil, errno
	}
	// "." and "..", as a local file system lists them. Filters never see
	// them: they are not entries anyone can hide or rename.
	ents := make([]fuse.DirEntry, 0, len(op.Entries)+2)
	parent := n.EmbeddedInode()
	if _, p := n.Parent(); p != nil {
		parent = p
	}
	ents = append(ents,
		fuse.DirEntry{Name: ".", Ino: n.StableAttr().Ino, Mode: syscall.S_IFDIR},
		fuse.DirEntry{Name: "..", Ino: parent.StableAttr().Ino, Mode: syscall.S_IFDIR})
	for _, e := range op.Entries {
		ents = append(ents, fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: e.Mode})
	}
	return fs.NewListDirStream(ents), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) Errno {
	op := &StatfsOp{Path: n.path()}
	_, errno := n.do(ctx, op)
	*out = op.Out
	return errno
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, Errno) {
	// Through a handle also because the kernel asks for
	// security.capability before the first write to a file and before a
	// chown of it (to know whether to drop it), and never caches the
	// answer: tar pays two per file it extracts, while the file is open.
	// Through one of its handles, the answer needs no path resolution
	// below.
	var op *GetxattrOp
	errno := n.viaHandle(ctx, func(h *Handle) Op {
		op = &GetxattrOp{Node: &n.Node, Path: n.path(), Handle: h, Name: attr, Dest: dest}
		return op
	})
	if errno == syscall.ENODATA && attr == selinuxXattr && !selinuxEnabled {
		// `ls -l` asks every file for its SELinux label, and the kernel
		// never caches a FUSE file system's answer: one round trip per
		// entry, the whole cost of a warm `ls -lR`. On a host without
		// SELinux no label means anything; "not supported" is the truth
		// there, and ls (and libselinux users) then stop asking for the
		// rest of the device. Labels that do exist are still returned.
		return 0, syscall.EOPNOTSUPP
	}
	return op.Size, errno
}

// selinuxXattr is the attribute that holds a file's SELinux label.
const selinuxXattr = "security.selinux"

// selinuxEnabled reports whether this host runs SELinux (selinuxfs is
// mounted), decided once.
var selinuxEnabled = func() bool {
	_, err := os.Stat("/sys/fs/selinux/enforce")
	return err == nil
}()

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) Errno {
	if rop, ok := n.br.replaying(ctx); ok {
		return replayAck(rop, kindsAttrib, n.path())
	}
	return n.viaHandle(ctx, func(h *Handle) Op {
		return &SetxattrOp{Node: &n.Node, Path: n.path(), Handle: h, Name: attr, Data: data, Flags: flags}
	})
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, Errno) {
	var op *ListxattrOp
	errno := n.viaHandle(ctx, func(h *Handle) Op {
		op = &ListxattrOp{Node: &n.Node, Path: n.path(), Handle: h, Dest: dest}
		return op
	})
	return op.Size, errno
}

func (n *node) Removexattr(ctx context.Context, attr string) Errno {
	if rop, ok := n.br.replaying(ctx); ok {
		return replayAck(rop, kindsAttrib, n.path())
	}
	return n.viaHandle(ctx, func(h *Handle) Op {
		return &RemovexattrOp{Node: &n.Node, Path: n.path(), Handle: h, Name: attr}
	})
}

// Ioctl serves the inode-flag ioctls of chattr(1) and lsattr(1) (see
// IoctlOp), which the kernel sends on a file or directory it opens for
// them. Every other command gets ENOTTY without reaching the stack.
func (n *node) Ioctl(ctx context.Context, f fs.FileHandle, cmd uint32, arg uint64, input []byte, output []byte) (int32, Errno) {
	size := IoctlArgSize(cmd)
	h := handleOf(f)
	if size == 0 || h == nil {
		return 0, syscall.ENOTTY
	}
	op := &IoctlOp{Handle: h, Cmd: cmd, Arg: make([]byte, size)}
	get := cmd == FsIocGetflags || cmd == FsIocFsgetxattr
	if !get {
		if len(input) < size {
			return 0, syscall.EINVAL
		}
		copy(op.Arg, input)
	}
	if _, errno := n.do(ctx, op); errno != 0 {
		return 0, errno
	}
	if get {
		copy(output, op.Arg)
	} else {
		// The change moved the ctime; the kernel would show its
		// cached one until the attributes time out.
		n.NotifyContent(-1, 0)
	}
	return 0, 0
}

// viaHandle runs the op mk makes (an xattr op) through one of the node's
// open handles when it has one (see borrow; the kernel sends these ops
// without a handle), so that fgetxattr(2) and the like on an open file or
// directory work after its name is gone, unlinked or replaced, as on a
// local file system, where the op's path no longer leads to it (or leads
// to another file).
func (n *node) viaHandle(ctx context.Context, mk func(*Handle) Op) Errno {
	h, put := n.borrow()
	defer put()
	_, errno := n.do(ctx, mk(h))
	return errno
}

func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, len uint64, flags uint64) (uint32, Errno) {
	in, o := handleOf(fhIn), handleOf(fhOut)
	if in == nil || o == nil {
		return 0, syscall.EBADF
	}
	op := &CopyFileRangeOp{In: in, OffIn: offIn, Out: o, OffOut: offOut, Len: len, Flags: flags}
	_, errno := n.do(ctx, op)
	return op.Copied, errno
}

// fileHandle is an open file whose reads and writes go through the stack.
type fileHandle struct {
	n  *node
	h  *Handle
	pt bool
}

// ptFileHandle is an open file the kernel reads and writes directly (FUSE
// passthrough). It must be a distinct type: go-fuse registers a backing
// file for every handle that has a PassthroughFd method.
type ptFileHandle struct {
	*fileHandle
}

// PassthroughFd implements fs.FilePassthroughFder.
func (f *ptFileHandle) PassthroughFd() (int, bool) { return f.h.Fd, f.h.Fd >= 0 }

var (
	_ fs.FileReader          = (*fileHandle)(nil)
	_ fs.FileWriter          = (*fileHandle)(nil)
	_ fs.FileFlusher         = (*fileHandle)(nil)
	_ fs.FileFsyncer         = (*fileHandle)(nil)
	_ fs.FileReleaser        = (*fileHandle)(nil)
	_ fs.FileLseeker         = (*fileHandle)(nil)
	_ fs.FileAllocater       = (*fileHandle)(nil)
	_ fs.FileGetlker         = (*fileHandle)(nil)
	_ fs.FileSetlker         = (*fileHandle)(nil)
	_ fs.FileSetlkwer        = (*fileHandle)(nil)
	_ fs.FilePassthroughFder = (*ptFileHandle)(nil)
)

func (f *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, Errno) {
	op := &ReadOp{Handle: f.h, Off: off, Dest: dest}
	_, errno := f.n.do(ctx, op)
	return op.Out, errno
}

func (f *fileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, Errno) {
	op := &WriteOp{Handle: f.h, Off: off, Data: data}
	_, errno := f.n.do(ctx, op)
	return op.Written, errno
}

func (f *fileHandle) Flush(ctx context.Context) Errno {
	_, errno := f.n.do(ctx, &FlushOp{Handle: f.h})
	return errno
}

func (f *fileHandle) Fsync(ctx context.Context, flags uint32) Errno {
	_, errno := f.n.do(ctx, &FsyncOp{Handle: f.h, Flags: flags})
	return errno
}

func (f *fileHandle) Release(ctx context.Context) Errno {
	f.n.fileUse.Lock()
	f.n.mu.Lock()
	f.n.files = slices.DeleteFunc(f.n.files, func(h *Handle) bool { return h == f.h })
	f.n.mu.Unlock()
	f.n.fileUse.Unlock()
	_, errno := f.n.do(ctx, &ReleaseOp{Handle: f.h})
	f.n.mu.Lock()
	if f.pt {
		f.n.ptOpen--
	} else {
		f.n.daemonOpen--
	}
	f.n.mu.Unlock()
	return errno
}

func (f *fileHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, Errno) {
	op := &LseekOp{Handle: f.h, Off: off, Whence: whence}
	_, errno := f.n.do(ctx, op)
	return op.Out, errno
}

func (f *fileHandle) Allocate(ctx context.Context, off, size uint64, mode uint32) Errno {
	_, errno := f.n.do(ctx, &AllocateOp{Handle: f.h, Off: off, Size: size, Mode: mode})
	return errno
}

func (f *fileHandle) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) Errno {
	op := &GetlkOp{Handle: f.h, Owner: owner, Lk: *lk, Flags: flags}
	_, errno := f.n.do(ctx, op)
	*out = op.Out
	return errno
}

func (f *fileHandle) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) Errno {
	_, errno := f.n.do(ctx, &SetlkOp{Handle: f.h, Owner: owner, Lk: *lk, Flags: flags})
	return errno
}

func (f *fileHandle) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) Errno {
	_, errno := f.n.do(ctx, &SetlkOp{Handle: f.h, Owner: owner, Lk: *lk, Flags: flags, Wait: true})
	return errno
}
