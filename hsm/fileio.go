package hsm

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"github.com/vfsfilter/vfsfilter/layer"
	"golang.org/x/sys/unix"
)

// This file holds the HSM's access to records and file data. Everything
// starts from an fd or a path that the layer below produced (an OpenOp or
// GetxattrOp sent to Attachment.Below): the stack has no fd-based forms of
// fgetxattr, fsetxattr or futimens, so those run directly on the fds the
// passthrough opened. Nothing here resolves a path in the backing
// directory by itself.

// readRecordFd returns the record of the open file fd, or nil when it has
// none (a plain resident file).
func readRecordFd(fd int) (*Record, error) {
	var buf [RecordSize + 16]byte
	n, err := unix.Fgetxattr(fd, XattrName, buf[:])
	switch {
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
		return nil, nil
	case err != nil:
		return nil, err
	}
	var r Record
	if err := r.UnmarshalBinary(buf[:n]); err != nil {
		return nil, err
	}
	return &r, nil
}

// writeRecordFd stores rec on fd.
func writeRecordFd(fd int, rec *Record) error {
	b, _ := rec.MarshalBinary()
	return unix.Fsetxattr(fd, XattrName, b, 0)
}

// removeRecordFd drops fd's record; a file without one is resident.
func removeRecordFd(fd int) error {
	err := unix.Fremovexattr(fd, XattrName)
	if errors.Is(err, unix.ENODATA) {
		return nil
	}
	return err
}

// readRecordPath reads the record of path through the layer below.
func (f *Filter) readRecordPath(ctx context.Context, path string) (*Record, error) {
	var buf [RecordSize + 16]byte
	op := &layer.GetxattrOp{Path: path, Name: XattrName, Dest: buf[:]}
	switch errno := f.att.Below.Do(layer.InternalCall(ctx), op); errno {
	case 0:
	case syscall.ENODATA, syscall.ENOTSUP:
		return nil, nil
	default:
		return nil, errno
	}
	var r Record
	if err := r.UnmarshalBinary(buf[:op.Size]); err != nil {
		return nil, err
	}
	return &r, nil
}

// openBelow opens path through the layer below for the HSM's own use.
func (f *Filter) openBelow(ctx context.Context, path string, flags int) (*layer.Handle, error) {
	op := &layer.OpenOp{Path: path, Flags: uint32(flags)}
	if errno := f.att.Below.Do(layer.InternalCall(ctx), op); errno != 0 {
		return nil, errno
	}
	return op.Handle, nil
}

// releaseBelow closes a handle from openBelow.
func (f *Filter) releaseBelow(h *layer.Handle) {
	f.att.Below.Do(layer.InternalCall(context.Background()), &layer.ReleaseOp{Handle: h})
}

// reopen opens the file behind fd again with flags. Going through
// /proc/self/fd reaches the very inode fd refers to, whatever renames
// happened since, which a path could not promise.
func reopen(fd int, flags int) (int, error) {
	for {
		nfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), flags|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ELOOP {
			// O_NOFOLLOW refuses the magic link itself on some
			// kernels; the link is ours, so follow it.
			nfd, err = unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), flags|unix.O_CLOEXEC, 0)
		}
		return nfd, err
	}
}

// fdName returns the path of fd's file relative to backing, for log lines
// and journal entries, or the kernel's name when it lies elsewhere.
func fdName(fd int, backing string) string {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd), buf)
	if err != nil {
		return fmt.Sprintf("fd %d", fd)
	}
	p := string(buf[:n])
	if len(p) > len(backing) && p[:len(backing)] == backing && p[len(backing)] == '/' {
		return p[len(backing)+1:]
	}
	return p
}

// setMtime sets fd's mtime (and leaves atime alone).
func setMtime(fd int, ts unix.Timespec) error {
	t := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, ts}
	// futimens(3): utimensat with a NULL path acts on fd itself.
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&t)), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func fstat(fd int) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstat(fd, &st)
	return st, err
}

// sameContent reports whether two stats of one file show no change of its
// data: size, mtime and ctime (a write that restores mtime still moves
// ctime).
func sameContent(a, b *unix.Stat_t) bool {
	return a.Size == b.Size && a.Mtim == b.Mtim && a.Ctim == b.Ctim && a.Ino == b.Ino
}
