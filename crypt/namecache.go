package crypt

import (
	"strings"
	"sync"
)

// nameCache remembers recent name encryptions and decryptions. Every
// request on a path encrypts its leaf name (a create alone is a lookup, the
// create, getxattr, setattr: the same name four times or more), and EME
// costs an AES key schedule's worth of work and allocations per call.
//
// Encryption under one key is a fixed function of (name, directory IV), so
// an entry never goes stale: it needs no invalidation, only a bound. The
// key holds the whole IV, so two directories with different IVs never
// share an entry; two with the same IV (a copied IV file) encrypt every
// name alike anyway. One cache serves one Filter, hence one key.
//
// Each direction seeds the other: a name encrypted is also known
// decrypted (readdir after create, as in rm -rf after an untar), and a
// name decrypted is also known encrypted (lookup after readdir) when the
// stored form is the canonical encoding Encrypt would produce. A stored
// name with other base64 trailing bits decrypts to the same name but is
// not what a lookup of that name looks for; it is not entered.
//
// Each map is cleared when it reaches max entries: cheap and rare, where
// an LRU would cost a list update on every hit.
type nameCache struct {
	names *Names
	max   int

	mu  sync.RWMutex
	enc map[nameKey]string // (IV, plaintext name) -> encoded encrypted name
	dec map[nameKey]string // (IV, encoded encrypted name) -> plaintext name
}

type nameKey struct {
	iv   [DirIVLen]byte
	name string
}

// nameCacheMax bounds each direction of a Filter's name cache: 8192
// entries of typically 100-200 bytes (at most about 700), so a few MiB at
// worst.
const nameCacheMax = 8192

func newNameCache(names *Names, max int) *nameCache {
	return &nameCache{names: names, max: max, enc: map[nameKey]string{}, dec: map[nameKey]string{}}
}

// Encrypt is Names.Encrypt, remembered.
func (n *nameCache) Encrypt(name string, iv []byte) string {
	if len(iv) != DirIVLen {
		return n.names.Encrypt(name, iv)
	}
	k := nameKey{iv: [DirIVLen]byte(iv), name: name}
	n.mu.RLock()
	enc, ok := n.enc[k]
	n.mu.RUnlock()
	if ok {
		return enc
	}
	enc = n.names.Encrypt(name, iv)
	// The name is often a slice of a longer path: keep only its bytes.
	k.name = strings.Clone(name)
	n.mu.Lock()
	n.put(n.enc, k, enc)
	if ValidName(name) {
		// Decrypt refuses what ValidName refuses; Encrypt does not.
		n.put(n.dec, nameKey{iv: k.iv, name: enc}, k.name)
	}
	n.mu.Unlock()
	return enc
}

// Decrypt is Names.Decrypt, remembered. Failures are not remembered: they
// are rare (damage, another key) and logged where they happen.
func (n *nameCache) Decrypt(enc string, iv []byte) (string, error) {
	if len(iv) != DirIVLen {
		return n.names.Decrypt(enc, iv)
	}
	k := nameKey{iv: [DirIVLen]byte(iv), name: enc}
	n.mu.RLock()
	name, ok := n.dec[k]
	n.mu.RUnlock()
	if ok {
		return name, nil
	}
	name, err := n.names.Decrypt(enc, iv)
	if err != nil {
		return "", err
	}
	k.name = strings.Clone(enc)
	canonical := false
	if ct, err := b64.DecodeString(enc); err == nil {
		canonical = b64.EncodeToString(ct) == enc
	}
	n.mu.Lock()
	n.put(n.dec, k, name)
	if canonical {
		n.put(n.enc, nameKey{iv: k.iv, name: name}, k.name)
	}
	n.mu.Unlock()
	return name, nil
}

// put adds an entry to m, clearing m first when it is full. Callers hold
// n.mu.
func (n *nameCache) put(m map[nameKey]string, k nameKey, v string) {
	if len(m) >= n.max {
		clear(m)
	}
	m[k] = v
}

// len reports the entries in each direction (for tests).
func (n *nameCache) len() (enc, dec int) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.enc), len(n.dec)
}
