package layer

import (
	"sync"
	"syscall"
	"weak"

	"github.com/hanwen/go-fuse/v2/fs"
)

// inoIndex finds the go-fuse inodes of non-directories by inode number.
//
// Why: the kernel caches a file's attributes and pages per inode, but
// Invalidate learns of a change made underneath by the name it was made
// through. A file with several hard links may be known to the kernel by
// one name while another program writes it through another; the name
// walk (Server.inode) then finds nothing, and the kernel would show the
// old size and contents until its caches expire (30 s with the long
// defaults). With the index, Invalidate looks the changed name up through
// the stack, and when the file has more than one link it invalidates the
// inode the kernel knows under whatever name.
//
// go-fuse keeps one Inode per StableAttr, but it does not say which of the
// nodes a lookup offered it kept: NewInode always makes a fresh one and
// the bridge drops it when the inode number is already known. So the index
// holds every node made for an inode number, weakly: nodes go-fuse dropped
// (or the kernel forgot) are collected as if the index did not exist, and
// the index forgets them when it next looks. Invalidating a dropped node
// costs one notification the kernel answers with ENOENT, which is
// harmless.
type inoIndex struct {
	mu sync.Mutex
	m  map[uint64][]weak.Pointer[node]
	// sweepAt is the size of m at which add next drops the numbers whose
	// nodes are all collected; it doubles with what survives, so sweeping
	// costs O(1) per add.
	sweepAt int
}

// add records n as a node of inode number ino.
func (x *inoIndex) add(ino uint64, n *node) {
	p := weak.Make(n)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m == nil {
		x.m = make(map[uint64][]weak.Pointer[node])
		x.sweepAt = 1024
	}
	x.m[ino] = append(live(x.m[ino]), p)
	if len(x.m) >= x.sweepAt {
		x.sweep()
	}
}

// sweep drops the numbers whose nodes are all collected. x.mu is held.
func (x *inoIndex) sweep() {
	for k, ps := range x.m {
		if ps = live(ps); len(ps) == 0 {
			delete(x.m, k)
		} else {
			x.m[k] = ps
		}
	}
	x.sweepAt = max(1024, 2*len(x.m))
}

// empty reports whether no node was ever added.
func (x *inoIndex) empty() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.m) == 0
}

// get returns the nodes of inode number ino that are still alive: the one
// in go-fuse's tree (rarely two, see Server.invalidateFile) and those it
// dropped that are not yet collected.
func (x *inoIndex) get(ino uint64) []*node {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []*node
	for _, p := range x.m[ino] {
		if n := p.Value(); n != nil {
			out = append(out, n)
		}
	}
	return out
}

// live returns ps without the pointers whose nodes were collected,
// reusing its array.
func live(ps []weak.Pointer[node]) []weak.Pointer[node] {
	out := ps[:0]
	for _, p := range ps {
		if p.Value() != nil {
			out = append(out, p)
		}
	}
	clear(ps[len(out):])
	return out
}

// knownInode returns the inode of a non-directory of type typ (S_IFMT
// bits) and inode number ino that is in go-fuse's tree (the kernel knows
// it by some name), or nil.
func (br *bridge) knownInode(ino uint64, typ uint32) *fs.Inode {
	for _, n := range br.links.get(ino) {
		in := n.EmbeddedInode()
		if in.StableAttr().Mode == typ&syscall.S_IFMT && inTree(in) {
			return in
		}
	}
	return nil
}

// inTree reports whether in is its parent's child under the name it
// records last. Having a parent is not enough: when go-fuse puts a new
// node under a name (a LOOKUP, MKNOD or CREATE answered with a node it did
// not know), the node it replaces keeps that name among its parents, and
// keeps it after the kernel forgets it. Answering the kernel with such a
// node gives it a second inode for the file, whose cached size and pages
// no write through the other name updates.
func inTree(in *fs.Inode) bool {
	name, parent := in.Parent()
	return parent != nil && parent.GetChild(name) == in
}
