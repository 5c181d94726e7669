package namespace

import (
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/vfsfilter/vfsfilter/layer"
)

// Filter is the namespace filter: it hides entries, shows backing entries
// under other names, injects read-only virtual files and grafts other real
// directories (binds). Every path-carrying op resolves its path through the
// same Map, so a listing, a lookup, an open and a rename always agree.
//
// Ops on ordinary entries are rewritten in place and continue down the
// stack; ops on virtual files are completed here; ops inside a bind are
// completed by sending them to the bind's own passthrough.
type Filter struct {
	m     *Map
	att   *layer.Attachment
	binds map[*BindDir]*layer.Stack
	born  time.Time
}

// New returns a namespace filter for m.
func New(m *Map) (*Filter, error) {
	return &Filter{m: m, binds: map[*BindDir]*layer.Stack{}, born: time.Now()}, nil
}

// Name implements layer.Filter.
func (f *Filter) Name() string { return "namespace" }

// Altitude implements layer.Filter.
func (f *Filter) Altitude() int { return layer.AltitudeNamespace }

// Close releases the binds' backing directories.
func (f *Filter) Close() error {
	for _, st := range f.binds {
		st.Close()
	}
	return nil
}

// Attach implements layer.Filter.
func (f *Filter) Attach(a *layer.Attachment) error {
	f.att = a
	for _, b := range f.m.Binds() {
		pt, err := layer.NewPassthrough(b.Source)
		if err != nil {
			return fmt.Errorf("bind %s: %w", b.Path, err)
		}
		pt.MixDevice()
		st, err := layer.NewStack(a.Log.With("bind", b.Path), pt)
		if err != nil {
			return err
		}
		f.binds[b] = st
	}
	layer.OnPre(a, f.lookup)
	layer.OnPre(a, onHandle(f, func(op *layer.GetattrOp) *layer.Handle { return op.Handle }, f.getattr))
	layer.OnPre(a, onHandle(f, func(op *layer.SetattrOp) *layer.Handle { return op.Handle }, f.setattr))
	layer.OnPre(a, f.access)
	layer.OnPre(a, f.readlink)
	layer.OnPre(a, f.mknod)
	layer.OnPre(a, f.mkdir)
	layer.OnPre(a, f.symlink)
	layer.OnPre(a, f.link)
	layer.OnPre(a, f.unlink)
	layer.OnPre(a, f.rmdir)
	layer.OnPre(a, f.rename)
	layer.OnPre(a, f.create)
	layer.OnPre(a, f.tmpfile)
	layer.OnPre(a, f.open)
	layer.OnPre(a, f.readdir)
	layer.OnPre(a, f.statfs)
	layer.OnPre(a, onHandle(f, func(op *layer.GetxattrOp) *layer.Handle { return op.Handle }, f.getxattr))
	layer.OnPre(a, onHandle(f, func(op *layer.SetxattrOp) *layer.Handle { return op.Handle }, f.setxattr))
	layer.OnPre(a, onHandle(f, func(op *layer.ListxattrOp) *layer.Handle { return op.Handle }, f.listxattr))
	layer.OnPre(a, onHandle(f, func(op *layer.RemovexattrOp) *layer.Handle { return op.Handle }, f.removexattr))
	// Handle ops matter only for virtual files, which have no fd.
	layer.OnPre(a, onHandle(f, func(op *layer.ReadOp) *layer.Handle { return op.Handle }, f.read))
	layer.OnPre(a, onHandle(f, func(op *layer.WriteOp) *layer.Handle { return op.Handle }, f.write))
	layer.OnPre(a, onHandle(f, func(op *layer.ReleaseOp) *layer.Handle { return op.Handle }, f.release))
	layer.OnPre(a, onHandle(f, func(op *layer.FlushOp) *layer.Handle { return op.Handle }, f.flush))
	layer.OnPre(a, onHandle(f, func(op *layer.FsyncOp) *layer.Handle { return op.Handle }, f.fsync))
	layer.OnPre(a, onHandle(f, func(op *layer.LseekOp) *layer.Handle { return op.Handle }, nil))
	layer.OnPre(a, onHandle(f, func(op *layer.AllocateOp) *layer.Handle { return op.Handle }, nil))
	layer.OnPre(a, onHandle(f, func(op *layer.GetlkOp) *layer.Handle { return op.Handle }, nil))
	layer.OnPre(a, onHandle(f, func(op *layer.SetlkOp) *layer.Handle { return op.Handle }, nil))
	layer.OnPre(a, onHandle(f, func(op *layer.IoctlOp) *layer.Handle { return op.Handle }, nil))
	return nil
}

// FilterEvent implements layer.EventFilter: events come up in backing names
// and leave in visible names; events about hidden entries are dropped.
func (f *Filter) FilterEvent(ev *layer.Event) bool {
	p, ok := f.m.VisiblePath(ev.Path)
	if !ok {
		return false
	}
	ev.Path = p
	if ev.Kind == layer.EventRename {
		old, ok := f.m.VisiblePath(ev.OldPath)
		if !ok {
			// Renamed from a hidden name: to users it appears.
			ev.Kind, ev.OldPath = layer.EventCreate, ""
		} else {
			ev.OldPath = old
		}
	}
	return true
}

var (
	done     = layer.Complete
	cont     = layer.ContinueNoPost
	enoent   = layer.Errno(syscall.ENOENT)
	eperm    = layer.Errno(syscall.EPERM)
	erofs    = layer.Errno(syscall.EROFS)
	eexist   = layer.Errno(syscall.EEXIST)
	exdev    = layer.Errno(syscall.EXDEV)
	ebusy    = layer.Errno(syscall.EBUSY)
	enodata  = layer.Errno(syscall.ENODATA)
	einval   = layer.Errno(syscall.EINVAL)
	success  = layer.Errno(0)
	creating = true
	existing = false
)

// route resolves *path and decides what happens to an op on it: for a
// backing entry the path is rewritten and the op continues; for a bind the
// op is sent to the bind and completed with its result; hidden entries
// give ENOENT (or EPERM when the op would create the entry). Virtual files
// are handled by the caller (virt is non-nil).
func (f *Filter) route(c *layer.Call, op layer.Op, path *string, create bool) (st layer.Status, errno layer.Errno, virt *VirtualFile) {
	t := f.m.Resolve(*path)
	switch t.Kind {
	case Hidden:
		if f.belowVirtual(*path) {
			// As below any regular file.
			return done, layer.Errno(syscall.ENOTDIR), nil
		}
		if create {
			return done, eperm, nil
		}
		return done, enoent, nil
	case Virtual:
		return done, 0, t.Virtual
	case Bind:
		*path = t.Backing
		return done, f.binds[t.Bind].Do(c, op), nil
	}
	*path = t.Backing
	return cont, 0, nil
}

// belowVirtual reports whether an ancestor of p is a virtual file. It runs
// only for paths that resolved as hidden, so it costs nothing on the common
// path.
func (f *Filter) belowVirtual(p string) bool {
	for i := strings.LastIndexByte(p, '/'); i > 0; i = strings.LastIndexByte(p[:i], '/') {
		if f.m.Resolve(p[:i]).Kind == Virtual {
			return true
		}
	}
	return false
}

func (f *Filter) virtAttr(v *VirtualFile, out *layer.Attr) {
	t := uint64(f.born.Unix())
	*out = layer.Attr{
		Ino:     v.Ino,
		Size:    uint64(len(v.Content)),
		Blocks:  (uint64(len(v.Content)) + 511) / 512,
		Atime:   t,
		Mtime:   t,
		Ctime:   t,
		Mode:    syscall.S_IFREG | v.Mode,
		Nlink:   1,
		Blksize: 4096,
	}
}

func (f *Filter) lookup(c *layer.Call, op *layer.LookupOp) (layer.Status, layer.Errno) {
	st, errno, v := f.route(c, op, &op.Path, existing)
	if v != nil {
		f.virtAttr(v, &op.Out)
	}
	return st, errno
}

func (f *Filter) getattr(c *layer.Call, op *layer.GetattrOp) (layer.Status, layer.Errno) {
	if op.Handle != nil && op.Handle.Fd >= 0 {
		// fstat of an open file works even after a rename or unlink.
		return cont, 0
	}
	st, errno, v := f.route(c, op, &op.Path, existing)
	if v != nil {
		f.virtAttr(v, &op.Out)
	}
	return st, errno
}

func (f *Filter) setattr(c *layer.Call, op *layer.SetattrOp) (layer.Status, layer.Errno) {
	if f.vhandle(op.Handle) != nil {
		return done, erofs
	}
	st, errno, v := f.routeOpen(c, op, &op.Path, op.Handle)
	if v != nil {
		return done, erofs
	}
	return st, errno
}

func (f *Filter) access(c *layer.Call, op *layer.AccessOp) (layer.Status, layer.Errno) {
	st, errno, v := f.route(c, op, &op.Path, existing)
	if v != nil {
		if op.Mask&2 != 0 {
			return done, erofs
		}
		var a layer.Attr
		f.virtAttr(v, &a)
		return done, layer.ToErrno(layer.CheckAccess(&a, c.Uid, c.Gid, op.Mask))
	}
	return st, errno
}

func (f *Filter) readlink(c *layer.Call, op *layer.ReadlinkOp) (layer.Status, layer.Errno) {
	st, errno, v := f.route(c, op, &op.Path, existing)
	if v != nil {
		return done, einval
	}
	return st, errno
}

// createAt is the shared pre-callback of ops that make a new entry.
func (f *Filter) createAt(c *layer.Call, op layer.Op, path *string) (layer.Status, layer.Errno) {
	st, errno, v := f.route(c, op, path, creating)
	if v != nil {
		return done, eexist
	}
	return st, errno
}

// bindFile is the handle context of an open file or directory of a bind:
// every op on it goes to the bind's stack (onHandle), whatever its path
// says. The filters below this one would otherwise take the bind's plain
// file for one of theirs: crypt would shrink its size by a header and
// tags it does not have, and encrypt the extended attributes set through
// it.
type bindFile struct{ bind *BindDir }

// bindAt returns the bind that the visible path p is in, or nil.
func (f *Filter) bindAt(p string) *BindDir {
	if len(f.binds) == 0 {
		return nil
	}
	if t := f.m.Resolve(p); t.Kind == Bind {
		return t.Bind
	}
	return nil
}

// markBind records that h, opened at a path in bind b (nil: none), is the
// bind's.
func (f *Filter) markBind(b *BindDir, h *layer.Handle, errno layer.Errno) {
	if b != nil && errno == 0 && h != nil {
		f.att.SetHandleContext(h, bindFile{b})
	}
}

// onHandle wraps next, the pre-callback of an op on an open file (nil:
// pass it on), so that an op on a bind's file goes to the bind's stack.
func onHandle[O layer.Op](f *Filter, handle func(O) *layer.Handle, next layer.PreFunc[O]) layer.PreFunc[O] {
	return func(c *layer.Call, op O) (layer.Status, layer.Errno) {
		if h := handle(op); h != nil && len(f.binds) > 0 {
			if b, ok := f.att.HandleContext(h).(bindFile); ok {
				return done, f.binds[b.bind].Do(c, op)
			}
		}
		if next == nil {
			return cont, 0
		}
		return next(c, op)
	}
}

func (f *Filter) mknod(c *layer.Call, op *layer.MknodOp) (layer.Status, layer.Errno) {
	return f.createAt(c, op, &op.Path)
}

func (f *Filter) mkdir(c *layer.Call, op *layer.MkdirOp) (layer.Status, layer.Errno) {
	return f.createAt(c, op, &op.Path)
}

func (f *Filter) symlink(c *layer.Call, op *layer.SymlinkOp) (layer.Status, layer.Errno) {
	return f.createAt(c, op, &op.Path)
}

func (f *Filter) create(c *layer.Call, op *layer.CreateOp) (layer.Status, layer.Errno) {
	b := f.bindAt(op.Path)
	st, errno := f.createAt(c, op, &op.Path)
	f.markBind(b, op.Handle, errno)
	return st, errno
}

// removeAt is the shared pre-callback of unlink and rmdir.
func (f *Filter) removeAt(c *layer.Call, op layer.Op, path *string) (layer.Status, layer.Errno) {
	t := f.m.Resolve(*path)
	if t.Kind == Bind && t.Backing == "" {
		return done, ebusy // the root of a bind is a mountpoint to users
	}
	st, errno, v := f.route(c, op, path, existing)
	if v != nil {
		return done, erofs
	}
	return st, errno
}

func (f *Filter) unlink(c *layer.Call, op *layer.UnlinkOp) (layer.Status, layer.Errno) {
	return f.removeAt(c, op, &op.Path)
}

func (f *Filter) rmdir(c *layer.Call, op *layer.RmdirOp) (layer.Status, layer.Errno) {
	if len(f.m.Injected(op.Path)) > 0 {
		// Users see the virtual files and binds in it: not empty.
		return done, layer.Errno(syscall.ENOTEMPTY)
	}
	return f.removeAt(c, op, &op.Path)
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// twoPaths resolves the two paths of a link or rename. Both must be
// ordinary entries, or both inside the same bind; anything else crosses a
// device boundary as users see it (EXDEV), or touches a virtual file.
func (f *Filter) twoPaths(c *layer.Call, op layer.Op, from, to *string) (layer.Status, layer.Errno) {
	src, dst := f.m.Resolve(*from), f.m.Resolve(*to)
	switch {
	case src.Kind == Hidden:
		return done, enoent
	case dst.Kind == Hidden:
		return done, eperm
	case src.Kind == Virtual || dst.Kind == Virtual:
		return done, erofs
	case src.Kind == Bind && src.Backing == "", dst.Kind == Bind && dst.Backing == "":
		return done, ebusy
	case src.Kind != dst.Kind, src.Kind == Bind && src.Bind != dst.Bind:
		return done, exdev
	}
	*from, *to = src.Backing, dst.Backing
	if src.Kind == Bind {
		return done, f.binds[src.Bind].Do(c, op)
	}
	return cont, 0
}

func (f *Filter) link(c *layer.Call, op *layer.LinkOp) (layer.Status, layer.Errno) {
	if op.Handle != nil && layer.Unreachable(op.OldPath) {
		// An O_TMPFILE file given its name: where it was made (a
		// bind, or the rest of the mount) says where it may go.
		var bind *BindDir
		if b, ok := f.att.HandleContext(op.Handle).(bindFile); ok {
			bind = b.bind
		}
		dst := f.m.Resolve(op.NewPath)
		switch {
		case dst.Kind == Hidden:
			return done, eperm
		case dst.Kind == Virtual, dst.Kind == Bind && dst.Backing == "":
			return done, eexist
		case dst.Kind == Bind && dst.Bind != bind, dst.Kind != Bind && bind != nil:
			return done, exdev
		}
		op.NewPath = dst.Backing
		if bind != nil {
			return done, f.binds[bind].Do(c, op)
		}
		return cont, 0
	}
	return f.twoPaths(c, op, &op.OldPath, &op.NewPath)
}

func (f *Filter) rename(c *layer.Call, op *layer.RenameOp) (layer.Status, layer.Errno) {
	// Virtual files and binds are rules about visible paths: a directory
	// holding one cannot move (or be replaced) without leaving it behind,
	// and open files below it would end up under a bind's name. As
	// rename(2) of a mountpoint, that is EBUSY.
	if f.m.HoldsInjected(op.OldPath) || f.m.HoldsInjected(op.NewPath) {
		return done, ebusy
	}
	return f.twoPaths(c, op, &op.OldPath, &op.NewPath)
}

// tmpfile routes O_TMPFILE by its directory: in a bind, the bind's;
// hidden, no such directory; a virtual file, no directory at all.
func (f *Filter) tmpfile(c *layer.Call, op *layer.TmpfileOp) (layer.Status, layer.Errno) {
	b := f.bindAt(op.Path)
	st, errno, v := f.route(c, op, &op.Path, existing)
	if v != nil {
		return done, layer.Errno(syscall.ENOTDIR)
	}
	f.markBind(b, op.Handle, errno)
	return st, errno
}

func (f *Filter) open(c *layer.Call, op *layer.OpenOp) (layer.Status, layer.Errno) {
	b := f.bindAt(op.Path)
	st, errno, v := f.route(c, op, &op.Path, existing)
	if v == nil {
		f.markBind(b, op.Handle, errno)
		return st, errno
	}
	if op.Flags&syscall.O_ACCMODE != syscall.O_RDONLY || op.Flags&syscall.O_TRUNC != 0 {
		return done, erofs
	}
	h := layer.NewHandle(-1, op.Flags)
	h.KeepCache = true // the content never changes while mounted
	f.att.SetHandleContext(h, v)
	op.Handle = h
	return done, success
}

func (f *Filter) vhandle(h *layer.Handle) *VirtualFile {
	if h == nil || h.Fd >= 0 {
		return nil
	}
	v, _ := f.att.HandleContext(h).(*VirtualFile)
	return v
}

func (f *Filter) read(c *layer.Call, op *layer.ReadOp) (layer.Status, layer.Errno) {
	v := f.vhandle(op.Handle)
	if v == nil {
		return cont, 0
	}
	var n int
	if op.Off < int64(len(v.Content)) {
		n = copy(op.Dest, v.Content[op.Off:])
	}
	op.Out = fuse.ReadResultData(op.Dest[:n])
	return done, success
}

func (f *Filter) write(c *layer.Call, op *layer.WriteOp) (layer.Status, layer.Errno) {
	if f.vhandle(op.Handle) != nil {
		return done, erofs
	}
	return cont, 0
}

// handleNoop completes flush, fsync and release of virtual files: there is
// nothing below them to flush or close.
func (f *Filter) handleNoop(h *layer.Handle) (layer.Status, layer.Errno) {
	if f.vhandle(h) != nil {
		return done, success
	}
	return cont, 0
}

func (f *Filter) release(c *layer.Call, op *layer.ReleaseOp) (layer.Status, layer.Errno) {
	return f.handleNoop(op.Handle)
}

func (f *Filter) flush(c *layer.Call, op *layer.FlushOp) (layer.Status, layer.Errno) {
	return f.handleNoop(op.Handle)
}

func (f *Filter) fsync(c *layer.Call, op *layer.FsyncOp) (layer.Status, layer.Errno) {
	return f.handleNoop(op.Handle)
}

// readdir lists the backing directory, then rewrites the listing: hidden
// entries dropped, renamed entries under their visible names, virtual files
// and bind roots added.
func (f *Filter) readdir(c *layer.Call, op *layer.ReaddirOp) (layer.Status, layer.Errno) {
	visDir := op.Path
	t := f.m.Resolve(visDir)
	var errno layer.Errno
	switch t.Kind {
	case Hidden:
		return done, enoent
	case Virtual:
		return done, layer.Errno(syscall.ENOTDIR)
	case Bind:
		sub := &layer.ReaddirOp{Node: op.Node, Path: t.Backing, Handle: op.Handle}
		if errno = f.binds[t.Bind].Do(c, sub); errno != 0 {
			return done, errno
		}
		// Names inside a bind are not renamed (rename rules speak of
		// the backing tree), but hide patterns apply, as they do to
		// lookups there.
		ents := sub.Entries[:0]
		for _, e := range sub.Entries {
			if f.m.Resolve(join(visDir, e.Name)).Kind != Hidden {
				ents = append(ents, e)
			}
		}
		op.Entries = ents
		return done, success
	}
	sub := &layer.ReaddirOp{Node: op.Node, Path: t.Backing, Handle: op.Handle, Entries: op.Entries}
	if errno = f.att.Below.Do(c, sub); errno != 0 {
		return done, errno
	}
	ents := sub.Entries[:0]
	for _, e := range sub.Entries {
		name, ok := f.m.VisibleName(visDir, e.Name)
		if !ok {
			continue
		}
		e.Name = name
		ents = append(ents, e)
	}
	for _, inj := range f.m.Injected(visDir) {
		switch {
		case inj.Virtual != nil:
			ents = append(ents, layer.DirEntry{Name: inj.Name, Ino: inj.Virtual.Ino, Mode: syscall.S_IFREG})
		case inj.Bind != nil:
			lk := &layer.LookupOp{Path: ""}
			if f.binds[inj.Bind].Do(c, lk) == 0 {
				ents = append(ents, layer.DirEntry{Name: inj.Name, Ino: lk.Out.Ino, Mode: syscall.S_IFDIR})
			}
		}
	}
	op.Entries = ents
	return done, success
}

func (f *Filter) statfs(c *layer.Call, op *layer.StatfsOp) (layer.Status, layer.Errno) {
	st, errno, v := f.route(c, op, &op.Path, existing)
	if v != nil {
		return cont, 0 // the file system the virtual file lives in
	}
	return st, errno
}

// routeOpen is route for an op that may carry an open file or directory
// of the entry (the bridge lends one to xattr ops and setattr): on a node
// that has no name left (layer.Unreachable, which a hide pattern such as
// ".*" could match), the op goes on through the handle, as fgetxattr(2)
// and fchmod(2) do on a local file system. A name that is hidden stays
// hidden, open or not.
func (f *Filter) routeOpen(c *layer.Call, op layer.Op, path *string, h *layer.Handle) (layer.Status, layer.Errno, *VirtualFile) {
	if h != nil && h.Fd >= 0 && layer.Unreachable(*path) {
		return cont, 0, nil
	}
	return f.route(c, op, path, existing)
}

func (f *Filter) getxattr(c *layer.Call, op *layer.GetxattrOp) (layer.Status, layer.Errno) {
	st, errno, v := f.routeOpen(c, op, &op.Path, op.Handle)
	if v != nil {
		return done, enodata
	}
	return st, errno
}

func (f *Filter) listxattr(c *layer.Call, op *layer.ListxattrOp) (layer.Status, layer.Errno) {
	st, errno, v := f.routeOpen(c, op, &op.Path, op.Handle)
	if v != nil {
		op.Size = 0
		return done, success
	}
	return st, errno
}

func (f *Filter) setxattr(c *layer.Call, op *layer.SetxattrOp) (layer.Status, layer.Errno) {
	st, errno, v := f.routeOpen(c, op, &op.Path, op.Handle)
	if v != nil {
		return done, erofs
	}
	return st, errno
}

func (f *Filter) removexattr(c *layer.Call, op *layer.RemovexattrOp) (layer.Status, layer.Errno) {
	st, errno, v := f.routeOpen(c, op, &op.Path, op.Handle)
	if v != nil {
		return done, erofs
	}
	return st, errno
}
