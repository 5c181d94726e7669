package conformance

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/vfsfilter/vfsfilter/layer"
	"golang.org/x/sys/unix"
)

// Scenario is one of this project's own checks of local-file-system
// semantics. mnt is the mountpoint, backing the backing dir (scenarios that
// look underneath assume names are not rewritten there).
type Scenario func(t *testing.T, mnt, backing string)

// Scenarios are run by RunScenarios; each name says what ext4 does.
var Scenarios = map[string]Scenario{
	"UmaskAppliedOnce":           umaskAppliedOnce,
	"SetuidKeptOnCreate":         setuidKeptOnCreate,
	"CallerOwnsNewEntries":       callerOwnsNewEntries,
	"SetgidDirectoryInherits":    setgidDirectoryInherits,
	"HardLinksShareInode":        hardLinksShareInode,
	"LongNamesAndPaths":          longNamesAndPaths,
	"DeeperThanPathMax":          deeperThanPathMax,
	"SymlinksStaySymlinks":       symlinksStaySymlinks,
	"SymlinkSwapCannotEscape":    symlinkSwapCannotEscape,
	"ErrnoValues":                errnoValues,
	"XattrRoundTrip":             xattrRoundTrip,
	"UtimensatOmit":              utimensatOmit,
	"MknodFifo":                  mknodFifo,
	"StatfsMatchesBacking":       statfsMatchesBacking,
	"SeekDataHole":               seekDataHole,
	"CopyFileRange":              copyFileRange,
	"FlockExcludes":              flockExcludes,
	"RenameNoreplaceAndExchange": renameFlags,
	"ChangesUnderneathVisible":   changesUnderneathVisible,
	"RootAttributes":             rootAttributes,
	"OpenDirListsWhatItOpened":   openDirListsWhatItOpened,
	"ChangeOpenFileByPath":       changeOpenFileByPath,
	"XattrOfOpenFileByPath":      xattrOfOpenFileByPath,
	"ModeZeroStaysZero":          modeZeroStaysZero,
	"ChownNoChangeUpdatesCtime":  chownNoChangeUpdatesCtime,
	"LinkNameReusedUnderneath":   linkNameReusedUnderneath,
	"OpenFileOutlivesItsName":    openFileOutlivesItsName,
	"BirthTime":                  birthTime,
	"InodeFlags":                 inodeFlags,
	"AppendOnlyFile":             appendOnlyFile,
	"TmpfileLinked":              tmpfileLinked,
}

// RunScenarios runs every scenario, each on a fresh mount.
func RunScenarios(t *testing.T, mk StackFunc, opts layer.MountOptions) {
	for name, fn := range Scenarios {
		t.Run(name, func(t *testing.T) {
			mnt, backing := Mount(t, mk, opts)
			fn(t, mnt, backing)
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func lstat(t *testing.T, p string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(p, &st))
	return &st
}

func wantErrno(t *testing.T, err error, want syscall.Errno, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

// asUser runs a shell command as uid/gid 65534 (nobody), as a user of an
// allow_other mount would. It needs setpriv (util-linux).
func asUser(t *testing.T, script string) {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) is needed: %v", err)
	}
	out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("as nobody: %s: %v\n%s", script, err, out)
	}
}

func umaskAppliedOnce(t *testing.T, mnt, backing string) {
	old := unix.Umask(022)
	defer unix.Umask(old)
	f, err := os.OpenFile(mnt+"/f", os.O_CREATE|os.O_WRONLY, 0666)
	must(t, err)
	f.Close()
	must(t, os.Mkdir(mnt+"/d", 0777))
	must(t, unix.Mkfifo(mnt+"/p", 0666))
	for name, want := range map[string]uint32{"f": 0644, "d": 0755, "p": 0644} {
		if got := lstat(t, mnt+"/"+name).Mode & 07777; got != want {
			t.Errorf("%s: mode %o, want %o", name, got, want)
		}
		if got := lstat(t, backing+"/"+name).Mode & 07777; got != want {
			t.Errorf("%s in backing: mode %o, want %o", name, got, want)
		}
	}
}

func setuidKeptOnCreate(t *testing.T, mnt, backing string) {
	old := unix.Umask(0)
	defer unix.Umask(old)
	fd, err := unix.Open(mnt+"/suid", unix.O_CREAT|unix.O_WRONLY, 06755)
	must(t, err)
	unix.Close(fd)
	must(t, unix.Mkdir(mnt+"/sgid", 02775))
	if got := lstat(t, mnt+"/suid").Mode & 07777; got != 06755 {
		t.Errorf("created 06755 as root, got %o", got)
	}
	// mkdir(2) ignores S_ISGID in its mode on Linux (it is inherited
	// from a set-group-ID parent instead).
	if got := lstat(t, mnt+"/sgid").Mode & 07777; got != 0775 {
		t.Errorf("mkdir 02775 as root, got %o, want 0775 as on ext4", got)
	}
	// A write by root keeps the bits, as on ext4 (root has CAP_FSETID).
	must(t, os.WriteFile(mnt+"/suid", []byte("x"), 0))
	if got := lstat(t, mnt+"/suid").Mode & 07777; got != 06755 {
		t.Errorf("after a write by root: %o, want 06755", got)
	}
	// chown by root clears set-user-ID on ext4 (since Linux 2.2.13).
	must(t, os.Chown(mnt+"/suid", 1000, 1000))
	if got := lstat(t, mnt+"/suid").Mode & 07777; got&unix.S_ISUID != 0 {
		t.Errorf("chown by root kept set-user-ID (%o); ext4 clears it", got)
	}
}

func callerOwnsNewEntries(t *testing.T, mnt, backing string) {
	if !allowOther(mnt) {
		t.Skip("needs an allow_other mount; run with MountOptions.AllowOther")
	}
	must(t, os.Chmod(mnt, 0777))
	// t.TempDir's parent is 0700; let the user reach the mountpoint.
	must(t, os.Chmod(filepath.Dir(mnt), 0755))
	asUser(t, "umask 022; echo hi > "+mnt+"/byuser && mkdir "+mnt+"/dirbyuser && ln -s x "+mnt+"/linkbyuser")
	for _, n := range []string{"byuser", "dirbyuser", "linkbyuser"} {
		st := lstat(t, backing+"/"+n)
		if st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("%s: owned by %d:%d in backing, want 65534:65534", n, st.Uid, st.Gid)
		}
	}
	if got := lstat(t, backing+"/byuser").Mode & 07777; got != 0644 {
		t.Errorf("mode %o, want 0644", got)
	}
	// An O_TMPFILE file in a set-group-ID directory takes the directory's
	// group, as a named one does.
	must(t, os.Mkdir(mnt+"/sg", 0777))
	must(t, os.Chown(mnt+"/sg", 0, 4242))
	must(t, unix.Chmod(mnt+"/sg", 02777))
	out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
		"import os,sys; fd=os.open(sys.argv[1], os.O_TMPFILE|os.O_RDWR, 0o600); st=os.fstat(fd); print(st.st_uid, st.st_gid)", mnt+"/sg").CombinedOutput()
	if err != nil {
		t.Fatalf("O_TMPFILE as nobody: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "65534 4242" {
		t.Errorf("O_TMPFILE in a setgid dir owned %q, want \"65534 4242\"", got)
	}
}

func setgidDirectoryInherits(t *testing.T, mnt, backing string) {
	must(t, os.Mkdir(mnt+"/g", 0777))
	must(t, os.Chown(mnt+"/g", 0, 4242))
	must(t, unix.Chmod(mnt+"/g", 02777))
	must(t, os.WriteFile(mnt+"/g/f", nil, 0644))
	must(t, os.Mkdir(mnt+"/g/sub", 0755))
	if st := lstat(t, mnt+"/g/f"); st.Gid != 4242 {
		t.Errorf("file in setgid dir has gid %d, want 4242", st.Gid)
	}
	if st := lstat(t, mnt+"/g/sub"); st.Gid != 4242 || st.Mode&unix.S_ISGID == 0 {
		t.Errorf("dir in setgid dir: gid %d mode %o, want gid 4242 and setgid", st.Gid, st.Mode)
	}
}

func hardLinksShareInode(t *testing.T, mnt, backing string) {
	must(t, os.WriteFile(mnt+"/a", []byte("data"), 0644))
	must(t, os.Link(mnt+"/a", mnt+"/b"))
	a, b := lstat(t, mnt+"/a"), lstat(t, mnt+"/b")
	if a.Ino != b.Ino || a.Nlink != 2 || b.Nlink != 2 {
		t.Errorf("links: ino %d/%d nlink %d/%d, want one ino, nlink 2", a.Ino, b.Ino, a.Nlink, b.Nlink)
	}
	if u := lstat(t, backing+"/a"); u.Ino != a.Ino {
		t.Errorf("inode number %d differs from backing's %d", a.Ino, u.Ino)
	}
	must(t, os.Remove(mnt+"/a"))
	if b := lstat(t, mnt+"/b"); b.Nlink != 1 {
		t.Errorf("nlink after unlink: %d, want 1", b.Nlink)
	}
}

func longNamesAndPaths(t *testing.T, mnt, backing string) {
	name := strings.Repeat("n", 255)
	must(t, os.WriteFile(mnt+"/"+name, []byte("x"), 0644))
	wantErrno(t, os.WriteFile(mnt+"/"+name+"x", nil, 0644), syscall.ENAMETOOLONG, "256-byte name")
	// Build a path close to PATH_MAX (4096) relative to the mountpoint.
	comp := strings.Repeat("d", 200)
	p := mnt
	rel := ""
	for len(rel)+len(comp)+1 < 3800 {
		p += "/" + comp
		rel += "/" + comp
		must(t, os.Mkdir(p, 0755))
	}
	must(t, os.WriteFile(p+"/f", []byte("deep"), 0644))
	got, err := os.ReadFile(backing + rel + "/f")
	must(t, err)
	if string(got) != "deep" {
		t.Errorf("deep file reads %q", got)
	}
	must(t, os.RemoveAll(mnt+"/"+comp))
}

// deeperThanPathMax: a tree deeper than PATH_MAX (4096 bytes from the
// mountpoint) works as on ext4 for a process that walks it relative to
// open directories: create, write, truncate and chmod by path (no open
// file, so the stack resolves the whole path), rename, stat, unlink.
func deeperThanPathMax(t *testing.T, mnt, backing string) {
	comp := strings.Repeat("d", 200)
	walk := func(root string, mkdir bool) int {
		t.Helper()
		fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		must(t, err)
		for range 30 { // 30 * 201 bytes: 6030
			if mkdir {
				must(t, unix.Mkdirat(fd, comp, 0755))
			}
			nfd, err := unix.Openat(fd, comp, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			unix.Close(fd)
			must(t, err)
			fd = nfd
		}
		return fd
	}
	defer os.RemoveAll(mnt + "/" + comp)
	dfd := walk(mnt, true)
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, "f", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0644)
	must(t, err)
	_, err = unix.Write(fd, []byte("deep file"))
	must(t, err)
	unix.Close(fd)
	// truncate(2) and chmod(2) by path: the kernel sends SETATTR without
	// a file handle.
	here := fmt.Sprintf("/proc/self/fd/%d", dfd)
	must(t, unix.Truncate(here+"/f", 4))
	must(t, unix.Fchmodat(dfd, "f", 0600, 0))
	must(t, unix.Renameat(dfd, "f", dfd, "g"))
	var st unix.Stat_t
	must(t, unix.Fstatat(dfd, "g", &st, unix.AT_SYMLINK_NOFOLLOW))
	if st.Size != 4 || st.Mode&07777 != 0600 {
		t.Errorf("deep file: size %d mode %o, want 4 and 600", st.Size, st.Mode&07777)
	}
	bfd := walk(backing, false)
	defer unix.Close(bfd)
	fd, err = unix.Openat(bfd, "g", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	must(t, err)
	buf := make([]byte, 16)
	n, _ := unix.Read(fd, buf)
	unix.Close(fd)
	if string(buf[:n]) != "deep" {
		t.Errorf("deep file in backing reads %q, want %q", buf[:n], "deep")
	}
	must(t, unix.Unlinkat(dfd, "g", 0))
	wantErrno(t, unix.Fstatat(dfd, "g", &st, 0), syscall.ENOENT, "stat after unlink")
}

func symlinksStaySymlinks(t *testing.T, mnt, backing string) {
	must(t, os.Symlink("/etc/passwd", backing+"/abs"))
	must(t, os.Symlink("../../..", backing+"/up"))
	for _, n := range []string{"abs", "up"} {
		st := lstat(t, mnt+"/"+n)
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			t.Errorf("%s is not a symlink through the mount", n)
		}
	}
	target, err := os.Readlink(mnt + "/up")
	must(t, err)
	if target != "../../.." {
		t.Errorf("readlink: %q", target)
	}
	// chmod on a symlink's path follows it (to /etc/passwd here); lchown
	// must change the link itself and nothing outside.
	before := lstat(t, "/etc/passwd")
	must(t, os.Lchown(mnt+"/abs", 1234, 1234))
	if st := lstat(t, backing+"/abs"); st.Uid != 1234 {
		t.Errorf("lchown did not change the link: uid %d", st.Uid)
	}
	if after := lstat(t, "/etc/passwd"); after.Uid != before.Uid {
		t.Fatalf("lchown through the mount changed /etc/passwd")
	}
}

func symlinkSwapCannotEscape(t *testing.T, mnt, backing string) {
	outside := t.TempDir()
	must(t, os.WriteFile(outside+"/secret", []byte("outside"), 0600))
	must(t, os.Mkdir(mnt+"/d", 0755))
	must(t, os.WriteFile(mnt+"/d/secret", []byte("inside"), 0644))
	// The kernel now knows d as a directory. Swap it for a symlink that
	// leads out, behind the mount's back, and use the cached name.
	must(t, os.Rename(backing+"/d", backing+"/d.old"))
	must(t, os.Symlink(outside, backing+"/d"))
	data, err := os.ReadFile(mnt + "/d/secret")
	if err == nil && string(data) == "outside" {
		t.Fatalf("read a file outside the backing dir through a swapped symlink")
	}
	err = os.WriteFile(mnt+"/d/new", []byte("x"), 0644)
	if _, serr := os.Stat(outside + "/new"); serr == nil {
		t.Fatalf("created a file outside the backing dir (write err %v)", err)
	}
}

func errnoValues(t *testing.T, mnt, backing string) {
	must(t, os.Mkdir(mnt+"/d", 0755))
	must(t, os.WriteFile(mnt+"/d/f", nil, 0644))
	wantErrno(t, unix.Rmdir(mnt+"/d"), syscall.ENOTEMPTY, "rmdir non-empty")
	wantErrno(t, unix.Unlink(mnt+"/d"), syscall.EISDIR, "unlink dir")
	wantErrno(t, unix.Rmdir(mnt+"/d/f"), syscall.ENOTDIR, "rmdir file")
	wantErrno(t, unix.Mkdir(mnt+"/d", 0755), syscall.EEXIST, "mkdir existing")
	_, err := os.Stat(mnt + "/nope")
	wantErrno(t, err, syscall.ENOENT, "stat missing")
	_, err = os.Stat(mnt + "/d/f/x")
	wantErrno(t, err, syscall.ENOTDIR, "stat below a file")
	wantErrno(t, unix.Rename(mnt+"/d", mnt+"/d/f/sub"), syscall.ENOTDIR, "rename below a file")
	wantErrno(t, unix.Rename(mnt+"/d", mnt+"/d/sub"), syscall.EINVAL, "rename into itself")
	wantErrno(t, unix.Link(mnt+"/d", mnt+"/dl"), syscall.EPERM, "hard link to a dir")
	fd, err := unix.Open(mnt+"/d/f", unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0644)
	if err == nil {
		unix.Close(fd)
	}
	wantErrno(t, err, syscall.EEXIST, "O_EXCL on existing")
}

func xattrRoundTrip(t *testing.T, mnt, backing string) {
	must(t, os.WriteFile(mnt+"/f", nil, 0644))
	must(t, unix.Setxattr(mnt+"/f", "user.k", []byte("v1"), 0))
	wantErrno(t, unix.Setxattr(mnt+"/f", "user.k", []byte("v"), unix.XATTR_CREATE), syscall.EEXIST, "XATTR_CREATE on existing")
	wantErrno(t, unix.Setxattr(mnt+"/f", "user.none", []byte("v"), unix.XATTR_REPLACE), syscall.ENODATA, "XATTR_REPLACE on missing")
	buf := make([]byte, 64)
	n, err := unix.Getxattr(backing+"/f", "user.k", buf)
	must(t, err)
	if string(buf[:n]) != "v1" {
		t.Errorf("backing has %q", buf[:n])
	}
	_, err = unix.Getxattr(mnt+"/f", "user.k", make([]byte, 1))
	wantErrno(t, err, syscall.ERANGE, "getxattr into a short buffer")
	n, err = unix.Listxattr(mnt+"/f", buf)
	must(t, err)
	if !bytes.Contains(buf[:n], []byte("user.k\x00")) {
		t.Errorf("listxattr: %q", buf[:n])
	}
	must(t, os.Symlink("f", mnt+"/l"))
	// user.* xattrs are not allowed on symlinks; the link, not its target,
	// must be asked.
	wantErrno(t, unix.Lsetxattr(mnt+"/l", "user.k", []byte("v"), 0), syscall.EPERM, "user xattr on a symlink")
	must(t, unix.Removexattr(mnt+"/f", "user.k"))
	_, err = unix.Getxattr(mnt+"/f", "user.k", buf)
	wantErrno(t, err, syscall.ENODATA, "removed xattr")
}

func utimensatOmit(t *testing.T, mnt, backing string) {
	must(t, os.WriteFile(mnt+"/f", nil, 0644))
	at := unix.Timespec{Sec: 1000000000, Nsec: 123456789}
	mt := unix.Timespec{Sec: 1100000000, Nsec: 987654321}
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, mnt+"/f", []unix.Timespec{at, mt}, 0))
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, mnt+"/f", []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Sec: 5, Nsec: 0}}, 0))
	st := lstat(t, backing+"/f")
	if st.Atim != at {
		t.Errorf("UTIME_OMIT changed atime: %v, want %v", st.Atim, at)
	}
	if st.Mtim.Sec != 5 {
		t.Errorf("mtime %v, want 5s", st.Mtim)
	}
	must(t, os.Symlink("f", mnt+"/l"))
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, mnt+"/l", []unix.Timespec{mt, mt}, unix.AT_SYMLINK_NOFOLLOW))
	if st := lstat(t, backing+"/l"); st.Mtim != mt {
		t.Errorf("lutimes on a symlink: mtime %v, want %v", st.Mtim, mt)
	}
	if st := lstat(t, backing+"/f"); st.Mtim.Sec != 5 {
		t.Errorf("lutimes followed the symlink")
	}
}

func mknodFifo(t *testing.T, mnt, backing string) {
	must(t, unix.Mkfifo(mnt+"/fifo", 0600))
	must(t, unix.Mknod(mnt+"/null", unix.S_IFCHR|0666, int(unix.Mkdev(1, 3))))
	if st := lstat(t, backing+"/fifo"); st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("fifo has mode %o", st.Mode)
	}
	st := lstat(t, mnt+"/null")
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("char device: mode %o rdev %x", st.Mode, st.Rdev)
	}
}

func statfsMatchesBacking(t *testing.T, mnt, backing string) {
	var a, b unix.Statfs_t
	must(t, unix.Statfs(mnt, &a))
	must(t, unix.Statfs(backing, &b))
	if a.Blocks != b.Blocks || a.Bsize != b.Bsize || a.Files != b.Files {
		t.Errorf("statfs differs: mount %+v backing %+v", a, b)
	}
}

func seekDataHole(t *testing.T, mnt, backing string) {
	f, err := os.Create(mnt + "/sparse")
	must(t, err)
	defer f.Close()
	_, err = f.WriteAt([]byte("x"), 1<<20)
	must(t, err)
	fd := int(f.Fd())
	off, err := unix.Seek(fd, 0, unix.SEEK_DATA)
	must(t, err)
	if off != 1<<20 {
		t.Errorf("SEEK_DATA: %d, want %d", off, 1<<20)
	}
	off, err = unix.Seek(fd, 0, unix.SEEK_HOLE)
	must(t, err)
	if off != 0 {
		t.Errorf("SEEK_HOLE: %d, want 0", off)
	}
}

func copyFileRange(t *testing.T, mnt, backing string) {
	must(t, os.WriteFile(mnt+"/src", []byte("0123456789"), 0644))
	in, err := os.Open(mnt + "/src")
	must(t, err)
	defer in.Close()
	out, err := os.Create(mnt + "/dst")
	must(t, err)
	defer out.Close()
	offIn, offOut := int64(2), int64(0)
	n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, 5, 0)
	must(t, err)
	if n != 5 {
		t.Errorf("copied %d", n)
	}
	got, _ := os.ReadFile(backing + "/dst")
	if string(got) != "23456" {
		t.Errorf("dst has %q", got)
	}
}

func flockExcludes(t *testing.T, mnt, backing string) {
	must(t, os.WriteFile(mnt+"/lock", nil, 0644))
	a, err := os.Open(mnt + "/lock")
	must(t, err)
	defer a.Close()
	b, err := os.Open(mnt + "/lock")
	must(t, err)
	defer b.Close()
	must(t, unix.Flock(int(a.Fd()), unix.LOCK_EX|unix.LOCK_NB))
	wantErrno(t, unix.Flock(int(b.Fd()), unix.LOCK_EX|unix.LOCK_NB), syscall.EWOULDBLOCK, "second exclusive flock")
	must(t, unix.Flock(int(a.Fd()), unix.LOCK_UN))
	must(t, unix.Flock(int(b.Fd()), unix.LOCK_EX|unix.LOCK_NB))
}

func renameFlags(t *testing.T, mnt, backing string) {
	must(t, os.WriteFile(mnt+"/a", []byte("a"), 0644))
	must(t, os.WriteFile(mnt+"/b", []byte("b"), 0644))
	wantErrno(t, unix.Renameat2(unix.AT_FDCWD, mnt+"/a", unix.AT_FDCWD, mnt+"/b", unix.RENAME_NOREPLACE), syscall.EEXIST, "RENAME_NOREPLACE")
	must(t, unix.Renameat2(unix.AT_FDCWD, mnt+"/a", unix.AT_FDCWD, mnt+"/b", unix.RENAME_EXCHANGE))
	got, _ := os.ReadFile(mnt + "/a")
	if string(got) != "b" {
		t.Errorf("after RENAME_EXCHANGE a holds %q", got)
	}
}

// changesUnderneathVisible checks that with the default timeouts a change
// made directly in the backing dir shows through the mount once the
// timeouts (1 s) have passed.
func changesUnderneathVisible(t *testing.T, mnt, backing string) {
	must(t, os.WriteFile(mnt+"/f", []byte("one"), 0644))
	lstat(t, mnt+"/f")
	must(t, os.WriteFile(backing+"/f", []byte("twotwo"), 0644))
	must(t, os.WriteFile(backing+"/g", nil, 0644))
	Eventually(t, func() string {
		st := lstat(t, mnt+"/f")
		if _, err := os.Stat(mnt + "/g"); st.Size != 6 || err != nil {
			return fmt.Sprintf("backing change not visible after 10s: size %d, g: %v", st.Size, err)
		}
		return ""
	})
	got, err := os.ReadFile(mnt + "/f")
	must(t, err)
	if string(got) != "twotwo" {
		t.Errorf("read %q after change underneath", got)
	}
}

// openDirListsWhatItOpened checks that a directory stream lists the
// directory it opened: after that directory was renamed underneath and
// another made at its old name, the stream still lists the first (with
// what was added to it since), and so does a rewind; fstat names it too.
func openDirListsWhatItOpened(t *testing.T, mnt, backing string) {
	must(t, os.Mkdir(mnt+"/d", 0755))
	must(t, os.WriteFile(mnt+"/d/a", nil, 0644))
	f, err := os.Open(mnt + "/d")
	must(t, err)
	defer f.Close()
	must(t, os.Rename(backing+"/d", backing+"/e"))
	must(t, os.Mkdir(backing+"/d", 0755))
	must(t, os.WriteFile(backing+"/d/b", nil, 0644))
	must(t, os.WriteFile(backing+"/e/c", nil, 0644))
	list := func() string {
		names, err := f.Readdirnames(-1)
		must(t, err)
		sort.Strings(names)
		return strings.Join(names, " ")
	}
	if got := list(); got != "a c" {
		t.Errorf("the open directory, renamed, lists %q, want \"a c\"", got)
	}
	must(t, os.WriteFile(backing+"/e/x", nil, 0644))
	_, err = f.Seek(0, 0)
	must(t, err)
	if got := list(); got != "a c x" {
		t.Errorf("after rewinddir it lists %q, want \"a c x\"", got)
	}
	st, err := f.Stat()
	must(t, err)
	if want := lstat(t, backing+"/e"); st.Sys().(*syscall.Stat_t).Ino != want.Ino {
		t.Errorf("fstat of the open directory gives inode %d, want %d (e's)", st.Sys().(*syscall.Stat_t).Ino, want.Ino)
	}
}

// modeZeroStaysZero: entries of mode 0000 (created so, or chmod'ed to it)
// show mode 0000, as on ext4, and on an allow_other mount no other user
// can read them.
func modeZeroStaysZero(t *testing.T, mnt, backing string) {
	old := unix.Umask(0)
	defer unix.Umask(old)
	fd, err := unix.Open(mnt+"/created", unix.O_CREAT|unix.O_WRONLY, 0)
	must(t, err)
	unix.Close(fd)
	must(t, os.WriteFile(mnt+"/chmodded", []byte("secret"), 0644))
	must(t, unix.Chmod(mnt+"/chmodded", 0))
	must(t, unix.Mkdir(mnt+"/dir", 0))
	for _, name := range []string{"created", "chmodded", "dir"} {
		if got := lstat(t, mnt+"/"+name).Mode & 07777; got != 0 {
			t.Errorf("%s: mode %o through the mount, want 0 as on ext4", name, got)
		}
		if got := lstat(t, backing+"/"+name).Mode & 07777; got != 0 {
			t.Errorf("%s in backing: mode %o, want 0", name, got)
		}
	}
	if allowOther(mnt) {
		out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", mnt+"/chmodded").CombinedOutput()
		if err == nil || !bytes.Contains(out, []byte("Permission denied")) {
			t.Errorf("another user read a file of mode 0000: err %v, output %q", err, out)
		}
	}
}

// chownNoChangeUpdatesCtime: chown(path, -1, -1) changes nothing but the
// change time, which Linux's local file systems update (POSIX lets them
// leave it; pjdfstest's chown/00.t checks Linux does).
func chownNoChangeUpdatesCtime(t *testing.T, mnt, backing string) {
	must(t, os.WriteFile(mnt+"/f", nil, 0644))
	must(t, os.Mkdir(mnt+"/d", 0755))
	before := map[string]unix.Timespec{"f": lstat(t, mnt+"/f").Ctim, "d": lstat(t, mnt+"/d").Ctim}
	time.Sleep(20 * time.Millisecond) // ctime has the kernel's clock tick, a few ms
	for name, ct := range before {
		must(t, os.Lchown(mnt+"/"+name, -1, -1))
		if got := lstat(t, mnt+"/"+name).Ctim; got == ct {
			t.Errorf("%s: ctime %v unchanged by chown(-1, -1); ext4 updates it", name, got)
		}
		if got := lstat(t, backing+"/"+name).Ctim; got == ct {
			t.Errorf("%s in backing: ctime unchanged by chown(-1, -1)", name)
		}
	}
}

func allowOther(mnt string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	abs, _ := filepath.Abs(mnt)
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && f[4] == abs {
			return strings.Contains(l, "allow_other")
		}
	}
	return false
}

// rootAttributes: the mount root is the backing dir itself; every attribute
// op works on it and reaches the backing dir.
func rootAttributes(t *testing.T, mnt, backing string) {
	must(t, unix.Setxattr(mnt, "user.root", []byte("r"), 0))
	buf := make([]byte, 16)
	n, err := unix.Getxattr(backing, "user.root", buf)
	must(t, err)
	if string(buf[:n]) != "r" {
		t.Errorf("root xattr in backing: %q", buf[:n])
	}
	n, err = unix.Listxattr(mnt, buf)
	must(t, err)
	if !bytes.Contains(buf[:n], []byte("user.root")) {
		t.Errorf("listxattr on root: %q", buf[:n])
	}
	_, err = unix.Getxattr(mnt, "user.none", buf)
	wantErrno(t, err, syscall.ENODATA, "missing xattr on root")
	must(t, unix.Removexattr(mnt, "user.root"))
	must(t, unix.Chmod(mnt, 0750))
	must(t, os.Chown(mnt, 123, 456))
	mt := unix.Timespec{Sec: 1200000000, Nsec: 5}
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, mnt, []unix.Timespec{mt, mt}, 0))
	st, bst := lstat(t, mnt), lstat(t, backing)
	if bst.Mode&07777 != 0750 || bst.Uid != 123 || bst.Gid != 456 || bst.Mtim != mt {
		t.Errorf("backing root: mode %o owner %d:%d mtime %v", bst.Mode&07777, bst.Uid, bst.Gid, bst.Mtim)
	}
	if st.Ino != bst.Ino {
		t.Errorf("root inode %d, backing root %d", st.Ino, bst.Ino)
	}
	must(t, os.Chown(mnt, 0, 0))
}

// changeOpenFileByPath: chmod, chown and utimes by path of a file that is
// open (the stack may change it through an open handle's fd) do what they
// do on a closed file, and keep doing so while the file's handles are
// opened and closed around them: a change must never land on another
// file that reuses a closed descriptor's number.
func changeOpenFileByPath(t *testing.T, mnt, backing string) {
	old := unix.Umask(022)
	defer unix.Umask(old)
	p := mnt + "/f"
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0600)
	must(t, err)
	_, err = f.WriteString("data")
	must(t, err)
	must(t, os.Chmod(p, 0640))
	must(t, os.Chown(p, 65534, 65534))
	mtime := time.Unix(1500000000, 123456789)
	must(t, os.Chtimes(p, mtime, mtime))
	st := lstat(t, p)
	if st.Mode&07777 != 0640 || st.Uid != 65534 || st.Gid != 65534 || st.Size != 4 {
		t.Errorf("open file after chmod, chown: mode %o uid %d gid %d size %d, want 640 65534 65534 4", st.Mode&07777, st.Uid, st.Gid, st.Size)
	}
	if got := time.Unix(st.Mtim.Unix()); !got.Equal(mtime) {
		t.Errorf("open file after utimes: mtime %v, want %v", got, mtime)
	}
	must(t, f.Close())

	// The race: one goroutine changes the mode of g by path while another
	// opens and closes g and creates files (mode 600) whose descriptors
	// may take the numbers g's descriptors had.
	g := mnt + "/g"
	must(t, os.WriteFile(g, []byte("g"), 0600))
	const n = 1000
	modes := [2]os.FileMode{0640, 0604}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range n {
			if err := os.Chmod(g, modes[i%2]); err != nil {
				t.Errorf("chmod %d: %v", i, err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		churnHandles(t, mnt, g, n, nil)
	}()
	wg.Wait()
	if got := lstat(t, g).Mode & 07777; got != uint32(modes[(n-1)%2]) {
		t.Errorf("g: mode %o, want %o (the last chmod)", got, modes[(n-1)%2])
	}
	for i := range n {
		if got := lstat(t, fmt.Sprintf("%s/o%d", mnt, i)).Mode & 07777; got != 0600 {
			t.Errorf("o%d: mode %o, want 600: a chmod of g changed it", i, got)
		}
	}
}

// xattrOfOpenFileByPath: getxattr by path of a file that is open (the
// kernel asks for security.capability so before a write and a chown) reads
// that file's attribute, through the bridge's borrowed handle, even while
// the file's handles come and go and other files, with attributes of
// their own, take the descriptor numbers they had. (Its window is small;
// ChangeOpenFileByPath, whose chmods borrow the same way, is the one that
// catches a borrowed descriptor closed under an op.)
func xattrOfOpenFileByPath(t *testing.T, mnt, backing string) {
	const attr = "trusted.vfsfilter-test" // not encrypted by crypt: the plain path
	get := func(p string) (string, error) {
		buf := make([]byte, 64)
		n, err := unix.Getxattr(p, attr, buf)
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	p := mnt + "/f"
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0600)
	must(t, err)
	_, err = unix.Getxattr(p, attr, nil)
	wantErrno(t, err, unix.ENODATA, "getxattr of an attribute the open file does not have")
	must(t, unix.Setxattr(p, attr, []byte("value-f"), 0))
	if got, err := get(p); err != nil || got != "value-f" {
		t.Errorf("getxattr of the open file: %q, %v; want value-f", got, err)
	}
	if n, err := unix.Getxattr(p, attr, nil); err != nil || n != len("value-f") {
		t.Errorf("size query on the open file: %d, %v; want %d", n, err, len("value-f"))
	}
	_, err = unix.Getxattr(p, attr, make([]byte, 2))
	wantErrno(t, err, unix.ERANGE, "getxattr into a short buffer")
	must(t, f.Close())

	g := mnt + "/g"
	must(t, os.WriteFile(g, []byte("g"), 0600))
	must(t, unix.Setxattr(g, attr, []byte("g"), 0))
	const n = 1000
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range n {
			if got, err := get(g); err != nil || got != "g" {
				t.Errorf("getxattr %d of g: %q, %v; want g", i, got, err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		churnHandles(t, mnt, g, n, func(o *os.File, i int) {
			if err := unix.Fsetxattr(int(o.Fd()), attr, []byte("other"), 0); err != nil {
				t.Errorf("fsetxattr %d: %v", i, err)
			}
		})
	}()
	wg.Wait()
}

// churnHandles opens and closes g n times, and each time creates a file
// mnt/o<i> (mode 600) while g is open, so that the new file's descriptor
// below may take the number one of g's had. made, if not nil, is called
// with each new file while it is open.
func churnHandles(t *testing.T, mnt, g string, n int, made func(o *os.File, i int)) {
	for i := range n {
		h, err := os.Open(g)
		if err != nil {
			t.Errorf("open %d: %v", i, err)
			return
		}
		o, err := os.OpenFile(fmt.Sprintf("%s/o%d", mnt, i), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0600)
		if err != nil {
			t.Errorf("create %d: %v", i, err)
			h.Close()
			return
		}
		if made != nil {
			made(o, i)
		}
		h.Close()
		o.Close()
	}
}

// linkNameReusedUnderneath: a file has two names and is open through the
// first; underneath, the second name goes to another file. Changes through
// the open descriptor, and through the first name once it is closed, reach
// the first file, as on ext4, never the other: a node must not take a
// name it lost for its path. The other file comes in two ways: b is
// removed (the mount answers ENOENT for it) and made anew; d is replaced
// by a rename (the mount then answers with another inode).
func linkNameReusedUnderneath(t *testing.T, mnt, backing string) {
	const attr = "trusted.vfsfilter-test" // not encrypted by crypt: the plain path
	gone := func(p string) string {
		if err := unix.Lstat(mnt+"/"+p, new(unix.Stat_t)); !errors.Is(err, unix.ENOENT) {
			return fmt.Sprintf("%s removed underneath: %v", p, err)
		}
		return ""
	}
	replaced := func(p string, ino uint64) func() string {
		return func() string {
			if st := lstat(t, mnt+"/"+p); st.Ino == ino {
				return p + " replaced underneath is still the first file"
			}
			return ""
		}
	}
	for _, c := range []struct {
		first, second string
		reuse         func(second string, ino uint64)
	}{
		{"a", "b", func(second string, _ uint64) {
			must(t, os.Remove(backing+"/"+second))
			Eventually(t, func() string { return gone(second) })
			must(t, os.WriteFile(backing+"/"+second, []byte("second"), 0600))
		}},
		{"c", "d", func(second string, ino uint64) {
			must(t, os.WriteFile(backing+"/"+second+".tmp", []byte("second"), 0600))
			must(t, os.Rename(backing+"/"+second+".tmp", backing+"/"+second))
			Eventually(t, replaced(second, ino))
		}},
	} {
		first, second := mnt+"/"+c.first, mnt+"/"+c.second
		must(t, os.WriteFile(first, []byte("first"), 0644))
		must(t, os.Link(first, second))
		f, err := os.Open(first)
		must(t, err)
		// Closed also when the scenario fails: a test binary that
		// exits with a file open on its own mount hangs.
		defer f.Close()
		ino := lstat(t, second).Ino // the name the kernel learned last
		c.reuse(c.second, ino)

		must(t, unix.Fsetxattr(int(f.Fd()), attr, []byte("first"), 0))
		must(t, f.Close())
		must(t, os.Chmod(first, 0640))
		if _, err := unix.Getxattr(second, attr, nil); !errors.Is(err, unix.ENODATA) {
			t.Errorf("%s: the other file got the attribute set through %s's descriptor: %v", c.second, c.first, err)
		}
		buf := make([]byte, 16)
		if n, err := unix.Getxattr(first, attr, buf); err != nil || string(buf[:n]) != "first" {
			t.Errorf("%s's attribute: %q, %v", c.first, buf[:max(n, 0)], err)
		}
		if got := lstat(t, second).Mode & 07777; got != 0600 {
			t.Errorf("%s: mode %o after a chmod of %s, want 600", c.second, got, c.first)
		}
		if got := lstat(t, first).Mode & 07777; got != 0640 {
			t.Errorf("%s: mode %o, want 640", c.first, got)
		}
		if b, err := os.ReadFile(second); err != nil || string(b) != "second" {
			t.Errorf("%s: %q, %v", c.second, b, err)
		}
	}
}

// openFileOutlivesItsName: a file and a directory whose name is gone while
// they are open (removed through the mount, removed underneath, or
// replaced underneath by a new file and directory of the same names) still
// answer every change and query through their descriptors, as on ext4:
// extended attributes (set, get, list, remove; user.* is encrypted by
// crypt, trusted.* is not), mode, owner, times, (the file) size, and
// statx(2) with the birth time. The kernel sends xattr requests, chmod and
// friends, and a statx that wants the birth time without a file handle,
// so the file system must find the open file itself, and must not reach
// the new entries that now have the names.
func openFileOutlivesItsName(t *testing.T, mnt, backing string) {
	attrs := []string{"user.vfsfilter-test", "trusted.vfsfilter-test"}
	check := func(what string, fd int, dir bool) {
		t.Helper()
		for _, attr := range attrs {
			if err := unix.Fsetxattr(fd, attr, []byte("v-"+attr), 0); err != nil {
				t.Errorf("%s: fsetxattr %s: %v", what, attr, err)
				continue
			}
			buf := make([]byte, 64)
			if n, err := unix.Fgetxattr(fd, attr, buf); err != nil || string(buf[:n]) != "v-"+attr {
				t.Errorf("%s: fgetxattr %s: %q, %v", what, attr, buf[:max(n, 0)], err)
			}
			if n, err := unix.Flistxattr(fd, buf); err != nil || !bytes.Contains(buf[:max(n, 0)], []byte(attr+"\x00")) {
				t.Errorf("%s: flistxattr: %q, %v; want %s in it", what, buf[:max(n, 0)], err, attr)
			}
			if err := unix.Fremovexattr(fd, attr); err != nil {
				t.Errorf("%s: fremovexattr %s: %v", what, attr, err)
			}
			_, err := unix.Fgetxattr(fd, attr, buf)
			wantErrno(t, err, unix.ENODATA, what+": fgetxattr of the removed "+attr)
		}
		// Left set, for the check that the new entries did not get it.
		must(t, unix.Fsetxattr(fd, attrs[1], []byte("old"), 0))
		mode := uint32(0600)
		if dir {
			mode = 0700
		}
		must(t, unix.Fchmod(fd, mode))
		must(t, unix.Fchown(fd, 1, 2))
		if !dir {
			must(t, unix.Ftruncate(fd, 3))
		}
		// futimens(2); last, as a truncate sets the times.
		ts := []unix.Timespec{{Sec: 1000, Nsec: 1}, {Sec: 2000, Nsec: 2}}
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), ts, 0))
		var st unix.Stat_t
		must(t, unix.Fstat(fd, &st))
		if st.Mode&07777 != mode || st.Uid != 1 || st.Gid != 2 || st.Mtim != ts[1] || st.Nlink != 0 {
			t.Errorf("%s: mode %o, owner %d:%d, mtime %v, nlink %d; want %o, 1:2, %v, 0", what, st.Mode&07777, st.Uid, st.Gid, st.Mtim, st.Nlink, mode, ts[1])
		}
		if !dir && st.Size != 3 {
			t.Errorf("%s: size %d after ftruncate to 3", what, st.Size)
		}
		var sx unix.Statx_t
		if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx); err != nil {
			t.Errorf("%s: statx with the birth time: %v", what, err)
		} else if sx.Mode&07777 != uint16(mode) || sx.Mtime.Sec != ts[1].Sec {
			t.Errorf("%s: statx: mode %o, mtime %d; want %o, %d", what, sx.Mode&07777, sx.Mtime.Sec, mode, ts[1].Sec)
		}
	}
	for _, how := range []string{"removed through the mount", "removed underneath", "replaced underneath"} {
		base := backing
		if how == "removed through the mount" {
			base = mnt
		}
		must(t, os.WriteFile(mnt+"/f", []byte("hello"), 0644))
		f, err := os.OpenFile(mnt+"/f", os.O_RDWR, 0)
		must(t, err)
		// Closed also when the scenario fails: a test binary that
		// exits with a file open on its own mount hangs.
		defer f.Close()
		must(t, os.Mkdir(mnt+"/d", 0755))
		d, err := os.Open(mnt + "/d")
		must(t, err)
		defer d.Close()
		must(t, os.Remove(base+"/f"))
		must(t, os.Remove(base+"/d"))
		if base == backing {
			Eventually(t, func() string {
				if _, err := os.Lstat(mnt + "/f"); !errors.Is(err, os.ErrNotExist) {
					return fmt.Sprintf("f removed underneath: %v", err)
				}
				return ""
			})
		}
		if how == "replaced underneath" {
			must(t, os.WriteFile(backing+"/f", []byte("new"), 0644))
			must(t, os.Mkdir(backing+"/d", 0755))
		}
		check("file "+how, int(f.Fd()), false)
		check("directory "+how, int(d.Fd()), true)
		// The data is still there too.
		if b, err := unix.Pread(int(f.Fd()), make([]byte, 8), 0); err != nil || b != 3 {
			t.Errorf("file %s: pread: %d, %v; want 3 bytes", how, b, err)
		}
		if how == "replaced underneath" {
			for _, p := range []string{"f", "d"} {
				if _, err := unix.Lgetxattr(backing+"/"+p, attrs[1], nil); !errors.Is(err, unix.ENODATA) {
					t.Errorf("new %s: got the attribute set through the old one's descriptor: %v", p, err)
				}
				if st := lstat(t, backing+"/"+p); st.Mode&07777 != 0644 && st.Mode&07777 != 0755 {
					t.Errorf("new %s: mode %o after a chmod of the old one's descriptor", p, st.Mode&07777)
				}
			}
			must(t, os.Remove(backing+"/f"))
			must(t, os.Remove(backing+"/d"))
			Eventually(t, func() string {
				if _, err := os.Lstat(mnt + "/f"); !errors.Is(err, os.ErrNotExist) {
					return fmt.Sprintf("new f removed underneath: %v", err)
				}
				return ""
			})
		}
		f.Close()
		d.Close()
	}
}

// birthTime: statx(2) reports the birth time the backing file system
// records, for files, directories, symlinks and the root, by name and
// through an open file, and it stays after the file changes.
func birthTime(t *testing.T, mnt, backing string) {
	must(t, os.WriteFile(mnt+"/f", []byte("data"), 0644))
	must(t, os.Mkdir(mnt+"/d", 0755))
	must(t, os.Symlink("f", mnt+"/l"))
	btime := func(dirfd int, path string, flags int) (unix.StatxTimestamp, bool) {
		t.Helper()
		var sx unix.Statx_t
		must(t, unix.Statx(dirfd, path, flags|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx))
		return sx.Btime, sx.Mask&unix.STATX_BTIME != 0
	}
	check := func(name string) {
		t.Helper()
		want, ok := btime(unix.AT_FDCWD, filepath.Join(backing, name), 0)
		if !ok {
			unsupportedBelow(t, "birth times", nil)
			return
		}
		if got, ok := btime(unix.AT_FDCWD, filepath.Join(mnt, name), 0); !ok || got != want {
			t.Errorf("%q: birth time %v (reported: %v), want %v as below", name, got, ok, want)
		}
	}
	for _, name := range []string{"f", "d", "l", ""} {
		check(name)
	}
	f, err := os.OpenFile(mnt+"/f", os.O_RDWR, 0)
	must(t, err)
	defer f.Close() // also when the scenario fails: see linkNameReusedUnderneath
	want, ok := btime(unix.AT_FDCWD, backing+"/f", 0)
	if got, gotOK := btime(int(f.Fd()), "", unix.AT_EMPTY_PATH); ok && (!gotOK || got != want) {
		t.Errorf("through an open file: birth time %v (reported: %v), want %v", got, gotOK, want)
	}
	_, err = f.WriteAt([]byte("more data"), 100)
	must(t, err)
	must(t, f.Chmod(0600))
	must(t, f.Close())
	check("f")
}

// inodeFlags: chattr(1)'s inode flags (FS_IOC_GETFLAGS, FS_IOC_SETFLAGS,
// FS_IOC_FSGETXATTR) are the backing file's, and the file system below
// enforces them: an immutable file cannot be opened for writing, renamed,
// removed or chmod'ed; an append-only directory takes new entries but
// gives none up. (Append-only files: AppendOnlyFile.)
func inodeFlags(t *testing.T, mnt, backing string) {
	must(t, os.WriteFile(mnt+"/f", []byte("data"), 0644))
	must(t, os.Mkdir(mnt+"/d", 0755))
	open := func(p string) *os.File {
		t.Helper()
		f, err := os.Open(p)
		must(t, err)
		t.Cleanup(func() { f.Close() })
		return f
	}
	getFlags := func(f *os.File) (uint32, error) { return unix.IoctlGetUint32(int(f.Fd()), layer.FsIocGetflags) }
	setFlags := func(f *os.File, v uint32) error {
		return unix.IoctlSetPointerInt(int(f.Fd()), layer.FsIocSetflags, int(v))
	}
	below, err := getFlags(open(backing + "/f"))
	if err != nil {
		// No inode flags below: none through the mount either.
		_, got := getFlags(open(mnt + "/f"))
		if !errors.Is(got, err) {
			t.Errorf("FS_IOC_GETFLAGS: %v through the mount, %v below", got, err)
		}
		unsupportedBelow(t, "inode flags", err)
		return
	}
	f, d := open(mnt+"/f"), open(mnt+"/d")
	if got, err := getFlags(f); err != nil || got != below {
		t.Errorf("FS_IOC_GETFLAGS: %#x, %v; want %#x as below", got, err, below)
	}
	// Whatever a failure leaves set, the test's clean-up must be able to
	// remove the files.
	t.Cleanup(func() {
		for _, p := range []string{"/f", "/d"} {
			if b, err := os.Open(backing + p); err == nil {
				if v, err := getFlags(b); err == nil {
					setFlags(b, v&^(layer.FsImmutableFl|layer.FsAppendFl))
				}
				b.Close()
			}
		}
	})
	const nodump = 0x40 // FS_NODUMP_FL, chattr +d: no capability needed
	lstat(t, mnt+"/f")  // the kernel caches the attributes
	must(t, setFlags(f, below|nodump))
	if v, err := getFlags(open(backing + "/f")); err != nil || v&nodump == 0 {
		t.Errorf("chattr +d through the mount: %#x, %v below", v, err)
	}
	// Below, asked afresh: a backing dir that is itself a FUSE mount may
	// cache attributes for a jiffy.
	var sx unix.Statx_t
	must(t, unix.Statx(unix.AT_FDCWD, backing+"/f", unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_FORCE_SYNC, unix.STATX_CTIME, &sx))
	want := unix.Timespec{Sec: sx.Ctime.Sec, Nsec: int64(sx.Ctime.Nsec)}
	if got := lstat(t, mnt+"/f").Ctim; got != want {
		t.Errorf("ctime after chattr +d: %v, want %v as below", got, want)
	}
	var fsx [layer.FsxattrSize]byte
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(layer.FsIocFsgetxattr), uintptr(unsafe.Pointer(&fsx[0]))); e != 0 {
		t.Errorf("FS_IOC_FSGETXATTR: %v", e)
	} else if x := binary.NativeEndian.Uint32(fsx[:]); x&0x80 == 0 { // FS_XFLAG_NODUMP
		t.Errorf("FS_IOC_FSGETXATTR: xflags %#x, want nodump (0x80) set", x)
	}

	must(t, setFlags(f, below|layer.FsImmutableFl))
	_, err = os.OpenFile(mnt+"/f", os.O_WRONLY, 0)
	wantErrno(t, err, unix.EPERM, "open for writing of an immutable file")
	wantErrno(t, os.Rename(mnt+"/f", mnt+"/g"), unix.EPERM, "rename of an immutable file")
	wantErrno(t, os.Remove(mnt+"/f"), unix.EPERM, "unlink of an immutable file")
	wantErrno(t, os.Chmod(mnt+"/f", 0600), unix.EPERM, "chmod of an immutable file")
	if b, err := os.ReadFile(mnt + "/f"); err != nil || string(b) != "data" {
		t.Errorf("read of an immutable file: %q, %v", b, err)
	}
	must(t, setFlags(f, below))
	must(t, os.Chmod(mnt+"/f", 0600))

	dflags, err := getFlags(d)
	must(t, err)
	must(t, setFlags(d, dflags|layer.FsAppendFl))
	must(t, os.WriteFile(mnt+"/d/new", []byte("x"), 0644))
	wantErrno(t, os.Remove(mnt+"/d/new"), unix.EPERM, "unlink in an append-only directory")
	must(t, setFlags(d, dflags))
	must(t, os.Remove(mnt+"/d/new"))
}

// unsupportedBelow notes that the backing file system lacks a feature a
// scenario checks (err says how, when known). Outside CI the scenario
// then passes on what it could check; in CI, whose temporary directory is
// on ext4 or tmpfs, which have it, that is a failure: the check must run.
func unsupportedBelow(t *testing.T, what string, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Errorf("the backing file system here has no %s (%v); in CI it must", what, err)
		return
	}
	t.Logf("the backing file system has no %s (%v): not checked", what, err)
}

// FileWithFlags makes the file mnt/name holding "data", opens it (it is
// closed when the test ends, before the mount goes) and returns it with
// its inode flags; err is FS_IOC_GETFLAGS's error when there are none.
func FileWithFlags(t *testing.T, mnt, name string) (*os.File, uint32, error) {
	t.Helper()
	must(t, os.WriteFile(mnt+"/"+name, []byte("data"), 0644))
	f, err := os.Open(mnt + "/" + name)
	must(t, err)
	t.Cleanup(func() { f.Close() })
	flags, err := unix.IoctlGetUint32(int(f.Fd()), layer.FsIocGetflags)
	return f, flags, err
}

// appendOnlyFile: a file made append-only (chattr +a) through the mount
// takes writes only at its end, as the file system below enforces. crypt
// refuses the flag on files instead (its TestAppendOnlyRefused).
func appendOnlyFile(t *testing.T, mnt, backing string) {
	f, flags, err := FileWithFlags(t, mnt, "f")
	if err != nil {
		unsupportedBelow(t, "inode flags", err)
		return
	}
	must(t, unix.IoctlSetPointerInt(int(f.Fd()), layer.FsIocSetflags, int(flags|layer.FsAppendFl)))
	// Whatever happens, the test's clean-up must be able to remove it.
	t.Cleanup(func() {
		if b, err := os.Open(backing + "/f"); err == nil {
			unix.IoctlSetPointerInt(int(b.Fd()), layer.FsIocSetflags, int(flags))
			b.Close()
		}
	})
	_, err = os.OpenFile(mnt+"/f", os.O_WRONLY, 0)
	wantErrno(t, err, unix.EPERM, "open of an append-only file for writing anywhere")
	wantErrno(t, os.Truncate(mnt+"/f", 1), unix.EPERM, "truncate of an append-only file")
	a, err := os.OpenFile(mnt+"/f", os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = a.WriteString("+more")
	must(t, err)
	must(t, a.Close())
	if b, err := os.ReadFile(mnt + "/f"); err != nil || string(b) != "data+more" {
		t.Errorf("append-only file after an append: %q, %v", b, err)
	}
	if b, err := os.ReadFile(backing + "/f"); err != nil || string(b) != "data+more" {
		t.Errorf("append-only file below after an append: %q, %v", b, err)
	}
}

// tmpfileLinked: a file made with O_TMPFILE takes a name with linkat(2)
// (AT_EMPTY_PATH), as on ext4, keeping what was written; one made with
// O_EXCL, or a file that had a name and lost it, cannot (ENOENT), and a
// name in use is refused (EEXIST).
func tmpfileLinked(t *testing.T, mnt, backing string) {
	must(t, os.Mkdir(mnt+"/d", 0755))
	link := func(fd int, name string) error {
		return unix.Linkat(fd, "", unix.AT_FDCWD, mnt+"/"+name, unix.AT_EMPTY_PATH)
	}
	tmp := func(dir string, flags int) int {
		t.Helper()
		fd, err := unix.Open(mnt+"/"+dir, unix.O_TMPFILE|unix.O_RDWR|flags, 0640)
		must(t, err)
		// Closed also when the scenario fails: see linkNameReusedUnderneath.
		t.Cleanup(func() { unix.Close(fd) })
		_, err = unix.Write(fd, []byte("made unnamed"))
		must(t, err)
		return fd
	}
	must(t, link(tmp("d", 0), "d/named"))
	if b, err := os.ReadFile(backing + "/d/named"); err != nil || string(b) != "made unnamed" {
		t.Errorf("O_TMPFILE file linked: %q, %v below", b, err)
	}
	if st := lstat(t, mnt+"/d/named"); st.Mode&07777 != 0640 || st.Nlink != 1 {
		t.Errorf("O_TMPFILE file linked: mode %o, nlink %d; want 640, 1", st.Mode&07777, st.Nlink)
	}
	wantErrno(t, link(tmp("", 0), "d/named"), unix.EEXIST, "linking an O_TMPFILE file onto a name in use")
	wantErrno(t, link(tmp("", unix.O_EXCL), "excl"), unix.ENOENT, "linking an O_TMPFILE file made with O_EXCL")
	f, err := os.OpenFile(mnt+"/f", os.O_CREATE|os.O_RDWR, 0644)
	must(t, err)
	defer f.Close()
	must(t, os.Remove(mnt+"/f"))
	wantErrno(t, link(int(f.Fd()), "relinked"), unix.ENOENT, "linking a file that lost its name")
}
