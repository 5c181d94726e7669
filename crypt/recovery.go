package crypt

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
)

// A recovery key is what, besides the tree itself, reads an encrypted tree
// whose passphrase is forgotten or whose settings file is lost or damaged:
// the master key and the format fields the wrapped key authenticates
// (version, block size, features). Without one, either loss loses every
// file; gocryptfs prints its master key at init for the same reason. It is
// shown only on request (Config.RecoveryKey, "vfsfilter crypt masterkey"),
// for its owner to keep offline, and it turns back into settings with a new
// passphrase (Recovery.NewConfig, "vfsfilter crypt recover").
//
// Text form: 80 hex digits in ten groups of eight, "-" between them:
//
//	byte 0       the format version
//	byte 1       log2 of the block size
//	bytes 2-3    the features, a bit per index of knownFeatures (big endian)
//	bytes 4-35   the master key
//	bytes 36-39  the first 4 bytes of SHA-256 of bytes 0-35
//
// The checksum turns a mistyped key into a clear error instead of a key
// that decrypts nothing.
const recoveryLen = 40

// featureBits are the features' bits in a recovery key. A bit, once
// given, never changes: keys on paper carry them.
var featureBits = map[string]uint16{
	FeatureGCMIV128:  1 << 0,
	FeatureEMENames:  1 << 1,
	FeatureLongNames: 1 << 2,
	FeatureHKDF:      1 << 3,
	FeatureXattr:     1 << 4,
}

// ErrRecoveryChecksum is returned for a recovery key with a typo.
var ErrRecoveryChecksum = errors.New("the recovery key's checksum does not match: a digit is mistyped or missing")

// ErrRecoveryKeyWrong is returned by CheckKey when the key does not
// decrypt the tree.
var ErrRecoveryKeyWrong = errors.New("the key does not decrypt this tree (another tree's key, or every name and file checked is damaged)")

// Recovery is a parsed recovery key. Wipe it when done.
type Recovery struct {
	version, blockSize int
	features           []string
	master             []byte
}

// RecoveryKey unwraps the master key with passphrase and returns the
// tree's recovery key in its text form. The caller wipes the result.
func (cfg *Config) RecoveryKey(passphrase []byte) ([]byte, error) {
	master, err := cfg.unwrap(passphrase)
	if err != nil {
		return nil, err
	}
	defer wipe(master)
	var mask uint16
	for _, f := range cfg.Features {
		mask |= featureBits[f] // Validate: every one is known
	}
	raw := make([]byte, 0, recoveryLen)
	raw = append(raw, byte(cfg.Version), byte(bits.Len(uint(cfg.BlockSize))-1), byte(mask>>8), byte(mask))
	raw = append(raw, master...)
	sum := sha256.Sum256(raw)
	raw = append(raw, sum[:4]...)
	defer wipe(raw)
	digits := make([]byte, hex.EncodedLen(len(raw)))
	defer wipe(digits)
	hex.Encode(digits, raw)
	out := make([]byte, 0, len(digits)+len(digits)/8)
	for i := 0; i < len(digits); i += 8 {
		if i > 0 {
			out = append(out, '-')
		}
		out = append(out, digits[i:i+8]...)
	}
	return out, nil
}

// ParseRecoveryKey parses a recovery key's text form; spaces, dashes and
// case do not matter. A typo gives ErrRecoveryChecksum. Errors never
// contain the key.
func ParseRecoveryKey(text []byte) (*Recovery, error) {
	// Filled in place, never grown: no copy of the key is left behind.
	var buf [2 * recoveryLen]byte
	defer wipe(buf[:])
	n := 0
	for _, c := range text {
		switch {
		case c == '-' || c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		case c >= 'A' && c <= 'F':
			c += 'a' - 'A'
		case c >= '0' && c <= '9' || c >= 'a' && c <= 'f':
		default:
			return nil, errors.New("a recovery key holds only hex digits (0-9, a-f) and dashes")
		}
		if n < len(buf) {
			buf[n] = c
		}
		n++
	}
	if n != len(buf) {
		return nil, fmt.Errorf("a recovery key has %d hex digits; this one has %d", len(buf), n)
	}
	digits := buf[:]
	raw := make([]byte, recoveryLen)
	defer wipe(raw)
	if _, err := hex.Decode(raw, digits); err != nil {
		return nil, errors.New("a recovery key holds only hex digits (0-9, a-f) and dashes")
	}
	sum := sha256.Sum256(raw[:recoveryLen-4])
	if subtle.ConstantTimeCompare(sum[:4], raw[recoveryLen-4:]) != 1 {
		return nil, ErrRecoveryChecksum
	}
	r := &Recovery{version: int(raw[0]), master: bytes.Clone(raw[4 : 4+KeyLen])}
	if raw[1] < 9 || raw[1] > 20 {
		r.Wipe()
		return nil, fmt.Errorf("the recovery key names a block size of 2^%d bytes, which no tree has", raw[1])
	}
	r.blockSize = 1 << raw[1]
	mask := uint16(raw[2])<<8 | uint16(raw[3])
	for _, f := range knownFeatures { // in canonical order
		if bit := featureBits[f]; mask&bit != 0 {
			r.features = append(r.features, f)
			mask &^= bit
		}
	}
	if mask != 0 {
		r.Wipe()
		return nil, errors.New("the recovery key names features this vfsfilter does not know; use a newer vfsfilter")
	}
	if r.version != FormatVersion {
		r.Wipe()
		return nil, fmt.Errorf("the recovery key is for crypt format version %d; this vfsfilter reads version %d", r.version, FormatVersion)
	}
	return r, nil
}

// Wipe overwrites the master key.
func (r *Recovery) Wipe() {
	if r != nil {
		wipe(r.master)
	}
}

// SameFormat reports whether cfg, a tree's settings, have the format the
// key names (version, block size, features): a key that differs is
// another tree's.
func (r *Recovery) SameFormat(cfg *Config) bool {
	if cfg.Version != r.version || cfg.BlockSize != r.blockSize || len(cfg.Features) != len(r.features) {
		return false
	}
	for _, f := range cfg.Features {
		if !slices.Contains(r.features, f) {
			return false
		}
	}
	return true
}

// Keys derives the working keys, as Config.Unlock does. The caller wipes
// them.
func (r *Recovery) Keys() (*Keys, error) {
	return deriveKeys(r.master, r.blockSize, r.features)
}

// NewConfig returns settings for the tree with the master key wrapped
// under passphrase (scrypt at 2^logN), as "vfsfilter init" would have
// written them.
func (r *Recovery) NewConfig(passphrase []byte, logN int) (*Config, error) {
	cfg := &Config{Version: r.version, BlockSize: r.blockSize, Features: slices.Clone(r.features)}
	if err := cfg.wrap(r.master, passphrase, logN); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// KeyCheck is what CheckKey found.
type KeyCheck struct {
	// Names counts the names that decrypted (of NamesTried); Blocks the
	// files whose first block authenticated, BadBlocks those whose did
	// not.
	Names, NamesTried, Blocks, BadBlocks int
}

// Errors of CheckKey besides ErrRecoveryKeyWrong.
var (
	// ErrNotEncrypted: backing has no readable root directory IV, so it
	// is no encrypted tree (or one whose root IV is lost: crypt fsck).
	ErrNotEncrypted = errors.New("no readable root directory IV (" + DirIVFile + "): not an encrypted tree")
	// ErrKeyUnverified: the tree holds too little to tell a right key
	// from a wrong one.
	ErrKeyUnverified = errors.New("the tree holds too little to check the key against (fewer than 3 names and no file contents)")
)

// CheckKey tells whether keys decrypt the encrypted tree in backing, from
// a sample: up to 256 entries, breadth first from the root. A block of
// file contents that authenticates proves the key. Without one, names
// decide: a wrong key passes a name's padding check about once in 285, so
// at least 3 names, nine in ten of those tried, must decrypt. The first
// blocks of up to 16 files are tried, so that damaged files do not decide
// alone. It returns ErrRecoveryKeyWrong when the sample says the key is
// wrong, ErrKeyUnverified when it says nothing, ErrNotEncrypted when
// backing has no root IV, and what it checked in every case.
func CheckKey(backing string, keys *Keys) (KeyCheck, error) {
	k, err := newFsck(backing, keys, FsckOptions{}, func(Problem) {})
	if err != nil {
		return KeyCheck{}, err
	}
	var kc KeyCheck
	if iv, err := k.small(DirIVFile, "", "directory IV file", validIV); err != nil || len(iv) != DirIVLen {
		return kc, ErrNotEncrypted
	}
	queue := []string{""}
	for seen := 0; len(queue) > 0 && seen < 256 && kc.Blocks == 0; {
		cdir := queue[0]
		queue = queue[1:]
		iv, err := k.small(join(cdir, DirIVFile), "", "directory IV file", validIV)
		if err != nil || len(iv) != DirIVLen {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(backing, cdir))
		if err != nil {
			continue
		}
		for _, e := range ents {
			name := e.Name()
			if Reserved(name, cdir == "") {
				continue
			}
			if seen++; seen > 256 {
				break
			}
			enc := name
			if IsLong(name) {
				data, err := k.small(join(cdir, LongSideFile(name)), "", "long-name side file", func(b []byte) bool { return CheckLong(name, string(b)) == nil })
				if err != nil || CheckLong(name, string(data)) != nil {
					continue
				}
				enc = string(data)
			}
			if !plausibleName(enc) {
				continue // lost+found, .DS_Store: not crypt's
			}
			kc.NamesTried++
			if _, err := k.names.Decrypt(enc, iv); err != nil {
				continue
			}
			kc.Names++
			cpath := join(cdir, name)
			switch {
			case e.IsDir():
				queue = append(queue, cpath)
			case e.Type().IsRegular() && kc.Blocks+kc.BadBlocks < 16:
				switch ok, err := firstBlock(k.content, filepath.Join(backing, cpath)); {
				case err != nil: // nothing to try
				case ok:
					kc.Blocks++
				default:
					kc.BadBlocks++
				}
			}
		}
	}
	switch {
	case kc.Blocks > 0:
		return kc, nil
	case kc.Names >= 3 && kc.Names*10 >= kc.NamesTried*9:
		// The names prove it; the bad blocks are damage (crypt fsck).
		return kc, nil
	case kc.BadBlocks > 0 || kc.NamesTried-kc.Names >= 2 || kc.NamesTried > 0 && kc.Names == 0:
		return kc, ErrRecoveryKeyWrong
	}
	return kc, ErrKeyUnverified
}

// plausibleName reports whether a stored name could be one crypt wrote:
// base64url of whole EME blocks. Entries others put in the backing
// directory (lost+found, .DS_Store) are not, and say nothing about a key.
func plausibleName(enc string) bool {
	if n := b64.DecodedLen(len(enc)); n == 0 || n%16 != 0 {
		return false
	}
	_, err := b64.DecodeString(enc)
	return err == nil
}

// firstBlock reports whether the first block of the file at full that is
// not a hole authenticates; err is set when there is none to try (an empty
// file, a hole, a damaged header) or it cannot be read.
func firstBlock(content *Content, full string) (bool, error) {
	f, err := os.Open(full)
	if err != nil {
		return false, err
	}
	defer f.Close()
	hdr := make([]byte, HeaderLen)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return false, err
	}
	id, err := ParseHeader(hdr)
	if err != nil {
		return false, err
	}
	blk := make([]byte, content.CipherBlockSize())
	n, err := f.ReadAt(blk, int64(content.BlockOff(0)))
	if n == 0 {
		return false, err
	}
	if IsHole(blk[:n]) {
		return false, errors.New("a hole")
	}
	_, err = content.DecryptBlock(nil, blk[:n], 0, &id)
	return err == nil, nil
}
