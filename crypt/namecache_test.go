package crypt

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func testNames(t testing.TB) *Names {
	n, err := NewNames(bytes.Repeat([]byte{5}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNameCache: the cache answers what the codec answers, per IV, in both
// directions, and stays within its bound.
func TestNameCache(t *testing.T) {
	n := testNames(t)
	c := newNameCache(n, 64)
	iv1, _ := NewDirIV()
	iv2, _ := NewDirIV()
	names := []string{"a", "hello.txt", strings.Repeat("x", 16), strings.Repeat("é", 127), strings.Repeat("n", 255)}
	garbage := map[string]bool{}
	for round := range 2 { // the second round is served from the cache
		for _, name := range names {
			for _, iv := range [][]byte{iv1, iv2} {
				want := n.Encrypt(name, iv)
				if got := c.Encrypt(name, iv); got != want {
					t.Fatalf("round %d: Encrypt(%q) = %q, want %q", round, name, got, want)
				}
				if got, err := c.Decrypt(want, iv); err != nil || got != name {
					t.Fatalf("round %d: Decrypt: %q %v", round, got, err)
				}
			}
			// Two IVs, two entries: the second IV's answer is never the
			// first's.
			if c.Encrypt(name, iv1) == c.Encrypt(name, iv2) {
				t.Errorf("%q: same encryption under two IVs", name)
			}
			// A name under the wrong IV does not decrypt, cached or not.
			// (It may decrypt to some other valid name, about once in
			// 256 tries: the padding check is all EME has. Such a name
			// is cached like any other.)
			if got, err := c.Decrypt(c.Encrypt(name, iv1), iv2); err == nil && got == name {
				t.Errorf("%q decrypts under the other IV", name)
			} else if err == nil {
				garbage[got] = true
			}
		}
	}
	if e, d := c.len(); e != 2*len(names)+len(garbage) || d != 2*len(names)+len(garbage) {
		t.Errorf("entries %d/%d, want %d each", e, d, 2*len(names)+len(garbage))
	}

	// Decrypting seeds encryption (a fresh cache: the listing comes
	// first, as in a new mount's rm -rf).
	c = newNameCache(n, 64)
	enc := n.Encrypt("listed", iv1)
	if got, err := c.Decrypt(enc, iv1); err != nil || got != "listed" {
		t.Fatalf("Decrypt: %q %v", got, err)
	}
	if e, _ := c.len(); e != 1 {
		t.Errorf("decrypt did not seed the encryption side")
	}
	if c.Encrypt("listed", iv1) != enc {
		t.Errorf("seeded encryption differs")
	}

	// A stored name with non-zero base64 trailing bits decrypts to the
	// same name, but is not what Encrypt makes: it must not be entered
	// for the encryption side.
	c = newNameCache(n, 64)
	enc = n.Encrypt("abc", iv1) // 16 bytes: 22 characters, 4 spare bits
	last := strings.IndexByte(b64alphabet, enc[len(enc)-1])
	odd := enc[:len(enc)-1] + string(b64alphabet[last^1])
	if got, err := c.Decrypt(odd, iv1); err != nil || got != "abc" {
		t.Fatalf("non-canonical name: %q %v", got, err)
	}
	if got := c.Encrypt("abc", iv1); got != enc {
		t.Errorf("Encrypt after a non-canonical Decrypt: %q, want %q", got, enc)
	}

	// Names Decrypt refuses are not entered for decryption.
	c = newNameCache(n, 64)
	for _, bad := range []string{".", ".."} {
		enc := c.Encrypt(bad, iv1)
		if _, err := c.Decrypt(enc, iv1); err == nil {
			t.Errorf("%q decrypts through the cache", bad)
		}
	}
	for _, bad := range []string{"", "!!", "AAAA"} {
		if _, err := c.Decrypt(bad, iv1); err == nil {
			t.Errorf("%q decrypts", bad)
		}
	}
	if _, d := c.len(); d != 0 {
		t.Errorf("%d decryption entries for names that do not decrypt", d)
	}

	// The bound.
	c = newNameCache(n, 10)
	for i := range 100 {
		c.Encrypt(fmt.Sprint("f", i), iv1)
		if e, d := c.len(); e > 10 || d > 10 {
			t.Fatalf("after %d names: %d/%d entries, bound 10", i+1, e, d)
		}
	}

}

const b64alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// TestNameCacheConcurrent: many goroutines on overlapping names and IVs,
// with a bound small enough that the maps are cleared all the time; every
// answer must be the codec's (run with -race).
func TestNameCacheConcurrent(t *testing.T) {
	n := testNames(t)
	c := newNameCache(n, 16)
	var ivs [][]byte
	for range 4 {
		iv, _ := NewDirIV()
		ivs = append(ivs, iv)
	}
	type pair struct{ name, enc string }
	want := map[string][]pair{}
	for _, iv := range ivs {
		for j := range 40 {
			name := fmt.Sprintf("file-%d", j)
			want[string(iv)] = append(want[string(iv)], pair{name, n.Encrypt(name, iv)})
		}
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 2000 {
				iv := ivs[(g+k)%len(ivs)]
				p := want[string(iv)][(g*7+k)%40]
				if k%2 == 0 {
					if got := c.Encrypt(p.name, iv); got != p.enc {
						t.Errorf("Encrypt(%q) = %q, want %q", p.name, got, p.enc)
						return
					}
				} else if got, err := c.Decrypt(p.enc, iv); err != nil || got != p.name {
					t.Errorf("Decrypt(%q) = %q %v, want %q", p.enc, got, err, p.name)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkNamesEncrypt: the codec alone against the cache's hits, for a
// typical name (a path's leaf, as every request encrypts it).
func BenchmarkNamesEncrypt(b *testing.B) {
	n := testNames(b)
	iv, _ := NewDirIV()
	path := "src/net/http/transport_test.go"
	name := path[strings.LastIndexByte(path, '/')+1:]
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n.Encrypt(name, iv)
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := newNameCache(n, nameCacheMax)
		c.Encrypt(name, iv)
		b.ReportAllocs()
		for b.Loop() {
			c.Encrypt(name, iv)
		}
	})
	b.Run("cached-parallel", func(b *testing.B) {
		c := newNameCache(n, nameCacheMax)
		c.Encrypt(name, iv)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c.Encrypt(name, iv)
			}
		})
	})
	b.Run("miss", func(b *testing.B) {
		// A new name every time: the cost of a miss (the codec, the
		// copies, the inserts and the periodic clears).
		c := newNameCache(n, nameCacheMax)
		names := make([]string, 4*nameCacheMax)
		for i := range names {
			names[i] = fmt.Sprintf("name-%d.go", i)
		}
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			c.Encrypt(names[i%len(names)], iv)
			i++
		}
	})
}

// BenchmarkNamesDecrypt: the codec alone against the cache's hits.
func BenchmarkNamesDecrypt(b *testing.B) {
	n := testNames(b)
	iv, _ := NewDirIV()
	enc := n.Encrypt("transport_test.go", iv)
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n.Decrypt(enc, iv)
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := newNameCache(n, nameCacheMax)
		c.Decrypt(enc, iv)
		b.ReportAllocs()
		for b.Loop() {
			c.Decrypt(enc, iv)
		}
	})
}
