package crypt

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func testXattrs(t testing.TB) (*Xattrs, *Keys) {
	_, k := testKeys(t)
	x, err := k.Xattrs()
	if err != nil || x == nil {
		t.Fatalf("new trees must encrypt xattrs: %v %v", x, err)
	}
	return x, k
}

func TestXattrNames(t *testing.T) {
	x, k := testXattrs(t)
	for n := 1; n <= MaxXattrPlainName-len(UserXattrPrefix); n++ {
		name := UserXattrPrefix + strings.Repeat("n", n-1) + "/"
		stored, err := x.EncryptName(name)
		if err != nil {
			t.Fatalf("%d-byte name: %v", len(name), err)
		}
		// (No run of 12 plaintext bytes shows: a random base64 string
		// holds "nnn" now and then, 12 n's practically never.)
		if !strings.HasPrefix(stored, XattrPrefix) || len(stored) > MaxXattrName || strings.Contains(stored, strings.Repeat("n", 12)) {
			t.Fatalf("%d-byte name stored as %q", len(name), stored)
		}
		if again, _ := x.EncryptName(name); again != stored {
			t.Fatalf("not deterministic: %q, %q", stored, again)
		}
		back, err := x.DecryptName(stored)
		if err != nil || back != name {
			t.Fatalf("%q decrypts to %q, %v", name, back, err)
		}
	}
	for _, n := range []int{MaxXattrPlainName + 1, MaxXattrName, 300} {
		if _, err := x.EncryptName(UserXattrPrefix + strings.Repeat("l", n-len(UserXattrPrefix))); err != syscall.ERANGE {
			t.Errorf("%d-byte name: %v, want ERANGE", n, err)
		}
	}
	if _, err := x.EncryptName(UserXattrPrefix); err != syscall.EINVAL {
		t.Errorf("bare user.: %v, want EINVAL", err)
	}
	// The names key is neither the file names key nor shared between
	// trees.
	a, _ := x.EncryptName("user.a")
	if n, _ := k.Names(); XattrPrefix+n.Encrypt("a", xattrTweak) == a {
		t.Errorf("xattr names share the file names key")
	}
	other, _ := testXattrs(t)
	if _, err := other.DecryptName(a); err == nil {
		t.Errorf("another key decrypts the name")
	}
	for _, bad := range []string{
		"user.a", "user.vfsfilter.", "user.vfsfilter.!!", a[:len(a)-1], a + "A", "trusted.vfsfilter." + a[len(XattrPrefix):],
		// Other trailing bits: the same ciphertext, not the stored form.
		a[:len(a)-1] + string(a[len(a)-1]^1),
	} {
		if name, err := x.DecryptName(bad); err == nil {
			t.Errorf("%q decrypts to %q", bad, name)
		}
	}
}

func TestXattrValues(t *testing.T) {
	x, _ := testXattrs(t)
	for _, n := range []int{0, 1, 15, 16, 17, 4096, MaxXattrValue - XattrOverhead} {
		v := bytes.Repeat([]byte{0, 0xff, 'v'}, n/3+1)[:n]
		ct, err := x.EncryptValue("user.k", v)
		if err != nil {
			t.Fatal(err)
		}
		if len(ct) != n+XattrOverhead {
			t.Fatalf("%d bytes encrypt to %d", n, len(ct))
		}
		if p, ok := XattrPlainSize(uint32(len(ct))); !ok || p != uint32(n) {
			t.Fatalf("XattrPlainSize(%d) = %d %v", len(ct), p, ok)
		}
		if n > 8 && bytes.Contains(ct, v[:8]) {
			t.Fatalf("plaintext in the stored value")
		}
		other := append([]byte(nil), ct...)
		if _, err := x.DecryptValue("user.other", other); !errors.Is(err, ErrBlock) {
			t.Fatalf("value moved to another name: %v", err)
		}
		flipped := append([]byte(nil), ct...)
		flipped[len(flipped)/2] ^= 1
		if _, err := x.DecryptValue("user.k", flipped); !errors.Is(err, ErrBlock) {
			t.Fatalf("flipped value: %v", err)
		}
		pt, err := x.DecryptValue("user.k", ct)
		if err != nil || !bytes.Equal(pt, v) {
			t.Fatalf("%d bytes do not round trip: %v", n, err)
		}
	}
	ct, _ := x.EncryptValue("user.k", []byte("x"))
	if again, _ := x.EncryptValue("user.k", []byte("x")); bytes.Equal(ct, again) {
		t.Errorf("value encryption is deterministic")
	}
	for n := range XattrOverhead {
		if _, err := x.DecryptValue("user.k", make([]byte, n)); err == nil {
			t.Errorf("%d-byte value decrypts", n)
		}
		if _, ok := XattrPlainSize(uint32(n)); ok {
			t.Errorf("%d-byte stored value has a plaintext size", n)
		}
	}
	if _, err := x.DecryptValue("user.k", make([]byte, XattrOverhead)); err == nil {
		t.Errorf("all-zero value decrypts")
	}
}

// TestXattrFeature: new trees record FeatureXattr, trees without it stay
// valid and pass xattrs through, and the flag cannot be dropped or added
// without the passphrase.
func TestXattrFeature(t *testing.T) {
	cfg, k := testKeys(t)
	if !cfg.Has(FeatureXattr) || !k.XattrEncrypted() {
		t.Fatalf("new tree: features %v", cfg.Features)
	}
	old, ok, err := NewConfigWithout([]byte("pw"), MinScryptLogN, FeatureXattr)
	if err != nil {
		t.Fatal(err)
	}
	if old.Has(FeatureXattr) || ok.XattrEncrypted() {
		t.Fatalf("old tree: features %v", old.Features)
	}
	if x, err := ok.Xattrs(); x != nil || err != nil {
		t.Fatalf("old tree has an xattr codec")
	}
	if err := old.Validate(); err != nil {
		t.Fatalf("old tree: %v", err)
	}
	k2, err := old.Unlock([]byte("pw"))
	if err != nil || k2.XattrEncrypted() {
		t.Fatalf("old tree unlocks to %v, %v", k2, err)
	}
	// The settings as trees before FeatureXattr have them.
	data, _ := json.Marshal(old)
	if !strings.Contains(string(data), `"features":["gcm-iv128","eme-names","long-names","hkdf-sha256"]`) {
		t.Errorf("old tree's settings: %s", data)
	}
	// Adding it to an old tree, or dropping it from a new one, is a
	// change of the authenticated list.
	added := *old
	added.Features = append(slices.Clone(old.Features), FeatureXattr)
	if _, err := added.Unlock([]byte("pw")); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("flag added: %v", err)
	}
	dropped := *cfg
	dropped.Features = slices.DeleteFunc(slices.Clone(cfg.Features), func(f string) bool { return f == FeatureXattr })
	if _, err := dropped.Unlock([]byte("pw")); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("flag dropped: %v", err)
	}
	twice := *cfg
	twice.Features = append(slices.Clone(cfg.Features), FeatureXattr)
	if err := twice.Validate(); err == nil {
		t.Errorf("a feature listed twice is valid")
	}
	// Distinct keys, wiped with the rest.
	all := [][]byte{k.content, k.names, k.xattrNames, k.xattrValues}
	for i := range all {
		for j := range i {
			if bytes.Equal(all[i], all[j]) {
				t.Errorf("keys %d and %d coincide", i, j)
			}
		}
	}
	k.Wipe()
	if !bytes.Equal(k.xattrNames, make([]byte, KeyLen)) || !bytes.Equal(k.xattrValues, make([]byte, KeyLen)) {
		t.Errorf("Wipe left xattr key bytes")
	}
}

func TestSplitXattrList(t *testing.T) {
	for in, want := range map[string][]string{
		"":                  nil,
		"a\x00":             {"a"},
		"a\x00bb\x00":       {"a", "bb"},
		"a\x00\x00bb":       {"a", "bb"},
		"user.x\x00trusted": {"user.x", "trusted"},
	} {
		if got := splitXattrList([]byte(in)); !slices.Equal(got, want) {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
