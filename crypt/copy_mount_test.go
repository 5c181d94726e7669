package crypt_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"golang.org/x/sys/unix"
)

// TestCrashDamagedSmallFiles: what a crash can do to the small files names
// depend on, and what users get. Their content is written back late, so a
// reset can leave an IV file empty (delayed allocation) or zero-filled
// (ext4's unwritten extents) and a long name's side file empty, while the
// entries that depend on them survive. The journaled copy of each
// (CopyXattr) keeps every name readable; fsck reports each damaged
// content. Without the copy too (a copy of the backing directory made
// without extended attributes), the directory gives EIO and fsck says
// why.
func TestCrashDamagedSmallFiles(t *testing.T) {
	mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
	long := strings.Repeat("L", 200)
	must(t, os.MkdirAll(mnt+"/empty/zeroed", 0755))
	must(t, os.WriteFile(mnt+"/empty/f", []byte("in empty"), 0644))
	must(t, os.WriteFile(mnt+"/empty/zeroed/g", []byte("in zeroed"), 0644))
	must(t, os.WriteFile(mnt+"/empty/"+long, []byte("long name"), 0644))

	emptyIV := filepath.Join(cipherOf(t, mnt, backing, "empty"), crypt.DirIVFile)
	zeroedIV := filepath.Join(cipherOf(t, mnt, backing, "empty/zeroed"), crypt.DirIVFile)
	side := cipherOf(t, mnt, backing, "empty/"+long) + crypt.LongSuffix

	// Every small file carries its copy, invisible through the mount.
	for _, p := range []string{emptyIV, zeroedIV, side} {
		content, err := os.ReadFile(p)
		must(t, err)
		buf := make([]byte, 4096)
		n, err := unix.Lgetxattr(p, crypt.CopyXattr, buf)
		if err != nil || !bytes.Equal(buf[:n], content) {
			t.Errorf("%s: copy %q %v, content %q", p, buf[:n], err, content)
		}
	}
	if n, err := unix.Listxattr(mnt+"/empty", make([]byte, 256)); err != nil || n != 0 {
		t.Errorf("listxattr through the mount: %d bytes, %v", n, err)
	}

	// The reset: contents lost, copies kept.
	must(t, os.Truncate(emptyIV, 0))
	must(t, os.WriteFile(zeroedIV, make([]byte, crypt.DirIVLen), 0))
	must(t, os.Truncate(side, 0))

	view := mountAgain(t, backing, layer.MountOptions{})
	for p, want := range map[string]string{"empty/f": "in empty", "empty/zeroed/g": "in zeroed", "empty/" + long: "long name"} {
		if got, err := os.ReadFile(view + "/" + p); err != nil || string(got) != want {
			t.Errorf("after the reset, %s: %q %v", p, got, err)
		}
	}
	ents, err := os.ReadDir(view + "/empty")
	if err != nil || len(ents) != 3 {
		t.Errorf("after the reset, listing: %v %v", ents, err)
	}

	var problems []string
	_, err = crypt.Fsck(backing, testKeys(), func(p crypt.Problem) { problems = append(problems, p.String()) })
	must(t, err)
	if len(problems) != 3 {
		t.Errorf("fsck found %d problems, want 3:\n%s", len(problems), strings.Join(problems, "\n"))
	}
	for _, p := range problems {
		if !strings.Contains(p, "differs from its journaled copy") {
			t.Errorf("fsck: %s", p)
		}
	}

	// Without the copies as well: the directory whose IV is lost gives
	// EIO (its names cannot be decrypted), and fsck says so.
	for _, p := range []string{emptyIV, zeroedIV, side} {
		must(t, unix.Lremovexattr(p, crypt.CopyXattr))
	}
	view = mountAgain(t, backing, layer.MountOptions{})
	if _, err := os.ReadDir(view + "/empty"); !errors.Is(err, syscall.EIO) {
		t.Errorf("IV and copy lost: listing gave %v, want EIO", err)
	}
	problems = nil
	_, err = crypt.Fsck(backing, testKeys(), func(p crypt.Problem) { problems = append(problems, p.String()) })
	must(t, err)
	if len(problems) != 1 || !strings.Contains(problems[0], "directory IV file missing or damaged") {
		t.Errorf("fsck without copies:\n%s", strings.Join(problems, "\n"))
	}
}
