package layer

import (
	"context"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
)

// Invalidate drops what the kernel caches about the entries ev names: the
// dentries (so the next access looks the name up again), the attributes
// and the page cache of the inodes, and the cached listing of every
// directory whose contents changed (FOPEN_CACHE_DIR keeps it in the
// directory's page cache). ev must be in the names users see (the top of
// the stack), as Stack.Subscribe delivers it.
//
// It only invalidates what the kernel holds: a name the kernel never
// looked up costs nothing, and errors (the kernel forgot the inode
// meanwhile) are ignored, because there is nothing left to invalidate.
//
// Invalidate must never be called from inside a FUSE request handler: the
// kernel serves each notification while holding the locks of the inodes
// it touches (the parent's i_rwsem for an entry, page locks for content),
// and a request in flight on those inodes holds the same locks while it
// waits for the handler, which would wait for the notification. Call it
// from a goroutine of its own (the notify package's invalidator); it may
// then block until such a request is answered, which is harmless.
func (s *Server) Invalidate(ev Event) {
	switch ev.Kind {
	case EventCreate:
		s.invalidateEntry(ev.Path, false)
		if !ev.Dir {
			// A new hard link changes the link count of the
			// names the kernel knows the file by.
			s.invalidateLinks(ev.Path, -1)
		}
	case EventRemove:
		s.invalidateEntry(ev.Path, true)
	case EventRename:
		s.invalidateEntry(ev.OldPath, false)
		s.invalidateEntry(ev.Path, false)
		if ev.Dir {
			if in := s.inode(ev.Path); in != nil {
				in.NotifyContent(-1, 0) // ctime changed
			}
		} else {
			s.invalidateFile(ev.Path, -1) // ctime, under every name
		}
	case EventModify:
		s.invalidateFile(ev.Path, 0) // attributes and every cached page
	case EventAttrib:
		s.invalidateFile(ev.Path, -1) // attributes only
	case EventRescan:
		if in := s.inode(ev.Path); in != nil {
			invalidateTree(in)
		}
	}
}

// invalidateEntry drops the dentry path (positive or negative) and the
// parent's attributes and cached listing. With deleted, a known child is
// reported as deleted (NotifyDelete), so that its watchers get
// IN_DELETE_SELF and the kernel drops its link count.
func (s *Server) invalidateEntry(path string, deleted bool) {
	dir, name := splitPath(path)
	parent := s.inode(dir)
	if parent == nil {
		// The kernel never looked up the directory: it caches nothing
		// below it.
		return
	}
	if name != "" {
		child := parent.GetChild(name)
		if deleted && child != nil {
			parent.NotifyDelete(name, child)
		} else {
			parent.NotifyEntry(name)
		}
		if child != nil {
			child.NotifyContent(-1, 0) // link count, ctime
		}
	}
	parent.NotifyContent(0, 0) // mtime, size, cached listing
}

// invalidateFile drops the attributes (off -1) or the attributes and pages
// (off 0) the kernel caches of the entry at the visible path, under every
// name it knows the file by.
func (s *Server) invalidateFile(path string, off int64) {
	in := s.inode(path)
	if in == nil {
		s.invalidateLinks(path, off)
		return
	}
	in.NotifyContent(off, 0)
	if in.IsDir() {
		return
	}
	// go-fuse registers the inode of a MKNOD or CREATE as new even when
	// its inode number is known (the old one stays with the kernel under
	// its other names), so a file may be two kernel inodes. Rare (the
	// replay of a hard link made underneath answers with the known inode,
	// replayCreate), but then both must go.
	for _, n := range s.root.br.links.get(in.StableAttr().Ino) {
		if n.EmbeddedInode() != in {
			n.NotifyContent(off, 0)
		}
	}
}

// invalidateLinks invalidates what the kernel caches of the file at the
// visible path under its other names, when it has several hard links and
// the kernel does not know it by this one: NotifyContent(off, 0), so off
// -1 drops the attributes only and 0 the pages too. One go-fuse inode
// stands for all the names of a file, and the kernel caches per inode,
// so finding that inode by number (inoIndex) is enough. It costs one
// lookup through the stack, and nothing when the kernel knows no file
// at all.
func (s *Server) invalidateLinks(path string, off int64) {
	if s.root.br.links.empty() {
		return
	}
	a, errno := s.Lookup(context.Background(), path)
	if errno != 0 || a.Nlink < 2 || a.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return
	}
	for _, n := range s.root.br.links.get(a.Ino) {
		n.NotifyContent(off, 0)
	}
}

// invalidateTree drops the attributes and pages of in and of every inode
// the kernel knows below it, and every dentry below it. It is the answer to
// a rescan: something changed below in, and we do not know what.
func invalidateTree(in *fs.Inode) {
	in.NotifyContent(0, 0)
	for name, ch := range in.Children() {
		if ch.IsDir() {
			invalidateTree(ch)
		} else {
			ch.NotifyContent(0, 0)
		}
		in.NotifyEntry(name)
	}
}

// inode returns the go-fuse inode of the visible path, or nil when the
// kernel does not know it. It walks the tree go-fuse keeps of the kernel's
// dentries from the root, one GetChild (one inode mutex, briefly) per
// component, so it needs no lock of this package.
func (s *Server) inode(path string) *fs.Inode {
	in := s.root.EmbeddedInode()
	if path == "" {
		return in
	}
	for _, c := range strings.Split(path, "/") {
		if in = in.GetChild(c); in == nil {
			return nil
		}
	}
	return in
}

// splitPath splits a visible path into its directory and last name; the
// root gives ("", "").
func splitPath(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// Lookup resolves a visible path through the whole stack as the daemon's
// own (internal) request, without involving the kernel: the notify
// filter's replay thread uses it to learn the type and attributes of an
// entry before it re-enacts a change on the mount. It may be called from
// any goroutine that is not a request handler waiting on the same file.
func (s *Server) Lookup(ctx context.Context, path string) (Attr, Errno) {
	if path == "" {
		op := &GetattrOp{Path: ""}
		errno := s.stack.Do(InternalCall(ctx), op)
		return op.Out, errno
	}
	op := &LookupOp{Path: path}
	errno := s.stack.Do(InternalCall(ctx), op)
	return op.Out, errno
}

// ReadOnly reports whether the mount refuses changes (the kernel answers
// EROFS before any request reaches the daemon, so replaying changes on it
// is impossible).
func (s *Server) ReadOnly() bool { return s.readOnly }
