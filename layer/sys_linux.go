package layer

import (
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

func bytePtr(s string) (*byte, error) { return unix.BytePtrFromString(s) }

func bufPtr(b []byte) uintptr {
	if len(b) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&b[0]))
}

// fchmodat2 changes the mode of dirfd/name without following a final
// symlink (AT_SYMLINK_NOFOLLOW) or of dirfd itself (AT_EMPTY_PATH).
func fchmodat2(dirfd int, name string, mode uint32, flags int) error {
	p, err := bytePtr(name)
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
	p, err := bytePtr(name)
	if err != nil {
		return 0, err
	}
	a, err := bytePtr(attr)
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
	p, err := bytePtr(name)
	if err != nil {
		return err
	}
	a, err := bytePtr(attr)
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
	p, err := bytePtr(name)
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
	p, err := bytePtr(name)
	if err != nil {
		return err
	}
	a, err := bytePtr(attr)
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
