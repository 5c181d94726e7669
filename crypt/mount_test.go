package crypt_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"golang.org/x/sys/unix"
)

// testPassphrase wraps the tests' master key in testConfig.
const testPassphrase = "test passphrase"

// testConfig and testKeys are made once: every mount of the tests uses the
// same master key, so a second mount over the same backing dir reads the
// first's files.
var testConfig = sync.OnceValues(func() (*crypt.Config, *crypt.Keys) {
	cfg, k, err := crypt.NewConfig([]byte(testPassphrase), crypt.MinScryptLogN)
	if err != nil {
		panic(err)
	}
	return cfg, k
})

func testKeys() *crypt.Keys { _, k := testConfig(); return k }

// cryptStack is a conformance.StackFunc: passthrough + crypt.
func cryptStack(t testing.TB, backing string) *layer.Stack {
	pt, err := layer.NewPassthrough(backing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pt.Close() })
	f, err := crypt.New(testKeys(), crypt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := layer.NewStack(nil, pt, f)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// mountAgain mounts backing a second time through crypt, on a new
// mountpoint: the plaintext view of the backing directory.
func mountAgain(t *testing.T, backing string, opts layer.MountOptions) string {
	t.Helper()
	mnt := t.TempDir()
	srv, err := layer.Mount(mnt, cryptStack(t, backing), opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	conformance.UnmountAtEnd(t, srv)
	return mnt
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestPosix(t *testing.T) {
	conformance.RunPosix(t, cryptStack, layer.MountOptions{})
}

// TestScenarios runs the project's own scenarios. Several look at the
// backing directory and expect the names and contents they wrote through
// the mount; for crypt the backing directory holds ciphertext. They get,
// as "backing", a second mount of the same backing directory through
// crypt instead: the backing directory as crypt's users see it, which is
// exactly what those scenarios mean (inode numbers, modes, owners, times,
// xattrs and symlinks are the backing's own).
func TestScenarios(t *testing.T) {
	for name, fn := range conformance.Scenarios {
		t.Run(name, func(t *testing.T) {
			if why, ok := viewSkips[name]; ok {
				t.Skip(why)
			}
			mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
			// The view caches nothing, so it sees each change at once,
			// as the backing directory itself would.
			view := mountAgain(t, backing, layer.MountOptions{EntryTimeout: time.Nanosecond, AttrTimeout: time.Nanosecond})
			fn(t, mnt, view)
		})
	}
}

// viewSkips are the scenarios the second-mount view cannot serve, and why.
// Neither is about crypt: each fails the same way for a passthrough-only
// stack seen through a second mount.
var viewSkips = map[string]string{
	"AppendOnlyFile":       "crypt refuses chattr +a on files (every append rewrites the last block in place): TestAppendOnlyRefused",
	"RootAttributes":       "compares the root's inode number with the backing root's; the view's root is a FUSE mount root, which the kernel reports as inode 0 until an attribute change refreshes it",
	"SymlinksStaySymlinks": "lchowns through the mount and lstats the view at once; the view caches attributes for one jiffy (the shortest timeout layer.MountOptions allows), so it may see the old owner",
}

func TestExerciser(t *testing.T) {
	steps := 400
	if testing.Short() {
		steps = 60
	}
	conformance.RunExerciser(t, cryptStack, layer.MountOptions{}, steps)
}

// TestNothingInTheClear writes names and contents through the mount and
// checks that no byte of either appears in the backing directory.
func TestNothingInTheClear(t *testing.T) {
	mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
	secretName := "secretname"
	content := bytes.Repeat([]byte("SECRETCONTENT"), 1000)
	must(t, os.MkdirAll(mnt+"/"+secretName+"dir/sub", 0755))
	must(t, os.WriteFile(mnt+"/"+secretName+"dir/sub/"+secretName, content, 0644))
	must(t, os.Symlink("secretlinktarget", mnt+"/"+secretName+"link"))
	long := strings.Repeat("L", 255)
	must(t, os.WriteFile(mnt+"/"+long, content, 0644))
	filepath.Walk(backing, func(p string, fi os.FileInfo, err error) error {
		must(t, err)
		if strings.Contains(p, "secret") || strings.Contains(p, "LLLL") {
			t.Errorf("plaintext name in backing: %s", p)
		}
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			must(t, err)
			if bytes.Contains(data, []byte("SECRET")) {
				t.Errorf("plaintext content in %s", p)
			}
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			tg, _ := os.Readlink(p)
			if strings.Contains(tg, "secret") {
				t.Errorf("plaintext symlink target in %s", p)
			}
		}
		return nil
	})
	// And through the mount everything reads back.
	got, err := os.ReadFile(mnt + "/" + long)
	must(t, err)
	if !bytes.Equal(got, content) {
		t.Errorf("long-named file reads back wrong")
	}
	tg, err := os.Readlink(mnt + "/" + secretName + "link")
	must(t, err)
	if tg != "secretlinktarget" {
		t.Errorf("readlink %q", tg)
	}
	if st, _ := os.Lstat(mnt + "/" + secretName + "link"); st.Size() != int64(len(tg)) {
		t.Errorf("symlink size %d, want %d", st.Size(), len(tg))
	}
	ents, err := os.ReadDir(mnt)
	must(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{long, secretName + "dir", secretName + "link"}
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("listing %q, want %q", names, want)
	}
}

// TestSizes checks that stat and listings report plaintext sizes, after
// writes, truncation and extension.
func TestSizes(t *testing.T) {
	mnt, _ := conformance.Mount(t, cryptStack, layer.MountOptions{})
	for _, n := range []int{0, 1, 4095, 4096, 4097, 1 << 20, 3<<20 + 7} {
		p := fmt.Sprintf("%s/f%d", mnt, n)
		data := make([]byte, n)
		rand.Read(data)
		must(t, os.WriteFile(p, data, 0644))
		st, err := os.Stat(p)
		must(t, err)
		if st.Size() != int64(n) {
			t.Errorf("size %d, want %d", st.Size(), n)
		}
		got, err := os.ReadFile(p)
		must(t, err)
		if !bytes.Equal(got, data) {
			t.Errorf("f%d reads back wrong", n)
		}
	}
	p := mnt + "/t"
	must(t, os.WriteFile(p, bytes.Repeat([]byte{7}, 10000), 0644))
	for _, sz := range []int64{5000, 4096, 100, 0, 9000, 20000, 3} {
		must(t, os.Truncate(p, sz))
		st, err := os.Stat(p)
		must(t, err)
		if st.Size() != sz {
			t.Errorf("after truncate to %d: size %d", sz, st.Size())
		}
	}
}

// TestDamagedBlock flips one byte of the second block's ciphertext: that
// block reads EIO, the others still read.
func TestDamagedBlock(t *testing.T) {
	mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
	data := make([]byte, 3*4096)
	rand.Read(data)
	must(t, os.WriteFile(mnt+"/f", data, 0644))
	var cfile string
	filepath.Walk(backing, func(p string, fi os.FileInfo, err error) error {
		if fi.Mode().IsRegular() && fi.Size() > 4096 {
			cfile = p
		}
		return nil
	})
	flipBits(t, cfile, int64(crypt.HeaderLen+4096+crypt.BlockOverhead+100), 1) // inside block 1
	// A fresh mount, so that no page is cached.
	view := mountAgain(t, backing, layer.MountOptions{})
	f, err := os.Open(view + "/f")
	must(t, err)
	defer f.Close()
	// Random access: no read-ahead pulling the damaged block into the
	// request for block 0.
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM)
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:4096]) {
		t.Errorf("block 0: %v", err)
	}
	if _, err := f.ReadAt(buf, 8192); err != nil || !bytes.Equal(buf, data[8192:]) {
		t.Errorf("block 2: %v", err)
	}
	if _, err := f.ReadAt(buf, 4096); !errors.Is(err, syscall.EIO) {
		t.Errorf("block 1: got %v, want EIO", err)
	}
}

// TestAppendAndConcurrentWriters: O_APPEND from several writers and
// concurrent writers of disjoint ranges that share blocks.
func TestAppendAndConcurrentWriters(t *testing.T) {
	mnt, _ := conformance.Mount(t, cryptStack, layer.MountOptions{})
	f, err := os.OpenFile(mnt+"/log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0644)
	must(t, err)
	var want []byte
	for i := range 300 {
		line := fmt.Sprintf("line %d %s\n", i, strings.Repeat("x", i%50))
		want = append(want, line...)
		_, err := f.Write([]byte(line))
		must(t, err)
	}
	f.Close()
	got, err := os.ReadFile(mnt + "/log")
	must(t, err)
	if !bytes.Equal(got, want) {
		t.Errorf("O_APPEND: got %d bytes, want %d", len(got), len(want))
	}

	// 8 writers, each writing every 8th 1000-byte record: records
	// straddle block boundaries, so writers share blocks.
	const writers, records, rec = 8, 200, 1000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.OpenFile(mnt+"/shared", os.O_CREATE|os.O_WRONLY, 0644)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			for r := w; r < records; r += writers {
				if _, err := f.WriteAt(bytes.Repeat([]byte{byte('a' + w)}, rec), int64(r*rec)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	got, err = os.ReadFile(mnt + "/shared")
	must(t, err)
	if len(got) != records*rec {
		t.Fatalf("size %d", len(got))
	}
	for r := range records {
		if w := byte('a' + r%writers); !bytes.Equal(got[r*rec:(r+1)*rec], bytes.Repeat([]byte{w}, rec)) {
			t.Fatalf("record %d damaged", r)
		}
	}
}

// TestMmap reads and writes a file through a shared mapping. The mapping
// is used by a child process: a page fault on a FUSE mount served by the
// faulting process itself can block a thread the Go runtime must stop for
// garbage collection, which then stops the server too (a deadlock).
func TestMmap(t *testing.T) {
	if p := os.Getenv("CRYPT_MMAP_CHILD"); p != "" {
		mmapChild(t, p)
		return
	}
	mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
	data := make([]byte, 3*4096+100)
	rand.Read(data)
	must(t, os.WriteFile(mnt+"/m", data, 0644))
	cmd := exec.Command(os.Args[0], "-test.run=^TestMmap$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CRYPT_MMAP_CHILD="+mnt+"/m")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	copy(data[5000:], "through the mapping")
	got, err := os.ReadFile(mountAgain(t, backing, layer.MountOptions{}) + "/m")
	must(t, err)
	if !bytes.Equal(got, data) {
		t.Errorf("write through the mapping did not reach the file")
	}
}

func mmapChild(t *testing.T, p string) {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	st, err := f.Stat()
	must(t, err)
	want, err := os.ReadFile(p)
	must(t, err)
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	must(t, err)
	if !bytes.Equal(m, want) {
		t.Errorf("mmap read differs from read(2)")
	}
	copy(m[5000:], "through the mapping")
	must(t, unix.Msync(m, unix.MS_SYNC))
	must(t, unix.Munmap(m))
}

// TestDirRenameKeepsContents renames a directory tree and reads it back,
// through the same mount and through a fresh one.
func TestDirRenameKeepsContents(t *testing.T) {
	mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
	must(t, os.MkdirAll(mnt+"/a/b/c", 0755))
	long := strings.Repeat("z", 200)
	must(t, os.WriteFile(mnt+"/a/b/c/f", []byte("deep"), 0644))
	must(t, os.WriteFile(mnt+"/a/b/"+long, []byte("long"), 0644))
	must(t, os.Rename(mnt+"/a", mnt+"/x"))
	must(t, os.Rename(mnt+"/x/b", mnt+"/x/"+long))
	check := func(root string) {
		got, err := os.ReadFile(root + "/x/" + long + "/c/f")
		if err != nil || string(got) != "deep" {
			t.Errorf("%s: deep file: %q %v", root, got, err)
		}
		got, err = os.ReadFile(root + "/x/" + long + "/" + long)
		if err != nil || string(got) != "long" {
			t.Errorf("%s: long file: %q %v", root, got, err)
		}
		if _, err := os.Stat(root + "/a"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("old name still there: %v", err)
		}
	}
	check(mnt)
	check(mountAgain(t, backing, layer.MountOptions{}))
	must(t, os.RemoveAll(mnt+"/x"))
	ents, _ := os.ReadDir(backing)
	for _, e := range ents {
		if e.Name() != crypt.DirIVFile {
			t.Errorf("left in backing after rm -rf: %s", e.Name())
		}
	}
}

// TestRmdirFailureRestoresIV: crypt removes an empty directory's IV file
// before the rmdir below (a directory holding it is not empty); when that
// rmdir then fails, the same IV comes back, with its journaled copy. Both
// ways of knowing the IV are covered: from crypt's cache (the directory
// was listed first, as rm -rf does) and read again (a mount that has not
// seen the directory yet).
func TestRmdirFailureRestoresIV(t *testing.T) {
	backing := t.TempDir()
	keys := testKeys()
	mnt := mountKeys(t, backing, keys, layer.MountOptions{}, nil)
	must(t, os.MkdirAll(mnt+"/p/d", 0o755))
	cp := cpath(t, backing, keys, "p")
	ents, err := os.ReadDir(cp)
	must(t, err)
	var cd string
	for _, e := range ents {
		if e.IsDir() {
			cd = filepath.Join(cp, e.Name())
		}
	}
	if cd == "" {
		t.Fatalf("no ciphertext directory below %s", cp)
	}
	ivFile := filepath.Join(cd, crypt.DirIVFile)
	iv, err := os.ReadFile(ivFile)
	must(t, err)

	// An immutable parent refuses the rmdir below, to root as well, but
	// not the removal of the IV file inside the directory.
	setImmutable(t, cp, true)
	t.Cleanup(func() { setImmutable(t, cp, false) })
	check := func(how, root string) {
		t.Helper()
		wantErrno(t, unix.Rmdir(root+"/p/d"), syscall.EPERM, how+": rmdir under an immutable parent")
		if got, err := os.ReadFile(ivFile); err != nil || !bytes.Equal(got, iv) {
			t.Errorf("%s: IV file after the failed rmdir: %x %v, want %x", how, got, err, iv)
		}
		if got, err := getx(ivFile, crypt.CopyXattr, -1); err != nil || !bytes.Equal(got, iv) {
			t.Errorf("%s: IV copy after the failed rmdir: %x %v, want %x", how, got, err, iv)
		}
	}
	_, err = os.ReadDir(mnt + "/p/d")
	must(t, err)
	check("cached", mnt)
	check("read again", mountKeys(t, backing, keys, layer.MountOptions{}, nil))

	// The directory still works, and goes once the parent lets it.
	must(t, os.WriteFile(mnt+"/p/d/f", []byte("x"), 0o644))
	if got, err := os.ReadFile(mnt + "/p/d/f"); err != nil || string(got) != "x" {
		t.Errorf("file in the directory: %q %v", got, err)
	}
	must(t, os.Remove(mnt+"/p/d/f"))
	setImmutable(t, cp, false)
	must(t, unix.Rmdir(mnt+"/p/d"))
	if _, err := os.Stat(cd); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ciphertext directory after rmdir: %v", err)
	}
}

// setImmutable sets or clears FS_IMMUTABLE_FL (<linux/fs.h>) on the
// directory dir.
func setImmutable(t *testing.T, dir string, on bool) {
	t.Helper()
	const immutable = 0x10 // FS_IMMUTABLE_FL
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(fd)
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	must(t, err)
	if on {
		flags |= immutable
	} else {
		flags &^= immutable
	}
	must(t, unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, flags))
}

// TestWrongKey: a tree written with one key shows nothing readable with
// another (names do not decrypt, so the listing is empty).
func TestWrongKey(t *testing.T) {
	mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
	must(t, os.WriteFile(mnt+"/f", []byte("x"), 0644))
	_, other, err := crypt.NewConfig([]byte("other"), crypt.MinScryptLogN)
	must(t, err)
	pt, err := layer.NewPassthrough(backing)
	must(t, err)
	defer pt.Close()
	f, err := crypt.New(other, crypt.Options{})
	must(t, err)
	st, err := layer.NewStack(nil, pt, f)
	must(t, err)
	rd := &layer.ReaddirOp{Path: ""}
	if errno := st.Do(layer.InternalCall(t.Context()), rd); errno != 0 {
		t.Fatal(errno)
	}
	if len(rd.Entries) != 0 {
		t.Errorf("other key lists %v", rd.Entries)
	}
}

// TestDamagedHeader: a file whose header is damaged below (its version
// bytes, or its file id, which every block's tag covers) reads as EIO with
// a log line; its neighbours read fine.
func TestDamagedHeader(t *testing.T) {
	mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
	data := make([]byte, 3*4096)
	rand.Read(data)
	for _, name := range []string{"version", "id", "fine"} {
		must(t, os.WriteFile(mnt+"/"+name, data, 0644))
	}
	damage := map[string]int64{"version": 0, "id": 5}
	for name, off := range damage {
		flipBits(t, cipherOf(t, mnt, backing, name), off, 0x10)
	}
	view := mountAgain(t, backing, layer.MountOptions{})
	for name := range damage {
		if _, err := os.ReadFile(view + "/" + name); !errors.Is(err, syscall.EIO) {
			t.Errorf("%s header damaged: read gave %v, want EIO", name, err)
		}
	}
	got, err := os.ReadFile(view + "/fine")
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("undamaged neighbour: %d bytes, %v", len(got), err)
	}
}

// cipherOf is the backing path of the entry p of the mount mnt over
// backing, found by inode number (the mount shows the backing inodes).
func cipherOf(t *testing.T, mnt, backing, p string) string {
	t.Helper()
	var st, bst unix.Stat_t
	must(t, unix.Lstat(mnt+"/"+p, &st))
	found := ""
	filepath.Walk(backing, func(q string, _ os.FileInfo, err error) error {
		if err == nil && unix.Lstat(q, &bst) == nil && bst.Ino == st.Ino {
			found = q
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no ciphertext for %s", p)
	}
	return found
}

// flipBits damages the file at path below the mount: the byte at off is
// XORed with mask.
func flipBits(t *testing.T, path string, off int64, mask byte) {
	t.Helper()
	fd, err := os.OpenFile(path, os.O_RDWR, 0)
	must(t, err)
	defer fd.Close()
	b := make([]byte, 1)
	if _, err := fd.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= mask
	if _, err := fd.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// skipOutsideCI skips t for a missing capability of this machine, and
// fails it under CI=true, where every test must run.
func skipOutsideCI(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI must run this test: "+format, args...)
	}
	t.Skipf(format, args...)
}

// TestSymlinkTargetLimit: an encrypted target must fit a symlink below
// (4095 bytes of base64url), so plaintext targets of up to 3039 bytes work
// and longer ones get ENAMETOOLONG, the errno of a target too long on
// ext4, and leave nothing behind.
func TestSymlinkTargetLimit(t *testing.T) {
	mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
	long := strings.Repeat("t", 3039)
	must(t, os.Symlink(long, mnt+"/ok"))
	got, err := os.Readlink(mnt + "/ok")
	must(t, err)
	if got != long {
		t.Errorf("target of %d bytes reads back as %d bytes", len(long), len(got))
	}
	err = os.Symlink(long+"t", mnt+"/long")
	if !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Errorf("target of 3040 bytes: %v, want ENAMETOOLONG", err)
	}
	if _, err := os.Lstat(mnt + "/long"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused symlink: lstat gives %v, want not exist", err)
	}
	ents, err := os.ReadDir(backing)
	must(t, err)
	links := 0
	for _, e := range ents {
		if e.Type()&os.ModeSymlink != 0 {
			links++
		}
	}
	if links != 1 {
		t.Errorf("%d symlinks below, want 1", links)
	}
}

// TestAppendOnlyRefused: chattr +a on a file is refused with EOPNOTSUPP,
// as every append through crypt rewrites the file's last block in place,
// which an append-only file below forbids. A file made append-only
// underneath keeps the flag through other changes of flags (and takes no
// appends); a directory may be append-only.
func TestAppendOnlyRefused(t *testing.T) {
	mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
	f, flags, err := conformance.FileWithFlags(t, mnt, "f")
	if err != nil {
		skipOutsideCI(t, "no inode flags here: %v", err)
	}
	const nodump = 0x40 // FS_NODUMP_FL
	err = unix.IoctlSetPointerInt(int(f.Fd()), layer.FsIocSetflags, int(flags|layer.FsAppendFl))
	require.ErrorIs(t, err, unix.EOPNOTSUPP, "chattr +a of a file")

	below, err := os.Open(cipherOf(t, mnt, backing, "f"))
	must(t, err)
	defer below.Close()
	must(t, unix.IoctlSetPointerInt(int(below.Fd()), layer.FsIocSetflags, int(flags|layer.FsAppendFl)))
	defer unix.IoctlSetPointerInt(int(below.Fd()), layer.FsIocSetflags, int(flags))
	must(t, unix.IoctlSetPointerInt(int(f.Fd()), layer.FsIocSetflags, int(flags|layer.FsAppendFl|nodump)))
	got, err := unix.IoctlGetUint32(int(below.Fd()), layer.FsIocGetflags)
	must(t, err)
	require.Equal(t, flags|layer.FsAppendFl|nodump, got, "flags below after chattr +d of a file append-only underneath")
	_, err = os.OpenFile(mnt+"/f", os.O_WRONLY|os.O_APPEND, 0)
	require.ErrorIs(t, err, unix.EPERM, "append to a file append-only underneath")

	must(t, os.Mkdir(mnt+"/d", 0755))
	d, err := os.Open(mnt + "/d")
	must(t, err)
	defer d.Close()
	dflags, err := unix.IoctlGetUint32(int(d.Fd()), layer.FsIocGetflags)
	must(t, err)
	must(t, unix.IoctlSetPointerInt(int(d.Fd()), layer.FsIocSetflags, int(dflags|layer.FsAppendFl)))
	must(t, os.WriteFile(mnt+"/d/new", []byte("x"), 0644))
	must(t, unix.IoctlSetPointerInt(int(d.Fd()), layer.FsIocSetflags, int(dflags)))
}
