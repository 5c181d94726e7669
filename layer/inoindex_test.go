package layer

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
)

// The index holds its nodes weakly and forgets the collected ones.
func TestInoIndexWeak(t *testing.T) {
	var x inoIndex
	assert.True(t, x.empty())
	keep := &node{}
	x.add(7, keep)
	for i := 0; i < 3000; i++ {
		x.add(uint64(1000+i), &node{}) // dropped at once
	}
	assert.Equal(t, []*node{keep}, x.get(7))
	runtime.GC()
	runtime.GC()
	assert.Empty(t, x.get(1000))
	x.mu.Lock()
	assert.GreaterOrEqual(t, x.sweepAt, len(x.m), "swept as it grew")
	x.sweep()
	n := len(x.m)
	x.mu.Unlock()
	assert.Less(t, n, 100, "numbers of collected nodes are swept")
	assert.Equal(t, []*node{keep}, x.get(7))
	runtime.KeepAlive(keep)
}
