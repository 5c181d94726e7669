package crypt

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"strings"
	"syscall"

	"github.com/vfsfilter/vfsfilter/layer"
)

// Extended attributes on disk (FeatureXattr; trees without it pass every
// attribute through unencrypted):
//
//   - Attributes of the user namespace (user.*) are encrypted. Every other
//     namespace passes through unchanged: the kernel below interprets
//     system.posix_acl_* (the ACLs it enforces), security.* (capabilities,
//     SELinux labels) and trusted.*, and filters below keep their own
//     trusted.* attributes there (the HSM's trusted.vfsfilter.hsm).
//   - The name user.<rest> is stored as XattrPrefix +
//     base64url(EME(pad(rest))): rest padded as a file name is (PKCS#7, to
//     a multiple of 16 bytes), encrypted with EME under the xattr names
//     key with an all-zero tweak, base64url without padding. The
//     encryption is deterministic, so getxattr, setxattr and removexattr
//     find the stored name from the plaintext one; the cost is that equal
//     names on different files have equal stored names (gocryptfs alike).
//     A stored name must fit the kernel's limit (MaxXattrName), so a
//     plaintext name can be at most MaxXattrPlainName bytes; longer ones
//     are refused with ERANGE, the kernel's error for a name too long.
//   - The value is nonce (16 random bytes) || AES-256-GCM(value) || tag
//     (16 bytes) under the xattr values key, as a content block is, with
//     additional data xattrValueAAD || the plaintext name (user.<rest>), so
//     a value moved to another attribute fails authentication. A value is
//     not bound to its file (there is no file id that survives every
//     operation on every file type): moving a value to the attribute of
//     the same name on another file is not detected, as with gocryptfs.
//     The plaintext of a value is at most MaxXattrValue - XattrOverhead
//     bytes; a longer one is refused with E2BIG.
//
// Every user.* name through the mount is encrypted, one that looks like a
// stored name (user.vfsfilter.x) too, so no name set through the mount is
// ever stored as itself, and no stored name is ever shown as one. A stored
// name that does not decrypt (set below the mount, damaged, another key;
// a user.* name without the prefix) is hidden from listxattr, as readdir
// hides such entries.
const (
	// UserXattrPrefix starts the names of the user namespace, the one
	// that is encrypted.
	UserXattrPrefix = "user."
	// XattrPrefix starts every stored name of an encrypted attribute.
	XattrPrefix = "user.vfsfilter."
	// XattrOverhead is what encryption adds to a value.
	XattrOverhead = NonceLen + TagLen
	// MaxXattrName is the kernel's limit on a name (XATTR_NAME_MAX).
	MaxXattrName = 255
	// MaxXattrValue is the kernel's limit on a value (XATTR_SIZE_MAX).
	MaxXattrValue = 65536
	// MaxXattrPlainName is the longest plaintext name whose stored
	// name fits MaxXattrName: user. and 175 bytes, which pad to 176 and
	// encode to 235 characters after the 15 of XattrPrefix.
	MaxXattrPlainName = 180
)

// xattrValueAAD starts the additional data of every value; the plaintext
// name follows it.
const xattrValueAAD = "vfsfilter crypt v1 xattr value\x00"

// xattrTweak is EME's tweak for attribute names: fixed, so that a name's
// encryption does not depend on its file.
var xattrTweak = make([]byte, DirIVLen)

// Xattrs encrypts and decrypts the names and values of user.* extended
// attributes. It is safe for concurrent use.
type Xattrs struct {
	names  *Names
	values cipher.AEAD
}

// NewXattrs returns an attribute codec for the names key and the values
// key (32 bytes each).
func NewXattrs(namesKey, valuesKey []byte) (*Xattrs, error) {
	names, err := NewNames(namesKey)
	if err != nil {
		return nil, err
	}
	values, err := newGCM(valuesKey, NonceLen)
	if err != nil {
		return nil, err
	}
	return &Xattrs{names: names, values: values}, nil
}

// IsUserXattr reports whether name is in the user namespace, whose names
// and values are encrypted.
func IsUserXattr(name string) bool { return strings.HasPrefix(name, UserXattrPrefix) }

// EncryptName returns the stored name of the user.* attribute name. It
// fails with EINVAL for the bare prefix (the kernel refuses "user." too)
// and ERANGE for a name whose stored form would be too long.
func (x *Xattrs) EncryptName(name string) (string, error) {
	rest := name[len(UserXattrPrefix):]
	switch {
	case rest == "":
		return "", syscall.EINVAL
	case len(name) > MaxXattrPlainName:
		return "", syscall.ERANGE
	}
	return XattrPrefix + b64.EncodeToString(x.names.encrypt(rest, xattrTweak)), nil
}

// DecryptName returns the plaintext name of a stored user.* name. It
// refuses everything EncryptName cannot have made (ErrName).
func (x *Xattrs) DecryptName(stored string) (string, error) {
	enc, ok := strings.CutPrefix(stored, XattrPrefix)
	if !ok || len(stored) > MaxXattrName {
		return "", ErrName
	}
	// One stored form per name: other trailing bits of the base64 would
	// decrypt to a name whose lookups find another stored name.
	if ct, err := b64.DecodeString(enc); err != nil || b64.EncodeToString(ct) != enc {
		return "", ErrName
	}
	rest, err := x.names.decrypt(enc, xattrTweak)
	if err != nil || rest == "" || strings.IndexByte(rest, 0) >= 0 {
		return "", ErrName
	}
	return UserXattrPrefix + rest, nil
}

// EncryptValue returns the stored value of attribute name holding plain.
func (x *Xattrs) EncryptValue(name string, plain []byte) ([]byte, error) {
	out := make([]byte, NonceLen, len(plain)+XattrOverhead)
	if _, err := rand.Read(out); err != nil {
		return nil, err
	}
	return x.values.Seal(out, out[:NonceLen], plain, xattrAAD(name)), nil
}

// DecryptValue returns the plaintext of the stored value ct of attribute
// name, decrypted in place (it overwrites ct). It returns nothing but
// ErrBlock for a value that does not authenticate.
func (x *Xattrs) DecryptValue(name string, ct []byte) ([]byte, error) {
	if len(ct) < XattrOverhead {
		return nil, ErrBlock
	}
	pt, err := x.values.Open(ct[NonceLen:NonceLen], ct[:NonceLen], ct[NonceLen:], xattrAAD(name))
	if err != nil {
		return nil, ErrBlock
	}
	return pt, nil
}

func xattrAAD(name string) []byte {
	return append([]byte(xattrValueAAD), name...)
}

// XattrPlainSize is the plaintext size of a stored value of size n; ok is
// false when no value encrypts to that size (damage).
func XattrPlainSize(n uint32) (plain uint32, ok bool) {
	if n < XattrOverhead {
		return 0, false
	}
	return n - XattrOverhead, true
}

// The filter's side. A tree without FeatureXattr (f.xattrs nil) and every
// namespace but user.* take the old way: the path is rewritten, the rest
// passes through.

func (f *Filter) encrypts(name string) bool { return f.xattrs != nil && IsUserXattr(name) }

// lookupXattr translates the path and the name of a getxattr or
// removexattr: the backing path and the stored name. A name too long to
// have been stored cannot exist (ENODATA). h is the op's handle (see
// layer.GetxattrOp).
func (f *Filter) lookupXattr(c *layer.Call, path string, h *layer.Handle, name string) (cpath, stored string, errno layer.Errno) {
	cpath, errno = f.cpathVia(c, path, h)
	if errno != 0 {
		return "", "", errno
	}
	stored, err := f.xattrs.EncryptName(name)
	if err == syscall.ERANGE {
		return "", "", syscall.ENODATA
	}
	if err != nil {
		return "", "", layer.ToErrno(err)
	}
	return cpath, stored, 0
}

func (f *Filter) getxattr(c *layer.Call, op *layer.GetxattrOp) (layer.Status, layer.Errno) {
	if !f.encrypts(op.Name) {
		return f.simpleVia(c, &op.Path, op.Handle)
	}
	cpath, stored, errno := f.lookupXattr(c, op.Path, op.Handle, op.Name)
	if errno != 0 {
		return done, errno
	}
	sub := &layer.GetxattrOp{Node: op.Node, Path: cpath, Handle: op.Handle, Name: stored}
	if len(op.Dest) == 0 {
		// A size query: the size alone says the plaintext's.
		if errno := f.att.Below.Do(c, sub); errno != 0 {
			return done, errno
		}
		n, ok := XattrPlainSize(sub.Size)
		if !ok {
			f.log.Error("extended attribute value is damaged (too short)", "path", op.Path, "attr", op.Name, "bytes", sub.Size)
			return done, syscall.EIO
		}
		op.Size = n
		return done, 0
	}
	// A stored value longer than this buffer has a plaintext longer
	// than Dest: ERANGE from below is the answer.
	sub.Dest = make([]byte, min(len(op.Dest)+XattrOverhead, MaxXattrValue))
	if errno := f.att.Below.Do(c, sub); errno != 0 {
		return done, errno
	}
	pt, err := f.xattrs.DecryptValue(op.Name, sub.Dest[:min(int(sub.Size), len(sub.Dest))])
	if err != nil {
		f.log.Error("extended attribute value failed authentication", "path", op.Path, "attr", op.Name)
		return done, syscall.EIO
	}
	if len(pt) > len(op.Dest) {
		return done, syscall.ERANGE
	}
	op.Size = uint32(copy(op.Dest, pt))
	return done, 0
}

func (f *Filter) setxattr(c *layer.Call, op *layer.SetxattrOp) (layer.Status, layer.Errno) {
	if !f.encrypts(op.Name) {
		return f.simpleVia(c, &op.Path, op.Handle)
	}
	cpath, errno := f.cpathVia(c, op.Path, op.Handle)
	if errno != 0 {
		return done, errno
	}
	stored, err := f.xattrs.EncryptName(op.Name)
	if err != nil {
		return done, layer.ToErrno(err)
	}
	if len(op.Data) > MaxXattrValue-XattrOverhead {
		return done, syscall.E2BIG
	}
	ct, err := f.xattrs.EncryptValue(op.Name, op.Data)
	if err != nil {
		return done, syscall.EIO
	}
	return done, f.att.Below.Do(c, &layer.SetxattrOp{Node: op.Node, Path: cpath, Handle: op.Handle, Name: stored, Data: ct, Flags: op.Flags})
}

func (f *Filter) removexattr(c *layer.Call, op *layer.RemovexattrOp) (layer.Status, layer.Errno) {
	if !f.encrypts(op.Name) {
		return f.simpleVia(c, &op.Path, op.Handle)
	}
	cpath, stored, errno := f.lookupXattr(c, op.Path, op.Handle, op.Name)
	if errno != 0 {
		return done, errno
	}
	return done, f.att.Below.Do(c, &layer.RemovexattrOp{Node: op.Node, Path: cpath, Handle: op.Handle, Name: stored})
}

// listxattr lists the names below and decrypts the user.* ones; those that
// do not decrypt are left out (fsck reports them). Even a size query
// decrypts: the plaintext list's length is the sum of the plaintext
// names'.
func (f *Filter) listxattr(c *layer.Call, op *layer.ListxattrOp) (layer.Status, layer.Errno) {
	if f.xattrs == nil {
		return f.simpleVia(c, &op.Path, op.Handle)
	}
	cpath, errno := f.cpathVia(c, op.Path, op.Handle)
	if errno != 0 {
		return done, errno
	}
	list, errno := f.listBelow(c, op.Node, cpath, op.Handle)
	if errno != 0 {
		return done, errno
	}
	out := make([]byte, 0, len(list))
	for _, name := range splitXattrList(list) {
		if IsUserXattr(name) {
			plain, err := f.xattrs.DecryptName(name)
			if err != nil {
				f.log.Debug("hiding an extended attribute whose name does not decrypt", "path", op.Path, "stored", name)
				continue
			}
			name = plain
		}
		out = append(append(out, name...), 0)
	}
	op.Size = uint32(len(out))
	if len(op.Dest) == 0 {
		return done, 0
	}
	if len(out) > len(op.Dest) {
		return done, syscall.ERANGE
	}
	copy(op.Dest, out)
	return done, 0
}

// listBelow returns the full list of attribute names of cpath below
// (through h, when not nil). The list may grow between the size query and
// the read; that is retried.
func (f *Filter) listBelow(c *layer.Call, node *layer.Node, cpath string, h *layer.Handle) ([]byte, layer.Errno) {
	for try := 0; ; try++ {
		q := &layer.ListxattrOp{Node: node, Path: cpath, Handle: h}
		if errno := f.att.Below.Do(c, q); errno != 0 {
			return nil, errno
		}
		if q.Size == 0 {
			return nil, 0
		}
		sub := &layer.ListxattrOp{Node: node, Path: cpath, Handle: h, Dest: make([]byte, q.Size)}
		errno := f.att.Below.Do(c, sub)
		if errno == syscall.ERANGE && try < 8 {
			continue
		}
		if errno != 0 {
			return nil, errno
		}
		return sub.Dest[:min(int(sub.Size), len(sub.Dest))], 0
	}
}

// splitXattrList splits a NUL-separated list of names.
func splitXattrList(list []byte) []string {
	var names []string
	for len(list) > 0 {
		i := bytes.IndexByte(list, 0)
		if i < 0 {
			i = len(list)
		}
		if i > 0 {
			names = append(names, string(list[:i]))
		}
		list = list[min(i+1, len(list)):]
	}
	return names
}
