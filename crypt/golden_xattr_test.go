package crypt_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
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
	"golang.org/x/sys/unix"
)

// The second golden tree pins the encryption of extended attributes
// (FeatureXattr): made once by go test -run TestGoldenXattr -update-xattr
// and decrypted byte-exactly by every later run. Git keeps no extended
// attributes, so the stored ones (names and values as they are below) are
// in xattrs.json, and the test puts them on a copy of the tree first.
var updateXattr = flag.Bool("update-xattr", false, "regenerate testdata/crypt/v1-xattr (never for a released format)")

const goldenXattrDir = "../testdata/crypt/v1-xattr"

// goldenXattrManifest is the plaintext of the tree: entries as in v1, and
// the user.* attributes of each path ("." is the root), values in hex.
type goldenXattrManifest struct {
	Passphrase string                       `json:"passphrase"`
	Entries    []goldenEntry                `json:"entries"`
	Xattrs     map[string]map[string]string `json:"xattrs"`
}

// goldenXattrs is the plaintext the generator sets.
func goldenXattrs() map[string]map[string][]byte {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	return map[string]map[string][]byte{
		".": {"user.root": []byte("on the root directory")},
		"file.txt": {
			"user.empty":  {},
			"user.binary": all,
			"user.a/b.c":  []byte("a name with a slash and dots"),
			"user." + strings.Repeat("x", crypt.MaxXattrPlainName-len("user.")): []byte("the longest name"),
			"user.vfsfilter.looks-reserved":                                     []byte("encrypted like any other"),
		},
		"dir": {"user.comment": bytes.Repeat([]byte("a directory "), 10)},
	}
}

func generateGoldenXattr(t *testing.T) {
	must(t, os.RemoveAll(goldenXattrDir))
	backing := filepath.Join(goldenXattrDir, "backing")
	must(t, os.MkdirAll(backing, 0755))
	cfg, keys, err := crypt.NewConfig([]byte(goldenPass), crypt.MinScryptLogN)
	must(t, err)
	if !cfg.Has(crypt.FeatureXattr) {
		t.Fatal("new trees must encrypt xattrs")
	}
	s := settings.New()
	must(t, s.SetSection(crypt.SectionName, cfg))
	must(t, s.Save(backing))
	st := stackOver(t, backing, keys)
	op := &layer.CreateOp{Path: "file.txt", Flags: syscall.O_RDWR, Mode: syscall.S_IFREG | 0644}
	do(t, st, op)
	do(t, st, &layer.WriteOp{Handle: op.Handle, Data: []byte("a file with extended attributes\n")})
	do(t, st, &layer.ReleaseOp{Handle: op.Handle})
	do(t, st, &layer.MkdirOp{Path: "dir", Mode: 0755})
	do(t, st, &layer.SymlinkOp{Path: "link", Target: "file.txt"})
	for p, attrs := range goldenXattrs() {
		if p == "." {
			p = ""
		}
		for name, value := range attrs {
			do(t, st, &layer.SetxattrOp{Path: p, Name: name, Data: value})
		}
	}
	// The stored attributes, as they are below.
	stored := map[string]map[string]string{}
	must(t, filepath.Walk(backing, func(p string, fi os.FileInfo, err error) error {
		must(t, err)
		rel, err := filepath.Rel(backing, p)
		must(t, err)
		for _, name := range listxNames(t, p) {
			if !strings.HasPrefix(name, "user.") {
				continue
			}
			v, err := getx(p, name, -1)
			must(t, err)
			if stored[rel] == nil {
				stored[rel] = map[string]string{}
			}
			stored[rel][name] = base64.StdEncoding.EncodeToString(v)
		}
		return nil
	}))
	writeJSON(t, filepath.Join(goldenXattrDir, "xattrs.json"), stored)
	writeJSON(t, filepath.Join(goldenXattrDir, "manifest.json"), goldenXattrManifest{
		Passphrase: goldenPass,
		Entries:    walkPlain(t, st),
		Xattrs:     plainXattrs(t, st, []string{".", "file.txt", "dir"}),
	})
}

func writeJSON(t *testing.T, p string, v any) {
	data, err := json.MarshalIndent(v, "", "  ")
	must(t, err)
	must(t, os.WriteFile(p, append(data, '\n'), 0644))
}

// listxNames lists the attribute names of p, not following symlinks.
func listxNames(t *testing.T, p string) []string {
	sz, err := unix.Llistxattr(p, nil)
	must(t, err)
	buf := make([]byte, sz)
	n, err := unix.Llistxattr(p, buf)
	must(t, err)
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	sort.Strings(names)
	return names
}

// plainXattrs reads the user.* attributes of paths through the stack, each
// value with a size query first, as getfattr does.
func plainXattrs(t *testing.T, st *layer.Stack, paths []string) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, p := range paths {
		lp := p
		if p == "." {
			lp = ""
		}
		q := &layer.ListxattrOp{Path: lp}
		do(t, st, q)
		l := &layer.ListxattrOp{Path: lp, Dest: make([]byte, q.Size)}
		do(t, st, l)
		if l.Size != q.Size {
			t.Errorf("%s: listxattr size query %d, list %d", p, q.Size, l.Size)
		}
		for _, name := range strings.Split(string(l.Dest[:l.Size]), "\x00") {
			if !strings.HasPrefix(name, "user.") {
				continue
			}
			gq := &layer.GetxattrOp{Path: lp, Name: name}
			do(t, st, gq)
			g := &layer.GetxattrOp{Path: lp, Name: name, Dest: make([]byte, gq.Size)}
			if gq.Size == 0 {
				g.Dest = make([]byte, 1)
			}
			do(t, st, g)
			if g.Size != gq.Size {
				t.Errorf("%s %s: size query %d, value %d bytes", p, name, gq.Size, g.Size)
			}
			if out[p] == nil {
				out[p] = map[string]string{}
			}
			out[p][name] = hex.EncodeToString(g.Dest[:g.Size])
		}
	}
	return out
}

func TestGoldenXattr(t *testing.T) {
	if *updateXattr {
		generateGoldenXattr(t)
	}
	var m goldenXattrManifest
	data, err := os.ReadFile(filepath.Join(goldenXattrDir, "manifest.json"))
	must(t, err)
	must(t, json.Unmarshal(data, &m))
	var stored map[string]map[string]string
	data, err = os.ReadFile(filepath.Join(goldenXattrDir, "xattrs.json"))
	must(t, err)
	must(t, json.Unmarshal(data, &stored))
	backing := t.TempDir()
	out, err := exec.Command("cp", "-a", filepath.Join(goldenXattrDir, "backing")+"/.", backing).CombinedOutput()
	if err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	for rel, attrs := range stored {
		for name, v := range attrs {
			value, err := base64.StdEncoding.DecodeString(v)
			must(t, err)
			if err := unix.Lsetxattr(filepath.Join(backing, rel), name, value, 0); err != nil {
				if errors.Is(err, unix.ENOTSUP) {
					skipOutsideCI(t, "the temporary directory's file system has no user xattrs: %v", err)
				}
				t.Fatal(err)
			}
		}
	}
	s, err := settings.Load(backing)
	must(t, err)
	var cfg crypt.Config
	_, err = s.Section(crypt.SectionName, &cfg)
	must(t, err)
	if !cfg.Has(crypt.FeatureXattr) {
		t.Fatalf("features %v", cfg.Features)
	}
	keys, err := cfg.Unlock([]byte(m.Passphrase))
	must(t, err)
	st := stackOver(t, backing, keys)
	gotEntries, _ := json.MarshalIndent(walkPlain(t, st), "", " ")
	wantEntries, _ := json.MarshalIndent(m.Entries, "", " ")
	if !bytes.Equal(gotEntries, wantEntries) {
		t.Errorf("golden tree decrypts to\n%s\nwant\n%s", gotEntries, wantEntries)
	}
	gotX, _ := json.MarshalIndent(plainXattrs(t, st, []string{".", "file.txt", "dir"}), "", " ")
	wantX, _ := json.MarshalIndent(m.Xattrs, "", " ")
	if !bytes.Equal(gotX, wantX) {
		t.Errorf("golden xattrs decrypt to\n%s\nwant\n%s", gotX, wantX)
	}
	// What the generator set, byte for byte (the manifest was made by
	// the same code, so check it against the source too).
	for p, attrs := range goldenXattrs() {
		for name, value := range attrs {
			if m.Xattrs[p][name] != hex.EncodeToString(value) {
				t.Errorf("manifest: %s %s", p, name)
			}
		}
	}
	// Names are deterministic: this code stores each plaintext name
	// under exactly the name the tree has.
	x, err := keys.Xattrs()
	must(t, err)
	n := 0
	for _, attrs := range stored {
		for name := range attrs {
			plain, err := x.DecryptName(name)
			must(t, err)
			again, err := x.EncryptName(plain)
			if err != nil || again != name {
				t.Errorf("%s stored as %s, encrypts to %s (%v)", plain, name, again, err)
			}
			n++
		}
	}
	if n != 7 {
		t.Errorf("%d stored attributes, want 7", n)
	}
	fst, err := crypt.Fsck(backing, keys, crypt.FsckOptions{}, func(p crypt.Problem) { t.Errorf("fsck: %s", p) })
	must(t, err)
	if fst.Xattrs != 7 || fst.Files != 1 || fst.Dirs != 2 || fst.Symlinks != 1 {
		t.Errorf("fsck counted %+v", fst)
	}
}

// TestGoldenV1XattrPassThrough: the v1 golden tree predates FeatureXattr;
// its extended attributes still pass through in the clear.
func TestGoldenV1XattrPassThrough(t *testing.T) {
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
	if cfg.Has(crypt.FeatureXattr) {
		t.Fatalf("the v1 tree has %v", cfg.Features)
	}
	keys, err := cfg.Unlock([]byte(goldenPass))
	must(t, err)
	if keys.XattrEncrypted() {
		t.Fatal("keys of the v1 tree encrypt xattrs")
	}
	st := stackOver(t, backing, keys)
	if err := st.Do(layer.InternalCall(t.Context()), &layer.SetxattrOp{Path: "one-block", Name: "user.k", Data: []byte("clear")}); err != 0 {
		if err == syscall.ENOTSUP {
			skipOutsideCI(t, "the temporary directory's file system has no user xattrs")
		}
		t.Fatal(err)
	}
	if got, err := getx(cpath(t, backing, keys, "one-block"), "user.k", -1); err != nil || string(got) != "clear" {
		t.Errorf("below: %q %v", got, err)
	}
}
