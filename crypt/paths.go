package crypt

import (
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/vfsfilter/vfsfilter/layer"
	"golang.org/x/sys/unix"
)

// dirInfo is what crypt knows of one plaintext directory: where it is
// below (its ciphertext path) and its IV.
type dirInfo struct {
	cpath string
	iv    []byte
	at    time.Time
}

// dirCache maps plaintext directory paths to dirInfo. It saves reading
// every directory's IV file on every request: a path of depth d would cost
// d opens and reads otherwise.
//
// Entries go stale only through renames and removals of directories, which
// pass through crypt and invalidate the subtree (invalidate), and through
// changes made directly in the backing directory, which the TTL bounds
// (like the kernel's own attribute timeout). A stale entry can only point
// at a path that no longer exists or at another directory's ciphertext
// names, which then do not decrypt; it can never lead outside the backing
// directory (the passthrough resolves every path beneath it).
type dirCache struct {
	mu  sync.Mutex
	m   map[string]dirInfo
	ttl time.Duration
	max int
}

func newDirCache(ttl time.Duration, max int) *dirCache {
	return &dirCache{m: map[string]dirInfo{}, ttl: ttl, max: max}
}

func (d *dirCache) get(p string) (dirInfo, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.m[p]
	if ok && time.Since(e.at) > d.ttl {
		delete(d.m, p)
		return e, false
	}
	return e, ok
}

func (d *dirCache) put(p string, e dirInfo) {
	e.at = time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.m) >= d.max {
		// Dropping everything is cheap and rare; an LRU would cost a
		// list update on every hit.
		clear(d.m)
	}
	d.m[p] = e
}

// forget drops p alone: for a directory that crypt has just removed.
// It was empty, so nothing below it can be cached from requests through
// crypt: each of its subdirectories was removed through crypt first
// (rmdir forgets it) or underneath, which the TTL bounds (and the backing
// watch's removal events invalidate). invalidate would look at every entry
// for descendants, under the lock, on each rmdir: with thousands of
// directories cached, that scan was the largest part of an rmdir's own CPU
// during rm -rf.
func (d *dirCache) forget(p string) {
	d.mu.Lock()
	delete(d.m, p)
	d.mu.Unlock()
}

// invalidate drops p and everything below it.
func (d *dirCache) invalidate(p string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p == "" {
		clear(d.m)
		return
	}
	delete(d.m, p)
	prefix := p + "/"
	for k := range d.m {
		if strings.HasPrefix(k, prefix) {
			delete(d.m, k)
		}
	}
}

// encPath is a plaintext path translated for the layers below.
type encPath struct {
	plain  string // the plaintext path
	cpath  string // the ciphertext path below
	cdir   string // the ciphertext path of the parent directory
	stored string // the leaf's stored name
	enc    string // the leaf's encoded encrypted name (== stored unless long)
	long   bool   // stored is a hashed long name with a side file
}

// side is the path of the long name's side file.
func (e *encPath) side() string { return join(e.cdir, LongSideFile(e.stored)) }

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

func split(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// dir resolves the plaintext directory p to its ciphertext path and IV.
func (f *Filter) dir(c *layer.Call, p string) (dirInfo, layer.Errno) {
	if p == "" {
		iv, errno := f.root(c)
		return dirInfo{cpath: "", iv: iv}, errno
	}
	if e, ok := f.dirs.get(p); ok {
		return e, 0
	}
	parent, name := split(p)
	pe, errno := f.dir(c, parent)
	if errno != 0 {
		return pe, errno
	}
	stored, _ := StoredName(f.names.Encrypt(name, pe.iv))
	cpath := join(pe.cpath, stored)
	iv, errno := f.readIV(c, cpath)
	if errno != 0 {
		return dirInfo{}, errno
	}
	e := dirInfo{cpath: cpath, iv: iv}
	f.dirs.put(p, e)
	return e, 0
}

// path translates the plaintext path p.
func (f *Filter) path(c *layer.Call, p string) (encPath, layer.Errno) {
	if p == "" {
		return encPath{}, 0
	}
	dir, name := split(p)
	d, errno := f.dir(c, dir)
	if errno != 0 {
		return encPath{}, errno
	}
	if len(name) > MaxName {
		return encPath{}, syscall.ENAMETOOLONG
	}
	enc := f.names.Encrypt(name, d.iv)
	stored, long := StoredName(enc)
	return encPath{plain: p, cpath: join(d.cpath, stored), cdir: d.cpath, stored: stored, enc: enc, long: long}, 0
}

// readIV reads the IV of the ciphertext directory cdir.
func (f *Filter) readIV(c *layer.Call, cdir string) ([]byte, layer.Errno) {
	data, errno := f.readSmall(c, join(cdir, DirIVFile), DirIVLen+1, validIV)
	if errno == syscall.ENOENT {
		// Either the directory is missing (ENOENT is right) or it has
		// lost its IV file (damage).
		lk := &layer.LookupOp{Path: cdir}
		if f.att.Below.Do(layer.InternalCall(c.Context), lk) == 0 && lk.Out.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			f.log.Error("directory has no IV file; its entries cannot be decrypted", "dir", cdir)
			return nil, syscall.EIO
		}
		return nil, syscall.ENOENT
	}
	if errno != 0 {
		return nil, errno
	}
	if !validIV(data) {
		f.log.Error("directory IV file is damaged", "dir", cdir, "bytes", len(data))
		return nil, syscall.EIO
	}
	return data, 0
}

func validIV(data []byte) bool { return len(data) == DirIVLen }

// readSmall reads a small file crypt wrote with writeSmall (an IV or a
// side file) through the layers below, up to max bytes: from its copy in
// CopyXattr when that is there and valid, else from its content. Trees
// made before the copy existed, copies of the backing directory that
// dropped extended attributes, and file systems without them have only
// the content.
//
// The copy is read first because it is the one a crash cannot damage (see
// writeSmall), and because it is cheaper: one request below instead of
// an open, a read and a release.
func (f *Filter) readSmall(c *layer.Call, cpath string, max int, valid func([]byte) bool) ([]byte, layer.Errno) {
	ic := layer.InternalCall(c.Context)
	g := &layer.GetxattrOp{Path: cpath, Name: CopyXattr, Dest: make([]byte, max)}
	switch errno := f.att.Below.Do(ic, g); {
	case errno == 0 && valid(g.Dest[:g.Size]):
		return g.Dest[:g.Size], 0
	case errno == 0:
		f.log.Warn("journaled copy of a file crypt depends on is damaged; reading the file", "file", cpath, "bytes", g.Size)
	case errno == syscall.ENOENT || errno == syscall.ENOTDIR:
		return nil, errno
	}
	op := &layer.OpenOp{Path: cpath, Flags: syscall.O_RDONLY}
	if errno := f.att.Below.Do(ic, op); errno != 0 {
		return nil, errno
	}
	defer f.att.Below.Do(ic, &layer.ReleaseOp{Handle: op.Handle})
	buf := make([]byte, max)
	rd := &layer.ReadOp{Handle: op.Handle, Dest: buf}
	if errno := f.att.Below.Do(ic, rd); errno != 0 {
		return nil, errno
	}
	if rd.Out == nil {
		return nil, 0
	}
	data, st := rd.Out.Bytes(buf)
	if !st.Ok() {
		return nil, layer.Errno(st)
	}
	return append([]byte(nil), data...), 0
}

// CopyXattr is the extended attribute in which crypt keeps a copy of the
// content of each small file it writes (directory IVs, long-name side
// files), on that file itself. The content stays authoritative for tools
// that copy the backing directory without extended attributes; the copy
// is what makes the content crash-safe cheaply (see writeSmall).
const CopyXattr = "user.vfsfilter.crypt.copy"

// writeSmall creates the file cpath (O_EXCL) with data, owned by root
// (internal call), and makes data durable before anything the caller
// creates afterwards. It reports created false, with no error, when the
// file exists already.
//
// It writes the files that names depend on: directory IVs (every entry of
// the directory is encrypted under the IV) and long-name side files (the
// entry's name is only a hash of the side file's content). Either one
// lost in a crash while the entries that depend on it survive makes those
// entries unreadable for good, so its content must reach the disk no
// later than the first entry that needs it.
//
// The content itself is written back whenever the kernel gets to it,
// which after a crash can leave the file empty or zero-filled. So data is
// also stored in the extended attribute CopyXattr of the new file, before
// the call returns: an extended attribute is metadata, journaled like the
// entries that depend on it and created after it, so after a crash an
// entry implies the copy (on ext4 and XFS; see doc.go). That costs one
// setxattr (and, on ext4, a 4 KiB attribute block for a side file: its
// copy does not fit in the inode), where waiting for the content's write
// costs a device round trip (MKDIR's median went from 407 us to 143 us,
// untarring Go's source tree onto a loop-mounted ext4 here). Where the
// copy cannot be set (no extended attributes below, a virtual file of a
// filter below), the content is made durable by settle instead.
func (f *Filter) writeSmall(c *layer.Call, cpath string, data []byte, mode uint32) (created bool, errno layer.Errno) {
	ic := layer.InternalCall(c.Context)
	op := &layer.CreateOp{Path: cpath, Flags: syscall.O_WRONLY | syscall.O_CREAT | syscall.O_EXCL, Mode: mode}
	if errno := f.att.Below.Do(ic, op); errno != 0 {
		if errno == syscall.EEXIST {
			return false, 0
		}
		return false, errno
	}
	w := &layer.WriteOp{Handle: op.Handle, Data: data}
	errno = f.att.Below.Do(ic, w)
	if errno == 0 && int(w.Written) != len(data) {
		errno = syscall.EIO
	}
	if errno == 0 {
		errno = f.keepCopy(ic, op.Handle, cpath, data, mode)
	}
	f.att.Below.Do(ic, &layer.ReleaseOp{Handle: op.Handle})
	if errno != 0 {
		f.att.Below.Do(ic, &layer.UnlinkOp{Path: cpath})
		return false, errno
	}
	return true, 0
}

// keepCopy stores data, just written to the new file cpath (open as h,
// with mode), in the file's CopyXattr; where that cannot be done, it
// settles the content instead.
func (f *Filter) keepCopy(c *layer.Call, h *layer.Handle, cpath string, data []byte, mode uint32) layer.Errno {
	s := &layer.SetxattrOp{Path: cpath, Name: CopyXattr, Data: data, Flags: unix.XATTR_CREATE}
	errno := f.att.Below.Do(c, s)
	if errno == syscall.EACCES && mode&0200 == 0 {
		// Setting a user.* attribute needs write permission on the file,
		// which these files' read-only modes deny a daemon without
		// CAP_DAC_OVERRIDE (one mounted by a user through fusermount):
		// lend the owner write permission for the call.
		if errno = f.chmod(c, h, cpath, mode|0200); errno == 0 {
			errno = f.att.Below.Do(c, s)
			if e := f.chmod(c, h, cpath, mode); errno == 0 && e != 0 {
				return e
			}
		}
	}
	if errno != 0 {
		return f.settle(c, h)
	}
	return 0
}

// chmod sets the mode of the file cpath, open as h.
func (f *Filter) chmod(c *layer.Call, h *layer.Handle, cpath string, mode uint32) layer.Errno {
	in := fuse.SetAttrIn{}
	in.Valid = fuse.FATTR_MODE
	in.Mode = mode
	return f.att.Below.Do(c, &layer.SetattrOp{Path: cpath, Handle: h, In: in})
}

// settle makes the data just written to the new file h durable before any
// change to the backing file system that follows it, without waiting for
// a journal commit as fsync does (one per mkdir: about 1.2 ms against
// 0.1 ms on a loop-mounted ext4 here). writeSmall uses it only where it
// cannot keep a journaled copy of the data.
//
// sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER) writes the file's dirty
// pages and returns when their writeback has ended. On ext4 (any data=
// mode) and XFS, writeback ends only after everything the data needs to
// be found has been handed to the journal: the block allocation and the
// on-disk size (at submission), and the conversion of an unwritten extent
// to a written one (at I/O completion, before the pages leave writeback;
// ext4 allocates unwritten extents at writeback since dioread_nolock
// became its default in Linux 5.6). So when it returns,
//
//   - the data is on the device (perhaps in its volatile cache), and
//   - the metadata that makes it reachable is in the journal's running
//     transaction or an earlier one.
//
// Every entry created afterwards in the directory (or, for a side file,
// the entry it names) is a change in the same or a later transaction.
// Journals commit transactions in order, and a commit flushes the
// device's cache before its commit record, so after a crash an entry that
// survived implies that its IV or side file survived with its content.
//
// The waits matter: SYNC_FILE_RANGE_WRITE alone returns once the I/O is
// submitted, and on ext4 with dioread_nolock the extent is still
// unwritten then (measured: 1 in 4 times on Linux 6.18); a later
// transaction holding an entry could commit before the conversion, and
// the IV file would read back as 16 zero bytes, a wrong IV that nothing
// detects.
//
// File systems that do not work this way (btrfs records a new extent in
// its tree only after writeback has ended; network and FUSE file systems)
// get no such ordering: a crash may lose an IV or side file written
// moments before, as with gocryptfs, which never syncs. See doc.go.
//
// A handle without a descriptor (a virtual file of a filter below), or a
// file system without sync_file_range, gets the FsyncOp instead.
func (f *Filter) settle(c *layer.Call, h *layer.Handle) layer.Errno {
	if h.Fd >= 0 {
		err := unix.SyncFileRange(h.Fd, 0, 0, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
		switch err {
		case nil:
			return 0
		case syscall.EINVAL, syscall.ESPIPE, syscall.ENOSYS, syscall.EOPNOTSUPP:
			// Not supported here: fsync.
		default:
			// A write-back error (EIO, ENOSPC). Not retried with
			// fsync: the error may have been consumed.
			return layer.ToErrno(err)
		}
	}
	return f.att.Below.Do(c, &layer.FsyncOp{Handle: h})
}

// writeSide writes the side file of a long name before the entry is
// created; undo removes it again when the creation fails (only if this
// call created it: an existing side file belongs to an existing entry).
func (f *Filter) writeSide(c *layer.Call, e *encPath) (undo func(), errno layer.Errno) {
	if !e.long {
		return func() {}, 0
	}
	created, errno := f.writeSmall(c, e.side(), []byte(e.enc), 0400)
	if errno != 0 {
		return nil, errno
	}
	return func() {
		if created {
			f.att.Below.Do(layer.InternalCall(c.Context), &layer.UnlinkOp{Path: e.side()})
		}
	}, 0
}

// removeSide removes a long name's side file after its entry went away.
func (f *Filter) removeSide(c *layer.Call, e *encPath) {
	if e.long {
		f.att.Below.Do(layer.InternalCall(c.Context), &layer.UnlinkOp{Path: e.side()})
	}
}

// decryptName returns the plaintext of a stored name in the ciphertext
// directory cdir with IV iv, reading the side file of a long name.
func (f *Filter) decryptName(c *layer.Call, cdir string, iv []byte, stored string) (string, error) {
	enc := stored
	if IsLong(stored) {
		data, errno := f.readSmall(c, join(cdir, LongSideFile(stored)), 4096, func(b []byte) bool { return CheckLong(stored, string(b)) == nil })
		if errno != 0 {
			return "", errno
		}
		enc = string(data)
		if err := CheckLong(stored, enc); err != nil {
			return "", err
		}
	}
	return f.names.Decrypt(enc, iv)
}

// decryptPath turns a ciphertext path into the plaintext one, for events
// found below. ok is false for crypt's own files and names that do not
// decrypt.
func (f *Filter) decryptPath(c *layer.Call, cpath string) (string, bool) {
	if cpath == "" {
		return "", true
	}
	parts := strings.Split(cpath, "/")
	iv, errno := f.root(c)
	if errno != 0 {
		return "", false
	}
	cdir, plain := "", ""
	for i, stored := range parts {
		if Reserved(stored, i == 0) {
			return "", false
		}
		name, err := f.decryptName(c, cdir, iv, stored)
		if err != nil {
			return "", false
		}
		plain = join(plain, name)
		cdir = join(cdir, stored)
		if i < len(parts)-1 {
			if d, ok := f.dirs.get(plain); ok {
				iv = d.iv
				continue
			}
			var errno layer.Errno
			if iv, errno = f.readIV(c, cdir); errno != 0 {
				return "", false
			}
		}
	}
	return plain, true
}
