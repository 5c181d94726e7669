package crypt_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"golang.org/x/sys/unix"
)

// lockedBuffer collects a mount's log lines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// mountKeys mounts backing through crypt with keys, logging to log (nil:
// the default logger), and unmounts it when the test ends.
func mountKeys(t *testing.T, backing string, keys *crypt.Keys, opts layer.MountOptions, log *slog.Logger) string {
	t.Helper()
	conformance.RequireFUSE(t)
	pt, err := layer.NewPassthrough(backing)
	must(t, err)
	t.Cleanup(func() { pt.Close() })
	f, err := crypt.New(keys, crypt.Options{})
	must(t, err)
	st, err := layer.NewStack(log, pt, f)
	must(t, err)
	mnt := t.TempDir()
	srv, err := layer.Mount(mnt, st, opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	conformance.UnmountAtEnd(t, srv)
	return mnt
}

// cpath is the backing path of the plaintext entry name of the root
// directory.
func cpath(t *testing.T, backing string, keys *crypt.Keys, name string) string {
	t.Helper()
	iv, err := os.ReadFile(filepath.Join(backing, crypt.DirIVFile))
	must(t, err)
	names, err := keys.Names()
	must(t, err)
	stored, _ := crypt.StoredName(names.Encrypt(name, iv))
	return filepath.Join(backing, stored)
}

func wantErrno(t *testing.T, err error, want syscall.Errno, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

// getx reads an attribute with a buffer of size n (-1: the size query's
// answer).
func getx(p, name string, n int) ([]byte, error) {
	if n < 0 {
		sz, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return nil, err
		}
		n = sz
	}
	buf := make([]byte, n)
	m, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return nil, err
	}
	if m > n {
		return nil, fmt.Errorf("getxattr of %d bytes into %d", m, n)
	}
	return buf[:m], nil
}

// listx lists the names of p (size query, then read).
func listx(t *testing.T, p string) []string {
	t.Helper()
	sz, err := unix.Llistxattr(p, nil)
	must(t, err)
	buf := make([]byte, sz)
	n, err := unix.Llistxattr(p, buf)
	must(t, err)
	if n != sz {
		t.Errorf("%s: listxattr size query says %d, the list has %d bytes", p, sz, n)
	}
	if sz > 0 {
		_, err := unix.Llistxattr(p, make([]byte, sz-1))
		wantErrno(t, err, syscall.ERANGE, "listxattr into a buffer one byte short")
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	slices.Sort(names)
	return names
}

func userNames(names []string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return !strings.HasPrefix(n, "user.") })
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// xattrName is a user.* name of n bytes.
func xattrName(n int, fill string) string {
	return "user." + strings.Repeat(fill, n)[:n-len("user.")]
}

// TestXattrMount sets, reads, lists and removes user.* attributes of many
// name and value sizes on a file, a directory and the root, and checks
// that only ciphertext reaches the backing directory.
func TestXattrMount(t *testing.T) {
	backing := t.TempDir()
	keys := testKeys()
	mnt := mountKeys(t, backing, keys, layer.MountOptions{}, nil)
	must(t, os.WriteFile(mnt+"/f", []byte("content"), 0644))
	must(t, os.Mkdir(mnt+"/d", 0755))
	for _, target := range []struct{ name, plain, below string }{
		{"file", mnt + "/f", cpath(t, backing, keys, "f")},
		{"dir", mnt + "/d", cpath(t, backing, keys, "d")},
		{"root", mnt, backing},
	} {
		t.Run(target.name, func(t *testing.T) { xattrRoundTrip(t, target.plain, target.below) })
	}
}

func xattrRoundTrip(t *testing.T, p, below string) {
	nameLens := []int{6, 16, 20, 21, 37, 100, crypt.MaxXattrPlainName}
	// ext4 keeps a file's attributes in its inode and one block: values
	// up to about 4000 bytes fit (TestXattrBigValues goes to 64 KiB on
	// tmpfs).
	valueLens := []int{0, 1, 15, 16, 17, 100, 1000, 3000}
	for _, nl := range nameLens {
		for _, vl := range valueLens {
			name, value := xattrName(nl, "nAmE"), randBytes(vl)
			if vl > 2 {
				value[1] = 0 // binary, with NULs
			}
			must(t, unix.Lsetxattr(p, name, value, 0))
			if sz, err := unix.Lgetxattr(p, name, nil); err != nil || sz != vl {
				t.Fatalf("%d-byte name, %d-byte value: size query %d %v", nl, vl, sz, err)
			}
			for _, n := range []int{vl, vl + 1, crypt.MaxXattrValue} {
				got, err := getx(p, name, n)
				if err != nil || !bytes.Equal(got, value) {
					t.Fatalf("%d-byte name, %d-byte value, %d-byte buffer: %v, value equal %v", nl, vl, n, err, bytes.Equal(got, value))
				}
			}
			if vl > 1 { // a 0-byte buffer is a size query
				_, err := getx(p, name, vl-1)
				wantErrno(t, err, syscall.ERANGE, fmt.Sprintf("%d-byte value into %d bytes", vl, vl-1))
			}
			// Below: one stored name, not the plaintext, and the
			// value encrypted with its overhead.
			stored := userNames(listx(t, below))
			if len(stored) != 1 || !strings.HasPrefix(stored[0], crypt.XattrPrefix) || strings.Contains(stored[0], "nAmE") || len(stored[0]) > crypt.MaxXattrName {
				t.Fatalf("stored names %q", stored)
			}
			ct, err := getx(below, stored[0], -1)
			must(t, err)
			if len(ct) != vl+crypt.XattrOverhead || (vl >= 8 && bytes.Contains(ct, value)) {
				t.Fatalf("stored value of %d bytes for %d", len(ct), vl)
			}
			if got := userNames(listx(t, p)); !slices.Equal(got, []string{name}) {
				t.Fatalf("listed %q, want %q", got, name)
			}
			must(t, unix.Lremovexattr(p, name))
			_, err = getx(p, name, 100)
			wantErrno(t, err, syscall.ENODATA, "removed attribute")
		}
	}

	// Several at once, with other namespaces (trusted.* is root's and
	// passes through in the clear).
	want := []string{}
	for i, nl := range nameLens {
		name := xattrName(nl, fmt.Sprint(i))
		must(t, unix.Lsetxattr(p, name, []byte(name), 0))
		want = append(want, name)
	}
	must(t, unix.Lsetxattr(p, "trusted.plain", []byte("in the clear"), 0))
	want = append(want, "trusted.plain")
	slices.Sort(want)
	if got := listx(t, p); !slices.Equal(got, want) {
		t.Errorf("listed %q, want %q", got, want)
	}
	for _, name := range want {
		if got, err := getx(p, name, -1); err != nil || string(got) != map[bool]string{true: "in the clear", false: name}[name == "trusted.plain"] {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
	if got, err := getx(below, "trusted.plain", -1); err != nil || string(got) != "in the clear" {
		t.Errorf("trusted.plain below: %q %v", got, err)
	}
	if got := userNames(listx(t, below)); len(got) != len(nameLens) {
		t.Errorf("stored %q", got)
	}
	for _, name := range want {
		must(t, unix.Lremovexattr(p, name))
	}

	// XATTR_CREATE and XATTR_REPLACE.
	wantErrno(t, unix.Lsetxattr(p, "user.k", []byte("v"), unix.XATTR_REPLACE), syscall.ENODATA, "XATTR_REPLACE on missing")
	must(t, unix.Lsetxattr(p, "user.k", []byte("v1"), unix.XATTR_CREATE))
	wantErrno(t, unix.Lsetxattr(p, "user.k", []byte("v2"), unix.XATTR_CREATE), syscall.EEXIST, "XATTR_CREATE on existing")
	must(t, unix.Lsetxattr(p, "user.k", []byte("v3"), unix.XATTR_REPLACE))
	if got, err := getx(p, "user.k", 10); err != nil || string(got) != "v3" {
		t.Errorf("after XATTR_REPLACE: %q %v", got, err)
	}
	must(t, unix.Lremovexattr(p, "user.k"))
	wantErrno(t, unix.Lremovexattr(p, "user.k"), syscall.ENODATA, "removexattr of a missing attribute")

	// Names too long once encrypted: refused as Linux refuses names
	// over 255 bytes; they cannot exist, so reading or removing one
	// finds nothing.
	for _, nl := range []int{crypt.MaxXattrPlainName + 1, 200, crypt.MaxXattrName} {
		name := xattrName(nl, "L")
		wantErrno(t, unix.Lsetxattr(p, name, []byte("v"), 0), syscall.ERANGE, fmt.Sprintf("%d-byte name", nl))
		_, err := getx(p, name, 10)
		wantErrno(t, err, syscall.ENODATA, fmt.Sprintf("getxattr of a %d-byte name", nl))
		wantErrno(t, unix.Lremovexattr(p, name), syscall.ENODATA, fmt.Sprintf("removexattr of a %d-byte name", nl))
	}
	wantErrno(t, unix.Lsetxattr(p, xattrName(256, "L"), []byte("v"), 0), syscall.ERANGE, "256-byte name")
	wantErrno(t, unix.Lsetxattr(p, "user.", []byte("v"), 0), syscall.EINVAL, "bare user.")

	// Values: E2BIG when too large once encrypted (the kernel's own
	// limit is 64 KiB), and what the backing says (ext4: ENOSPC beyond
	// its block) passes through.
	wantErrno(t, unix.Lsetxattr(p, "user.big", make([]byte, crypt.MaxXattrValue-crypt.XattrOverhead+1), 0), syscall.E2BIG, "value too large once encrypted")
	wantErrno(t, unix.Lsetxattr(p, "user.big", make([]byte, crypt.MaxXattrValue+1), 0), syscall.E2BIG, "value over 64 KiB")
	probe := filepath.Join(t.TempDir(), "probe") // on the backing's file system
	must(t, os.WriteFile(probe, nil, 0644))
	backingErr := unix.Lsetxattr(probe, "user.big", make([]byte, 16000+crypt.XattrOverhead), 0)
	gotErr := unix.Lsetxattr(p, "user.big", make([]byte, 16000), 0)
	if !errors.Is(gotErr, backingErr) && (gotErr != nil || backingErr != nil) {
		t.Errorf("16000-byte value: %v, the backing says %v", gotErr, backingErr)
	}
	unix.Lremovexattr(p, "user.big")
}

// TestXattrBigValues: values to the largest that fits 64 KiB once
// encrypted, on a backing file system that stores them (tmpfs).
func TestXattrBigValues(t *testing.T) {
	backing := t.TempDir()
	if err := unix.Mount("tmpfs", backing, "tmpfs", 0, "size=16m"); err != nil {
		skipOutsideCI(t, "cannot mount a tmpfs for the backing directory: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(backing, unix.MNT_DETACH) })
	if err := unix.Setxattr(backing, "user.probe", make([]byte, crypt.MaxXattrValue), 0); err != nil {
		skipOutsideCI(t, "this tmpfs does not store 64 KiB user xattrs: %v", err)
	}
	must(t, unix.Removexattr(backing, "user.probe"))
	keys := testKeys()
	mnt := mountKeys(t, backing, keys, layer.MountOptions{}, nil)
	must(t, os.WriteFile(mnt+"/f", nil, 0644))
	below := cpath(t, backing, keys, "f")
	max := crypt.MaxXattrValue - crypt.XattrOverhead
	for _, n := range []int{4000, 4097, 32768, max - 1, max} {
		v := randBytes(n)
		name := fmt.Sprintf("user.v%d", n)
		must(t, unix.Setxattr(mnt+"/f", name, v, 0))
		if got, err := getx(mnt+"/f", name, -1); err != nil || !bytes.Equal(got, v) {
			t.Errorf("%d bytes: %v", n, err)
		}
		if got, err := getx(mnt+"/f", name, crypt.MaxXattrValue); err != nil || !bytes.Equal(got, v) {
			t.Errorf("%d bytes, 64 KiB buffer: %v", n, err)
		}
		_, err := getx(mnt+"/f", name, n-1)
		wantErrno(t, err, syscall.ERANGE, fmt.Sprintf("%d bytes into %d", n, n-1))
		ct, err := getx(below, userNames(listx(t, below))[0], -1)
		must(t, err)
		if len(ct) != n+crypt.XattrOverhead {
			t.Errorf("%d bytes stored as %d", n, len(ct))
		}
		must(t, unix.Removexattr(mnt+"/f", name))
	}
	wantErrno(t, unix.Setxattr(mnt+"/f", "user.v", make([]byte, max+1), 0), syscall.E2BIG, "one byte more")
	// Many attributes: the list grows past a page, both ways.
	var want []string
	for i := range 100 {
		name := xattrName(crypt.MaxXattrPlainName, fmt.Sprintf("%03d-", i))
		must(t, unix.Setxattr(mnt+"/f", name, []byte{byte(i)}, 0))
		want = append(want, name)
	}
	slices.Sort(want)
	if got := listx(t, mnt+"/f"); !slices.Equal(got, want) {
		t.Errorf("listed %d names, want %d", len(got), len(want))
	}
}

// TestXattrSymlink: Linux refuses user.* attributes on symlinks (EPERM;
// reading one finds nothing), through the mount as below; other namespaces
// work on the link itself.
func TestXattrSymlink(t *testing.T) {
	backing := t.TempDir()
	keys := testKeys()
	mnt := mountKeys(t, backing, keys, layer.MountOptions{}, nil)
	must(t, os.WriteFile(mnt+"/f", nil, 0644))
	must(t, os.Symlink("f", mnt+"/l"))
	wantErrno(t, unix.Lsetxattr(mnt+"/l", "user.k", []byte("v"), 0), syscall.EPERM, "user xattr on a symlink")
	_, err := getx(mnt+"/l", "user.k", 10)
	wantErrno(t, err, syscall.ENODATA, "user xattr of a symlink")
	must(t, unix.Lsetxattr(mnt+"/l", "trusted.k", []byte("link"), 0))
	if got, err := getx(mnt+"/l", "trusted.k", -1); err != nil || string(got) != "link" {
		t.Errorf("trusted.k of the link: %q %v", got, err)
	}
	if got, err := getx(cpath(t, backing, keys, "l"), "trusted.k", -1); err != nil || string(got) != "link" {
		t.Errorf("trusted.k of the link below: %q %v", got, err)
	}
	// Through the link (following it): the file's.
	must(t, unix.Setxattr(mnt+"/l", "user.k", []byte("file"), 0))
	buf := make([]byte, 10)
	if n, err := unix.Getxattr(mnt+"/f", "user.k", buf); err != nil || string(buf[:n]) != "file" {
		t.Errorf("user.k set through the link: %q %v", buf[:n], err)
	}
	if got := userNames(listx(t, mnt+"/l")); len(got) != 0 {
		t.Errorf("the link lists %q", got)
	}
}

// TestXattrDamage: a value moved to another attribute, changed or cut
// reads EIO with a log line naming file and attribute (not the value);
// names that do not decrypt are hidden; fsck reports each.
func TestXattrDamage(t *testing.T) {
	backing := t.TempDir()
	keys := testKeys()
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	mnt := mountKeys(t, backing, keys, layer.MountOptions{}, log)
	p := mnt + "/victim"
	must(t, os.WriteFile(p, nil, 0644))
	below := cpath(t, backing, keys, "victim")
	x, err := keys.Xattrs()
	must(t, err)
	storedOf := func(name string) string {
		s, err := x.EncryptName(name)
		must(t, err)
		return s
	}
	for _, kv := range [][2]string{{"user.a", "alpha-secret-value"}, {"user.b", "beta-secret-value"}, {"user.flip", "flipped"}, {"user.cut", "cut"}, {"user.fine", "fine"}} {
		must(t, unix.Setxattr(p, kv[0], []byte(kv[1]), 0))
	}
	// user.b gets user.a's value, user.flip a flipped bit, user.cut
	// less than a nonce and tag.
	va, err := getx(below, storedOf("user.a"), -1)
	must(t, err)
	must(t, unix.Lsetxattr(below, storedOf("user.b"), va, 0))
	vf, err := getx(below, storedOf("user.flip"), -1)
	must(t, err)
	vf[len(vf)-1] ^= 1
	must(t, unix.Lsetxattr(below, storedOf("user.flip"), vf, 0))
	must(t, unix.Lsetxattr(below, storedOf("user.cut"), []byte("short"), 0))
	// Names that are not ciphertext of this key. EME names carry no
	// tag: decrypted under the wrong key, a name's padding still comes
	// out valid about once in 256 keys, and crypt can then only show it
	// as noise (as gocryptfs does). Draw keys until the name is one that
	// crypt refuses, which is what this test is about.
	var otherName string
	for {
		_, otherKeys, err := crypt.NewConfig([]byte("other"), crypt.MinScryptLogN)
		must(t, err)
		ox, err := otherKeys.Xattrs()
		must(t, err)
		otherName, err = ox.EncryptName("user.other")
		must(t, err)
		if _, err := x.DecryptName(otherName); err != nil {
			break
		}
	}
	for _, n := range []string{"user.plain", crypt.XattrPrefix + "garbage", otherName} {
		must(t, unix.Lsetxattr(below, n, []byte("x"), 0))
	}

	if got, err := getx(p, "user.a", -1); err != nil || string(got) != "alpha-secret-value" {
		t.Errorf("user.a: %q %v", got, err)
	}
	for _, name := range []string{"user.b", "user.flip", "user.cut"} {
		_, err := getx(p, name, 100)
		wantErrno(t, err, syscall.EIO, name)
	}
	_, err = unix.Getxattr(p, "user.cut", nil)
	wantErrno(t, err, syscall.EIO, "size query of a cut value")
	if sz, err := unix.Getxattr(p, "user.b", nil); err != nil || sz != len("alpha-secret-value") {
		t.Errorf("size query of a moved value: %d %v (sizes need no decryption)", sz, err)
	}
	if got := userNames(listx(t, p)); !slices.Equal(got, []string{"user.a", "user.b", "user.cut", "user.fine", "user.flip"}) {
		t.Errorf("listed %q", got)
	}
	l := logs.String()
	for _, want := range []string{"failed authentication", "path=victim", "attr=user.b", "attr=user.flip", "attr=user.cut"} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %q:\n%s", want, l)
		}
	}
	if strings.Contains(l, "secret-value") {
		t.Errorf("log holds a value:\n%s", l)
	}

	var problems []string
	st, err := crypt.Fsck(backing, keys, crypt.FsckOptions{}, func(p crypt.Problem) { problems = append(problems, p.String()) })
	must(t, err)
	if st.Xattrs != 8 || st.Problems != 6 || len(problems) != 6 {
		t.Errorf("fsck: %+v\n%s", st, strings.Join(problems, "\n"))
	}
	all := strings.Join(problems, "\n")
	for _, want := range []string{
		"victim (", "user.b: value failed authentication", "user.flip: value failed authentication", "user.cut: value failed authentication",
		"user.plain: name does not decrypt", crypt.XattrPrefix + "garbage: name does not decrypt", otherName + ": name does not decrypt",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("fsck does not say %q:\n%s", want, all)
		}
	}
}

// TestXattrACL: POSIX ACLs pass through in the clear, so the backing
// kernel keeps them as ACLs and the mount's kernel enforces them.
func TestXattrACL(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		skipOutsideCI(t, "setpriv (util-linux) is needed")
	}
	backing := t.TempDir()
	keys := testKeys()
	mnt := mountKeys(t, backing, keys, layer.MountOptions{AllowOther: true}, nil)
	must(t, os.Chmod(mnt, 0755))
	must(t, os.Chmod(filepath.Dir(mnt), 0755))
	p := mnt + "/acl"
	must(t, os.WriteFile(p, []byte("readable by others"), 0644))
	asNobody := func() error {
		return exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", p).Run()
	}
	if err := asNobody(); err != nil {
		t.Fatalf("nobody cannot read a 0644 file: %v", err)
	}
	// user::rw-, user:65534:---, group::r--, mask::r--, other::r--
	acl := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range []struct {
		tag, perm uint16
		id        uint32
	}{{0x01, 6, 0xffffffff}, {0x02, 0, 65534}, {0x04, 4, 0xffffffff}, {0x10, 4, 0xffffffff}, {0x20, 4, 0xffffffff}} {
		acl = binary.LittleEndian.AppendUint16(acl, e.tag)
		acl = binary.LittleEndian.AppendUint16(acl, e.perm)
		acl = binary.LittleEndian.AppendUint32(acl, e.id)
	}
	must(t, unix.Setxattr(p, "system.posix_acl_access", acl, 0))
	if got, err := getx(cpath(t, backing, keys, "acl"), "system.posix_acl_access", -1); err != nil || !bytes.Equal(got, acl) {
		t.Errorf("the ACL below: %x %v, want %x", got, err, acl)
	}
	if got, err := getx(p, "system.posix_acl_access", -1); err != nil || !bytes.Equal(got, acl) {
		t.Errorf("the ACL through the mount: %x %v", got, err)
	}
	if err := asNobody(); err == nil {
		t.Errorf("the ACL denies nobody, who still reads the file")
	}
	must(t, unix.Removexattr(p, "system.posix_acl_access"))
	if err := asNobody(); err != nil {
		t.Errorf("ACL removed, nobody still cannot read: %v", err)
	}
}

// TestXattrOldTree: a tree made before FeatureXattr passes extended
// attributes through in the clear, as it always did.
func TestXattrOldTree(t *testing.T) {
	_, keys, err := crypt.NewConfigWithout([]byte("old"), crypt.MinScryptLogN, crypt.FeatureXattr)
	must(t, err)
	backing := t.TempDir()
	mnt := mountKeys(t, backing, keys, layer.MountOptions{}, nil)
	must(t, os.WriteFile(mnt+"/f", nil, 0644))
	must(t, unix.Setxattr(mnt+"/f", "user.k", []byte("plain"), 0))
	below := cpath(t, backing, keys, "f")
	if got, err := getx(below, "user.k", -1); err != nil || string(got) != "plain" {
		t.Errorf("below: %q %v", got, err)
	}
	if got := listx(t, mnt+"/f"); !slices.Equal(got, []string{"user.k"}) {
		t.Errorf("listed %q", got)
	}
	if got, err := getx(mnt+"/f", "user.k", -1); err != nil || string(got) != "plain" {
		t.Errorf("through the mount: %q %v", got, err)
	}
	must(t, unix.Setxattr(mnt+"/f", xattrName(255, "x"), nil, 0))
	st, err := crypt.Fsck(backing, keys, crypt.FsckOptions{}, func(p crypt.Problem) { t.Errorf("fsck: %s", p) })
	must(t, err)
	if st.Xattrs != 0 {
		t.Errorf("fsck checked %d xattrs of a tree that does not encrypt them", st.Xattrs)
	}
}
