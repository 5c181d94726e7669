package crypt

import (
	"crypto/aes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/rfjakob/eme"
)

// Names on disk (format version 1):
//
//   - each directory holds a file DirIVFile with 16 random bytes, its IV;
//   - a name is padded (PKCS#7, to a multiple of 16 bytes), encrypted with
//     EME (a wide-block mode: changing any byte changes the whole output,
//     so common prefixes are not revealed) under the names key with the
//     directory's IV as tweak, and base64url-encoded without padding;
//   - an encoded name longer than MaxName is stored as LongPrefix +
//     base64url(SHA-256(encoded name)), with the full encoded name in a side
//     file of that name + LongSuffix.
//
// Every reserved name contains a '.', which base64url never produces, so
// no user name can encrypt to a reserved one.
const (
	// DirIVFile is the per-directory IV file.
	DirIVFile = "vfsfilter.diriv"
	// LongPrefix starts the stored name of an entry whose encrypted name
	// is too long.
	LongPrefix = "vfsfilter.longname."
	// LongSuffix ends the side file holding a long name's encrypted name.
	LongSuffix = ".name"
	// DirIVLen is the length of a directory IV.
	DirIVLen = 16
	// MaxName is the longest name the backing file system stores.
	MaxName = 255
)

var b64 = base64.RawURLEncoding

// ErrName means a stored name does not decrypt: it was not made by this
// key, or it was changed.
var ErrName = errors.New("name does not decrypt")

// Names encrypts and decrypts file names. It is safe for concurrent use.
type Names struct {
	eme *eme.EMECipher
}

// NewNames returns a name codec for key (32 bytes).
func NewNames(key []byte) (*Names, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return &Names{eme: eme.New(b)}, nil
}

// NewDirIV returns a fresh random directory IV.
func NewDirIV() ([]byte, error) {
	iv := make([]byte, DirIVLen)
	_, err := rand.Read(iv)
	return iv, err
}

// Encrypt returns the encoded encrypted form of name in the directory with
// IV iv. The result may be longer than MaxName; see StoredName.
func (n *Names) Encrypt(name string, iv []byte) string {
	return b64.EncodeToString(n.encrypt(name, iv))
}

// encrypt pads name (PKCS#7, to a multiple of 16 bytes) and encrypts it
// with EME under tweak iv.
func (n *Names) encrypt(name string, iv []byte) []byte {
	pad := 16 - len(name)%16
	p := make([]byte, len(name)+pad)
	copy(p, name)
	for i := len(name); i < len(p); i++ {
		p[i] = byte(pad)
	}
	return n.eme.Encrypt(iv, p)
}

// Decrypt reverses Encrypt. It refuses anything Encrypt cannot have made.
func (n *Names) Decrypt(enc string, iv []byte) (string, error) {
	name, err := n.decrypt(enc, iv)
	if err != nil || !ValidName(name) {
		return "", ErrName
	}
	return name, nil
}

// decrypt decodes, decrypts and unpads enc; the caller checks what the
// name may be.
func (n *Names) decrypt(enc string, iv []byte) (string, error) {
	ct, err := b64.DecodeString(enc)
	if err != nil || len(ct) == 0 || len(ct)%16 != 0 || len(ct) > 16*128 {
		return "", ErrName
	}
	p := n.eme.Decrypt(iv, ct)
	pad := int(p[len(p)-1])
	if pad == 0 || pad > 16 || pad > len(p) {
		return "", ErrName
	}
	for _, x := range p[len(p)-pad:] {
		if int(x) != pad {
			return "", ErrName
		}
	}
	return string(p[:len(p)-pad]), nil
}

// ValidName reports whether name can be a directory entry's name.
func ValidName(name string) bool {
	return name != "" && name != "." && name != ".." && len(name) <= MaxName && !strings.ContainsAny(name, "/\x00")
}

// StoredName is the name an encoded encrypted name is stored under: itself,
// or for long ones the hashed form (long is then true, and the side file
// LongSideFile(stored) must hold enc).
func StoredName(enc string) (stored string, long bool) {
	if len(enc) <= MaxName {
		return enc, false
	}
	h := sha256.Sum256([]byte(enc))
	return LongPrefix + b64.EncodeToString(h[:]), true
}

// LongSideFile is the side file of a hashed long name.
func LongSideFile(stored string) string { return stored + LongSuffix }

// IsLong reports whether stored is a hashed long name (not its side file).
func IsLong(stored string) bool {
	return strings.HasPrefix(stored, LongPrefix) && !strings.HasSuffix(stored, LongSuffix)
}

// CheckLong verifies that enc, read from the side file of stored, hashes to
// stored.
func CheckLong(stored, enc string) error {
	if s, long := StoredName(enc); !long || s != stored {
		return fmt.Errorf("%w: long name side file does not match %s", ErrName, stored)
	}
	return nil
}

// Reserved reports whether a stored name belongs to crypt (directory IVs,
// long-name side files) or to the stack (the settings directory), and so
// is never shown. rootDir says the name is in the backing root.
func Reserved(stored string, rootDir bool) bool {
	switch {
	case stored == DirIVFile:
		return true
	case strings.HasPrefix(stored, LongPrefix) && strings.HasSuffix(stored, LongSuffix):
		return true
	case rootDir && stored == settingsDir:
		return true
	}
	return false
}

// settingsDir is internal/settings.Dir; repeated here so that the pure codec
// has no dependency (a test checks they agree).
const settingsDir = ".vfsfilter"
