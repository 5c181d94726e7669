package crypt

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestDirCache: invalidate drops a directory and its subtree (and nothing
// that merely shares a prefix of its name), forget drops the directory
// alone (rmdir's case: it was empty), entries expire after the TTL, and a
// full cache starts over.
func TestDirCache(t *testing.T) {
	fill := func(d *dirCache, paths ...string) {
		for _, p := range paths {
			d.put(p, dirInfo{cpath: "c/" + p})
		}
	}
	cached := func(d *dirCache, paths ...string) []string {
		var out []string
		for _, p := range paths {
			if e, ok := d.get(p); ok {
				assert.Equal(t, "c/"+p, e.cpath)
				out = append(out, p)
			}
		}
		return out
	}
	all := []string{"a", "a/b", "a/b/c", "ab", "ab/c", "x"}

	d := newDirCache(time.Hour, 100)
	fill(d, all...)
	d.invalidate("a")
	assert.Equal(t, []string{"ab", "ab/c", "x"}, cached(d, all...), "invalidate a")

	d = newDirCache(time.Hour, 100)
	fill(d, all...)
	d.forget("a/b/c")
	assert.Equal(t, []string{"a", "a/b", "ab", "ab/c", "x"}, cached(d, all...), "forget a/b/c")

	d = newDirCache(time.Hour, 100)
	fill(d, all...)
	d.invalidate("")
	assert.Empty(t, cached(d, all...), "invalidate of the root")

	d = newDirCache(time.Nanosecond, 100)
	fill(d, "a")
	time.Sleep(time.Millisecond)
	assert.Empty(t, cached(d, "a"), "after the TTL")

	d = newDirCache(time.Hour, 3)
	fill(d, "a", "b", "c", "d")
	assert.Equal(t, []string{"d"}, cached(d, "a", "b", "c", "d"), "a full cache starts over")
}
