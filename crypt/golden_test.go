package crypt_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/internal/settings"
	"github.com/vfsfilter/vfsfilter/layer"
)

// The golden tree pins format version 1: an encrypted tree made once, by
// go test -run TestGolden -update, and decrypted byte-exactly by every
// later run. If this test fails, existing users' data would no longer
// read: change the code, not the tree (a new format gets a new directory).
var update = flag.Bool("update", false, "regenerate testdata/crypt/v1 (never for a released format)")

const (
	goldenDir  = "../testdata/crypt/v1"
	goldenPass = "golden passphrase"
)

// goldenEntry is one plaintext entry of the manifest.
type goldenEntry struct {
	Path   string `json:"path"`
	Type   string `json:"type"` // file, dir, symlink
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Target string `json:"target,omitempty"`
}

func goldenContent(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func stackOver(t *testing.T, backing string, keys *crypt.Keys) *layer.Stack {
	pt, err := layer.NewPassthrough(backing)
	must(t, err)
	t.Cleanup(func() { pt.Close() })
	f, err := crypt.New(keys, crypt.Options{})
	must(t, err)
	st, err := layer.NewStack(nil, pt, f)
	must(t, err)
	return st
}

func do(t *testing.T, st *layer.Stack, op layer.Op) {
	t.Helper()
	if errno := st.Do(layer.InternalCall(t.Context()), op); errno != 0 {
		t.Fatalf("%T: %v", op, errno)
	}
}

func generateGolden(t *testing.T) {
	must(t, os.RemoveAll(goldenDir))
	backing := filepath.Join(goldenDir, "backing")
	must(t, os.MkdirAll(backing, 0755))
	cfg, keys, err := crypt.NewConfig([]byte(goldenPass), crypt.MinScryptLogN)
	must(t, err)
	s := settings.New()
	must(t, s.SetSection(crypt.SectionName, cfg))
	must(t, s.Save(backing))
	st := stackOver(t, backing, keys)
	write := func(p string, parts map[int64][]byte) {
		op := &layer.CreateOp{Path: p, Flags: syscall.O_RDWR, Mode: syscall.S_IFREG | 0644}
		do(t, st, op)
		for off, data := range parts {
			do(t, st, &layer.WriteOp{Handle: op.Handle, Off: off, Data: data})
		}
		do(t, st, &layer.ReleaseOp{Handle: op.Handle})
	}
	write("empty", nil)
	write("one-block", map[int64][]byte{0: goldenContent(1, 100)})
	write("full-block", map[int64][]byte{0: goldenContent(2, 4096)})
	// Blocks 0-1 and 4-5 written, 2-3 a hole, 5 partial.
	write("multi-with-hole", map[int64][]byte{0: goldenContent(3, 5000), 17000: goldenContent(4, 4000)})
	write(strings.Repeat("long-name-", 25)+"12345", map[int64][]byte{0: []byte("a file with a 255-byte name\n")})
	do(t, st, &layer.MkdirOp{Path: "dir", Mode: 0755})
	do(t, st, &layer.MkdirOp{Path: "dir/nested", Mode: 0755})
	write("dir/nested/file.txt", map[int64][]byte{0: []byte("nested\n")})
	do(t, st, &layer.SymlinkOp{Path: "link", Target: "dir/nested/file.txt"})
	do(t, st, &layer.SymlinkOp{Path: "dir/abs-link", Target: "/etc/hostname"})
	manifest := walkPlain(t, st)
	data, err := json.MarshalIndent(struct {
		Passphrase string        `json:"passphrase"`
		Entries    []goldenEntry `json:"entries"`
	}{goldenPass, manifest}, "", "  ")
	must(t, err)
	must(t, os.WriteFile(filepath.Join(goldenDir, "manifest.json"), append(data, '\n'), 0644))
}

// walkPlain lists the whole tree through the stack, reading every file.
func walkPlain(t *testing.T, st *layer.Stack) []goldenEntry {
	var out []goldenEntry
	var walk func(dir string)
	walk = func(dir string) {
		rd := &layer.ReaddirOp{Path: dir}
		do(t, st, rd)
		for _, e := range rd.Entries {
			p := e.Name
			if dir != "" {
				p = dir + "/" + e.Name
			}
			lk := &layer.LookupOp{Path: p}
			do(t, st, lk)
			switch lk.Out.Mode & syscall.S_IFMT {
			case syscall.S_IFDIR:
				out = append(out, goldenEntry{Path: p, Type: "dir"})
				walk(p)
			case syscall.S_IFLNK:
				rl := &layer.ReadlinkOp{Path: p}
				do(t, st, rl)
				out = append(out, goldenEntry{Path: p, Type: "symlink", Size: int64(lk.Out.Size), Target: string(rl.Out)})
			case syscall.S_IFREG:
				op := &layer.OpenOp{Path: p, Flags: syscall.O_RDONLY}
				do(t, st, op)
				var data []byte
				buf := make([]byte, 1<<16)
				for {
					rd := &layer.ReadOp{Handle: op.Handle, Off: int64(len(data)), Dest: buf}
					do(t, st, rd)
					b, _ := rd.Out.Bytes(buf)
					if len(b) == 0 {
						break
					}
					data = append(data, b...)
				}
				do(t, st, &layer.ReleaseOp{Handle: op.Handle})
				if int64(len(data)) != int64(lk.Out.Size) {
					t.Errorf("%s: stat size %d, read %d bytes", p, lk.Out.Size, len(data))
				}
				sum := sha256.Sum256(data)
				out = append(out, goldenEntry{Path: p, Type: "file", Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])})
			}
		}
	}
	walk("")
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func TestGolden(t *testing.T) {
	if *update {
		generateGolden(t)
	}
	var m struct {
		Passphrase string        `json:"passphrase"`
		Entries    []goldenEntry `json:"entries"`
	}
	data, err := os.ReadFile(filepath.Join(goldenDir, "manifest.json"))
	must(t, err)
	must(t, json.Unmarshal(data, &m))
	// Work on a copy: the test must not depend on, or change, the
	// checkout's file modes and times.
	backing := t.TempDir()
	out, err := exec.Command("cp", "-a", filepath.Join(goldenDir, "backing")+"/.", backing).CombinedOutput()
	if err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	s, err := settings.Load(backing)
	must(t, err)
	var cfg crypt.Config
	_, err = s.Section(crypt.SectionName, &cfg)
	must(t, err)
	if _, err := cfg.Unlock([]byte("not it")); err != crypt.ErrWrongPassword {
		t.Errorf("wrong passphrase: %v", err)
	}
	keys, err := cfg.Unlock([]byte(m.Passphrase))
	must(t, err)
	got := walkPlain(t, stackOver(t, backing, keys))
	gj, _ := json.MarshalIndent(got, "", " ")
	wj, _ := json.MarshalIndent(m.Entries, "", " ")
	if !bytes.Equal(gj, wj) {
		t.Errorf("golden tree decrypts to\n%s\nwant\n%s", gj, wj)
	}
	// fsck finds nothing wrong with it.
	st, err := crypt.Fsck(backing, keys, crypt.FsckOptions{}, func(p crypt.Problem) { t.Errorf("fsck: %s", p) })
	must(t, err)
	if st.Files != 5+1 || st.Symlinks != 2 || st.Dirs != 3 {
		t.Errorf("fsck counted %+v", st)
	}
}
