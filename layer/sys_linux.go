package layer

import (
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Syscalls that golang.org/x/sys does not wrap yet. All exist on Linux 6.13+
// (the *xattrat family) and 6.6+ (fchmodat2); the project targets 6.9+ for
// FUSE passthrough anyway.
const (
	sysFchmodat2     = 452
	sysSetxattrat    = 463
	sysGetxattrat    = 464
	sysListxattrat   = 465
	sysRemovexattrat = 466
)

type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

func bufPtr(b []byte) uintptr {
	if len(b) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&b[0]))
}

// fchmodat2 changes the mode of dirfd/name without following a final
// symlink (AT_SYMLINK_NOFOLLOW) or of dirfd itself (AT_EMPTY_PATH).
func fchmodat2(dirfd int, name string, mode uint32, flags int) error {
	var nb nameBuf
	p, err := nb.ptr(name)
	if err != nil {
		return err
	}
	_, _, e := unix.Syscall6(sysFchmodat2, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(mode), uintptr(flags), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getxattrat(dirfd int, name string, flags int, attr string, dest []byte) (int, error) {
	var nb, ab nameBuf
	p, err := nb.ptr(name)
	if err != nil {
		return 0, err
	}
	a, err := ab.ptr(attr)
	if err != nil {
		return 0, err
	}
	args := xattrArgs{value: uint64(bufPtr(dest)), size: uint32(len(dest))}
	r, _, e := unix.Syscall6(sysGetxattrat, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(flags),
		uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func setxattrat(dirfd int, name string, flags int, attr string, data []byte, xflags uint32) error {
	var nb, ab nameBuf
	p, err := nb.ptr(name)
	if err != nil {
		return err
	}
	a, err := ab.ptr(attr)
	if err != nil {
		return err
	}
	args := xattrArgs{value: uint64(bufPtr(data)), size: uint32(len(data)), flags: xflags}
	_, _, e := unix.Syscall6(sysSetxattrat, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(flags),
		uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	if e != 0 {
		return e
	}
	return nil
}

func listxattrat(dirfd int, name string, flags int, dest []byte) (int, error) {
	var nb nameBuf
	p, err := nb.ptr(name)
	if err != nil {
		return 0, err
	}
	r, _, e := unix.Syscall6(sysListxattrat, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(flags),
		bufPtr(dest), uintptr(len(dest)), 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func removexattrat(dirfd int, name string, flags int, attr string) error {
	var nb, ab nameBuf
	p, err := nb.ptr(name)
	if err != nil {
		return err
	}
	a, err := ab.ptr(attr)
	if err != nil {
		return err
	}
	_, _, e := unix.Syscall6(sysRemovexattrat, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(flags),
		uintptr(unsafe.Pointer(a)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// futimens sets the times of an open file (utimensat with a NULL path,
// which x/sys does not expose).
func futimens(fd int, ts *[2]unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// readDirents parses the output of getdents64.
func readDirents(fd int, fn func(name string, ino uint64, typ uint8)) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		b := buf[:n]
		for len(b) > 0 {
			// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
			ino := *(*uint64)(unsafe.Pointer(&b[0]))
			reclen := int(*(*uint16)(unsafe.Pointer(&b[16])))
			typ := b[18]
			nameb := b[19:reclen]
			for i, c := range nameb {
				if c == 0 {
					nameb = nameb[:i]
					break
				}
			}
			name := string(nameb)
			b = b[reclen:]
			if name == "." || name == ".." {
				continue
			}
			fn(name, ino, typ)
		}
	}
}

// nameBuf holds a NUL-terminated copy of a name or short path on the
// caller's stack. The *at calls of x/sys copy every name to the heap; the
// calls below are made for nearly every request and use this instead.
// Stack memory is safe to pass: syscall.Syscall6 is nosplit, so the stack
// cannot move while the kernel reads the name.
type nameBuf [256]byte

// ptr returns s as a C string: in b when it fits, else on the heap.
func (b *nameBuf) ptr(s string) (*byte, error) {
	if len(s) >= len(b) {
		return unix.BytePtrFromString(s)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return nil, unix.EINVAL
	}
	copy(b[:], s)
	b[len(s)] = 0
	return &b[0], nil
}

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// fstatat is unix.Fstatat without the allocation.
func fstatat(dirfd int, name string, st *unix.Stat_t, flags int) error {
	var b nameBuf
	p, err := b.ptr(name)
	if err != nil {
		return err
	}
	_, _, e := syscall.Syscall6(unix.SYS_NEWFSTATAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(st)), uintptr(flags), 0, 0)
	return errnoErr(e)
}

// unlinkat is unix.Unlinkat without the allocation.
func unlinkat(dirfd int, name string, flags int) error {
	var b nameBuf
	p, err := b.ptr(name)
	if err != nil {
		return err
	}
	_, _, e := syscall.Syscall(unix.SYS_UNLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(flags))
	return errnoErr(e)
}

// openatNoAlloc is unix.Openat without the allocation.
func openatNoAlloc(dirfd int, name string, flags int, mode uint32) (int, error) {
	var b nameBuf
	p, err := b.ptr(name)
	if err != nil {
		return -1, err
	}
	r, _, e := syscall.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(flags|unix.O_LARGEFILE), uintptr(mode), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// openat2NoAlloc is unix.Openat2 without the allocation (for paths that
// fit nameBuf).
func openat2NoAlloc(dirfd int, path string, how *unix.OpenHow) (int, error) {
	var b nameBuf
	p, err := b.ptr(path)
	if err != nil {
		return -1, err
	}
	r, _, e := syscall.Syscall6(unix.SYS_OPENAT2, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(how)), unsafe.Sizeof(*how), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}
