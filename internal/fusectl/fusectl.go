// Package fusectl aborts FUSE connections through the kernel's FUSE
// control file system (fusectl; the kernel's
// Documentation/filesystems/fuse.rst, "Control filesystem").
//
// Aborting is the one way to end a FUSE hang that signals cannot end: a
// daemon killed while a file was open on its own mount cannot finish dying
// (closing that file waits for a FLUSH answer that only the daemon could
// give), and everything that touches the mount waits with it. Writing to
// the connection's "abort" file fails every pending and future request.
//
// fusectl is usually mounted at Dir at boot (systemd's
// sys-fs-fuse-connections.mount), but not on every machine: containers,
// minimal VMs and CI runners often lack it. Abort then makes a mount of
// its own that no directory shows (fsmount), so the machine is left as it
// was. fusectl is a single-instance file system: every mount of it shows
// the same connections.
package fusectl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Dir is where fusectl is mounted on a usual Linux system.
const Dir = "/sys/fs/fuse/connections"

// superMagic is fusectl's f_type (FUSE_CTL_SUPER_MAGIC).
const superMagic = 0x65735543

// Abort aborts the FUSE connection conn: the minor device number of the
// mount (field 3 of /proc/self/mountinfo is "0:MINOR"), as a decimal
// string. It needs CAP_SYS_ADMIN. It returns an error wrapping
// fs.ErrNotExist when no such connection exists (its mount is gone).
// Aborting a connection that was aborted already is not an error.
func Abort(conn string) error {
	if conn == "" || filepath.Base(conn) != conn || conn == "." || conn == ".." {
		return fmt.Errorf("fusectl: bad connection name %q", conn)
	}
	return abort(Dir, conn)
}

// abort aborts conn through the fusectl mounted at dir or, when there is
// none there, through a mount of its own that is never attached to any
// directory (fsopen and fsmount give a file descriptor of the mount's
// root), so it is visible to no one and gone when the descriptor is
// closed, whatever happens.
func abort(dir, conn string) error {
	var root *os.File
	var err error
	if Mounted(dir) {
		root, err = os.Open(dir)
	} else if root, err = detachedMount(); err != nil {
		err = fmt.Errorf("fusectl is not mounted at %s and cannot be: %w", dir, err)
	}
	if err != nil {
		return err
	}
	defer root.Close()
	fd, err := unix.Openat(int(root.Fd()), conn+"/abort", unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("fusectl: no FUSE connection %s: %w", conn, fs.ErrNotExist)
	}
	if err == nil {
		_, err = unix.Write(fd, []byte("1"))
		unix.Close(fd)
	}
	if err != nil {
		return fmt.Errorf("fusectl: aborting connection %s: %w", conn, err)
	}
	return nil
}

// detachedMount mounts fusectl without attaching it anywhere and returns
// the mount's root directory.
func detachedMount() (*os.File, error) {
	fsfd, err := unix.Fsopen("fusectl", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fsopen: %w", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return nil, fmt.Errorf("fsconfig: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fsmount: %w", err)
	}
	return os.NewFile(uintptr(mfd), "fusectl"), nil
}

// Mounted reports whether fusectl is mounted at dir.
func Mounted(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == superMagic
}
