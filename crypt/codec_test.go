package crypt

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func testKeys(t testing.TB) (*Config, *Keys) {
	cfg, k, err := NewConfig([]byte("pw"), MinScryptLogN)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, k
}

func TestWrapUnwrap(t *testing.T) {
	cfg, k := testKeys(t)
	k2, err := cfg.Unlock([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.content, k2.content) || !bytes.Equal(k.names, k2.names) || bytes.Equal(k.content, k.names) {
		t.Fatal("derived keys differ between unlocks or coincide")
	}
	if _, err := cfg.Unlock([]byte("wrong")); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("wrong passphrase: %v", err)
	}
	if _, err := cfg.Unlock(nil); !errors.Is(err, ErrEmptyPassword) {
		t.Errorf("empty passphrase: %v", err)
	}
	// Round trip through JSON, as the settings file stores it.
	data, _ := json.Marshal(cfg)
	var back Config
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if _, err := back.Unlock([]byte("pw")); err != nil {
		t.Errorf("after JSON: %v", err)
	}
	// A passphrase long enough that random base64 cannot contain it by
	// chance (a two-letter one sometimes does).
	const long = "correct horse battery staple"
	lcfg, _, err := NewConfig([]byte(long), MinScryptLogN)
	if err != nil {
		t.Fatal(err)
	}
	if ldata, _ := json.Marshal(lcfg); strings.Contains(string(ldata), long) {
		t.Errorf("settings contain the passphrase")
	}
	// Change the passphrase: same keys, old one refused.
	if err := cfg.ChangePassphrase([]byte("pw"), []byte("new"), 0); err != nil {
		t.Fatal(err)
	}
	k3, err := cfg.Unlock([]byte("new"))
	if err != nil || !bytes.Equal(k3.content, k.content) {
		t.Fatalf("after passwd: %v", err)
	}
	if _, err := cfg.Unlock([]byte("pw")); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("old passphrase still works: %v", err)
	}
	k.Wipe()
	if !bytes.Equal(k.content, make([]byte, KeyLen)) {
		t.Errorf("Wipe left key bytes")
	}
}

// TestConfigTamper changes each field of the section: every change is
// refused, none silently accepted.
func TestConfigTamper(t *testing.T) {
	cfg, _ := testKeys(t)
	tamper := map[string]func(c *Config){
		"wrapped key":   func(c *Config) { c.WrappedKey[20] ^= 1 },
		"nonce":         func(c *Config) { c.WrappedKey[0] ^= 1 },
		"salt":          func(c *Config) { c.KDF.Salt[0] ^= 1 },
		"logN":          func(c *Config) { c.KDF.LogN++ },
		"logN too low":  func(c *Config) { c.KDF.LogN = 1 },
		"block size":    func(c *Config) { c.BlockSize = 8192 },
		"bad block":     func(c *Config) { c.BlockSize = 1000 },
		"version":       func(c *Config) { c.Version = 2 },
		"unknown feat":  func(c *Config) { c.Features = append(c.Features, "x") },
		"missing feat":  func(c *Config) { c.Features = c.Features[1:] },
		"feature order": func(c *Config) { c.Features[0], c.Features[1] = c.Features[1], c.Features[0] },
		"kdf name":      func(c *Config) { c.KDF.Name = "argon2" },
		"short key":     func(c *Config) { c.WrappedKey = c.WrappedKey[:10] },
	}
	for name, f := range tamper {
		c := *cfg
		c.WrappedKey = append([]byte(nil), cfg.WrappedKey...)
		c.KDF.Salt = append([]byte(nil), cfg.KDF.Salt...)
		c.Features = append([]string(nil), cfg.Features...)
		f(&c)
		if _, err := c.Unlock([]byte("pw")); err == nil {
			t.Errorf("%s: tampered section unlocked", name)
		}
	}
}

func TestSizeMaths(t *testing.T) {
	c, err := NewContent(make([]byte, 32), 4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []uint64{0, 1, 100, 4095, 4096, 4097, 8192, 1 << 30, 1<<30 + 1} {
		cs := c.CipherSize(p)
		back, ok := c.PlainSize(cs)
		if !ok || back != p {
			t.Errorf("plain %d -> cipher %d -> plain %d (%v)", p, cs, back, ok)
		}
	}
	for _, bad := range []uint64{1, HeaderLen - 1, HeaderLen + 1, HeaderLen + BlockOverhead, HeaderLen + 4128 + 5} {
		if _, ok := c.PlainSize(bad); ok {
			t.Errorf("cipher size %d accepted", bad)
		}
	}
	// Real encryption agrees with the maths.
	_, id, _ := NewHeader()
	for _, n := range []int{1, 4096, 10000} {
		ct, _ := c.Encrypt(nil, make([]byte, n), 0, &id)
		if uint64(HeaderLen+len(ct)) != c.CipherSize(uint64(n)) {
			t.Errorf("%d bytes encrypt to %d, maths says %d", n, HeaderLen+len(ct), c.CipherSize(uint64(n)))
		}
	}
}

// TestContentTamper flips a bit in each region of a block and checks the
// right error, and that blocks cannot be swapped or moved between files.
func TestContentTamper(t *testing.T) {
	c, _ := NewContent(bytes.Repeat([]byte{1}, 32), 4096)
	hdr, id, err := NewHeader()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ParseHeader(hdr); err != nil || got != id {
		t.Fatal("header round trip")
	}
	plain := make([]byte, 3*4096)
	rand.Read(plain)
	ct, _ := c.Encrypt(nil, plain, 0, &id)
	pt, err := c.Decrypt(nil, ct, 0, &id)
	if err != nil || !bytes.Equal(pt, plain) {
		t.Fatal("round trip")
	}
	cbs := int(c.CipherBlockSize())
	for name, off := range map[string]int{"nonce": cbs + 3, "ciphertext": cbs + 100, "tag": 2*cbs - 2} {
		bad := append([]byte(nil), ct...)
		bad[off] ^= 0x10
		pt, err := c.Decrypt(nil, bad, 0, &id)
		var be *BlockError
		if !errors.As(err, &be) || be.Block != 1 || !errors.Is(err, ErrBlock) {
			t.Errorf("%s: got %v, want block 1 error", name, err)
		}
		if !bytes.Equal(pt, plain[:4096]) {
			t.Errorf("%s: block 0 not returned before the bad block", name)
		}
	}
	// Swapped blocks, another file's id, another position.
	swapped := append(append(append([]byte(nil), ct[cbs:2*cbs]...), ct[:cbs]...), ct[2*cbs:]...)
	if _, err := c.Decrypt(nil, swapped, 0, &id); !errors.Is(err, ErrBlock) {
		t.Errorf("swapped blocks accepted")
	}
	_, other, _ := NewHeader()
	if _, err := c.Decrypt(nil, ct, 0, &other); !errors.Is(err, ErrBlock) {
		t.Errorf("block of another file accepted")
	}
	if _, err := c.DecryptBlock(nil, ct[:cbs], 5, &id); !errors.Is(err, ErrBlock) {
		t.Errorf("block at another position accepted")
	}
	// Truncated block, holes.
	if _, err := c.DecryptBlock(nil, ct[:cbs-1], 0, &id); !errors.Is(err, ErrBlock) {
		t.Errorf("truncated block accepted")
	}
	if pt, err := c.DecryptBlock(nil, make([]byte, 100), 0, &id); err != nil || !bytes.Equal(pt, make([]byte, 100-BlockOverhead)) {
		t.Errorf("hole: %v", err)
	}
	// Header damage.
	for name, h := range map[string][]byte{
		"short":   hdr[:5],
		"version": append([]byte{0, 9}, hdr[2:]...),
		"zero id": make([]byte, HeaderLen),
	} {
		if name == "zero id" {
			h[1] = 1
		}
		if _, err := ParseHeader(h); !errors.Is(err, ErrHeader) {
			t.Errorf("header %s: %v", name, err)
		}
	}
	// Nonces differ between encryptions of the same data.
	ct2, _ := c.Encrypt(nil, plain, 0, &id)
	if bytes.Equal(ct[:NonceLen], ct2[:NonceLen]) {
		t.Errorf("nonce reused")
	}
}

func TestLinks(t *testing.T) {
	c, _ := NewContent(bytes.Repeat([]byte{2}, 32), 4096)
	for _, tg := range []string{"a", "../x/y", strings.Repeat("z", 3000)} {
		enc, err := c.EncryptLink(tg)
		if err != nil {
			t.Fatal(err)
		}
		if LinkPlainLen(uint64(len(enc))) != uint64(len(tg)) {
			t.Errorf("link length maths: %d vs %d", LinkPlainLen(uint64(len(enc))), len(tg))
		}
		back, err := c.DecryptLink(enc)
		if err != nil || back != tg {
			t.Errorf("link round trip: %v", err)
		}
		b := []byte(enc)
		b[5] ^= 1
		if _, err := c.DecryptLink(string(b)); err == nil {
			t.Errorf("tampered link accepted")
		}
	}
}

func TestNames(t *testing.T) {
	n, _ := NewNames(bytes.Repeat([]byte{3}, 32))
	iv1, _ := NewDirIV()
	iv2, _ := NewDirIV()
	for _, name := range []string{"a", "hello.txt", strings.Repeat("x", 15), strings.Repeat("x", 16), strings.Repeat("é", 127), strings.Repeat("n", 255)} {
		enc := n.Encrypt(name, iv1)
		if strings.ContainsAny(enc, "./=+") {
			t.Errorf("encoded name %q has a reserved character", enc)
		}
		back, err := n.Decrypt(enc, iv1)
		if err != nil || back != name {
			t.Errorf("round trip %q: %v", name, err)
		}
		if n.Encrypt(name, iv2) == enc {
			t.Errorf("same name encrypts alike in two directories")
		}
		if got, err := n.Decrypt(enc, iv2); err == nil && got == name {
			t.Errorf("decrypts under another directory's IV")
		}
		stored, long := StoredName(enc)
		if long != (len(enc) > MaxName) || len(stored) > MaxName {
			t.Errorf("stored name of %d chars: %d chars, long %v", len(enc), len(stored), long)
		}
		if long {
			if err := CheckLong(stored, enc); err != nil {
				t.Error(err)
			}
			if err := CheckLong(stored, enc[1:]); err == nil {
				t.Errorf("wrong side file accepted")
			}
			if !IsLong(stored) || IsLong(LongSideFile(stored)) || !Reserved(LongSideFile(stored), false) {
				t.Errorf("long-name classification")
			}
		}
	}
	// EME: a common prefix is not visible.
	a, b := n.Encrypt(strings.Repeat("p", 40)+"1", iv1), n.Encrypt(strings.Repeat("p", 40)+"2", iv1)
	if a[:10] == b[:10] {
		t.Errorf("common prefix visible: %s %s", a, b)
	}
	for _, bad := range []string{"", "!!", "AAAA", ".vfsfilter", DirIVFile} {
		if _, err := n.Decrypt(bad, iv1); err == nil {
			t.Errorf("%q decrypts", bad)
		}
	}
	if !Reserved(".vfsfilter", true) || Reserved(".vfsfilter", false) || !Reserved(DirIVFile, false) {
		t.Errorf("reserved names")
	}
}

// TestDecryptAllocs guards the read path against a heap allocation per
// 4 KiB block (the additional data escaping through the AEAD interface):
// a cold read of 512 MiB would make 131072 of them.
func TestDecryptAllocs(t *testing.T) {
	c, _ := NewContent(make([]byte, 32), 4096)
	_, id, _ := NewHeader()
	ct, err := c.Encrypt(nil, make([]byte, 1<<20), 0, &id)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, 0, 1<<20)
	n := testing.AllocsPerRun(10, func() {
		if _, err := c.Decrypt(dst[:0], ct, 0, &id); err != nil {
			t.Fatal(err)
		}
	})
	if n > 1 {
		t.Errorf("Decrypt of 1 MiB: %v allocations, want at most 1", n)
	}
}

func BenchmarkEncrypt1MiB(b *testing.B) {
	c, _ := NewContent(make([]byte, 32), 4096)
	_, id, _ := NewHeader()
	p := make([]byte, 1<<20)
	dst := make([]byte, 0, 2<<20)
	b.SetBytes(1 << 20)
	for b.Loop() {
		c.Encrypt(dst[:0], p, 0, &id)
	}
}

func BenchmarkDecrypt1MiB(b *testing.B) {
	c, _ := NewContent(make([]byte, 32), 4096)
	_, id, _ := NewHeader()
	ct, _ := c.Encrypt(nil, make([]byte, 1<<20), 0, &id)
	dst := make([]byte, 0, 1<<20)
	b.SetBytes(1 << 20)
	for b.Loop() {
		c.Decrypt(dst[:0], ct, 0, &id)
	}
}

func TestParallelCodec(t *testing.T) {
	c, _ := NewContent(bytes.Repeat([]byte{4}, 32), 4096)
	_, id, _ := NewHeader()
	for _, n := range []int{1, 4096, 200 << 10, 1<<20 + 5} {
		plain := make([]byte, n)
		rand.Read(plain)
		ct, err := c.EncryptTo(make([]byte, n+n/4096*BlockOverhead+BlockOverhead), plain, 7, &id)
		if err != nil || len(ct) != int(c.CipherSize(uint64(n))-HeaderLen) {
			t.Fatalf("%d: len %d err %v", n, len(ct), err)
		}
		pt, err := c.DecryptTo(make([]byte, n+4096), ct, 7, &id)
		if err != nil || !bytes.Equal(pt, plain) {
			t.Fatalf("%d: round trip: %v", n, err)
		}
		if n > 8192 {
			ct[len(ct)-10] ^= 1
			pt, err := c.DecryptTo(make([]byte, n+4096), ct, 7, &id)
			if !errors.Is(err, ErrBlock) || len(pt) > n {
				t.Fatalf("%d: damaged last block: %v", n, err)
			}
		}
	}
}
