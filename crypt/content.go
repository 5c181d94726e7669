package crypt

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
)

// On-disk layout of a file's contents (format version 1):
//
//	header:  version uint16 big-endian (= 1) || file id (16 random bytes)
//	block i: nonce (16 random bytes) || AES-256-GCM(plaintext block i) || tag (16 bytes)
//
// Every block holds BlockSize plaintext bytes except the last, which holds
// 1..BlockSize. The additional data of block i is i (uint64 big-endian) ||
// file id, so a block cannot be moved within a file or to another file
// without failing authentication. An empty file is an empty ciphertext
// file: the header is written with the first byte of data.
//
// A block whose ciphertext is all zeros reads as zeros: that is what a hole
// (a sparse region left by truncate, fallocate or a write past the end)
// looks like underneath. This is gocryptfs's rule; its cost is that zeroing
// a whole block on disk is not detected (see doc.go).
const (
	// HeaderLen is the file header's length.
	HeaderLen = 2 + IDLen
	// IDLen is the file id's length.
	IDLen = 16
	// NonceLen is the per-block nonce's length.
	NonceLen = 16
	// TagLen is the GCM tag's length.
	TagLen = 16
	// BlockOverhead is what each block adds to its plaintext.
	BlockOverhead = NonceLen + TagLen
)

// headerVersion is the content format version in each file's header.
const headerVersion = 1

// FileID is a file's random identifier, bound to every block of the file.
type FileID [IDLen]byte

// Errors of the content codec. Callers turn them into EIO with a log line
// naming the file and block.
var (
	// ErrHeader: the header is short, has an unknown version, or is all
	// zeros where one must be.
	ErrHeader = errors.New("file header is damaged")
	// ErrBlock: a block failed authentication (modified, moved, truncated
	// or from another file).
	ErrBlock = errors.New("block failed authentication")
)

// BlockError is ErrBlock for one block.
type BlockError struct {
	Block uint64
}

func (e *BlockError) Error() string { return fmt.Sprintf("block %d failed authentication", e.Block) }

// Is makes errors.Is(err, ErrBlock) true.
func (e *BlockError) Is(target error) bool { return target == ErrBlock }

// NewHeader returns a header with a fresh random file id.
func NewHeader() ([]byte, FileID, error) {
	var id FileID
	if _, err := rand.Read(id[:]); err != nil {
		return nil, id, err
	}
	h := make([]byte, HeaderLen)
	binary.BigEndian.PutUint16(h, headerVersion)
	copy(h[2:], id[:])
	return h, id, nil
}

// ParseHeader checks a file header and returns its file id.
func ParseHeader(h []byte) (FileID, error) {
	var id FileID
	if len(h) < HeaderLen {
		return id, fmt.Errorf("%w: %d bytes, want %d", ErrHeader, len(h), HeaderLen)
	}
	if v := binary.BigEndian.Uint16(h); v != headerVersion {
		return id, fmt.Errorf("%w: version %d, want %d", ErrHeader, v, headerVersion)
	}
	copy(id[:], h[2:HeaderLen])
	if id == (FileID{}) {
		return id, fmt.Errorf("%w: zero file id", ErrHeader)
	}
	return id, nil
}

// Content encrypts and decrypts file contents in blocks, and converts sizes
// and offsets between plaintext and ciphertext. It is safe for concurrent
// use.
type Content struct {
	aead cipher.AEAD
	bs   uint64 // plaintext block size
	cbs  uint64 // ciphertext block size
}

// NewContent returns a codec for key (32 bytes) and the plaintext block
// size bs.
func NewContent(key []byte, bs int) (*Content, error) {
	if err := checkBlockSize(bs); err != nil {
		return nil, err
	}
	aead, err := newGCM(key, NonceLen)
	if err != nil {
		return nil, err
	}
	return &Content{aead: aead, bs: uint64(bs), cbs: uint64(bs) + BlockOverhead}, nil
}

// BlockSize is the plaintext block size.
func (c *Content) BlockSize() uint64 { return c.bs }

// CipherBlockSize is the ciphertext block size.
func (c *Content) CipherBlockSize() uint64 { return c.cbs }

// CipherSize is the ciphertext size of a plaintext of size plain.
func (c *Content) CipherSize(plain uint64) uint64 {
	if plain == 0 {
		return 0
	}
	n, r := plain/c.bs, plain%c.bs
	size := HeaderLen + n*c.cbs
	if r > 0 {
		size += r + BlockOverhead
	}
	return size
}

// PlainSize is the plaintext size of a ciphertext of size cipher. It needs
// nothing but the size. A size that no plaintext produces (a torn header,
// a last block too short to hold a nonce and tag) is reported with ok
// false and the size of the blocks that are whole; reading such a tail
// fails with EIO.
func (c *Content) PlainSize(cipher uint64) (plain uint64, ok bool) {
	if cipher == 0 {
		return 0, true
	}
	if cipher < HeaderLen {
		return 0, false
	}
	body := cipher - HeaderLen
	n, r := body/c.cbs, body%c.cbs
	plain = n * c.bs
	if r == 0 {
		return plain, true
	}
	if r <= BlockOverhead {
		return plain, false
	}
	return plain + r - BlockOverhead, true
}

// BlockOff is the ciphertext offset of block b.
func (c *Content) BlockOff(b uint64) uint64 { return HeaderLen + b*c.cbs }

// Encrypt appends to dst the ciphertext of plain, which starts at block
// first: full blocks, the last possibly partial. Nonces are drawn from
// crypto/rand in one call for all blocks.
func (c *Content) Encrypt(dst, plain []byte, first uint64, id *FileID) ([]byte, error) {
	nblocks := (uint64(len(plain)) + c.bs - 1) / c.bs
	nonces := make([]byte, nblocks*NonceLen)
	if _, err := rand.Read(nonces); err != nil {
		return dst, err
	}
	var aad [8 + IDLen]byte
	copy(aad[8:], id[:])
	for i := uint64(0); i < nblocks; i++ {
		p := plain[i*c.bs : min((i+1)*c.bs, uint64(len(plain)))]
		nonce := nonces[i*NonceLen : (i+1)*NonceLen]
		binary.BigEndian.PutUint64(aad[:8], first+i)
		dst = append(dst, nonce...)
		dst = c.aead.Seal(dst, nonce, p, aad[:])
	}
	return dst, nil
}

// DecryptBlock appends to dst the plaintext of ciphertext block b. An
// all-zero block (a hole) decrypts to zeros.
func (c *Content) DecryptBlock(dst, ct []byte, b uint64, id *FileID) ([]byte, error) {
	var aad [8 + IDLen]byte
	copy(aad[8:], id[:])
	return c.openBlock(dst, ct, b, &aad)
}

// openBlock is DecryptBlock with the additional data's file id already in
// aad[8:]; it fills in the block number. Decrypt shares one aad across its
// blocks because the AEAD is an interface, so the array escapes to the
// heap: one allocation per call instead of one per 4 KiB block.
func (c *Content) openBlock(dst, ct []byte, b uint64, aad *[8 + IDLen]byte) ([]byte, error) {
	if len(ct) <= BlockOverhead || uint64(len(ct)) > c.cbs {
		if allZero(ct) && len(ct) > BlockOverhead {
			return append(dst, make([]byte, len(ct)-BlockOverhead)...), nil
		}
		return dst, &BlockError{Block: b}
	}
	binary.BigEndian.PutUint64(aad[:8], b)
	out, err := c.aead.Open(dst, ct[:NonceLen], ct[NonceLen:], aad[:])
	if err != nil {
		if allZero(ct) {
			return append(dst, make([]byte, len(ct)-BlockOverhead)...), nil
		}
		return dst, &BlockError{Block: b}
	}
	return out, nil
}

// Decrypt appends to dst the plaintext of ct, consecutive ciphertext blocks
// starting at block first (the last may be partial). It stops at the first
// block that fails and returns its BlockError with what was decrypted
// before it.
func (c *Content) Decrypt(dst, ct []byte, first uint64, id *FileID) ([]byte, error) {
	var aad [8 + IDLen]byte
	copy(aad[8:], id[:])
	for i := uint64(0); len(ct) > 0; i++ {
		n := min(uint64(len(ct)), c.cbs)
		var err error
		if dst, err = c.openBlock(dst, ct[:n], first+i, &aad); err != nil {
			return dst, err
		}
		ct = ct[n:]
	}
	return dst, nil
}

// allZero reports whether b holds only zero bytes. The check runs only on
// blocks that failed authentication (or are too short to be blocks), so its
// cost is off the normal path.
func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.NativeEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// IsHole reports whether a ciphertext block is a hole (all zeros).
func IsHole(ct []byte) bool { return allZero(ct) }

// symlinkAAD is the additional data of an encrypted symlink target: block
// number 0 and the all-zero file id, which no file has (file ids are random
// and ParseHeader refuses zero), so a target cannot pass for a file block.
var symlinkID FileID

// EncryptLink encrypts a symlink target: one block, base64url.
func (c *Content) EncryptLink(target string) (string, error) {
	ct, err := c.Encrypt(nil, []byte(target), 0, &symlinkID)
	if err != nil {
		return "", err
	}
	return b64.EncodeToString(ct), nil
}

// DecryptLink reverses EncryptLink.
func (c *Content) DecryptLink(enc string) (string, error) {
	ct, err := b64.DecodeString(enc)
	if err != nil || len(ct) <= BlockOverhead || uint64(len(ct)) > c.cbs {
		return "", fmt.Errorf("symlink target: %w", ErrBlock)
	}
	var aad [8 + IDLen]byte
	pt, err := c.aead.Open(nil, ct[:NonceLen], ct[NonceLen:], aad[:])
	if err != nil {
		return "", fmt.Errorf("symlink target: %w", ErrBlock)
	}
	return string(pt), nil
}

// LinkPlainLen is the plaintext length of a symlink whose encrypted target
// has encLen bytes: what lstat reports as its size, computed without
// reading the link.
func LinkPlainLen(encLen uint64) uint64 {
	raw := encLen * 3 / 4 // unpadded base64: 4 chars per 3 bytes
	if raw <= BlockOverhead {
		return 0
	}
	return raw - BlockOverhead
}

// parallelMin is the smallest request split across cores: below it the
// goroutine hand-off costs more than the AES work it spreads.
const parallelMin = 128 << 10

// EncryptTo is Encrypt into dst[:0] with the work split across two
// goroutines for large inputs. dst must have room for the ciphertext
// (len(plain)/bs+1 blocks of overhead).
func (c *Content) EncryptTo(dst, plain []byte, first uint64, id *FileID) ([]byte, error) {
	nb := (uint64(len(plain)) + c.bs - 1) / c.bs
	if len(plain) < parallelMin || nb < 2 || uint64(cap(dst)) < nb*c.cbs {
		return c.Encrypt(dst[:0], plain, first, id)
	}
	half := nb / 2
	var err2 error
	done := make(chan struct{})
	go func() {
		_, err2 = c.Encrypt(dst[half*c.cbs:half*c.cbs], plain[half*c.bs:], first+half, id)
		close(done)
	}()
	_, err := c.Encrypt(dst[:0], plain[:half*c.bs], first, id)
	<-done
	if err == nil {
		err = err2
	}
	ctLen := uint64(len(plain)) + nb*BlockOverhead
	return dst[:ctLen], err
}

// DecryptTo is Decrypt into dst[:0], split across two goroutines for large
// inputs. dst must have room for the plaintext. On error the returned
// slice holds what precedes the first bad block.
func (c *Content) DecryptTo(dst, ct []byte, first uint64, id *FileID) ([]byte, error) {
	nb := (uint64(len(ct)) + c.cbs - 1) / c.cbs
	if len(ct) < parallelMin || nb < 2 || uint64(cap(dst)) < nb*c.bs {
		return c.Decrypt(dst[:0], ct, first, id)
	}
	half := nb / 2
	var out2 []byte
	var err2 error
	done := make(chan struct{})
	go func() {
		out2, err2 = c.Decrypt(dst[half*c.bs:half*c.bs], ct[half*c.cbs:], first+half, id)
		close(done)
	}()
	out1, err := c.Decrypt(dst[:0], ct[:half*c.cbs], first, id)
	<-done
	if err != nil {
		return out1, err
	}
	return dst[:uint64(len(out1))+uint64(len(out2))], err2
}
