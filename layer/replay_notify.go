package layer

import (
	"context"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Replaying changes found underneath, so that inotify on the mount sees them.
//
// The kernel emits inotify events on a FUSE mount only for operations made
// through it. A change made directly in the backing directory reaches the
// daemon (the notify package's backing watch), never the kernel's fsnotify.
// To make `inotifywait -r MOUNTPOINT` see it anyway, the notify package
// re-enacts the change on the mount from one dedicated OS thread: mknod or
// mkdir for a creation, unlink or rmdir for a removal, rename for a rename,
// lchown to the current owner for an attribute change, truncate to the
// current size for a modification. The kernel then runs its ordinary VFS
// path, which emits the real events (IN_CREATE, IN_DELETE, IN_MOVED_FROM
// and IN_MOVED_TO with one cookie, IN_ATTRIB, IN_MODIFY), and sends the
// FUSE requests to us with that thread's id in the request header.
//
// The bridge recognises those requests by the thread id and answers them
// from the current state of the stack without changing anything: the change
// was made already, underneath. What it answers is decided by the one
// ReplayOp in progress (the thread does one syscall at a time):
//
//   - LOOKUP of a name the operation creates, or of a rename's new name:
//     "no such entry", so the kernel goes on to MKNOD/MKDIR/SYMLINK or
//     RENAME instead of failing with EEXIST or seeing a rename onto
//     itself (which the VFS completes without an event).
//   - LOOKUP of a name the operation removes, or of a rename's old name:
//     an entry (the inode the kernel knew under that name, or a stand-in
//     with a fresh inode number), not cached at all, since it no longer
//     exists underneath.
//   - MKNOD/MKDIR/SYMLINK of the created name: the entry's real
//     attributes; for a hard link to a file the kernel knows by another
//     name, that inode, so that the kernel keeps one inode for the file
//     (as it does when LINK answers).
//   - UNLINK/RMDIR/RENAME of the operation's names: success.
//   - SETATTR/SETXATTR/REMOVEXATTR of the operation's name: the current
//     attributes, success.
//   - any other change from that thread: EPERM. The replay thread can
//     never change the backing directory.
//
// Every request from the thread runs as an internal call (Call.Internal),
// so the notify filter reports none of them.
//
// Deadlock freedom (the full argument is in the notify package's doc.go):
// the answers above take no lock of the bridge's that a user request
// holds while it waits for the kernel; they only read the atomic state
// below and run read-only ops (lookup, getattr) down the stack, as any
// request does. The replay thread is never a request handler, and no
// request handler ever waits for it.

// ReplayOp is the change the replay thread is re-enacting. Paths are
// visible paths (the names users see).
type ReplayOp struct {
	// Kind is EventCreate, EventRemove, EventRename, EventAttrib or
	// EventModify.
	Kind EventKind
	// Path is the entry created, removed, changed, or a rename's new name.
	Path string
	// OldPath is a rename's old name.
	OldPath string
	// Mode holds the entry's type (S_IFMT bits); it is the type a stand-in
	// entry gets when the kernel never knew the removed or renamed name.
	Mode uint32
}

// replayGate is the bridge's view of the replay thread.
type replayGate struct {
	// tid is the replay thread's id, 0 when there is none. The kernel
	// puts the calling thread's id in every request header; it never
	// sends 0 for a request made by a thread (0 is for requests the
	// kernel makes on its own), so 0 cannot match a user.
	tid atomic.Uint32
	// op is the change in progress, nil between two.
	op atomic.Pointer[ReplayOp]
}

// SetReplayThread declares tid (from unix.Gettid, on a goroutine locked to
// its OS thread) the replay thread of this mount; 0 withdraws it. From then
// on every request from that thread is answered as described above and
// never changes the backing directory.
func (s *Server) SetReplayThread(tid int) { s.root.br.replay.tid.Store(uint32(tid)) }

// BeginReplay declares op the change the replay thread re-enacts next.
// The thread calls it right before its syscall on the mount and EndReplay
// right after.
func (s *Server) BeginReplay(op *ReplayOp) { s.root.br.replay.op.Store(op) }

// EndReplay ends the change declared by BeginReplay.
func (s *Server) EndReplay() { s.root.br.replay.op.Store(nil) }

// replaying reports whether the request of ctx comes from the replay thread
// and, if so, the change in progress (nil between two). One atomic load for
// every other request.
func (br *bridge) replaying(ctx context.Context) (op *ReplayOp, ok bool) {
	tid := br.replay.tid.Load()
	if tid == 0 {
		return nil, false
	}
	fc, isFC := ctx.(*fuse.Context)
	if !isFC || fc.Pid != tid {
		return nil, false
	}
	return br.replay.op.Load(), true
}

// stand-in inode numbers for entries that no longer exist: the top bit keeps
// them apart from the backing file system's inode numbers.
var standInIno atomic.Uint64

func init() { standInIno.Store(1 << 63) }

// replayLookup answers a LOOKUP of name from the replay thread; handled is
// false when the lookup is an ordinary one (a directory on the way).
func (n *node) replayLookup(ctx context.Context, op *ReplayOp, name string, out *fuse.EntryOut) (ch *fs.Inode, errno Errno, handled bool) {
	if op == nil {
		return nil, 0, false
	}
	p := n.child(name)
	switch {
	case (op.Kind == EventCreate || op.Kind == EventRename) && p == op.Path:
		// Not cached, whatever NegativeTimeout says: the name exists
		// underneath. A timeout set on a failed lookup makes go-fuse
		// send the plain error, which the kernel never caches.
		out.SetEntryTimeout(time.Nanosecond)
		return nil, syscall.ENOENT, true
	case op.Kind == EventRemove && p == op.Path:
		return n.standIn(ctx, name, op.Mode, "", out), 0, true
	case op.Kind == EventRename && p == op.OldPath:
		return n.standIn(ctx, name, op.Mode, op.Path, out), 0, true
	}
	return nil, 0, false
}

// standIn returns an entry for name, which no longer exists underneath:
// the inode the kernel knows under that name if any (so that the kernel
// finds its own inode again and its watchers get their events), else a new
// one of type mode. When now is set (a rename), the attributes are those
// of the entry at its new name. The kernel may cache none of it.
func (n *node) standIn(ctx context.Context, name string, mode uint32, now string, out *fuse.EntryOut) *fs.Inode {
	st := fs.StableAttr{Mode: mode & syscall.S_IFMT}
	if ch := n.GetChild(name); ch != nil {
		st = ch.StableAttr()
	}
	var a Attr
	if now != "" {
		op := &LookupOp{Path: now}
		if n.br.stack.Do(InternalCall(ctx), op) == 0 && op.Out.Mode&syscall.S_IFMT == st.Mode {
			a = op.Out
		}
	}
	if a.Ino == 0 {
		a = Attr{Mode: st.Mode | 0644, Nlink: 1}
		if st.Mode == syscall.S_IFDIR {
			a.Mode |= 0111
			a.Nlink = 2
		}
	}
	if st.Ino == 0 {
		st.Ino = a.Ino
		if st.Ino == 0 {
			st.Ino = standInIno.Add(1)
		}
	}
	a.Ino = st.Ino
	out.Attr = a
	// Not cached at all (the mount gives go-fuse no default timeouts, so
	// zero stays zero): the entry is gone underneath, and another
	// process's stat between this answer and the replayed syscall must
	// ask again and get ENOENT, not find the stand-in. Even one jiffy
	// (1ns rounds up to that) was long enough for a watcher that stats a
	// name right after its removal event to see it again.
	out.SetEntryTimeout(0)
	out.SetAttrTimeout(0)
	// A rename's stand-in has the real inode number and may become the
	// kernel's inode of the new name: it must be in the index.
	_, in := n.newNode(ctx, st)
	return in
}

// replayCreate answers MKNOD/MKDIR/SYMLINK of name from the replay thread
// with the entry's real attributes (type must be the requested one, or the
// kernel fails the syscall with EIO).
func (n *node) replayCreate(ctx context.Context, op *ReplayOp, name string, typ uint32, out *fuse.EntryOut) (*fs.Inode, Errno) {
	p := n.child(name)
	if op == nil || op.Kind != EventCreate || p != op.Path {
		return nil, syscall.EPERM
	}
	la := &LookupOp{Path: p}
	if n.br.stack.Do(InternalCall(ctx), la) != 0 || la.Out.Mode&syscall.S_IFMT != typ&syscall.S_IFMT {
		// Gone (or replaced) again already: a stand-in the kernel
		// forgets at once; the next event fixes the picture.
		in := n.standIn(ctx, name, typ, "", out)
		n.displace(name, in, true)
		return in, 0
	}
	if typ&syscall.S_IFMT != syscall.S_IFDIR && la.Out.Nlink > 1 {
		// A hard link made underneath to a file the kernel may know
		// by another name. go-fuse would register a new node for a
		// MKNOD, exclusively, and the kernel would then hold two
		// inodes for one file, the other name's cache stale after a
		// write through this one (no event invalidates it: the write
		// is the mount's own). Answering with the node it knows
		// makes the kernel add the name to that inode, as a LINK
		// reply does.
		if in := n.br.knownInode(la.Out.Ino, typ); in != nil {
			n.fillEntry(&la.Out, out)
			// Not cached: a write through the other name may land
			// between the lookup above and this answer, and the
			// kernel applies the attributes of a MKNOD reply
			// without the version check it gives GETATTR replies,
			// so the size above would stand for the attribute
			// timeout.
			out.SetAttrTimeout(0)
			n.displace(name, in, true)
			return in, 0
		}
	}
	return n.newCreated(ctx, name, &la.Out, out), 0
}

// replayAck answers UNLINK, RMDIR, RENAME, SETXATTR and REMOVEXATTR from the
// replay thread: success for the change in progress, EPERM for anything
// else.
func replayAck(op *ReplayOp, kinds []EventKind, paths ...string) Errno {
	if op == nil {
		return syscall.EPERM
	}
	for _, k := range kinds {
		if op.Kind != k {
			continue
		}
		switch len(paths) {
		case 1:
			if paths[0] == op.Path {
				return 0
			}
		case 2:
			if paths[0] == op.OldPath && paths[1] == op.Path {
				return 0
			}
		}
	}
	return syscall.EPERM
}

// replaySetattr answers SETATTR from the replay thread with the current
// attributes, changing nothing.
func (n *node) replaySetattr(ctx context.Context, op *ReplayOp, f fs.FileHandle, out *fuse.AttrOut) Errno {
	p := n.path()
	if errno := replayAck(op, []EventKind{EventAttrib, EventModify}, p); errno != 0 {
		return errno
	}
	ga := &GetattrOp{Node: &n.Node, Path: p, Handle: handleOf(f)}
	if errno := n.br.stack.Do(InternalCall(ctx), ga); errno != 0 {
		return errno
	}
	out.Attr = ga.Out
	out.SetTimeout(n.br.attrTimeout())
	return 0
}

var (
	kindsRemove = []EventKind{EventRemove}
	kindsRename = []EventKind{EventRename}
	kindsAttrib = []EventKind{EventAttrib}
)
