package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/scrypt"
)

// SectionName is the name of crypt's section in the settings file
// (internal/settings).
const SectionName = "crypt"

// FormatVersion is the on-disk format this package writes and reads: the
// settings section, the file header, the block layout and the name scheme.
// A tree with another version is refused at mount, never guessed at.
const FormatVersion = 1

// KeyLen is the length of the master key and of every derived key (AES-256).
const KeyLen = 32

// DefaultBlockSize is the plaintext block size new trees get. See doc.go
// for why 4 KiB.
const DefaultBlockSize = 4096

// Feature flags recorded in Config.Features. A tree whose settings name a
// feature this code does not know is refused: it may rely on something this
// code would silently get wrong.
const (
	// FeatureGCMIV128 is AES-256-GCM with 128-bit random nonces per block.
	FeatureGCMIV128 = "gcm-iv128"
	// FeatureEMENames is EME-encrypted names with a per-directory IV.
	FeatureEMENames = "eme-names"
	// FeatureLongNames is hashed long names with a side file.
	FeatureLongNames = "long-names"
	// FeatureHKDF derives the content and name keys from the master key
	// with HKDF-SHA256.
	FeatureHKDF = "hkdf-sha256"
	// FeatureXattr encrypts the names and values of user.* extended
	// attributes (xattr.go). Trees made before it pass every extended
	// attribute through unencrypted, and keep doing so.
	FeatureXattr = "xattr-eme-gcm"
)

// requiredFeatures are what every tree of this format version has.
var requiredFeatures = []string{FeatureGCMIV128, FeatureEMENames, FeatureLongNames, FeatureHKDF}

// optionalFeatures may be absent (trees made before they existed); each
// changes how part of the tree is read, so each is authenticated like the
// rest of the list.
var optionalFeatures = []string{FeatureXattr}

// knownFeatures is what this code implements, in canonical order: what
// NewConfig gives a new tree.
var knownFeatures = append(append([]string(nil), requiredFeatures...), optionalFeatures...)

// KDF parameter bounds. The lower bound keeps a tampered settings file from
// weakening the key derivation to nothing; the upper bound keeps it from
// asking for terabytes of memory.
const (
	// DefaultScryptLogN is log2 of scrypt's N for new trees: 2^16 with r=8
	// costs 64 MiB and about a quarter of a second, as gocryptfs.
	DefaultScryptLogN = 16
	// MinScryptLogN is the smallest accepted (tests use it).
	MinScryptLogN = 10
	// MaxScryptLogN is the largest accepted.
	MaxScryptLogN = 28
)

// KDFParams are the stored parameters of the passphrase key derivation.
type KDFParams struct {
	// Name is the function; only "scrypt" is defined.
	Name string `json:"name"`
	// Salt is random, 32 bytes.
	Salt []byte `json:"salt"`
	// LogN is log2 of scrypt's cost parameter N.
	LogN int `json:"log_n"`
	// R and P are scrypt's block size and parallelism.
	R int `json:"r"`
	P int `json:"p"`
}

// Config is crypt's section of the settings file. It holds no secret in
// the clear: the master key is wrapped (AES-256-GCM) under a key derived
// from the passphrase.
type Config struct {
	Version int       `json:"version"`
	KDF     KDFParams `json:"kdf"`
	// WrappedKey is nonce (12 bytes) || AES-256-GCM(master key) || tag.
	// Version, BlockSize and Features are authenticated with it (AAD), so
	// none of them can be changed without the passphrase.
	WrappedKey []byte `json:"wrapped_key"`
	// BlockSize is the plaintext block size of file contents.
	BlockSize int `json:"block_size"`
	// Features lists the feature flags this tree uses.
	Features []string `json:"features"`
}

// Errors of key handling. None of them carries the passphrase or any key.
var (
	// ErrWrongPassword means the passphrase does not unwrap the master
	// key: it is wrong, or the wrapped key or its parameters were changed.
	ErrWrongPassword = errors.New("wrong passphrase (or the settings' crypt section was tampered with)")
	// ErrEmptyPassword is returned for an empty passphrase.
	ErrEmptyPassword = errors.New("the passphrase is empty")
)

// NewConfig makes a random master key and wraps it under passphrase with
// scrypt at 2^logN. It returns the config to store and the unwrapped keys;
// the caller wipes them (Keys.Wipe) when done.
func NewConfig(passphrase []byte, logN int) (*Config, *Keys, error) {
	master := make([]byte, KeyLen)
	if _, err := rand.Read(master); err != nil {
		return nil, nil, err
	}
	defer wipe(master)
	cfg := &Config{
		Version:   FormatVersion,
		BlockSize: DefaultBlockSize,
		Features:  append([]string(nil), knownFeatures...),
	}
	if err := cfg.wrap(master, passphrase, logN); err != nil {
		return nil, nil, err
	}
	k, err := deriveKeys(master, cfg.BlockSize, cfg.Features)
	if err != nil {
		return nil, nil, err
	}
	return cfg, k, nil
}

// wrap (re)wraps master under passphrase with fresh salt and nonce.
func (cfg *Config) wrap(master, passphrase []byte, logN int) error {
	if len(passphrase) == 0 {
		return ErrEmptyPassword
	}
	if logN < MinScryptLogN || logN > MaxScryptLogN {
		return fmt.Errorf("scrypt log2(N) must be between %d and %d, not %d", MinScryptLogN, MaxScryptLogN, logN)
	}
	kdf := KDFParams{Name: "scrypt", Salt: make([]byte, 32), LogN: logN, R: 8, P: 1}
	if _, err := rand.Read(kdf.Salt); err != nil {
		return err
	}
	kek, err := kdf.derive(passphrase)
	if err != nil {
		return err
	}
	defer wipe(kek)
	aead, err := newGCM(kek, 12)
	if err != nil {
		return err
	}
	nonce := make([]byte, 12)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	cfg.KDF = kdf
	cfg.WrappedKey = aead.Seal(nonce, nonce, master, cfg.aad())
	return nil
}

// aad is what the wrapped key authenticates besides itself: the format
// fields that change how every file is read.
func (cfg *Config) aad() []byte {
	return fmt.Appendf(nil, "vfsfilter crypt master key\x00version=%d\x00block_size=%d\x00features=%s",
		cfg.Version, cfg.BlockSize, strings.Join(cfg.Features, ","))
}

func (p *KDFParams) derive(passphrase []byte) ([]byte, error) {
	if p.Name != "scrypt" {
		return nil, fmt.Errorf("unknown key derivation %q", p.Name)
	}
	if p.LogN < MinScryptLogN || p.LogN > MaxScryptLogN || p.R < 1 || p.R > 64 || p.P < 1 || p.P > 16 || len(p.Salt) < 16 {
		return nil, fmt.Errorf("key derivation parameters out of range (scrypt logN=%d r=%d p=%d, salt %d bytes)", p.LogN, p.R, p.P, len(p.Salt))
	}
	return scrypt.Key(passphrase, p.Salt, 1<<p.LogN, p.R, p.P, KeyLen)
}

// Validate checks everything in cfg that can be checked without the
// passphrase: version, block size, features, parameter ranges.
func (cfg *Config) Validate() error {
	if cfg.Version != FormatVersion {
		return fmt.Errorf("crypt format version %d; this vfsfilter reads version %d", cfg.Version, FormatVersion)
	}
	if err := checkBlockSize(cfg.BlockSize); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, f := range cfg.Features {
		if !slices.Contains(knownFeatures, f) {
			return fmt.Errorf("crypt feature %q is not supported by this vfsfilter", f)
		}
		if seen[f] {
			return fmt.Errorf("crypt feature %q is listed twice", f)
		}
		seen[f] = true
	}
	for _, k := range requiredFeatures {
		if !seen[k] {
			return fmt.Errorf("crypt feature %q is missing; this vfsfilter cannot read such a tree", k)
		}
	}
	if len(cfg.WrappedKey) != 12+KeyLen+16 {
		return fmt.Errorf("wrapped master key has %d bytes, want %d", len(cfg.WrappedKey), 12+KeyLen+16)
	}
	if cfg.KDF.Name != "scrypt" {
		return fmt.Errorf("unknown key derivation %q", cfg.KDF.Name)
	}
	return nil
}

// Unlock derives the key-encryption key from passphrase and unwraps the
// master key. A wrong passphrase (or any change to the section) gives
// ErrWrongPassword. The caller wipes the keys (Keys.Wipe) when done.
func (cfg *Config) Unlock(passphrase []byte) (*Keys, error) {
	master, err := cfg.unwrap(passphrase)
	if err != nil {
		return nil, err
	}
	defer wipe(master)
	return deriveKeys(master, cfg.BlockSize, cfg.Features)
}

// Has reports whether the tree uses feature f.
func (cfg *Config) Has(f string) bool { return slices.Contains(cfg.Features, f) }

func (cfg *Config) unwrap(passphrase []byte) ([]byte, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(passphrase) == 0 {
		return nil, ErrEmptyPassword
	}
	kek, err := cfg.KDF.derive(passphrase)
	if err != nil {
		return nil, err
	}
	defer wipe(kek)
	aead, err := newGCM(kek, 12)
	if err != nil {
		return nil, err
	}
	w := cfg.WrappedKey
	master, err := aead.Open(nil, w[:12], w[12:], cfg.aad())
	if err != nil {
		return nil, ErrWrongPassword
	}
	return master, nil
}

// ChangePassphrase rewraps the master key under newPass (fresh salt,
// scrypt at 2^logN; logN 0 keeps the current cost). Contents and names are
// not touched: they are encrypted with keys derived from the master key,
// which does not change.
func (cfg *Config) ChangePassphrase(oldPass, newPass []byte, logN int) error {
	master, err := cfg.unwrap(oldPass)
	if err != nil {
		return err
	}
	defer wipe(master)
	if logN == 0 {
		logN = cfg.KDF.LogN
	}
	return cfg.wrap(master, newPass, logN)
}

// Keys are the working keys of a mounted tree, derived from the master key
// with HKDF-SHA256 under distinct labels, so that no two ciphers (content,
// names, extended attribute names, extended attribute values) ever share a
// key.
type Keys struct {
	content, names []byte
	// xattrNames and xattrValues are nil for a tree without
	// FeatureXattr: its extended attributes pass through.
	xattrNames, xattrValues []byte
	blockSize               int
}

// HKDF-SHA256 labels (the "info" input) of the derived keys. Changing one
// makes every existing tree unreadable.
const (
	labelContent     = "vfsfilter crypt v1 content AES-256-GCM"
	labelNames       = "vfsfilter crypt v1 names EME"
	labelXattrNames  = "vfsfilter crypt v1 xattr names EME"
	labelXattrValues = "vfsfilter crypt v1 xattr values AES-256-GCM"
)

func deriveKeys(master []byte, blockSize int, features []string) (*Keys, error) {
	if err := checkBlockSize(blockSize); err != nil {
		return nil, err
	}
	k := &Keys{blockSize: blockSize}
	keys := []*[]byte{&k.content, &k.names}
	labels := []string{labelContent, labelNames}
	if slices.Contains(features, FeatureXattr) {
		keys = append(keys, &k.xattrNames, &k.xattrValues)
		labels = append(labels, labelXattrNames, labelXattrValues)
	}
	for i, key := range keys {
		var err error
		if *key, err = hkdf.Key(sha256.New, master, nil, labels[i], KeyLen); err != nil {
			k.Wipe()
			return nil, err
		}
	}
	return k, nil
}

// Wipe overwrites the key bytes. The AES key schedules inside ciphers made
// from them are not reachable from Go and stay until collected.
func (k *Keys) Wipe() {
	if k != nil {
		wipe(k.content)
		wipe(k.names)
		wipe(k.xattrNames)
		wipe(k.xattrValues)
	}
}

// XattrEncrypted reports whether these keys' tree encrypts user.*
// extended attributes (FeatureXattr).
func (k *Keys) XattrEncrypted() bool { return k.xattrNames != nil }

// Xattrs returns the extended attribute codec for these keys, or nil for a
// tree whose extended attributes pass through unencrypted.
func (k *Keys) Xattrs() (*Xattrs, error) {
	if !k.XattrEncrypted() {
		return nil, nil
	}
	return NewXattrs(k.xattrNames, k.xattrValues)
}

// Content returns the content codec for these keys.
func (k *Keys) Content() (*Content, error) { return NewContent(k.content, k.blockSize) }

// Names returns the name codec for these keys.
func (k *Keys) Names() (*Names, error) { return NewNames(k.names) }

func checkBlockSize(bs int) error {
	if bs < 512 || bs > 1<<20 || bs&(bs-1) != 0 {
		return fmt.Errorf("crypt block size %d is not a power of two between 512 and 1 MiB", bs)
	}
	return nil
}

func newGCM(key []byte, nonceSize int) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if nonceSize == 12 {
		return cipher.NewGCM(b)
	}
	return cipher.NewGCMWithNonceSize(b, nonceSize)
}

// wipe zeroes b; used on every copy of key material we own.
func wipe(b []byte) { clear(b) }
