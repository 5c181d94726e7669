package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/internal/settings"
	"github.com/vfsfilter/vfsfilter/layer"
)

// cryptDemo is the crypt filter's part of the demo: the backing directory
// is set up as "vfsfilter init --crypt" does (with a fixed passphrase and a
// low scrypt cost), the sample tree is written through crypt, and the
// steps show what the backing directory holds (encrypted names,
// ciphertext a little larger than the plaintext), that a damaged block
// fails alone, and that the HSM's store gets ciphertext only.
func cryptDemo() *demoPart {
	cs := &cryptDemoState{}
	return &demoPart{
		name:     "crypt",
		prepare:  cs.prepare,
		describe: cs.describe,
		writer:   cs.writer,
		filters:  cs.filters,
		steps: []demoStep{
			{"the backing directory holds only encrypted names", cs.stepNames},
			{"the contents are ciphertext, a little larger", cs.stepContents},
			{"a damaged block fails alone", cs.stepDamage},
			{"the HSM's store holds only ciphertext", cs.stepStore},
		},
	}
}

// The demo's passphrase and scrypt cost: fixed, and cheap (the lowest cost
// crypt accepts), so that the demo needs no terminal and starts at once.
// "vfsfilter init --crypt" asks for a passphrase and uses
// crypt.DefaultScryptLogN.
const (
	demoPassphrase = "vfsfilter-demo"
	demoScryptLogN = crypt.MinScryptLogN
)

// demoBlocksFile is the file the damage step damages: three 4 KiB blocks
// of text, each line saying which block it is in.
const demoBlocksFile = "data/blocks.txt"

type cryptDemoState struct {
	keys    *crypt.Keys // from NewConfig, for the writer; wiped once used
	content *crypt.Content
	names   *crypt.Names
	blocks  []byte // demoBlocksFile's content
}

func (cs *cryptDemoState) prepare(d *demo) error {
	cfg, keys, err := crypt.NewConfig([]byte(demoPassphrase), demoScryptLogN)
	if err != nil {
		return err
	}
	cs.keys = keys
	if err := crypt.NewRoot(d.backing); err != nil {
		return err
	}
	s := settings.New()
	if err := s.SetSection(crypt.SectionName, cfg); err != nil {
		return err
	}
	if err := s.Save(d.backing); err != nil {
		return err
	}
	d.printf("Set up encryption in the backing directory %s\nas \"vfsfilter init --crypt\" does: a random master key, wrapped under the\npassphrase in %s/%s, and the root's name IV, %s.\n", d.backing, settings.Dir, settings.File, crypt.DirIVFile)
	var b strings.Builder
	for blk := range 3 {
		for line := range 4096 / 64 {
			fmt.Fprintf(&b, "%-63s\n", fmt.Sprintf("block %d, line %02d: each 4 KiB block is encrypted on its own", blk, line))
		}
	}
	cs.blocks = []byte(b.String())
	d.addFile(demoBlocksFile, cs.blocks)
	d.printf("Added %s, three 4 KiB blocks of text, for crypt to show damage on.\n", demoBlocksFile)
	return nil
}

func (cs *cryptDemoState) describe(d *demo) error {
	d.printf("crypt: encrypts names (EME) and contents (AES-256-GCM, in 4 KiB blocks) in\nthe backing directory. The demo uses the fixed passphrase %q\nand a low scrypt cost (logN %d) so that it starts at once; \"vfsfilter init\n--crypt\" and \"vfsfilter mount\" ask for the passphrase, and the default cost\nis logN %d.\n", demoPassphrase, demoScryptLogN, crypt.DefaultScryptLogN)
	return nil
}

// writer is the crypt filter the sample tree is written through, made with
// the keys NewConfig returned.
func (cs *cryptDemoState) writer(d *demo) ([]layer.Filter, error) {
	f, err := crypt.New(cs.keys, crypt.Options{})
	cs.keys.Wipe()
	cs.keys = nil
	if err != nil {
		return nil, err
	}
	return []layer.Filter{f}, nil
}

// filters unlocks the settings section with the passphrase, as
// "vfsfilter mount" does, for the demo's stack.
func (cs *cryptDemoState) filters(d *demo) ([]layer.Filter, error) {
	s, err := loadSettings(d.backing)
	if err != nil {
		return nil, err
	}
	cfg, err := loadCryptConfig(s, d.backing)
	if err != nil {
		return nil, err
	}
	keys, err := unlock(cfg, []byte(demoPassphrase), d.backing)
	if err != nil {
		return nil, err
	}
	defer keys.Wipe()
	// The demo keeps its own codecs too, to show what the backing
	// directory holds (names, plaintext) as crypt sees it.
	if cs.content, err = keys.Content(); err != nil {
		return nil, err
	}
	if cs.names, err = keys.Names(); err != nil {
		return nil, err
	}
	f, err := crypt.New(keys, crypt.Options{})
	if err != nil {
		return nil, err
	}
	d.storedName = func(rel string) (string, error) { return cs.storedName(d.backing, rel) }
	d.decrypt = cs.decryptFile
	d.printf("crypt: unlocked the backing directory's %s/%s with the demo passphrase.\n", settings.Dir, settings.File)
	return []layer.Filter{f}, nil
}

// storedName encrypts rel component by component, with each directory's
// IV as it is stored in the backing directory.
func (cs *cryptDemoState) storedName(backing, rel string) (string, error) {
	dir := ""
	for _, name := range strings.Split(rel, "/") {
		iv, err := os.ReadFile(filepath.Join(backing, filepath.FromSlash(dir), crypt.DirIVFile))
		if err != nil {
			return "", err
		}
		stored, _ := crypt.StoredName(cs.names.Encrypt(name, iv))
		dir = path.Join(dir, stored)
	}
	return dir, nil
}

// decryptFile decrypts a whole backing file. An empty file (an empty
// plaintext, or an HSM stub) decrypts to nothing.
func (cs *cryptDemoState) decryptFile(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) < crypt.HeaderLen {
		return nil, crypt.ErrHeader
	}
	id, err := crypt.ParseHeader(b[:crypt.HeaderLen])
	if err != nil {
		return nil, err
	}
	return cs.content.Decrypt(nil, b[crypt.HeaderLen:], 0, &id)
}

// cryptBackingEntry is one entry of the backing directory: its stored
// path and what it is to crypt.
type cryptBackingEntry struct {
	stored string // slash-separated, relative to the backing directory
	plain  string // the decrypted path; "" for crypt's own files
	dir    bool
	size   int64
}

// walkBacking lists the backing directory (but the stack's settings
// directory), decrypting each name with its directory's IV.
func (cs *cryptDemoState) walkBacking(d *demo) ([]cryptBackingEntry, error) {
	var out []cryptBackingEntry
	var visit func(stored, plain string) error
	visit = func(stored, plain string) error {
		dir := filepath.Join(d.backing, filepath.FromSlash(stored))
		iv, err := os.ReadFile(filepath.Join(dir, crypt.DirIVFile))
		if err != nil {
			return err
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if stored == "" && e.Name() == settings.Dir {
				continue
			}
			info, err := e.Info()
			if err != nil {
				return err
			}
			ent := cryptBackingEntry{stored: path.Join(stored, e.Name()), dir: e.IsDir(), size: info.Size()}
			if e.Name() != crypt.DirIVFile {
				name, err := cs.names.Decrypt(e.Name(), iv)
				if err != nil {
					return fmt.Errorf("%s: the name does not decrypt: %w", ent.stored, err)
				}
				ent.plain = path.Join(plain, name)
			}
			out = append(out, ent)
			if ent.dir {
				if err := visit(ent.stored, ent.plain); err != nil {
					return err
				}
			}
		}
		return nil
	}
	err := visit("", "")
	sort.Slice(out, func(i, j int) bool { return out[i].stored < out[j].stored })
	return out, err
}

func (cs *cryptDemoState) stepNames(d *demo) error {
	ents, err := cs.walkBacking(d)
	if err != nil {
		return err
	}
	d.printf("The backing directory, listed directly (but %s, the stack's settings;\nafter \"#\", what each name decrypts to with the demo's key):\n", settings.Dir)
	plain := map[string]bool{}
	ivs := 0
	for _, e := range ents {
		what := e.plain
		switch {
		case e.plain == "":
			what = "(crypt's name IV for this directory)"
			ivs++
		case e.dir:
			what += "/"
		}
		name := e.stored
		if e.dir {
			name += "/"
		}
		if e.dir {
			d.printf("    %-52s %8s  # %s\n", name, "", what)
		} else {
			d.printf("    %-52s %8d  # %s\n", name, e.size, what)
		}
		if e.plain != "" {
			plain[path.Base(e.plain)] = true
		}
	}
	// No stored name is a name users see.
	for _, e := range ents {
		if base := path.Base(e.stored); e.plain != "" && plain[base] {
			return fmt.Errorf("%s: a plaintext name in the backing directory", e.stored)
		}
	}
	for _, want := range []string{"README.txt", "src", "hello.c", "hello.o.tmp", path.Base(demoBlocksFile)} {
		if !plain[want] {
			return fmt.Errorf("no backing name decrypts to %s", want)
		}
	}
	dirs := 1
	for _, e := range ents {
		if e.dir {
			dirs++
		}
	}
	if ivs != dirs {
		return fmt.Errorf("%d %s files for %d directories", ivs, crypt.DirIVFile, dirs)
	}
	d.printf("Every name is encrypted, under a random IV per directory (%s),\nso that equal names in two directories look different. README.txt (README.md\nin the mount) and the hidden src/hello.o.tmp are there too: namespace works\nabove crypt, in plaintext names.", crypt.DirIVFile)
	if d.has("hsm") {
		d.printf(" README.txt is empty: it is the HSM's stub.")
	}
	d.printf("\n")
	return nil
}

// cryptSizeFiles are the files whose sizes the contents step compares:
// whole files (not HSM stubs) of 1, 2 and 3 blocks.
var cryptSizeFiles = []string{"report.txt", "src/hello.c", "notes.txt", demoBlocksFile}

func (cs *cryptDemoState) stepContents(d *demo) error {
	// What is known to be in the tree, in plaintext: the lines of its
	// text files, and of the files written through the mount.
	var known [][]byte
	err := fs.WalkDir(demoFiles, "demodata/tree", func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := fs.ReadFile(demoFiles, p)
		known = append(known, bytes.Split(b, []byte("\n"))...)
		return err
	})
	if err != nil {
		return err
	}
	known = append(known, bytes.Split(cs.blocks, []byte("\n"))...)
	known = append(known, []byte("written through the mount"), []byte("This line was appended through the mount"))
	ents, err := cs.walkBacking(d)
	if err != nil {
		return err
	}
	files, lines := 0, map[string]bool{}
	for _, e := range ents {
		if e.dir {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d.backing, filepath.FromSlash(e.stored)))
		if err != nil {
			return err
		}
		files++
		for _, k := range known {
			k = bytes.TrimSpace(k)
			if len(k) < 8 {
				continue
			}
			lines[string(k)] = true
			if bytes.Contains(b, k) {
				return fmt.Errorf("the backing file %s (%s) holds the plaintext %q", e.stored, e.plain, k)
			}
		}
	}
	d.printf("None of the %d backing files holds any of %d lines known to be in the tree\n(the sample's text files, %s, what the steps above wrote).\n", files, len(lines), demoBlocksFile)
	d.printf("Sizes: the mount shows the plaintext's; each backing file adds an %d-byte\nheader (format version, random file ID) and, per 4 KiB block, a %d-byte nonce\nand a %d-byte authentication tag:\n", crypt.HeaderLen, crypt.NonceLen, crypt.TagLen)
	d.printf("    %-18s %8s %8s\n", "", "mount", "backing")
	shown := 0
	for _, p := range cryptSizeFiles {
		st, err := os.Stat(filepath.Join(d.mnt, p))
		if errors.Is(err, fs.ErrNotExist) {
			continue // notes.txt, without notify
		}
		if err != nil {
			return err
		}
		shown++
		bp, err := d.backingPath(p)
		if err != nil {
			return err
		}
		bst, err := os.Stat(bp)
		if err != nil {
			return err
		}
		plain := uint64(st.Size())
		n := (plain + cs.content.BlockSize() - 1) / cs.content.BlockSize()
		d.printf("    %-18s %8d %8d  = %d + %d + %d × %d\n", p, st.Size(), bst.Size(), plain, crypt.HeaderLen, n, crypt.BlockOverhead)
		if want := cs.content.CipherSize(plain); uint64(bst.Size()) != want || bst.Size() <= st.Size() {
			return fmt.Errorf("%s: %d bytes in the mount, %d in the backing directory; want %d there", p, st.Size(), bst.Size(), want)
		}
	}
	if shown == 0 {
		return fmt.Errorf("none of %s is in the mount", strings.Join(cryptSizeFiles, ", "))
	}
	d.printf("Each size converts to the other from the size alone: stat through the mount\nneeds no decryption.\n")
	return nil
}

func (cs *cryptDemoState) stepDamage(d *demo) error {
	bp, err := d.backingPath(demoBlocksFile)
	if err != nil {
		return err
	}
	// A byte in the middle of block 1's ciphertext (after its nonce).
	off := int64(cs.content.BlockOff(1)) + crypt.NonceLen + 1000
	f, err := os.Open(bp)
	if err != nil {
		return err
	}
	var old [1]byte
	_, err = f.ReadAt(old[:], off)
	f.Close()
	if err != nil {
		return err
	}
	d.printf("Another program changes one byte of the backing file of %s, in\nblock 1's ciphertext (byte %d):\n", demoBlocksFile, off)
	d.logged.take()
	script := fmt.Sprintf(`printf '\%03o' | dd of="$1" bs=1 seek=%d conv=notrunc status=none`, old[0]^0x01, off)
	if err := d.underneath(script, bp); err != nil {
		return err
	}
	p := filepath.Join(d.mnt, demoBlocksFile)
	mf, err := os.Open(p)
	if err != nil {
		return err
	}
	defer mf.Close()
	bs := int64(cs.content.BlockSize())
	d.printf("Reading %s through the mount, block by block:\n", demoBlocksFile)
	for b := int64(0); b < 3; b++ {
		buf := make([]byte, bs)
		n, err := mf.ReadAt(buf, b*bs)
		if err == nil {
			first, _, _ := strings.Cut(string(buf[:n]), "\n")
			d.printf("    block %d (bytes %5d-%5d): %q...\n", b, b*bs, (b+1)*bs-1, strings.TrimSpace(first))
		} else {
			d.printf("    block %d (bytes %5d-%5d): %v\n", b, b*bs, (b+1)*bs-1, errnoOf(err))
		}
		switch {
		case b == 1 && !errors.Is(err, syscall.EIO):
			return fmt.Errorf("reading the damaged block 1: want EIO, got %v", err)
		case b != 1 && err != nil:
			return fmt.Errorf("reading block %d: %v", b, err)
		case b != 1 && !bytes.Equal(buf[:n], cs.blocks[b*bs:(b+1)*bs]):
			return fmt.Errorf("block %d reads other bytes than were written", b)
		}
	}
	var logged []string
	for _, l := range d.logged.take() {
		if strings.Contains(l, "block failed authentication") {
			logged = append(logged, l)
		}
	}
	d.printf("The filter logged:\n")
	d.printIndented(strings.Join(logged, "\n"))
	if len(logged) != 1 || !strings.Contains(logged[0], "file="+demoBlocksFile) || !strings.Contains(logged[0], "block=1 ") {
		return fmt.Errorf("want one log line for block 1 of %s, got %q", demoBlocksFile, logged)
	}
	d.printf("Each block is authenticated on its own: the damage costs that block (4 KiB),\nnot the file, and is never read back as wrong data. \"vfsfilter crypt fsck\"\nfinds such blocks without reading every file through a mount.\n")
	return nil
}

func (cs *cryptDemoState) stepStore(d *demo) error {
	if !d.has("hsm") {
		d.printf("(hsm is not in the stack: there is no store to look at.)\n")
		return nil
	}
	// The plaintext of the migrated files: README.md's lines, and
	// data/archive.bin (premigrated, so reading it recalls nothing).
	readme, err := demoFiles.ReadFile("demodata/tree/README.txt")
	if err != nil {
		return err
	}
	archive, err := os.ReadFile(filepath.Join(d.mnt, demoBigFile))
	if err != nil {
		return err
	}
	var known [][]byte
	for _, l := range bytes.Split(readme, []byte("\n")) {
		if l = bytes.TrimSpace(l); len(l) >= 8 {
			known = append(known, l)
		}
	}
	pieces := 0
	for off := 0; off+32 <= len(archive); off += 4096 {
		known = append(known, archive[off:off+32])
		pieces++
	}
	// The ciphertext of data/archive.bin, whole in the backing directory
	// since its recall: its first block must be in the store.
	bp, err := d.backingPath(demoBigFile)
	if err != nil {
		return err
	}
	cipher, err := os.ReadFile(bp)
	if err != nil {
		return err
	}
	if len(cipher) < int(cs.content.BlockOff(1)) {
		return fmt.Errorf("the backing %s holds %d bytes, not the whole file", demoBigFile, len(cipher))
	}
	firstBlock := cipher[:cs.content.BlockOff(1)]
	d.printf("The store %s, directly:\n", d.hsmStore)
	objects, holder := 0, ""
	err = filepath.WalkDir(d.hsmStore, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(d.hsmStore, p)
		if de.IsDir() {
			if rel == "tmp" {
				return filepath.SkipDir
			}
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		objects++
		d.printf("    %-40s %7d bytes\n", rel, len(b))
		for _, k := range known {
			if bytes.Contains(b, k) {
				return fmt.Errorf("the store object %s holds plaintext (%q...)", rel, k[:8])
			}
		}
		if bytes.Contains(b, firstBlock) {
			holder = rel
		}
		return nil
	})
	if err != nil {
		return err
	}
	if objects == 0 || holder == "" {
		return fmt.Errorf("%d objects in the store, none holding the ciphertext of %s", objects, demoBigFile)
	}
	d.printf("No object holds a line of README.md or any of %d 32-byte pieces of\n%s (one every 4 KiB), and\n    %s\nholds the same ciphertext as the backing file of %s. The HSM\nworks below crypt: it only ever copies ciphertext, so the store need not be\ntrusted with the data.\n", pieces, demoBigFile, holder, demoBigFile)
	return nil
}
