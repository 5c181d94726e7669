package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vfsfilter/vfsfilter/hsm"
	"github.com/vfsfilter/vfsfilter/layer"
)

// hsmDemo is the HSM filter's part of the demo: a directory store in the
// demo's temporary directory, a generated 1.5 MiB file added to the sample
// tree, and steps that migrate it and README.md (a renamed name: the HSM
// works below the namespace filter), show what users, the backing
// directory and the store see, recall one by reading it, and check that
// none of it reached a watch.
func hsmDemo() *demoPart {
	h := &hsmDemoState{}
	return &demoPart{
		name:     "hsm",
		prepare:  h.prepare,
		describe: h.describe,
		filters:  h.filters,
		steps: []demoStep{
			{"migrating two files to the store", h.stepMigrate},
			{"the mount still shows the real sizes and times", h.stepMountView},
			{"the backing files are empty stubs", h.stepStubs},
			{"the data is in the store", h.stepStore},
			{"reading a file recalls it", h.stepRecall},
			{"its own work is invisible to watchers", h.stepNoEvents},
		},
		close: h.close,
	}
}

// The generated file: large enough to span chunks (1 MiB each), small
// enough to keep the demo fast. It is generated, not embedded, so the
// binary stays small; the seed makes it the same every time.
const (
	demoBigFile = "data/archive.bin"
	demoBigSize = 3 << 19 // 1.5 MiB
)

type hsmDemoState struct {
	store *hsm.DirStore
	f     *hsm.Filter
	big   []byte // demoBigFile's content
	// files are the files migrated: the names users see and the backing
	// names, and what they looked like before.
	files []hsmDemoFile
	watch *demoWatch // subscribed before the HSM's first step
}

type hsmDemoFile struct {
	path  string    // the name users see
	size  int64     // size through the mount, before migrating
	mtime time.Time // mtime through the mount, before migrating
	// backing is the backing file before migrating: its name is whatever
	// the filters above the HSM make of path (README.md is README.txt).
	backing hsmBackingFile
}

// hsmBackingFile is what the backing directory holds for one file.
type hsmBackingFile struct {
	name   string // relative to the backing directory
	size   int64
	blocks int64 // st_blocks: 512-byte blocks, what du adds up
}

func (h *hsmDemoState) prepare(d *demo) error {
	h.big = make([]byte, demoBigSize)
	rand.NewChaCha8([32]byte{'v', 'f', 's', 'f', 'i', 'l', 't', 'e', 'r'}).Read(h.big)
	d.addFile(demoBigFile, h.big)
	d.printf("Added %s, %s of generated data, for the HSM to migrate.\n", demoBigFile, humanBytes(demoBigSize))
	// The HSM records each file's state in a trusted.* extended
	// attribute: see whether this process may write one on a file next
	// to the backing directory.
	p := filepath.Join(d.tmp, "xattr-probe")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		return err
	}
	defer os.Remove(p)
	const probe = "trusted.vfsfilter.demo-probe"
	switch err := unix.Setxattr(p, probe, []byte("1"), 0); {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return demoSkip(fmt.Sprintf("the HSM keeps each file's state in the extended attribute\n%s, and trusted.* attributes need root (CAP_SYS_ADMIN).", hsm.XattrName))
	case errors.Is(err, unix.ENOTSUP):
		return demoSkip(fmt.Sprintf("the HSM keeps each file's state in a trusted.* extended attribute,\nwhich the file system of %s does not support.", d.tmp))
	case err != nil:
		return fmt.Errorf("%s: setxattr %s: %w", p, probe, err)
	}
	if err := unix.Removexattr(p, probe); err != nil {
		return err
	}
	var err error
	h.store, err = hsm.CreateDirStore(filepath.Join(d.tmp, "store"))
	if err == nil {
		d.hsmStore = h.store.Dir()
	}
	return err
}

func (h *hsmDemoState) describe(d *demo) error {
	d.printf("hsm: moves the data of cold files to a store and leaves empty stubs behind;\nthe store here is the directory %s (S3 buckets work too).\n", h.store.Dir())
	return nil
}

func (h *hsmDemoState) filters(d *demo) ([]layer.Filter, error) {
	f, err := hsm.New(hsm.Config{Store: h.store, Backing: d.backing})
	if err != nil {
		return nil, err
	}
	h.f = f
	return []layer.Filter{f}, nil
}

func (h *hsmDemoState) close(d *demo) {
	if h.watch != nil {
		h.watch.close()
	}
}

func (h *hsmDemoState) stepMigrate(d *demo) error {
	// Everything the HSM does from here on must stay invisible to
	// watchers: the last step reads this watch.
	if d.watch != nil {
		h.watch = d.watch()
		d.printf("(A watch of the mount starts now; the last hsm step reads it.)\n")
	}
	d.printf("The commands are shown as run in the mount (cd %s).\n", d.mnt)
	h.files = []hsmDemoFile{{path: demoBigFile}, {path: "README.md"}}
	bfs, err := h.backingFiles(d)
	if err != nil {
		return err
	}
	for i := range h.files {
		hf := &h.files[i]
		st, err := os.Stat(filepath.Join(d.mnt, hf.path))
		if err != nil {
			return err
		}
		hf.size, hf.mtime, hf.backing = st.Size(), st.ModTime(), bfs[i]
	}
	d.printf("$ vfsfilter hsm migrate %s\n", strings.Join(h.paths(), " "))
	var sum struct {
		n     int
		bytes int64
	}
	err = hsm.Walk(context.Background(), d.stack, h.paths(), func(p string, fd int, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		res, err := h.f.Migrate(context.Background(), fd, nil)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", p, err)
		}
		if res.Outcome != hsm.OutMigrated {
			return fmt.Errorf("%s: %s (%v), want migrated", p, res.Outcome, res.Reason)
		}
		sum.n++
		sum.bytes += res.Size
		return nil
	})
	if err != nil {
		return err
	}
	d.printf("    migrated %d files, %s; skipped 0; failed 0\n", sum.n, humanBytes(sum.bytes))
	if sum.n != len(h.files) {
		return fmt.Errorf("migrated %d files, want %d", sum.n, len(h.files))
	}
	d.printf("Each file was copied to the store, verified there, and only then emptied.\n")
	if d.has("crypt") {
		d.printf("README.md is README.txt below namespace, and an encrypted name below crypt,\nwhere the HSM works: \"vfsfilter hsm\" takes the names users see.\n")
	} else {
		d.printf("README.md is README.txt underneath: the HSM takes the names users see.\n")
	}
	return nil
}

func (h *hsmDemoState) stepMountView(d *demo) error {
	d.printf("$ ls -l %s\n", strings.Join(h.paths(), " "))
	for _, hf := range h.files {
		st, err := os.Stat(filepath.Join(d.mnt, hf.path))
		if err != nil {
			return err
		}
		d.printf("    %v %8d %s %s\n", st.Mode(), st.Size(), st.ModTime().Format("Jan _2 15:04:05"), hf.path)
		if st.Size() != hf.size || !st.ModTime().Equal(hf.mtime) {
			return fmt.Errorf("%s: size %d, mtime %v; before migrating: %d, %v", hf.path, st.Size(), st.ModTime(), hf.size, hf.mtime)
		}
	}
	d.printf("Sizes and modification times are those from before the migration.\n")
	return nil
}

func (h *hsmDemoState) stepStubs(d *demo) error {
	bfs, err := h.backingFiles(d)
	if err != nil {
		return err
	}
	d.printf("The backing files (found through the stack, as the HSM finds them):\n")
	for i, hf := range h.files {
		d.printf("    %-18s is %s\n", hf.path, bfs[i].name)
	}
	d.printf("directly (st_blocks counts the 512-byte blocks du adds up):\n")
	d.printf("    %-18s %11s %6s %17s %6s\n", "", "size before", "after", "st_blocks before", "after")
	var freed int64
	for i, hf := range h.files {
		was, now := hf.backing, bfs[i]
		d.printf("    %-18s %11d %6d %17d %6d\n", hf.path, was.size, now.size, was.blocks, now.blocks)
		// The HSM's record may take one 4 KiB block (ext4 keeps
		// extended attributes that do not fit the inode in a block).
		if now.size != 0 || now.blocks > 8 || now.blocks > was.blocks {
			return fmt.Errorf("backing %s: size %d, %d blocks; want an empty stub", now.name, now.size, now.blocks)
		}
		freed += (was.blocks - now.blocks) * 512
	}
	d.printf("du would show %s freed; what is left is at most the block of the HSM's\nrecord (an extended attribute). The stubs keep their names, inodes, modes,\nowners and times; read directly, a stub is empty, never zeros.\n", humanBytes(freed))
	return nil
}

func (h *hsmDemoState) stepStore(d *demo) error {
	d.printf("The store holds one object per file (the data, a SHA-256 per chunk, a footer),\nnamed by a random file ID that the stub's record keeps:\n")
	var objects []int64
	err := filepath.WalkDir(h.store.Dir(), func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(h.store.Dir(), p)
		if de.IsDir() {
			if rel == "tmp" {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := de.Info()
		if err != nil {
			return err
		}
		d.printf("    %-40s %7d bytes\n", rel, info.Size())
		objects = append(objects, info.Size())
		return nil
	})
	if err != nil {
		return err
	}
	if len(objects) != len(h.files) {
		return fmt.Errorf("%d objects in the store, want %d", len(objects), len(h.files))
	}
	if err := h.printStatus(d, "migrated", "migrated"); err != nil {
		return err
	}
	if d.has("crypt") {
		d.printf("SIZE is the size users see; the HSM, below crypt, stores ciphertext: README.md's\n%d bytes are %d in the store.\n", h.files[1].size, h.files[1].backing.size)
	}
	return nil
}

func (h *hsmDemoState) stepRecall(d *demo) error {
	p := filepath.Join(d.mnt, demoBigFile)
	start := time.Now()
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	took := time.Since(start)
	sum := sha256.Sum256(b)
	d.printf("$ sha256sum %s\n    %x  %s\n", demoBigFile, sum, demoBigFile)
	if !bytes.Equal(b, h.big) {
		return fmt.Errorf("read %d bytes (sha256 %x) through the mount, not the original %d", len(b), sum, len(h.big))
	}
	d.printf("The same bytes as the original: the first read brought the data back from\nthe store, checking each chunk's SHA-256 (%d ms).\n", took.Milliseconds())
	// The recall marks the file premigrated right after its last write:
	// the reader may be a moment ahead.
	deadline := time.Now().Add(5 * time.Second)
	for {
		sts, err := h.status(d)
		if err != nil {
			return err
		}
		if sts[0].State != hsm.Migrated.String() || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := h.printStatus(d, "premigrated", "migrated"); err != nil {
		return err
	}
	bfs, err := h.backingFiles(d)
	if err != nil {
		return err
	}
	was, now := h.files[0].backing, bfs[0]
	d.printf("The backing file of %s is whole again (%d bytes, %d\nblocks) and still in the store: migrating it again only empties it.\nREADME.md, not read, is still a stub.\n", demoBigFile, now.size, now.blocks)
	if now.size != was.size {
		return fmt.Errorf("backing %s: %d bytes after the recall, want %d", now.name, now.size, was.size)
	}
	return nil
}

func (h *hsmDemoState) stepNoEvents(d *demo) error {
	if h.watch == nil {
		d.printf("(notify is not in the stack: there is no watch to ask.)\n")
		return nil
	}
	d.printf("The HSM truncated two backing files, set their records, wrote one back\nand wrote its journal: none of that is a change users made. Another program\nnow touches a file underneath, to show the watch is listening:\n")
	hello, err := d.backingPath("src/hello.c")
	if err != nil {
		return err
	}
	if d.has("crypt") {
		d.printf("(src/hello.c, by its encrypted name:)\n")
	}
	if err := d.underneath(`touch "$1"`, hello); err != nil {
		return err
	}
	want := []string{"attrib src/hello.c (backing)"}
	got, err := h.watch.collect(len(want))
	d.printf("Everything the watch reported since the migration started:\n")
	d.printEvents(got)
	if err == nil {
		err = checkEvents(got, want)
	}
	if err != nil {
		return fmt.Errorf("%w\n(the backing watch is %s)", err, h.watch.watcher)
	}
	d.printf("Only the touch: the migration and the recall changed the backing files,\nbut not what users see.\n")
	return nil
}

// paths are the migrated files' names in the mount.
func (h *hsmDemoState) paths() []string {
	var ps []string
	for _, hf := range h.files {
		ps = append(ps, hf.path)
	}
	return ps
}

// status returns the migrated files' states, in the order of h.files.
func (h *hsmDemoState) status(d *demo) ([]hsm.FileStatus, error) {
	var out []hsm.FileStatus
	err := hsm.Walk(context.Background(), d.stack, h.paths(), func(p string, fd int, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		st, err := h.f.StatusOf(context.Background(), d.stack, p, fd)
		out = append(out, st)
		return err
	})
	return out, err
}

// printStatus prints the files' states as "vfsfilter hsm status" does and
// checks them against want (one state per file).
func (h *hsmDemoState) printStatus(d *demo, want ...string) error {
	sts, err := h.status(d)
	if err != nil {
		return err
	}
	d.printf("$ vfsfilter hsm status %s\n", strings.Join(h.paths(), " "))
	tw := tabwriter.NewWriter(d.out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "    STATE\tSIZE\tLOCAL\tPATH")
	for _, st := range sts {
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\n", st.State, humanBytes(st.Size), humanBytes(st.LocalBytes), st.Path)
	}
	tw.Flush()
	for i, st := range sts {
		if st.State != want[i] {
			return fmt.Errorf("%s is %s, want %s", st.Path, st.State, want[i])
		}
		// Status reports the size users see, whatever the filters
		// above the HSM make of the bytes it stores.
		if st.Size != h.files[i].size {
			return fmt.Errorf("%s: status says %d bytes, want %d", st.Path, st.Size, h.files[i].size)
		}
	}
	return nil
}

// backingFiles returns the backing files of the migrated files, in the
// order of h.files. They are found through the stack, as the HSM finds
// them: the filters above it may give them other names underneath.
func (h *hsmDemoState) backingFiles(d *demo) ([]hsmBackingFile, error) {
	root, err := filepath.EvalSymlinks(d.backing)
	if err != nil {
		return nil, err
	}
	var out []hsmBackingFile
	err = hsm.Walk(context.Background(), d.stack, h.paths(), func(p string, fd int, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		name, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err != nil {
			return err
		}
		if rel, err := filepath.Rel(root, name); err == nil {
			name = filepath.ToSlash(rel)
		}
		out = append(out, hsmBackingFile{name: name, size: st.Size, blocks: st.Blocks})
		return nil
	})
	return out, err
}
