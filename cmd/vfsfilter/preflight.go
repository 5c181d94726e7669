package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The pre-flight checks run before anything is mounted. Each failure names
// the path and the cause and carries the exit code of its class, so that a
// user (or a script) learns what is wrong without reading a kernel log: the
// kernel itself would mostly say EINVAL, EPERM or nothing at all (FUSE
// mounts over a non-empty directory without complaint).

// checkBacking verifies that path is a directory we can use as the backing
// directory and returns its absolute path with symlinks resolved.
func checkBacking(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", withCode(ExitBacking, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", withCode(ExitBacking, describePathError("backing directory", path, err))
	}
	if !st.IsDir() {
		return "", errorf(ExitBacking, "backing directory %s is not a directory (it is a %s)", path, describeMode(st.Mode()))
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", withCode(ExitBacking, describePathError("backing directory", path, err))
	}
	return real, nil
}

// checkMountpoint verifies that path is an empty (unless nonempty),
// unmounted directory outside backing (an absolute, resolved path) and
// returns its absolute path with symlinks resolved: the kernel records the
// resolved path in mountinfo, and unmounting compares with it.
func checkMountpoint(path, backing string, nonempty bool) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", withCode(ExitMountpoint, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", withCode(ExitMountpoint, describePathError("mountpoint", path, err))
	}
	if !st.IsDir() {
		return "", errorf(ExitMountpoint, "mountpoint %s is not a directory (it is a %s)", path, describeMode(st.Mode()))
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", withCode(ExitMountpoint, describePathError("mountpoint", path, err))
	}
	if m, ok := isMounted(real, st); ok {
		return "", errorf(ExitMountpoint, "mountpoint %s is already mounted (%s); unmount it first: vfsfilter unmount %s", path, m, path)
	}
	if real == backing {
		// Mounting over the backing directory itself works (the backing
		// directory is opened before the mount covers it) but hides the
		// unfiltered tree from everyone, which is rarely meant.
		if !nonempty {
			return "", errorf(ExitMountpoint, "mountpoint %s is the backing directory; this hides the unfiltered tree (use -o nonempty to do it anyway)", path)
		}
	} else if strings.HasPrefix(real, backing+"/") || backing == "/" {
		// The daemon's own lookups under the backing directory would walk
		// into the mount and ask the daemon again: a loop, and with some
		// locking orders a deadlock.
		return "", errorf(ExitMountpoint, "mountpoint %s is inside the backing directory %s; the file system would contain itself", path, backing)
	}
	if !nonempty {
		empty, err := isEmptyDir(real)
		if err != nil {
			return "", withCode(ExitMountpoint, describePathError("mountpoint", path, err))
		}
		if !empty {
			return "", errorf(ExitMountpoint, "mountpoint %s is not empty (use -o nonempty to mount anyway)", path)
		}
	}
	return real, nil
}

// isMounted reports whether something is mounted on path (absolute,
// resolved; st is its stat) and describes it. mountinfo names the file
// system; a device number different from the parent's catches mounts that
// mountinfo shows under another name (a different root, a chroot).
func isMounted(path string, st fs.FileInfo) (string, bool) {
	if mounts, err := readMounts(); err == nil {
		if m, ok := mountAt(mounts, path); ok {
			return fmt.Sprintf("%s from %s", m.FSType, m.Source), true
		}
	}
	if path == "/" {
		return "the root file system", true
	}
	parent, err := os.Stat(filepath.Dir(path))
	if err != nil {
		return "", false
	}
	dev := st.Sys().(*syscall.Stat_t).Dev
	if parent.Sys().(*syscall.Stat_t).Dev != dev {
		return fmt.Sprintf("device %d:%d", unix.Major(dev), unix.Minor(dev)), true
	}
	return "", false
}

func isEmptyDir(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
}

// describePathError turns a stat/open error on a user-given path into a
// sentence that names the path and the cause.
func describePathError(what, path string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return fmt.Errorf("%s %s is a FUSE mount whose daemon is gone (transport endpoint is not connected); clean it up with: vfsfilter unmount %s", what, path, path)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %s does not exist", what, path)
	case errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%s %s: a component of the path is not a directory", what, path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s %s: permission denied", what, path)
	case errors.Is(err, syscall.ELOOP):
		return fmt.Errorf("%s %s: too many levels of symbolic links", what, path)
	}
	return fmt.Errorf("%s %s: %w", what, path, unwrapPathError(err))
}

// unwrapPathError drops the "stat PATH:" prefix of an *fs.PathError when
// the message names the path already.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func describeMode(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	}
	return "special file"
}

// fuseDevice is the FUSE character device; a variable for tests.
var fuseDevice = "/dev/fuse"

// checkFUSE verifies that the kernel's FUSE device exists and, when we are
// going to open it ourselves (privileged), that we can.
func checkFUSE(privileged bool) error {
	st, err := os.Stat(fuseDevice)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errorf(ExitNoFUSE, "%s does not exist: load the kernel module (modprobe fuse), or in a container pass the device (docker run --device /dev/fuse)", fuseDevice)
	case err != nil:
		return withCode(ExitNoFUSE, fmt.Errorf("%s: %w", fuseDevice, unwrapPathError(err)))
	case st.Mode()&fs.ModeCharDevice == 0:
		return errorf(ExitNoFUSE, "%s is not a character device (it is a %s)", fuseDevice, describeMode(st.Mode()))
	}
	if !privileged {
		// fusermount3 opens the device with the user's rights, not its
		// setuid ones; a mode of 0600 (common in containers) stops it
		// with a message that never reaches a daemon's caller.
		if err := unix.Access(fuseDevice, unix.R_OK|unix.W_OK); err != nil {
			return errorf(ExitPrivilege, "no permission to open %s (mode %v): %v; fusermount3 opens it with your rights", fuseDevice, st.Mode().Perm(), err)
		}
		return nil
	}
	// Opening the device creates an unused connection that close destroys;
	// it is the one way to learn that a container's device cgroup refuses
	// it, before mount(2) fails with a less helpful error.
	fd, err := unix.Open(fuseDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case err == nil:
		unix.Close(fd)
		return nil
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return errorf(ExitPrivilege, "cannot open %s: %v (in a container, allow the device: --device /dev/fuse)", fuseDevice, err)
	case errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO):
		return errorf(ExitNoFUSE, "cannot open %s: %v: the kernel has no FUSE driver (modprobe fuse)", fuseDevice, err)
	}
	return errorf(ExitNoFUSE, "cannot open %s: %v", fuseDevice, err)
}

// canMountDirectly reports whether this process may call mount(2) itself:
// it has CAP_SYS_ADMIN in its effective set. Checking the capability rather
// than the uid gets containers right, where uid 0 often lacks it.
func canMountDirectly() bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return os.Geteuid() == 0
	}
	defer f.Close()
	return capSysAdminFrom(f)
}

// capSysAdminFrom reads the CapEff line of a /proc/PID/status.
func capSysAdminFrom(r io.Reader) bool {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		hex, ok := strings.CutPrefix(sc.Text(), "CapEff:")
		if !ok {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		return err == nil && v&(1<<unix.CAP_SYS_ADMIN) != 0
	}
	return false
}

// fusermountPath returns the setuid helper that mounts and unmounts FUSE
// file systems for unprivileged users, preferring the fuse3 one as go-fuse
// does.
func fusermountPath() (string, error) {
	for _, name := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		// go-fuse also looks in /bin when PATH lacks it.
		if p := filepath.Join("/bin", name); isExecutable(p) {
			return p, nil
		}
	}
	return "", errors.New("fusermount3 not found")
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// checkPrivilege verifies that the mount can be made: directly with
// CAP_SYS_ADMIN, or through a setuid fusermount3.
func checkPrivilege(allowOther bool) error {
	if canMountDirectly() {
		return nil
	}
	helper, err := fusermountPath()
	if err != nil {
		return errorf(ExitPrivilege, "not allowed to mount: this needs root (CAP_SYS_ADMIN) or the setuid helper fusermount3 (package fuse3), and neither is available")
	}
	if st, err := os.Stat(helper); err == nil && st.Mode()&fs.ModeSetuid == 0 {
		return errorf(ExitPrivilege, "not allowed to mount: %s is not setuid root, so it cannot mount for a normal user", helper)
	}
	if allowOther {
		ok, err := fuseConfAllowsOther("/etc/fuse.conf")
		if err != nil || !ok {
			return errorf(ExitPrivilege, "allow_other is refused to normal users unless /etc/fuse.conf contains the line user_allow_other")
		}
	}
	return nil
}

// fuseConfAllowsOther reports whether fuse.conf at path enables
// user_allow_other.
func fuseConfAllowsOther(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if strings.TrimSpace(line) == "user_allow_other" {
			return true, nil
		}
	}
	return false, sc.Err()
}
