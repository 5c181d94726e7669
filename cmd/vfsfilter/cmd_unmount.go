package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"github.com/vfsfilter/vfsfilter/internal/control"
	"github.com/vfsfilter/vfsfilter/internal/fusectl"
	"golang.org/x/sys/unix"
)

var cmdUnmount = &command{
	name:  "unmount",
	usage: "unmount [flags] MOUNTPOINT",
	short: "unmount a vfsfilter (or any FUSE) mount, even if its daemon died",
	long: `Unmount the FUSE file system at MOUNTPOINT. The daemon serving it then
exits by itself.

If the mountpoint is busy (a process has a file open or its working
directory inside it), or the daemon died and left the mountpoint saying
"Transport endpoint is not connected", the mount is detached lazily
(umount -l): it disappears from the tree at once and is freed when the last
user lets go. vfsfilter says so when it does this.

Only FUSE mounts are unmounted; anything else at MOUNTPOINT is refused.
Without root (CAP_SYS_ADMIN) the fusermount3 helper does the work, and
only for the user's own mounts.`,
	setup: func(fs *pflag.FlagSet) func(*env, []string) error {
		lazy := fs.BoolP("lazy", "z", false, "detach at once even if busy (umount -l)")
		return func(e *env, args []string) error {
			if len(args) != 1 {
				return usageErrorf("unmount needs 1 argument, MOUNTPOINT; got %d", len(args))
			}
			return unmountCommand(e, args[0], *lazy)
		}
	},
}

func unmountCommand(e *env, path string, lazy bool) error {
	mounts, err := readMounts()
	if err != nil {
		return fmt.Errorf("reading the mount table: %w", err)
	}
	mnt, err := resolveMountpoint(path, mounts)
	if err != nil {
		return errorf(ExitMountpoint, "mountpoint %s: %v", path, err)
	}
	m, ok := mountAt(mounts, mnt)
	if !ok {
		return errorf(ExitMountpoint, "%s is not mounted", path)
	}
	if !m.isFUSE() {
		return errorf(ExitMountpoint, "%s is not a FUSE mount (it is %s from %s); refusing to unmount it", path, m.FSType, m.Source)
	}
	if !canMountDirectly() {
		// fusermount3 only unmounts the user's own mounts, and says
		// "not found in /etc/mtab" about the others.
		if owner, ok := m.fuseOwner(); ok && owner != os.Getuid() {
			return errorf(ExitPrivilege, "%s was mounted by uid %d; only that user or root can unmount it", path, owner)
		}
	}
	if err := abortDeadConnection(m); err != nil {
		fmt.Fprintf(e.stderr, "vfsfilter: warning: the daemon of %s is gone but its connection could not be aborted (%v); processes using the mount may hang until it is\n", path, err)
	}
	wasLazy, err := unmountFUSE(mnt, lazy)
	if err != nil {
		return err
	}
	if wasLazy && !lazy {
		fmt.Fprintf(e.stderr, "vfsfilter: %s was busy or its daemon had died: detached it lazily; it is freed when the last open file is closed\n", path)
	}
	if !wasLazy && m.FSType == "fuse.vfsfilter" {
		waitDaemonGone(m.MountPoint, daemonExitWait)
	}
	return nil
}

// daemonExitWait bounds how long unmount waits for the daemon to finish.
const daemonExitWait = 10 * time.Second

// waitDaemonGone waits until the daemon of the unmounted vfsfilter mount
// at mnt has finished (its control socket is gone), at most d. The daemon
// still flushes its filters' state and removes its socket after the kernel
// let go of the mount; a script that mounts the same mountpoint again right
// after unmount would otherwise race that clean-up.
func waitDaemonGone(mnt string, d time.Duration) {
	sock := control.SocketPath(mnt)
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if _, err := control.Dial(sock); err != nil {
			return
		}
	}
}

// abortDeadConnection aborts the FUSE connection of a vfsfilter mount whose
// daemon no longer answers on its control socket. A daemon killed while it
// had a file open on its own mount cannot finish dying: closing that file
// waits for a FLUSH reply only it could give, and everything that touches
// the mount hangs with it. Aborting the connection (fusectl) fails those
// requests at once. A live daemon always answers, so it is never aborted,
// and other FUSE file systems are left alone. A connection that is gone
// already is not an error.
func abortDeadConnection(m mountEntry) error {
	if m.FSType != "fuse.vfsfilter" || !canMountDirectly() {
		return nil
	}
	if c, err := control.Dial(control.SocketPath(m.MountPoint)); err == nil && c != nil {
		return nil
	}
	_, minor, ok := strings.Cut(m.Dev, ":")
	if !ok {
		return nil
	}
	if err := fusectl.Abort(minor); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// resolveMountpoint makes path absolute and resolves symlinks as the kernel
// did when it recorded the mount, touching the mount itself only when it
// must. A mount whose daemon is stuck (killed while it had a file open on
// its own mount) answers no request, so even a stat of the mountpoint
// would hang unmount with it: the parent directory is resolved, and when
// the last component then names a mount in mounts, that is the answer. Only
// otherwise (a symlink to the mountpoint, say) is the whole path resolved;
// when that fails the last component is kept as it is, since on a mount
// whose daemon died even lstat says ENOTCONN.
func resolveMountpoint(path string, mounts []mountEntry) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", unwrapPathError(err)
	}
	joined := filepath.Join(dir, filepath.Base(abs))
	if _, ok := mountAt(mounts, joined); ok {
		return joined, nil
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real, nil
	}
	return joined, nil
}

// unmountFUSE unmounts the FUSE mount at mnt (absolute). With lazy it
// detaches at once (MNT_DETACH); otherwise it tries a normal unmount and
// falls back to a lazy one when the mount is busy or its daemon is gone,
// reporting whether it did. Without CAP_SYS_ADMIN it runs fusermount3 -u,
// which lets a user unmount what the user mounted.
func unmountFUSE(mnt string, lazy bool) (wasLazy bool, err error) {
	if canMountDirectly() {
		if !lazy {
			err = unix.Unmount(mnt, 0)
			if err == nil {
				return false, nil
			}
			if !errors.Is(err, syscall.EBUSY) && !errors.Is(err, syscall.ENOTCONN) {
				return false, unmountError(mnt, err)
			}
		}
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			return false, unmountError(mnt, err)
		}
		return true, nil
	}
	helper, err := fusermountPath()
	if err != nil {
		return false, errorf(ExitPrivilege, "not allowed to unmount %s: this needs root (CAP_SYS_ADMIN) or the fusermount3 helper, and neither is available", mnt)
	}
	if !lazy {
		out, err := runFusermount(helper, "-u", mnt)
		if err == nil {
			return false, nil
		}
		if !strings.Contains(out, "busy") && !strings.Contains(out, "not connected") {
			return false, fusermountError(mnt, helper, out, err)
		}
	}
	if out, err := runFusermount(helper, "-u", "-z", mnt); err != nil {
		return false, fusermountError(mnt, helper, out, err)
	}
	return true, nil
}

func runFusermount(helper string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(helper, args...)
	cmd.Stderr = &stderr
	err := cmd.Run()
	return strings.TrimSpace(stderr.String()), err
}

func fusermountError(mnt, helper, out string, err error) error {
	code := ExitFailure
	switch {
	case strings.Contains(out, "not mounted"), strings.Contains(out, "not found in /etc/mtab"), strings.Contains(out, "entry for"):
		code = ExitMountpoint
	case strings.Contains(out, "ermission"), strings.Contains(out, "not permitted"):
		code = ExitPrivilege
	}
	if out == "" {
		out = err.Error()
	}
	return errorf(code, "cannot unmount %s: %s: %s", mnt, filepath.Base(helper), out)
}

func unmountError(mnt string, err error) error {
	switch {
	case errors.Is(err, syscall.EINVAL):
		// umount(2) says EINVAL for a path that is not a mount point.
		return errorf(ExitMountpoint, "cannot unmount %s: not a mount point", mnt)
	case errors.Is(err, syscall.ENOENT):
		return errorf(ExitMountpoint, "cannot unmount %s: no such directory", mnt)
	case errors.Is(err, syscall.EPERM):
		return errorf(ExitPrivilege, "cannot unmount %s: operation not permitted", mnt)
	}
	return fmt.Errorf("cannot unmount %s: %w", mnt, err)
}
