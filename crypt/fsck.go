package crypt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vfsfilter/vfsfilter/internal/durable"
	"golang.org/x/sys/unix"
)

// Problem is one piece of damage Fsck found.
type Problem struct {
	// Path is the ciphertext path below the backing directory, with the
	// plaintext path in Plain when the names up to it decrypt.
	Path, Plain string
	// Block is the damaged block of a file's contents, or -1.
	Block int64
	// What says what is wrong.
	What string
	// Repaired says that Fsck, asked to (FsckOptions.Repair), undid the
	// damage.
	Repaired bool
}

func (p Problem) String() string {
	where := p.Path
	if where == "" {
		where = "."
	}
	if p.Plain != "" {
		where = fmt.Sprintf("%s (%s)", p.Plain, p.Path)
	}
	what := p.What
	if p.Repaired {
		what += " (repaired)"
	}
	if p.Block >= 0 {
		return fmt.Sprintf("%s: block %d: %s", where, p.Block, what)
	}
	return fmt.Sprintf("%s: %s", where, what)
}

// FsckOptions says what Fsck may do besides reading.
type FsckOptions struct {
	// Repair undoes the damage that can be undone without losing
	// anything: a small file's content (a directory IV, a long name's
	// side file) that differs from its valid journaled copy is rewritten
	// from the copy, and a damaged copy of a valid content is rewritten
	// from the content. Damaged blocks, names and headers stay as they
	// are: what they held is lost, and only the user can say what to do
	// with the rest.
	Repair bool
}

// FsckStats counts what Fsck checked.
type FsckStats struct {
	Dirs, Files, Symlinks, Blocks, Problems int
	// Repaired counts the problems repaired (FsckOptions.Repair).
	Repaired int
	// Xattrs counts the encrypted (user.*) extended attributes checked;
	// 0 for a tree that does not encrypt them.
	Xattrs int
}

// Fsck checks the encrypted tree in backing (not mounted, or mounted but
// idle) with keys: every directory has an IV, every name decrypts, every
// long name's side file matches, every symlink target decrypts, every
// file's header parses and every block authenticates, and (FeatureXattr)
// every user.* extended attribute's name decrypts and value authenticates. It calls report for
// each problem and returns what it checked. The error is for a tree it
// cannot walk at all. With opts.Repair it also repairs what it can (see
// FsckOptions); a repair that fails leaves the problem reported as it
// was, with why in What.
func Fsck(backing string, keys *Keys, opts FsckOptions, report func(Problem)) (FsckStats, error) {
	k, err := newFsck(backing, keys, opts, report)
	if err != nil {
		return FsckStats{}, err
	}
	err = k.dir("", "")
	return k.stats, err
}

// newFsck returns a checker of the tree in backing with keys' ciphers.
func newFsck(backing string, keys *Keys, opts FsckOptions, report func(Problem)) (*fsck, error) {
	content, err := keys.Content()
	if err != nil {
		return nil, err
	}
	names, err := keys.Names()
	if err != nil {
		return nil, err
	}
	xattrs, err := keys.Xattrs()
	if err != nil {
		return nil, err
	}
	return &fsck{root: backing, opts: opts, content: content, names: names, xattrs: xattrs, report: report}, nil
}

type fsck struct {
	root    string
	opts    FsckOptions
	content *Content
	names   *Names
	xattrs  *Xattrs // nil: not encrypted, not checked
	report  func(Problem)
	stats   FsckStats
}

func (k *fsck) problem(cpath, plain string, block int64, what string) {
	k.stats.Problems++
	k.report(Problem{Path: cpath, Plain: plain, Block: block, What: what})
}

// repairable reports a problem that repair can undo, when asked to
// (FsckOptions.Repair): repaired or not, and why not.
func (k *fsck) repairable(cpath, plain, what string, repair func() error) {
	if !k.opts.Repair {
		k.problem(cpath, plain, -1, what)
		return
	}
	if err := repair(); err != nil {
		k.problem(cpath, plain, -1, fmt.Sprintf("%s; repair failed: %v", what, err))
		return
	}
	k.stats.Problems++
	k.stats.Repaired++
	k.report(Problem{Path: cpath, Plain: plain, Block: -1, What: what, Repaired: true})
}

func (k *fsck) dir(cdir, pdir string) error {
	k.stats.Dirs++
	full := filepath.Join(k.root, cdir)
	iv, err := k.small(join(cdir, DirIVFile), pdir, "directory IV file", validIV)
	if errors.Is(err, os.ErrNotExist) && cdir == "" {
		// A new tree gets its root IV on first mount.
		if ents, _ := os.ReadDir(full); len(ents) <= 1 {
			return nil
		}
	}
	if err != nil || len(iv) != DirIVLen {
		k.problem(cdir, pdir, -1, fmt.Sprintf("directory IV file missing or damaged (%v); no entry of this directory can be decrypted", err))
		return nil
	}
	ents, err := os.ReadDir(full)
	if err != nil {
		if cdir == "" {
			return err
		}
		k.problem(cdir, pdir, -1, fmt.Sprintf("cannot list: %v", err))
		return nil
	}
	k.xattr(cdir, pdir)
	present := map[string]bool{}
	for _, e := range ents {
		present[e.Name()] = true
	}
	for _, e := range ents {
		name := e.Name()
		cpath := join(cdir, name)
		if Reserved(name, cdir == "") {
			if IsLongSide(name) && !present[name[:len(name)-len(LongSuffix)]] {
				k.problem(cpath, "", -1, "long-name side file without its entry (harmless; may be removed)")
			}
			continue
		}
		enc := name
		if IsLong(name) {
			data, err := k.small(join(cdir, LongSideFile(name)), "", "long-name side file", func(b []byte) bool { return CheckLong(name, string(b)) == nil })
			if err != nil {
				k.problem(cpath, "", -1, fmt.Sprintf("long name without its side file: %v", err))
				continue
			}
			if err := CheckLong(name, string(data)); err != nil {
				k.problem(cpath, "", -1, err.Error())
				continue
			}
			enc = string(data)
		}
		plainName, err := k.names.Decrypt(enc, iv)
		if err != nil {
			k.problem(cpath, "", -1, "name does not decrypt (not made with this key, or damaged); hidden from the mount")
			continue
		}
		plain := join(pdir, plainName)
		if !e.IsDir() {
			k.xattr(cpath, plain)
		}
		switch t := e.Type(); {
		case t.IsDir():
			if err := k.dir(cpath, plain); err != nil {
				return err
			}
		case t&os.ModeSymlink != 0:
			k.stats.Symlinks++
			target, err := os.Readlink(filepath.Join(k.root, cpath))
			if err == nil {
				_, err = k.content.DecryptLink(target)
			}
			if err != nil {
				k.problem(cpath, plain, -1, "symlink target does not decrypt")
			}
		case t.IsRegular():
			k.stats.Files++
			k.file(cpath, plain)
		}
	}
	return nil
}

// small reads a small file crypt wrote (an IV, a side file) as the mount
// does: its journaled copy (CopyXattr) when that is valid, else its
// content. A content that differs from a valid copy is reported, since
// the mount does not notice it: a crash before the content's write-back
// leaves it empty or zero-filled, and a copy of the backing directory
// made without extended attributes would then lose the entries that
// depend on it.
func (k *fsck) small(cpath, plain, what string, valid func([]byte) bool) ([]byte, error) {
	full := filepath.Join(k.root, cpath)
	content, err := os.ReadFile(full)
	buf := make([]byte, 4096)
	n, xerr := unix.Lgetxattr(full, CopyXattr, buf)
	switch {
	case xerr == nil && valid(buf[:n]):
		if err != nil || !bytes.Equal(content, buf[:n]) {
			cp := buf[:n]
			k.repairable(cpath, plain, fmt.Sprintf("%s's content differs from its journaled copy (%d bytes against %d; was the machine reset?): the mount uses the copy, but a copy of the backing directory made without extended attributes would lose what depends on it", what, len(content), n),
				func() error { return rewriteSmall(full, cp) })
		}
		return buf[:n], nil
	case xerr == nil, xerr == unix.ERANGE:
		what := fmt.Sprintf("%s's journaled copy (extended attribute %s) is damaged; the mount reads the content", what, CopyXattr)
		if err == nil && valid(content) {
			k.repairable(cpath, plain, what, func() error { return recopySmall(full, content) })
		} else {
			k.problem(cpath, plain, -1, what)
		}
	}
	return content, err
}

// rewriteSmall puts data, the journaled copy of the small file at full,
// back as its content, in place: the inode keeps its copy, so a crash
// halfway leaves what the mount reads as it was. The file is read-only
// (0440 or 0400); without CAP_DAC_OVERRIDE its owner lends itself write
// permission for the write, as the mount does for the copy.
func rewriteSmall(full string, data []byte) error {
	return lendWrite(full, func() error {
		return writeSynced(full, os.O_TRUNC|unix.O_NOFOLLOW, 0, data)
	})
}

// writeSynced writes data to the file at path, opened write-only with
// flag (and perm, if it creates it), and waits for it to reach the disk.
func writeSynced(path string, flag int, perm os.FileMode, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|flag, perm)
	if err != nil {
		return err
	}
	return durable.WriteClose(f, data)
}

// recopySmall sets the journaled copy of the small file at full from its
// valid content.
func recopySmall(full string, content []byte) error {
	return lendWrite(full, func() error {
		if err := unix.Lsetxattr(full, CopyXattr, content, 0); err != nil {
			return &os.PathError{Op: "setxattr", Path: full, Err: err}
		}
		f, err := os.Open(full)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}

// lendWrite runs change on the regular file at full, and again with the
// owner's write permission lent for it if that was missing and change
// was refused.
func lendWrite(full string, change func() error) error {
	st, err := os.Lstat(full)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", full)
	}
	err = change()
	mode := st.Mode().Perm()
	if !errors.Is(err, os.ErrPermission) || mode&0200 != 0 {
		return err
	}
	if err := os.Chmod(full, mode|0200); err != nil {
		return err
	}
	err = change()
	if cerr := os.Chmod(full, mode); err == nil {
		err = cerr
	}
	return err
}

// file checks a file's header and every block, reading 256 blocks at a
// time.
func (k *fsck) file(cpath, plain string) {
	f, err := os.Open(filepath.Join(k.root, cpath))
	if err != nil {
		k.problem(cpath, plain, -1, fmt.Sprintf("cannot open: %v", err))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		k.problem(cpath, plain, -1, err.Error())
		return
	}
	size := uint64(st.Size())
	if size == 0 {
		return
	}
	if _, ok := k.content.PlainSize(size); !ok {
		k.problem(cpath, plain, -1, fmt.Sprintf("ciphertext size %d is no plaintext's: the end of the file is torn", size))
	}
	hdr := make([]byte, HeaderLen)
	if _, err := io.ReadFull(f, hdr); err != nil {
		k.problem(cpath, plain, -1, "file header is damaged (short)")
		return
	}
	id, err := ParseHeader(hdr)
	if err != nil {
		k.problem(cpath, plain, -1, err.Error())
		return
	}
	cbs := k.content.CipherBlockSize()
	buf := make([]byte, 256*cbs)
	for b := uint64(0); ; {
		n, err := f.ReadAt(buf, int64(k.content.BlockOff(b)))
		ct := buf[:n]
		for len(ct) > 0 {
			blk := ct[:min(uint64(len(ct)), cbs)]
			ct = ct[len(blk):]
			k.stats.Blocks++
			if _, derr := k.content.DecryptBlock(nil, blk, b, &id); derr != nil {
				var be *BlockError
				if errors.As(derr, &be) {
					k.problem(cpath, plain, int64(b), "failed authentication")
				}
			}
			b++
		}
		if err != nil || n < len(buf) {
			return
		}
	}
}

// xattr checks the user.* extended attributes of cpath: every name
// decrypts (one that does not is hidden from the mount), every value
// authenticates (one that does not reads EIO).
func (k *fsck) xattr(cpath, plain string) {
	if k.xattrs == nil {
		return
	}
	full := filepath.Join(k.root, cpath)
	list, err := lxattrRead(func(b []byte) (int, error) { return unix.Llistxattr(full, b) })
	if err != nil {
		k.problem(cpath, plain, -1, fmt.Sprintf("cannot list extended attributes: %v", err))
		return
	}
	for _, stored := range splitXattrList(list) {
		if !IsUserXattr(stored) {
			continue
		}
		k.stats.Xattrs++
		name, err := k.xattrs.DecryptName(stored)
		if err != nil {
			k.problem(cpath, plain, -1, fmt.Sprintf("extended attribute %s: name does not decrypt (not made with this key, or damaged); hidden from the mount", stored))
			continue
		}
		ct, err := lxattrRead(func(b []byte) (int, error) { return unix.Lgetxattr(full, stored, b) })
		if err != nil {
			k.problem(cpath, plain, -1, fmt.Sprintf("extended attribute %s: cannot read: %v", name, err))
			continue
		}
		if _, err := k.xattrs.DecryptValue(name, ct); err != nil {
			k.problem(cpath, plain, -1, fmt.Sprintf("extended attribute %s: value failed authentication", name))
		}
	}
}

// lxattrRead calls read (a size query, then the read) until the buffer
// was large enough.
func lxattrRead(read func([]byte) (int, error)) ([]byte, error) {
	for try := 0; ; try++ {
		n, err := read(nil)
		if err != nil || n == 0 {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = read(buf)
		if err == unix.ERANGE && try < 8 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// IsLongSide reports whether stored is a long name's side file.
func IsLongSide(stored string) bool {
	return len(stored) > len(LongPrefix)+len(LongSuffix) && stored[:len(LongPrefix)] == LongPrefix && stored[len(stored)-len(LongSuffix):] == LongSuffix
}

// NewRoot gives the new encrypted tree at backing its root directory IV.
// (A mount would make one too, on first use; making it here means a fresh
// tree passes fsck.)
func NewRoot(backing string) error {
	iv, err := NewDirIV()
	if err != nil {
		return err
	}
	return writeSynced(filepath.Join(backing, DirIVFile), os.O_CREATE|os.O_EXCL, 0o440, iv)
}
