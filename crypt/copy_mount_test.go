package crypt_test

import (
	"bytes"
	"encoding/json"
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
	_, err = crypt.Fsck(backing, testKeys(), crypt.FsckOptions{}, func(p crypt.Problem) { problems = append(problems, p.String()) })
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
	_, err = crypt.Fsck(backing, testKeys(), crypt.FsckOptions{}, func(p crypt.Problem) { problems = append(problems, p.String()) })
	must(t, err)
	if len(problems) != 1 || !strings.Contains(problems[0], "directory IV file missing or damaged") {
		t.Errorf("fsck without copies:\n%s", strings.Join(problems, "\n"))
	}
}

// fsckAll runs Fsck on backing and returns its problems.
func fsckAll(t *testing.T, backing string, opts crypt.FsckOptions) ([]crypt.Problem, crypt.FsckStats) {
	t.Helper()
	var problems []crypt.Problem
	st, err := crypt.Fsck(backing, testKeys(), opts, func(p crypt.Problem) { problems = append(problems, p) })
	must(t, err)
	return problems, st
}

// TestFsckRepair: fsck --repair rewrites each small file's content a
// reset lost from its journaled copy and a damaged copy from its content,
// after which a copy of the backing directory without extended attributes
// loses nothing; a damaged block is only reported. As the owner without
// privileges too (a user's own BACKING), whose small files are read-only.
func TestFsckRepair(t *testing.T) {
	const env = "VFSFILTER_TEST_FSCK_REPAIR_DIR"
	if backing := os.Getenv(env); backing != "" {
		// The child, as nobody, owner of backing, with the parent's keys.
		b, err := os.ReadFile(backing + ".json")
		must(t, err)
		var cfg crypt.Config
		must(t, json.Unmarshal(b, &cfg))
		keys, err := cfg.Unlock([]byte(testPassphrase))
		must(t, err)
		var problems []crypt.Problem
		st, err := crypt.Fsck(backing, keys, crypt.FsckOptions{Repair: true}, func(p crypt.Problem) { problems = append(problems, p) })
		must(t, err)
		if st.Problems != 5 || st.Repaired != 4 {
			t.Errorf("as uid %d: %d problems, %d repaired, want 5 and 4: %v", os.Geteuid(), st.Problems, st.Repaired, problems)
		}
		return
	}
	for _, who := range []string{"root", "owner"} {
		t.Run(who, func(t *testing.T) {
			if who == "owner" && os.Geteuid() != 0 {
				t.Skip("needs root to run a child as another user")
			}
			mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
			long := strings.Repeat("L", 200)
			must(t, os.MkdirAll(mnt+"/empty/zeroed", 0755))
			must(t, os.Mkdir(mnt+"/recopied", 0755))
			must(t, os.WriteFile(mnt+"/empty/f", []byte("in empty"), 0644))
			must(t, os.WriteFile(mnt+"/empty/zeroed/g", []byte("in zeroed"), 0644))
			must(t, os.WriteFile(mnt+"/empty/"+long, []byte("long name"), 0644))
			must(t, os.WriteFile(mnt+"/recopied/big", bytes.Repeat([]byte("b"), 3*4096), 0644))

			emptyIV := filepath.Join(cipherOf(t, mnt, backing, "empty"), crypt.DirIVFile)
			zeroedIV := filepath.Join(cipherOf(t, mnt, backing, "empty/zeroed"), crypt.DirIVFile)
			side := cipherOf(t, mnt, backing, "empty/"+long) + crypt.LongSuffix
			recopiedIV := filepath.Join(cipherOf(t, mnt, backing, "recopied"), crypt.DirIVFile)
			big := cipherOf(t, mnt, backing, "recopied/big")
			small := []string{emptyIV, zeroedIV, side, recopiedIV}
			want := map[string][]byte{}
			modes := map[string]os.FileMode{}
			for _, p := range small {
				b, err := os.ReadFile(p)
				must(t, err)
				want[p] = b
				st, err := os.Lstat(p)
				must(t, err)
				modes[p] = st.Mode()
			}

			// A reset's damage, a damaged copy and a damaged block.
			must(t, os.Truncate(emptyIV, 0))
			must(t, os.WriteFile(zeroedIV, make([]byte, crypt.DirIVLen), 0))
			must(t, os.Truncate(side, 0))
			must(t, unix.Lsetxattr(recopiedIV, crypt.CopyXattr, []byte("bad"), 0))
			// Flipped, not overwritten: the ciphertext byte may be
			// any value, the one written included (1 run in 256).
			flipBits(t, big, 5000, 0xff)

			if who == "owner" {
				must(t, filepath.Walk(backing, func(p string, _ os.FileInfo, err error) error {
					if err != nil {
						return err
					}
					return os.Lchown(p, 65534, 65534)
				}))
				cfg, _ := testConfig()
				b, err := json.Marshal(cfg)
				must(t, err)
				must(t, os.WriteFile(backing+".json", b, 0o644))
				crypt.AsNobody(t, "^TestFsckRepair$", env, backing, filepath.Dir(backing))
			} else {
				problems, st := fsckAll(t, backing, crypt.FsckOptions{Repair: true})
				if st.Problems != 5 || st.Repaired != 4 {
					t.Errorf("%d problems, %d repaired, want 5 and 4", st.Problems, st.Repaired)
				}
				for _, p := range problems {
					if p.Repaired != (p.Block < 0) || p.Repaired != strings.HasSuffix(p.String(), "(repaired)") {
						t.Errorf("fsck: %s", p)
					}
				}
			}

			// Each small file as it was, content and copy, with its mode.
			for _, p := range small {
				content, err := os.ReadFile(p)
				must(t, err)
				if !bytes.Equal(content, want[p]) || !bytes.Equal(copyOf(t, p), want[p]) {
					t.Errorf("%s after the repair: content %x, copy %x, want %x", p, content, copyOf(t, p), want[p])
				}
				if st, err := os.Lstat(p); err != nil || st.Mode() != modes[p] {
					t.Errorf("%s after the repair: %v %v", p, st.Mode(), err)
				}
			}
			// A copy of the tree without extended attributes now loses
			// nothing: every name and content reads.
			for _, p := range small {
				must(t, unix.Lremovexattr(p, crypt.CopyXattr))
			}
			view := mountAgain(t, backing, layer.MountOptions{})
			for p, want := range map[string]string{"empty/f": "in empty", "empty/zeroed/g": "in zeroed", "empty/" + long: "long name"} {
				if got, err := os.ReadFile(view + "/" + p); err != nil || string(got) != want {
					t.Errorf("without the copies, %s: %q %v", p, got, err)
				}
			}
			problems, st := fsckAll(t, backing, crypt.FsckOptions{})
			if st.Problems != 1 || !strings.Contains(problems[0].String(), "block 1") {
				t.Errorf("after the repair: %v", problems)
			}
		})
	}
}

// copyOf returns the journaled copy of the small file p.
func copyOf(t *testing.T, p string) []byte {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(p, crypt.CopyXattr, buf)
	if err != nil {
		t.Errorf("%s: copy: %v", p, err)
		return nil
	}
	return buf[:n]
}
