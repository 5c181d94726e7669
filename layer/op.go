package layer

import (
	"encoding/binary"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// OpKind names one operation of the stack. Filters register callbacks per
// kind; the stack keeps one chain per kind, so an operation that no filter
// registered goes straight to the bottom layer.
type OpKind uint8

// The operations a stack carries. They mirror the FUSE requests that reach a
// node or an open file; each has an *Op struct below holding its inputs and
// outputs.
const (
	KindLookup OpKind = iota
	KindGetattr
	KindSetattr
	KindAccess
	KindReadlink
	KindMknod
	KindMkdir
	KindSymlink
	KindLink
	KindUnlink
	KindRmdir
	KindRename
	KindCreate
	KindOpen
	KindReaddir
	KindStatfs
	KindGetxattr
	KindSetxattr
	KindListxattr
	KindRemovexattr
	KindRead
	KindWrite
	KindFlush
	KindFsync
	KindRelease
	KindLseek
	KindAllocate
	KindCopyFileRange
	KindGetlk
	KindSetlk
	KindTmpfile
	KindIoctl
	numKinds
)

var kindNames = [numKinds]string{
	"lookup", "getattr", "setattr", "access", "readlink", "mknod", "mkdir",
	"symlink", "link", "unlink", "rmdir", "rename", "create", "open",
	"readdir", "statfs", "getxattr", "setxattr", "listxattr", "removexattr",
	"read", "write", "flush", "fsync", "release", "lseek", "allocate",
	"copy_file_range", "getlk", "setlk", "tmpfile", "ioctl",
}

func (k OpKind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return "unknown"
}

// Op is one request travelling through the stack. Every concrete op is a
// pointer to one of the *Op structs of this file. Paths are relative to the
// root of the layer that sees them ("" is the root, components separated by
// "/", never a leading slash) and are in that layer's names: a filter that
// renames entries rewrites the path in its pre-callback for the layers below.
type Op interface {
	Kind() OpKind
}

// Attr is the attribute set carried by ops; it is what FUSE replies with.
type Attr = fuse.Attr

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	Name string
	Ino  uint64
	Mode uint32 // file type bits (S_IFMT) only
}

// LookupOp resolves Path to an existing entry and returns its attributes.
type LookupOp struct {
	Path string
	Out  Attr
}

// GetattrOp returns the attributes of Path. Handle is set when the kernel
// asked through an open file (fstat) and may be nil.
//
// WantBirth (statx(2) asked for the birth time) asks the bottom layer for
// the file's creation time as well: Birth, with HasBirth set when the file
// system below records one. A filter that completes a getattr itself may
// leave them unset; users then see no birth time, as on a file system
// without one.
type GetattrOp struct {
	Node      *Node
	Path      string
	Handle    *Handle
	WantBirth bool
	Out       Attr
	Birth     fuse.SxTime
	HasBirth  bool
}

// SetattrOp changes the attributes named in In.Valid (fuse.FATTR_*).
type SetattrOp struct {
	Node   *Node
	Path   string
	Handle *Handle
	In     fuse.SetAttrIn
	// Touch asks for nothing but a new change time: the kernel's
	// SETATTR for chown(path, -1, -1), which changes nothing else but on
	// a local file system still updates ctime (and, as any chown, drops
	// set-user-ID). The bridge sets it from the request as the kernel
	// sent it; a filter that takes some of In.Valid for itself leaves In
	// with nothing to change but must not make that a Touch.
	Touch bool
	Out   Attr
}

// SetattrChanges are the In.Valid bits of a SETATTR that change something;
// a request with none of them is a Touch.
const SetattrChanges = fuse.FATTR_MODE | fuse.FATTR_UID | fuse.FATTR_GID | fuse.FATTR_SIZE |
	fuse.FATTR_ATIME | fuse.FATTR_MTIME | fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME_NOW

// AccessOp checks Mask (R_OK, W_OK, X_OK, F_OK) for the caller.
type AccessOp struct {
	Node *Node
	Path string
	Mask uint32
}

// ReadlinkOp returns the target of the symlink at Path.
type ReadlinkOp struct {
	Node *Node
	Path string
	Out  []byte
}

// MknodOp creates a device node, FIFO or socket. Mode is already masked by
// the caller's umask (the kernel applies it once).
type MknodOp struct {
	Path string
	Mode uint32
	Rdev uint32
	Out  Attr
}

// MkdirOp creates a directory; Mode is already masked by the caller's umask.
type MkdirOp struct {
	Path string
	Mode uint32
	Out  Attr
}

// SymlinkOp creates a symlink at Path pointing to Target.
type SymlinkOp struct {
	Path   string
	Target string
	Out    Attr
}

// LinkOp creates a hard link NewPath to the existing OldPath.
//
// Handle, when set, is an open handle of the file to link, whose name is
// gone (an O_TMPFILE file given its name, linkat(2) with AT_EMPTY_PATH):
// OldPath then does not resolve (see Unreachable), and the passthrough
// links the handle's fd. A filter that rewrites OldPath must accept that.
type LinkOp struct {
	Node    *Node // the existing node
	OldPath string
	NewPath string
	Handle  *Handle
	Out     Attr
}

// UnlinkOp removes the non-directory entry at Path.
type UnlinkOp struct {
	Path string
}

// RmdirOp removes the empty directory at Path.
type RmdirOp struct {
	Path string
}

// RenameOp renames OldPath to NewPath; Flags are renameat2 flags
// (RENAME_NOREPLACE, RENAME_EXCHANGE).
type RenameOp struct {
	OldPath string
	NewPath string
	Flags   uint32
}

// CreateOp creates and opens a regular file. The layer that completes it
// sets Handle and Out.
type CreateOp struct {
	Path   string
	Flags  uint32
	Mode   uint32
	Out    Attr
	Handle *Handle
}

// TmpfileOp creates an unnamed file in directory Path (O_TMPFILE). The
// layer that completes it sets Handle and Out.
type TmpfileOp struct {
	Path   string
	Flags  uint32
	Mode   uint32
	Out    Attr
	Handle *Handle
}

// OpenOp opens an existing file. The layer that completes it sets Handle.
type OpenOp struct {
	Node   *Node
	Path   string
	Flags  uint32
	Handle *Handle
}

// ReaddirOp lists the directory at Path. Entries exclude "." and "..".
// Post-callbacks may add, drop or rename entries.
//
// Handle, when set, is the open directory being read (from an OpenOp with
// O_DIRECTORY, as opendir(3) makes): the bottom lists that directory, not
// whatever is at Path now, so a directory stream renamed while open goes
// on listing what it opened, as on a local file system. Filters translate
// Path as for any op and pass Handle down with it.
type ReaddirOp struct {
	Node    *Node
	Path    string
	Handle  *Handle
	Entries []DirEntry
}

// StatfsOp reports file-system statistics.
type StatfsOp struct {
	Path string
	Out  fuse.StatfsOut
}

// GetxattrOp reads extended attribute Name into Dest. With an empty Dest it
// only reports the size. Size is the attribute's length.
//
// Handle, here and in the other xattr ops, when set, is an open handle of
// the same file (the kernel sends none; the bridge lends one of the file's
// own when it has one open): the passthrough then acts through its fd
// instead of resolving Path, so the op reaches a file whose name is gone
// (unlinked while open), as fgetxattr(2) and the like do on a local file
// system, and Path may then not resolve at all. A filter that rewrites
// Path must accept such a path when Handle is set; one that sends the op
// to another file below (other than a path rewrite for the same file) must
// clear Handle.
type GetxattrOp struct {
	Node   *Node
	Path   string
	Handle *Handle
	Name   string
	Dest   []byte
	Size   uint32
}

// SetxattrOp sets extended attribute Name; Flags are XATTR_CREATE/REPLACE.
type SetxattrOp struct {
	Node   *Node
	Path   string
	Handle *Handle // see GetxattrOp
	Name   string
	Data   []byte
	Flags  uint32
}

// ListxattrOp lists attribute names, NUL separated, into Dest (size query
// when Dest is empty). Size is the length of the full list.
type ListxattrOp struct {
	Node   *Node
	Path   string
	Handle *Handle // see GetxattrOp
	Dest   []byte
	Size   uint32
}

// RemovexattrOp removes extended attribute Name.
type RemovexattrOp struct {
	Node   *Node
	Path   string
	Handle *Handle // see GetxattrOp
	Name   string
}

// ReadOp reads up to len(Dest) bytes at Off of an open file.
type ReadOp struct {
	Handle *Handle
	Off    int64
	Dest   []byte
	Out    fuse.ReadResult
}

// WriteOp writes Data at Off of an open file. KillSuidgid asks the layer
// to clear the set-user-ID and set-group-ID bits, as a write by an
// unprivileged caller does on a local file system.
type WriteOp struct {
	Handle      *Handle
	Off         int64
	Data        []byte
	KillSuidgid bool
	Written     uint32
}

// FlushOp is sent on every close(2) of a file descriptor.
type FlushOp struct {
	Handle *Handle
}

// FsyncOp flushes an open file to stable storage; Flags&1 means fdatasync.
type FsyncOp struct {
	Handle *Handle
	Flags  uint32
}

// ReleaseOp is sent when the last reference to an open file goes away.
type ReleaseOp struct {
	Handle *Handle
}

// LseekOp serves SEEK_DATA and SEEK_HOLE.
type LseekOp struct {
	Handle *Handle
	Off    uint64
	Whence uint32
	Out    uint64
}

// AllocateOp is fallocate(2).
type AllocateOp struct {
	Handle *Handle
	Off    uint64
	Size   uint64
	Mode   uint32
}

// CopyFileRangeOp is copy_file_range(2) between two open files.
type CopyFileRangeOp struct {
	In     *Handle
	OffIn  uint64
	Out    *Handle
	OffOut uint64
	Len    uint64
	Flags  uint64
	Copied uint32
}

// GetlkOp tests a POSIX record lock (F_GETLK).
type GetlkOp struct {
	Handle *Handle
	Owner  uint64
	Lk     fuse.FileLock
	Flags  uint32
	Out    fuse.FileLock
}

// SetlkOp takes or releases a POSIX record lock or, when Flags has
// fuse.FUSE_LK_FLOCK, a flock(2) lock. Wait blocks until the lock is free.
type SetlkOp struct {
	Handle *Handle
	Owner  uint64
	Lk     fuse.FileLock
	Flags  uint32
	Wait   bool
}

// IoctlOp is one of the ioctls through which chattr(1) and lsattr(1) read
// and change a file's or directory's inode flags, on an open file: Cmd is
// FsIocGetflags or FsIocSetflags (Arg holds the flags, a native-endian
// uint32) or FsIocFsgetxattr or FsIocFssetxattr (Arg holds a struct
// fsxattr, FsxattrSize bytes). Get commands fill Arg. No other ioctl
// reaches the stack: the bridge answers ENOTTY, as for a file system that
// has none, so a backing fd never sees a command nobody vetted. The kernel
// has checked the caller's right to the change (owner, and
// CAP_LINUX_IMMUTABLE for the immutable and append-only flags) before.
type IoctlOp struct {
	Handle *Handle
	Cmd    uint32
	Arg    []byte
}

// The ioctl commands of IoctlOp (linux/fs.h), in this architecture's
// encoding: the direction bits of _IOR and _IOW differ between
// architectures (powerpc, mips and sparc have their own), so they are taken
// from x/sys's FS_IOC_GETFLAGS and FS_IOC_SETFLAGS, whose size field
// (sizeof(long), bits 16 up on every architecture) and number are known.
const (
	FsIocGetflags   = unix.FS_IOC_GETFLAGS
	FsIocSetflags   = unix.FS_IOC_SETFLAGS
	FsIocFsgetxattr = iocRead | FsxattrSize<<16 | 'X'<<8 | 31  // FS_IOC_FSGETXATTR
	FsIocFssetxattr = iocWrite | FsxattrSize<<16 | 'X'<<8 | 32 // FS_IOC_FSSETXATTR
	FsxattrSize     = 28                                       // sizeof(struct fsxattr)

	iocLong  = uint32(strconv.IntSize/8) << 16 // sizeof(long) on Linux
	iocRead  = uint32(unix.FS_IOC_GETFLAGS) &^ (iocLong | 'f'<<8 | 1)
	iocWrite = uint32(unix.FS_IOC_SETFLAGS) &^ (iocLong | 'f'<<8 | 2)
)

// Flags of IoctlOp's commands that filters and the passthrough look at.
const (
	FsImmutableFl    = 0x10   // FS_IMMUTABLE_FL: no change, no new link
	FsAppendFl       = 0x20   // FS_APPEND_FL: writes only at the end
	FsJournalDataFl  = 0x4000 // FS_JOURNAL_DATA_FL: needs CAP_SYS_RESOURCE on ext4
	FsXflagImmutable = 0x08   // FS_XFLAG_IMMUTABLE, in fsxattr.fsx_xflags
	FsXflagAppend    = 0x10   // FS_XFLAG_APPEND
)

// IoctlArgSize is the size of Arg for cmd, 0 for a command IoctlOp does
// not carry.
func IoctlArgSize(cmd uint32) int {
	switch cmd {
	case FsIocGetflags, FsIocSetflags:
		return 4
	case FsIocFsgetxattr, FsIocFssetxattr:
		return FsxattrSize
	}
	return 0
}

// IoctlSets reports whether the op changes flags, and which of the
// immutable and append-only ones it leaves set: the flags filters must
// know about before they let the change through.
func (op *IoctlOp) IoctlSets() (set, immutable, appendOnly bool) {
	switch op.Cmd {
	case FsIocSetflags:
		f := binary.NativeEndian.Uint32(op.Arg)
		return true, f&FsImmutableFl != 0, f&FsAppendFl != 0
	case FsIocFssetxattr:
		f := binary.NativeEndian.Uint32(op.Arg) // fsx_xflags comes first
		return true, f&FsXflagImmutable != 0, f&FsXflagAppend != 0
	}
	return false, false, false
}

func (*LookupOp) Kind() OpKind        { return KindLookup }
func (*GetattrOp) Kind() OpKind       { return KindGetattr }
func (*SetattrOp) Kind() OpKind       { return KindSetattr }
func (*AccessOp) Kind() OpKind        { return KindAccess }
func (*ReadlinkOp) Kind() OpKind      { return KindReadlink }
func (*MknodOp) Kind() OpKind         { return KindMknod }
func (*MkdirOp) Kind() OpKind         { return KindMkdir }
func (*SymlinkOp) Kind() OpKind       { return KindSymlink }
func (*LinkOp) Kind() OpKind          { return KindLink }
func (*UnlinkOp) Kind() OpKind        { return KindUnlink }
func (*RmdirOp) Kind() OpKind         { return KindRmdir }
func (*RenameOp) Kind() OpKind        { return KindRename }
func (*CreateOp) Kind() OpKind        { return KindCreate }
func (*OpenOp) Kind() OpKind          { return KindOpen }
func (*ReaddirOp) Kind() OpKind       { return KindReaddir }
func (*StatfsOp) Kind() OpKind        { return KindStatfs }
func (*GetxattrOp) Kind() OpKind      { return KindGetxattr }
func (*SetxattrOp) Kind() OpKind      { return KindSetxattr }
func (*ListxattrOp) Kind() OpKind     { return KindListxattr }
func (*RemovexattrOp) Kind() OpKind   { return KindRemovexattr }
func (*ReadOp) Kind() OpKind          { return KindRead }
func (*WriteOp) Kind() OpKind         { return KindWrite }
func (*FlushOp) Kind() OpKind         { return KindFlush }
func (*FsyncOp) Kind() OpKind         { return KindFsync }
func (*ReleaseOp) Kind() OpKind       { return KindRelease }
func (*LseekOp) Kind() OpKind         { return KindLseek }
func (*AllocateOp) Kind() OpKind      { return KindAllocate }
func (*CopyFileRangeOp) Kind() OpKind { return KindCopyFileRange }
func (*GetlkOp) Kind() OpKind         { return KindGetlk }
func (*SetlkOp) Kind() OpKind         { return KindSetlk }
func (*TmpfileOp) Kind() OpKind       { return KindTmpfile }
func (*IoctlOp) Kind() OpKind         { return KindIoctl }

// Errno is the only error type that crosses the stack: the errno the
// caller's syscall returns. 0 is success.
type Errno = syscall.Errno
