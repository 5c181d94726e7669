package layer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Passthrough is the bottom of every stack: it completes each op on a real
// directory. Every access is made relative to an fd of that directory with
// *at syscalls; intermediate components are resolved with openat2
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, so neither a symlink in the backing
// tree nor a rename racing with us can lead outside it. Symlinks are returned
// as symlinks (the kernel follows them, inside the mount).
type Passthrough struct {
	root   string
	rootFd int
	// refDev is the device whose inode numbers are reported as they are;
	// entries on any other device get the device mixed in.
	refDev uint64
	att    *Attachment
	// ops counts the ops in flight, with closedBit set once Close began.
	ops atomic.Int64
}

// NewPassthrough opens the backing directory dir. The error wraps
// fs.ErrNotExist when dir is missing and syscall.ENOTDIR when it is not a
// directory.
func NewPassthrough(dir string) (*Passthrough, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open backing dir", Path: dir, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "stat backing dir", Path: dir, Err: err}
	}
	return &Passthrough{root: dir, rootFd: fd, refDev: st.Dev}, nil
}

// MixDevice makes every inode number this passthrough reports carry its
// device, for a passthrough grafted into another one's tree (a bind), so
// its inode numbers cannot collide with the main tree's.
func (p *Passthrough) MixDevice() { p.refDev = ^uint64(0) }

// Root returns the backing directory's path.
func (p *Passthrough) Root() string { return p.root }

// Close releases the backing directory's fd. Ops that arrive from then on
// fail with EBADF; Close waits (up to closeWait) for the ops in flight.
//
// Why it must: every op resolves paths from the root fd by its number.
// Closed under a running op (or with the mount still served, as by a
// caller that closes the stack after a failed unmount), that number is
// free for the next open(2) of the process, and an op would then resolve
// its path beneath whatever directory got it: outside the backing
// directory. Should ops stay in flight longer (a blocked lock request),
// the fd is left open rather than closed under them. Close is idempotent.
func (p *Passthrough) Close() error {
	if p.ops.Or(closedBit)&closedBit != 0 {
		return nil
	}
	deadline := time.Now().Add(closeWait)
	for p.ops.Load() != closedBit {
		if time.Now().After(deadline) {
			return fmt.Errorf("close backing dir %s: operations still running; its fd stays open", p.root)
		}
		time.Sleep(time.Millisecond)
	}
	return unix.Close(p.rootFd)
}

// closeWait bounds how long Close waits for the ops in flight.
const closeWait = 10 * time.Second

// Name implements Filter.
func (p *Passthrough) Name() string { return "passthrough" }

// Altitude implements Filter.
func (p *Passthrough) Altitude() int { return AltitudePassthrough }

// Attach implements Filter: the passthrough completes every op.
func (p *Passthrough) Attach(a *Attachment) error {
	p.att = a
	OnPre(a, complete(p, p.lookup))
	OnPre(a, complete(p, p.getattr))
	OnPre(a, complete(p, p.setattr))
	OnPre(a, complete(p, p.access))
	OnPre(a, complete(p, p.readlink))
	OnPre(a, complete(p, p.mknod))
	OnPre(a, complete(p, p.mkdir))
	OnPre(a, complete(p, p.symlink))
	OnPre(a, complete(p, p.link))
	OnPre(a, complete(p, p.unlink))
	OnPre(a, complete(p, p.rmdir))
	OnPre(a, complete(p, p.rename))
	OnPre(a, complete(p, p.create))
	OnPre(a, complete(p, p.open))
	OnPre(a, complete(p, p.readdir))
	OnPre(a, complete(p, p.statfs))
	OnPre(a, complete(p, p.getxattr))
	OnPre(a, complete(p, p.setxattr))
	OnPre(a, complete(p, p.listxattr))
	OnPre(a, complete(p, p.removexattr))
	OnPre(a, complete(p, p.read))
	OnPre(a, complete(p, p.write))
	OnPre(a, complete(p, p.flush))
	OnPre(a, complete(p, p.fsync))
	OnPre(a, complete(p, p.release))
	OnPre(a, complete(p, p.lseek))
	OnPre(a, complete(p, p.ioctl))
	OnPre(a, complete(p, p.allocate))
	OnPre(a, complete(p, p.copyFileRange))
	OnPre(a, complete(p, p.getlk))
	OnPre(a, complete(p, p.setlk))
	OnPre(a, complete(p, p.tmpfile))
	return nil
}

// complete adapts a plain handler to a pre-callback that always completes.
// Every op runs inside p.enter/p.leave, so that Close never closes the
// root fd under an op that uses it.
func complete[O Op](p *Passthrough, f func(*Call, O) error) PreFunc[O] {
	return func(c *Call, op O) (Status, Errno) {
		if !p.enter() {
			return Complete, syscall.EBADF
		}
		defer p.leave()
		return Complete, ToErrno(f(c, op))
	}
}

// closedBit marks Passthrough.ops once Close has begun; the bits below
// count the ops in flight.
const closedBit = 1 << 62

// enter counts an op in, or reports false once Close has begun.
func (p *Passthrough) enter() bool {
	if p.ops.Add(1)&closedBit != 0 {
		p.ops.Add(-1)
		return false
	}
	return true
}

func (p *Passthrough) leave() { p.ops.Add(-1) }

// resolveHow is how every directory on the way to an entry is opened.
var resolveHow = unix.OpenHow{
	Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
	Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
}

// at returns a directory fd and a name within it for path; the caller
// gives the fd back with done. For the root itself it returns the root fd
// and "".
func (p *Passthrough) at(path string) (int, string, error) {
	i := strings.LastIndexByte(path, '/')
	if i < 0 {
		return p.rootFd, path, nil
	}
	fd, err := openat2(p.rootFd, path[:i], &resolveHow)
	if err != nil {
		return -1, "", err
	}
	return fd, path[i+1:], nil
}

// done releases a directory fd from at.
func (p *Passthrough) done(fd int) {
	if fd != p.rootFd {
		unix.Close(fd)
	}
}

// openat2 is openat2(2), retried on EINTR and EAGAIN, for paths of any
// length: the kernel refuses a path of PATH_MAX bytes or more, while a
// local file system has no limit on depth (a process that works relative
// to a deep directory never names it whole). The stack names every entry
// by its path from the root, so a long one is walked in pieces shorter
// than PATH_MAX, each resolved as resolveHow says from the directory the
// one before it opened.
func openat2(dirfd int, path string, how *unix.OpenHow) (int, error) {
	start := dirfd
	for len(path) >= unix.PathMax {
		i := strings.LastIndexByte(path[:unix.PathMax-1], '/')
		if i <= 0 {
			return -1, unix.ENAMETOOLONG
		}
		fd, err := openat2Short(dirfd, path[:i], &resolveHow)
		if dirfd != start {
			unix.Close(dirfd)
		}
		if err != nil {
			return -1, err
		}
		dirfd, path = fd, path[i+1:]
	}
	fd, err := openat2Short(dirfd, path, how)
	if dirfd != start {
		unix.Close(dirfd)
	}
	return fd, err
}

func openat2Short(dirfd int, path string, how *unix.OpenHow) (int, error) {
	for {
		fd, err := openat2NoAlloc(dirfd, path, how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// nameFlags returns the flags for an *at call on (dirfd, name): when name is
// "" the call targets dirfd itself.
func nameFlags(name string) int {
	if name == "" {
		return unix.AT_EMPTY_PATH | unix.AT_SYMLINK_NOFOLLOW
	}
	return unix.AT_SYMLINK_NOFOLLOW
}

// openFile opens path itself (not following a final symlink) with flags.
func (p *Passthrough) openFile(path string, flags int, mode uint32) (int, error) {
	if path == "" {
		return unix.Openat(p.rootFd, ".", flags|unix.O_CLOEXEC, mode)
	}
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	if flags&unix.O_CREAT == 0 {
		how.Mode = 0
	}
	fd, err := openat2(p.rootFd, path, &how)
	if err == unix.ELOOP && flags&unix.O_PATH == 0 {
		// A final symlink: open(2) with O_NOFOLLOW reports ELOOP too.
		return -1, unix.ELOOP
	}
	return fd, err
}

func (p *Passthrough) stat(path string, out *Attr) error {
	dfd, name, err := p.at(path)
	if err != nil {
		return err
	}
	defer p.done(dfd)
	var st unix.Stat_t
	if err := fstatat(dfd, name, &st, nameFlags(name)); err != nil {
		return err
	}
	p.fill(out, &st)
	return nil
}

// fill converts st into out. Inode numbers of the backing file system are
// kept as they are, so hard links and `ls -i` look as they do underneath;
// entries on another device (a file system mounted inside the backing dir)
// get the device mixed in so they cannot collide.
func (p *Passthrough) fill(out *Attr, st *unix.Stat_t) {
	FillAttr(out, st)
	if st.Dev != p.refDev {
		out.Ino = st.Ino ^ (st.Dev<<32 | st.Dev>>32)
	}
}

// FillAttr converts a stat result into an Attr.
func FillAttr(out *Attr, st *unix.Stat_t) {
	*out = Attr{
		Ino:     st.Ino,
		Size:    uint64(st.Size),
		Blocks:  uint64(st.Blocks),
		Atime:   uint64(st.Atim.Sec),
		Mtime:   uint64(st.Mtim.Sec),
		Ctime:   uint64(st.Ctim.Sec),
		Mode:    st.Mode,
		Nlink:   uint32(st.Nlink),
		Rdev:    uint32(st.Rdev),
		Blksize: uint32(st.Blksize),
	}
	out.Atimensec = uint32(st.Atim.Nsec)
	out.Mtimensec = uint32(st.Mtim.Nsec)
	out.Ctimensec = uint32(st.Ctim.Nsec)
	out.Uid = st.Uid
	out.Gid = st.Gid
}

func (p *Passthrough) lookup(c *Call, op *LookupOp) error {
	if s := scopeOf(c); s != nil {
		if i := strings.LastIndexByte(op.Path, '/'); i > 0 && plainName(op.Path[i+1:]) {
			return p.scopedStat(s, op.Path[:i], op.Path[i+1:], &op.Out)
		}
	}
	return p.stat(op.Path, &op.Out)
}

// plainName reports whether name is one entry's name: not empty, not "."
// or "..", no "/".
func plainName(name string) bool {
	return name != "" && name != "." && name != ".." && strings.IndexByte(name, '/') < 0
}

// scopedStat is stat of dir/name for a lookup of a READDIRPLUS request:
// dir is resolved from the root once per request and scope (see
// lookupScope for why that keeps the guarantees of at).
func (p *Passthrough) scopedStat(s *lookupScope, dir, name string, out *Attr) error {
	slot, dfd := s.get(p, dir)
	if slot < 0 {
		fd, err := openat2(p.rootFd, dir, &resolveHow)
		if err != nil {
			return err
		}
		if slot = s.put(p, dir, fd); slot < 0 {
			defer unix.Close(fd)
		}
		dfd = fd
	}
	if slot >= 0 {
		defer s.release(slot)
	}
	var st unix.Stat_t
	if err := fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	p.fill(out, &st)
	return nil
}

func (p *Passthrough) getattr(c *Call, op *GetattrOp) error {
	if op.WantBirth {
		return p.statx(op)
	}
	if op.Handle != nil && op.Handle.Fd >= 0 {
		var st unix.Stat_t
		if err := unix.Fstat(op.Handle.Fd, &st); err != nil {
			return err
		}
		p.fill(&op.Out, &st)
		return nil
	}
	return p.stat(op.Path, &op.Out)
}

// setNum sets *dst to v, converting between the integer types that
// unix.Stat_t's fields have on one architecture or another.
func setNum[D, S ~int16 | ~int32 | ~int64 | ~uint16 | ~uint32 | ~uint64](dst *D, v S) { *dst = D(v) }

// statx is getattr through statx(2), which also reports the birth time.
// It is not the common path: fstatat(2) is cheaper, and the kernel asks
// for a birth time only when a caller of statx(2) does.
func (p *Passthrough) statx(op *GetattrOp) error {
	const mask = unix.STATX_BASIC_STATS | unix.STATX_BTIME
	var sx unix.Statx_t
	if op.Handle != nil && op.Handle.Fd >= 0 {
		if err := unix.Statx(op.Handle.Fd, "", unix.AT_EMPTY_PATH, mask, &sx); err != nil {
			return err
		}
	} else {
		dfd, name, err := p.at(op.Path)
		if err != nil {
			return err
		}
		defer p.done(dfd)
		if err := unix.Statx(dfd, name, nameFlags(name), mask, &sx); err != nil {
			return err
		}
	}
	// Through a Stat_t, whose field widths differ between architectures,
	// so that fill treats both calls alike.
	var st unix.Stat_t
	setNum(&st.Dev, unix.Mkdev(sx.Dev_major, sx.Dev_minor))
	setNum(&st.Ino, sx.Ino)
	setNum(&st.Nlink, sx.Nlink)
	setNum(&st.Mode, sx.Mode)
	st.Uid, st.Gid = sx.Uid, sx.Gid
	setNum(&st.Rdev, unix.Mkdev(sx.Rdev_major, sx.Rdev_minor))
	setNum(&st.Size, sx.Size)
	setNum(&st.Blksize, sx.Blksize)
	setNum(&st.Blocks, sx.Blocks)
	st.Atim = unix.NsecToTimespec(sx.Atime.Sec*1e9 + int64(sx.Atime.Nsec))
	st.Mtim = unix.NsecToTimespec(sx.Mtime.Sec*1e9 + int64(sx.Mtime.Nsec))
	st.Ctim = unix.NsecToTimespec(sx.Ctime.Sec*1e9 + int64(sx.Ctime.Nsec))
	p.fill(&op.Out, &st)
	if sx.Mask&unix.STATX_BTIME != 0 {
		op.Birth.FromStatxTimestamp(&sx.Btime)
		op.HasBirth = true
	}
	return nil
}

func (p *Passthrough) setattr(c *Call, op *SetattrOp) error {
	in := &op.In
	fd := -1
	if op.Handle != nil {
		fd = op.Handle.Fd
	}
	// Through an open file every change uses its fd; the path is resolved
	// only without one.
	dfd, name := -1, ""
	if fd < 0 {
		var err error
		if dfd, name, err = p.at(op.Path); err != nil {
			return err
		}
		defer p.done(dfd)
	}
	var err error
	if in.Valid&fuse.FATTR_MODE != 0 {
		mode := in.Mode & 07777
		if fd >= 0 {
			err = unix.Fchmod(fd, mode)
		} else {
			err = fchmodat2(dfd, name, mode, nameFlags(name))
		}
		if err != nil {
			return err
		}
	}
	// A Touch (chown(path, -1, -1)) is the same no-op chown below, which
	// updates the change time as a local file system does.
	if op.Touch || in.Valid&(fuse.FATTR_UID|fuse.FATTR_GID) != 0 {
		uid, gid := -1, -1
		if in.Valid&fuse.FATTR_UID != 0 {
			uid = int(in.Uid)
		}
		if in.Valid&fuse.FATTR_GID != 0 {
			gid = int(in.Gid)
		}
		if fd >= 0 {
			err = unix.Fchown(fd, uid, gid)
		} else {
			err = unix.Fchownat(dfd, name, uid, gid, nameFlags(name))
		}
		if err != nil {
			return err
		}
	}
	if in.Valid&fuse.FATTR_SIZE != 0 {
		tfd := fd
		if tfd < 0 || op.Handle.Flags&unix.O_ACCMODE == unix.O_RDONLY {
			tfd, err = p.openFile(op.Path, unix.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer unix.Close(tfd)
		}
		if err := unix.Ftruncate(tfd, int64(in.Size)); err != nil {
			return err
		}
		if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 {
			if err := killSuidgid(tfd); err != nil {
				return err
			}
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME|fuse.FATTR_ATIME_NOW|fuse.FATTR_MTIME_NOW) != 0 {
		ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		switch {
		case in.Valid&fuse.FATTR_ATIME_NOW != 0:
			ts[0].Nsec = unix.UTIME_NOW
		case in.Valid&fuse.FATTR_ATIME != 0:
			ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
		}
		switch {
		case in.Valid&fuse.FATTR_MTIME_NOW != 0:
			ts[1].Nsec = unix.UTIME_NOW
		case in.Valid&fuse.FATTR_MTIME != 0:
			ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
		}
		if fd >= 0 {
			err = futimens(fd, &ts)
		} else if name == "" {
			err = unix.UtimesNanoAt(dfd, "", ts[:], unix.AT_EMPTY_PATH)
		} else {
			err = unix.UtimesNanoAt(dfd, name, ts[:], unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return err
		}
	}
	if fd >= 0 {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		p.fill(&op.Out, &st)
		return nil
	}
	var st unix.Stat_t
	if err := fstatat(dfd, name, &st, nameFlags(name)); err != nil {
		return err
	}
	p.fill(&op.Out, &st)
	return nil
}

// killSuidgid clears the set-user-ID bit and, when group execute is set,
// the set-group-ID bit: what a local file system does when an unprivileged
// caller writes or truncates a file.
func killSuidgid(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	mode := st.Mode & 07777
	kill := uint32(unix.S_ISUID)
	if mode&unix.S_IXGRP != 0 {
		kill |= unix.S_ISGID
	}
	if mode&kill == 0 {
		return nil
	}
	return unix.Fchmod(fd, mode&^kill)
}

func (p *Passthrough) access(c *Call, op *AccessOp) error {
	var a Attr
	if err := p.stat(op.Path, &a); err != nil {
		return err
	}
	return CheckAccess(&a, c.Uid, c.Gid, op.Mask)
}

// CheckAccess applies the classic owner/group/other permission check of
// mask (R_OK|W_OK|X_OK) for uid/gid against a. Root may read and write
// anything and execute what has an execute bit (or is a directory).
func CheckAccess(a *Attr, uid, gid, mask uint32) error {
	mask &= 7
	if mask == 0 {
		return nil
	}
	if uid == 0 {
		if mask&1 != 0 && a.Mode&0111 == 0 && a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return syscall.EACCES
		}
		return nil
	}
	perm := a.Mode & 7
	switch {
	case uid == a.Uid:
		perm = (a.Mode >> 6) & 7
	case gid == a.Gid:
		perm = (a.Mode >> 3) & 7
	}
	if perm&mask != mask {
		return syscall.EACCES
	}
	return nil
}

func (p *Passthrough) readlink(c *Call, op *ReadlinkOp) error {
	dfd, name, err := p.at(op.Path)
	if err != nil {
		return err
	}
	defer p.done(dfd)
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(dfd, name, buf)
	if err != nil {
		return err
	}
	op.Out = buf[:n]
	return nil
}

// own gives a new entry the caller's ownership. The daemon creates entries
// as root; a local file system would have created them as the caller, with
// the group of a set-group-ID parent. Chown clears set-user/group-ID bits
// of non-directories, so they are restored afterwards.
func (p *Passthrough) own(c *Call, dfd int, name string, mode uint32) error {
	if c.Internal || (c.Uid == 0 && c.Gid == 0) {
		return nil
	}
	var parent unix.Stat_t
	if err := fstatat(dfd, "", &parent, unix.AT_EMPTY_PATH); err != nil {
		return err
	}
	gid := int(c.Gid)
	if parent.Mode&unix.S_ISGID != 0 {
		gid = -1
	}
	if err := unix.Fchownat(dfd, name, int(c.Uid), gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if mode&(unix.S_ISUID|unix.S_ISGID) != 0 && mode&unix.S_IFMT != unix.S_IFLNK {
		return fchmodat2(dfd, name, mode&07777, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

// created finishes a creation: ownership, then the attributes to reply
// with, from fd when the new entry is open (the file just created, whatever
// its name leads to by now) or else from the name. If giving ownership
// fails the new entry is removed again, so a failed call leaves nothing
// behind.
func (p *Passthrough) created(c *Call, dfd int, name string, mode uint32, fd int, out *Attr) error {
	if err := p.own(c, dfd, name, mode); err != nil {
		flags := 0
		if mode&unix.S_IFMT == unix.S_IFDIR {
			flags = unix.AT_REMOVEDIR
		}
		unlinkat(dfd, name, flags)
		return err
	}
	var st unix.Stat_t
	var err error
	if fd >= 0 {
		err = unix.Fstat(fd, &st)
	} else {
		err = fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return err
	}
	p.fill(out, &st)
	return nil
}

func (p *Passthrough) mknod(c *Call, op *MknodOp) error {
	dfd, name, err := p.at(op.Path)
	if err != nil {
		return err
	}
	defer p.done(dfd)
	if err := unix.Mknodat(dfd, name, op.Mode, int(op.Rdev)); err != nil {
		return err
	}
	return p.created(c, dfd, name, op.Mode, -1, &op.Out)
}

func (p *Passthrough) mkdir(c *Call, op *MkdirOp) error {
	dfd, name, err := p.at(op.Path)
	if err != nil {
		return err
	}
	defer p.done(dfd)
	if err := unix.Mkdirat(dfd, name, op.Mode); err != nil {
		return err
	}
	return p.created(c, dfd, name, op.Mode|unix.S_IFDIR, -1, &op.Out)
}

func (p *Passthrough) symlink(c *Call, op *SymlinkOp) error {
	dfd, name, err := p.at(op.Path)
	if err != nil {
		return err
	}
	defer p.done(dfd)
	if err := unix.Symlinkat(op.Target, dfd, name); err != nil {
		return err
	}
	return p.created(c, dfd, name, unix.S_IFLNK, -1, &op.Out)
}

func (p *Passthrough) link(c *Call, op *LinkOp) error {
	ndfd, nname, err := p.at(op.NewPath)
	if err != nil {
		return err
	}
	defer p.done(ndfd)
	if op.Handle != nil && op.Handle.Fd >= 0 {
		if err := linkFd(op.Handle.Fd, ndfd, nname); err != nil {
			return err
		}
	} else {
		odfd, oname, err := p.at(op.OldPath)
		if err != nil {
			return err
		}
		defer p.done(odfd)
		if err := unix.Linkat(odfd, oname, ndfd, nname, 0); err != nil {
			return err
		}
	}
	var st unix.Stat_t
	if err := fstatat(ndfd, nname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	p.fill(&op.Out, &st)
	return nil
}

// linkFd gives the open file fd the name nname in ndfd: linkat(2) with
// AT_EMPTY_PATH, which needs CAP_DAC_READ_SEARCH, else through
// /proc/self/fd, which does not. Either way the kernel refuses a file
// that had names and lost them all (ENOENT); an O_TMPFILE file made
// without O_EXCL may be linked.
func linkFd(fd, ndfd int, nname string) error {
	err := unix.Linkat(fd, "", ndfd, nname, unix.AT_EMPTY_PATH)
	if err == unix.EPERM || err == unix.EACCES {
		err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), ndfd, nname, unix.AT_SYMLINK_FOLLOW)
	}
	return err
}

func (p *Passthrough) unlink(c *Call, op *UnlinkOp) error {
	dfd, name, err := p.at(op.Path)
	if err != nil {
		return err
	}
	defer p.done(dfd)
	return unlinkat(dfd, name, 0)
}

func (p *Passthrough) rmdir(c *Call, op *RmdirOp) error {
	dfd, name, err := p.at(op.Path)
	if err != nil {
		return err
	}
	defer p.done(dfd)
	return unlinkat(dfd, name, unix.AT_REMOVEDIR)
}

func (p *Passthrough) rename(c *Call, op *RenameOp) error {
	odfd, oname, err := p.at(op.OldPath)
	if err != nil {
		return err
	}
	defer p.done(odfd)
	ndfd, nname, err := p.at(op.NewPath)
	if err != nil {
		return err
	}
	defer p.done(ndfd)
	return unix.Renameat2(odfd, oname, ndfd, nname, uint(op.Flags))
}

// openFlags are the open(2) flags the backing file is opened with: the
// caller's, less those that only make sense to the kernel above us.
func openFlags(flags uint32) int {
	f := int(flags) &^ (unix.O_NOCTTY | unix.O_CLOEXEC | syscall.O_CREAT | syscall.O_EXCL)
	return f | unix.O_NOFOLLOW | unix.O_CLOEXEC
}

func (p *Passthrough) create(c *Call, op *CreateOp) error {
	dfd, name, err := p.at(op.Path)
	if err != nil {
		return err
	}
	defer p.done(dfd)
	flags := openFlags(op.Flags) | unix.O_CREAT
	if op.Flags&syscall.O_EXCL != 0 {
		flags |= unix.O_EXCL
	}
	fd, err := openatNoAlloc(dfd, name, flags|unix.O_CLOEXEC, op.Mode&07777)
	if err != nil {
		return err
	}
	if err := p.created(c, dfd, name, op.Mode, fd, &op.Out); err != nil {
		unix.Close(fd)
		return err
	}
	op.Handle = NewHandle(fd, op.Flags)
	op.Handle.Passthrough = true
	return nil
}

func (p *Passthrough) tmpfile(c *Call, op *TmpfileOp) error {
	dfd, err := p.openFile(op.Path, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	flags := openFlags(op.Flags) | unix.O_TMPFILE
	fd, err := unix.Openat(dfd, ".", flags&^unix.O_NOFOLLOW, op.Mode&07777)
	if err != nil {
		return err
	}
	if !c.Internal && (c.Uid != 0 || c.Gid != 0) {
		// As own() does for named entries: the caller's uid, and the
		// caller's gid unless the directory is set-group-ID.
		gid := int(c.Gid)
		var dir unix.Stat_t
		if unix.Fstat(dfd, &dir) == nil && dir.Mode&unix.S_ISGID != 0 {
			gid = -1
		}
		if err := unix.Fchown(fd, int(c.Uid), gid); err != nil {
			unix.Close(fd)
			return err
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	p.fill(&op.Out, &st)
	op.Handle = NewHandle(fd, op.Flags)
	op.Handle.Passthrough = true
	return nil
}

func (p *Passthrough) open(c *Call, op *OpenOp) error {
	fd, err := p.openFile(op.Path, openFlags(op.Flags), 0)
	if err != nil {
		return err
	}
	op.Handle = NewHandle(fd, op.Flags)
	op.Handle.Passthrough = true
	return nil
}

func (p *Passthrough) readdir(c *Call, op *ReaddirOp) error {
	var fd int
	if h := op.Handle; h != nil && h.Fd >= 0 {
		// The open directory itself, from its start: callers serialize
		// the reads of one handle (the bridge's dirHandle), and nothing
		// else uses its offset.
		fd = h.Fd
		if _, err := unix.Seek(fd, 0, unix.SEEK_SET); err != nil {
			return err
		}
	} else {
		var err error
		if fd, err = p.openFile(op.Path, unix.O_RDONLY|unix.O_DIRECTORY, 0); err != nil {
			return err
		}
		defer unix.Close(fd)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	ents := op.Entries[:0]
	err := readDirents(fd, func(name string, ino uint64, typ uint8) {
		if st.Dev != p.refDev {
			ino ^= st.Dev<<32 | st.Dev>>32
		}
		ents = append(ents, DirEntry{Name: name, Ino: ino, Mode: uint32(typ) << 12})
	})
	op.Entries = ents
	return err
}

func (p *Passthrough) statfs(c *Call, op *StatfsOp) error {
	var st syscall.Statfs_t
	if err := syscall.Fstatfs(p.rootFd, &st); err != nil {
		return err
	}
	op.Out.FromStatfsT(&st)
	return nil
}

func (p *Passthrough) getxattr(c *Call, op *GetxattrOp) error {
	if op.Handle != nil && op.Handle.Fd >= 0 {
		n, err := unix.Fgetxattr(op.Handle.Fd, op.Name, op.Dest)
		op.Size = uint32(n)
		return err
	}
	dfd, name, err := p.at(op.Path)
	if err != nil {
		return err
	}
	defer p.done(dfd)
	n, err := getxattrat(dfd, xname(name), unix.AT_SYMLINK_NOFOLLOW, op.Name, op.Dest)
	op.Size = uint32(n)
	return err
}

func (p *Passthrough) setxattr(c *Call, op *SetxattrOp) error {
	if op.Handle != nil && op.Handle.Fd >= 0 {
		return unix.Fsetxattr(op.Handle.Fd, op.Name, op.Data, int(op.Flags))
	}
	dfd, name, err := p.at(op.Path)
	if err != nil {
		return err
	}
	defer p.done(dfd)
	return setxattrat(dfd, xname(name), unix.AT_SYMLINK_NOFOLLOW, op.Name, op.Data, op.Flags)
}

func (p *Passthrough) listxattr(c *Call, op *ListxattrOp) error {
	if op.Handle != nil && op.Handle.Fd >= 0 {
		n, err := unix.Flistxattr(op.Handle.Fd, op.Dest)
		op.Size = uint32(max(n, 0))
		return err
	}
	dfd, name, err := p.at(op.Path)
	if err != nil {
		return err
	}
	defer p.done(dfd)
	n, err := listxattrat(dfd, xname(name), unix.AT_SYMLINK_NOFOLLOW, op.Dest)
	op.Size = uint32(n)
	return err
}

func (p *Passthrough) removexattr(c *Call, op *RemovexattrOp) error {
	if op.Handle != nil && op.Handle.Fd >= 0 {
		return unix.Fremovexattr(op.Handle.Fd, op.Name)
	}
	dfd, name, err := p.at(op.Path)
	if err != nil {
		return err
	}
	defer p.done(dfd)
	return removexattrat(dfd, xname(name), unix.AT_SYMLINK_NOFOLLOW, op.Name)
}

// xname is the name to give the *xattrat calls: they refuse an O_PATH fd
// with AT_EMPTY_PATH (EBADF), so the root is named "." instead.
func xname(name string) string {
	if name == "" {
		return "."
	}
	return name
}

// ioctl runs one of IoctlOp's commands on the open file below.
func (p *Passthrough) ioctl(c *Call, op *IoctlOp) error {
	n := IoctlArgSize(op.Cmd)
	if op.Handle == nil || op.Handle.Fd < 0 || n == 0 {
		return syscall.ENOTTY
	}
	if len(op.Arg) < n {
		return syscall.EINVAL
	}
	if op.Cmd == FsIocSetflags && c.Uid != 0 {
		// The kernel checked the caller's right to the change before
		// sending it (owner; CAP_LINUX_IMMUTABLE for +i and +a), but
		// ext4 asks for CAP_SYS_RESOURCE to toggle data journaling
		// (+j), and would see this daemon's, not the caller's. Only
		// root's request goes through, as the nearest check the
		// request allows.
		old, err := unix.IoctlGetUint32(op.Handle.Fd, FsIocGetflags)
		if err != nil {
			return err
		}
		if (binary.NativeEndian.Uint32(op.Arg)^old)&FsJournalDataFl != 0 {
			return syscall.EPERM
		}
	}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(op.Handle.Fd), uintptr(op.Cmd), uintptr(unsafe.Pointer(&op.Arg[0])))
	return errnoErr(e)
}

// errNoFd is returned for I/O on a handle the passthrough did not open.
var errNoFd = syscall.EBADF

func (p *Passthrough) read(c *Call, op *ReadOp) error {
	if op.Handle.Fd < 0 {
		return errNoFd
	}
	n, err := unix.Pread(op.Handle.Fd, op.Dest, op.Off)
	if err != nil {
		return err
	}
	op.Out = fuse.ReadResultData(op.Dest[:n])
	return nil
}

func (p *Passthrough) write(c *Call, op *WriteOp) error {
	if op.Handle.Fd < 0 {
		return errNoFd
	}
	n, err := unix.Pwrite(op.Handle.Fd, op.Data, op.Off)
	op.Written = uint32(max(n, 0))
	if err != nil {
		return err
	}
	if n >= streamMinWrite {
		stream(op.Handle, op.Off, int64(n))
	}
	if op.KillSuidgid {
		return killSuidgid(op.Handle.Fd)
	}
	return nil
}

func (p *Passthrough) flush(c *Call, op *FlushOp) error {
	if op.Handle.Fd < 0 {
		return nil
	}
	// close(2) of a dup releases the POSIX locks the caller held through
	// this file and reports delayed write errors, as a local close would.
	nfd, err := unix.Dup(op.Handle.Fd)
	if err != nil {
		return err
	}
	return unix.Close(nfd)
}

func (p *Passthrough) fsync(c *Call, op *FsyncOp) error {
	if op.Handle.Fd < 0 {
		return nil
	}
	if op.Flags&1 != 0 {
		return unix.Fdatasync(op.Handle.Fd)
	}
	return unix.Fsync(op.Handle.Fd)
}

func (p *Passthrough) release(c *Call, op *ReleaseOp) error {
	if op.Handle.Fd < 0 {
		return nil
	}
	if wb := op.Handle.wb.Load(); wb != nil {
		wb.wg.Wait() // its goroutine uses the fd
	}
	err := unix.Close(op.Handle.Fd)
	op.Handle.Fd = -1
	return err
}

// Streaming writes. A daemon-side filter that writes a large file in a
// sequential stream (crypt: every byte of a cp or dd, re-encrypted) leaves
// all of it dirty in the backing file's page cache until the kernel's
// periodic writeback (30 s) or an fsync, which then waits for all of it
// at once. The passthrough starts writeback of each completed stretch of
// such a stream itself (sync_file_range SYNC_FILE_RANGE_WRITE, which
// only queues the pages), so the disk works while the writer still
// encrypts: an fsync at the end (cp --fsync, dd conv=fsync, an editor's
// save) waits for the last stretch only, and a stream's dirty pages stay
// few. Only sequential runs of large writes count (random writes and
// small files are left to the kernel: they may be rewritten soon), and
// the call runs on its own goroutine, one at a time per handle, so a
// slow disk never holds up the writes themselves.
const (
	streamMinWrite = 256 << 10 // smaller writes are not a stream
	streamChunk    = 8 << 20   // writeback starts per stretch of this much
)

// streamKicks counts the writebacks stream started (for tests).
var streamKicks atomic.Int64

// streamWriteback is a handle's sequential write stream.
type streamWriteback struct {
	mu    sync.Mutex
	start int64 // first byte of the stream not yet given to writeback
	end   int64 // end of the last write
	busy  bool  // a sync_file_range is running
	wg    sync.WaitGroup
}

// stream notes a write of n bytes at off on h and starts writeback of the
// stream's completed stretch when it has grown by streamChunk.
func stream(h *Handle, off, n int64) {
	wb := h.wb.Load()
	if wb == nil {
		wb = &streamWriteback{start: -1}
		if !h.wb.CompareAndSwap(nil, wb) {
			wb = h.wb.Load()
		}
	}
	wb.mu.Lock()
	defer wb.mu.Unlock()
	if off != wb.end || wb.start < 0 {
		wb.start = off // a new stream
	}
	wb.end = off + n
	if wb.busy || wb.end-wb.start < streamChunk {
		return
	}
	fd, s, e := h.Fd, wb.start, wb.end
	wb.start, wb.busy = e, true
	wb.wg.Add(1)
	streamKicks.Add(1)
	go func() {
		defer wb.wg.Done()
		// Errors are the fsync's to report (EIO) or harmless (a file
		// system without it: the kernel's writeback stays in charge).
		_ = unix.SyncFileRange(fd, s, e-s, unix.SYNC_FILE_RANGE_WRITE)
		wb.mu.Lock()
		wb.busy = false
		wb.mu.Unlock()
	}()
}

func (p *Passthrough) lseek(c *Call, op *LseekOp) error {
	if op.Handle.Fd < 0 {
		return errNoFd
	}
	off, err := unix.Seek(op.Handle.Fd, int64(op.Off), int(op.Whence))
	op.Out = uint64(off)
	return err
}

func (p *Passthrough) allocate(c *Call, op *AllocateOp) error {
	if op.Handle.Fd < 0 {
		return errNoFd
	}
	return unix.Fallocate(op.Handle.Fd, op.Mode, int64(op.Off), int64(op.Size))
}

func (p *Passthrough) copyFileRange(c *Call, op *CopyFileRangeOp) error {
	if op.In.Fd < 0 || op.Out.Fd < 0 {
		return syscall.EXDEV
	}
	offIn, offOut := int64(op.OffIn), int64(op.OffOut)
	n, err := unix.CopyFileRange(op.In.Fd, &offIn, op.Out.Fd, &offOut, int(op.Len), int(op.Flags))
	op.Copied = uint32(max(n, 0))
	return err
}

func (p *Passthrough) getlk(c *Call, op *GetlkOp) error {
	if op.Handle.Fd < 0 {
		return errNoFd
	}
	var flk syscall.Flock_t
	op.Lk.ToFlockT(&flk)
	if err := syscall.FcntlFlock(uintptr(op.Handle.Fd), unix.F_OFD_GETLK, &flk); err != nil {
		return err
	}
	op.Out.FromFlockT(&flk)
	return nil
}

func (p *Passthrough) setlk(c *Call, op *SetlkOp) error {
	if op.Handle.Fd < 0 {
		return errNoFd
	}
	if op.Flags&fuse.FUSE_LK_FLOCK != 0 {
		var how int
		switch op.Lk.Typ {
		case syscall.F_RDLCK:
			how = unix.LOCK_SH
		case syscall.F_WRLCK:
			how = unix.LOCK_EX
		case syscall.F_UNLCK:
			how = unix.LOCK_UN
		default:
			return syscall.EINVAL
		}
		if !op.Wait {
			how |= unix.LOCK_NB
		}
		return unix.Flock(op.Handle.Fd, how)
	}
	var flk syscall.Flock_t
	op.Lk.ToFlockT(&flk)
	cmd := unix.F_OFD_SETLK
	if op.Wait {
		cmd = unix.F_OFD_SETLKW
	}
	return syscall.FcntlFlock(uintptr(op.Handle.Fd), cmd, &flk)
}

// ToErrno is the one mapping from Go errors to the errno a caller sees.
// Errors that carry no errno become EIO; the caller of ToErrno logs them.
func ToErrno(err error) Errno {
	if err == nil {
		return 0
	}
	if en, ok := err.(syscall.Errno); ok {
		// The common case (every failed syscall), without errors.As's
		// allocation.
		return en
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, os.ErrPermission):
		return syscall.EACCES
	case errors.Is(err, os.ErrExist):
		return syscall.EEXIST
	}
	return syscall.EIO
}
