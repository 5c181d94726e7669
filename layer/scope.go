package layer

import (
	"context"
	"sync"

	"golang.org/x/sys/unix"
)

// lookupScope lets the lookups of one READDIRPLUS request share the
// resolution of their directory.
//
// go-fuse answers READDIRPLUS by calling the open directory's Lookup for
// every entry it puts in the reply. Each of those is a full lookup through
// the stack, and at the bottom each used to resolve the entry's directory
// from the root again (openat2 with RESOLVE_BENEATH, fstatat, close): three
// syscalls where one fstatat does. The bridge makes one lookupScope per
// READDIRPLUS request and hands it down as the Call's context; the first
// lookup that reaches a passthrough resolves the directory from the root
// as always and leaves the fd in the scope, and the following ones use it.
// The scope ends, and its fd is closed, when the next READDIRPLUS request
// on the same open directory begins or when the directory is released.
//
// Why this keeps the passthrough's guarantee. The guarantee is that every
// name is looked up in a directory that openat2 found beneath the backing
// root, following no symlink, during the request that looks it up: an fd
// from openat2 is used for the *at call that comes next and then closed.
// A scope changes how long "next" is, not what is used: the fd comes from
// the same openat2 from the root, it refers to a directory inode, and it is
// used only
//
//   - within the READDIRPLUS request that resolved it, and only while one of
//     that request's lookups runs (the bridge marks the scope active around
//     each lookup; the next request on the directory gets a new scope and
//     ends this one). A filter's goroutine that keeps the context past the
//     lookup finds the scope inactive or ended and resolves from the root;
//   - by the passthrough that resolved it (slots are keyed by passthrough
//     and backing path: two passthroughs in one stack have different roots);
//   - for lookups (fstatat with AT_SYMLINK_NOFOLLOW) of one plain name, never
//     "", "." or "..", and never for a change, an open or a read. A symlink
//     is reported as a symlink, as without the scope.
//
// A directory swapped for a symlink while the request runs is not followed:
// the fd still refers to the directory inode that was there. A directory
// moved elsewhere (even out of the backing dir) while the request runs is,
// for the rest of that request, where its entries are looked up. Without
// the scope the same holds between an openat2 and its fstatat; with it the
// window is the rest of one request (one reply of a few dozen entries)
// instead of one syscall. Either way the directory was beneath the root
// during the request, only attributes are read, and the next request
// resolves from the root again. Nothing is kept across requests: an fd
// kept longer could name a directory that has since left the backing dir
// (renamed directly there, not through the stack), and nothing cheap
// tells when that happened.
type lookupScope struct {
	context.Context // the request's context

	mu sync.Mutex
	// active: a lookup of the request is running; ended: the request is
	// over. A scope serves only when active and not ended.
	active, ended bool
	slots         [2]scopeSlot
}

// scopeSlot is one directory resolved in a scope.
type scopeSlot struct {
	owner *Passthrough // nil: free
	dir   string       // backing path of the directory, relative to owner's root
	fd    int
	users int // lookups using fd now
}

type scopeKey struct{}

func newLookupScope(ctx context.Context) *lookupScope {
	return &lookupScope{Context: ctx}
}

// Value implements context.Context: the scope answers for itself, every
// other key goes to the request's context.
func (s *lookupScope) Value(k any) any {
	if _, ok := k.(scopeKey); ok {
		return s
	}
	return s.Context.Value(k)
}

// scopeOf returns the lookup scope c runs in, or nil.
func scopeOf(c *Call) *lookupScope {
	if c == nil || c.Context == nil {
		return nil
	}
	s, _ := c.Context.Value(scopeKey{}).(*lookupScope)
	return s
}

// begin marks the scope active for one lookup of its request; finish
// ends that.
func (s *lookupScope) begin() {
	s.mu.Lock()
	s.active = true
	s.mu.Unlock()
}

func (s *lookupScope) finish() {
	s.mu.Lock()
	s.active = false
	s.mu.Unlock()
}

// get returns the slot and fd of dir as resolved by p in this scope, or
// -1 when the scope does not hold it (or serves nothing now). The caller
// gives the slot back with release.
func (s *lookupScope) get(p *Passthrough, dir string) (slot, fd int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.active || s.ended {
		return -1, -1
	}
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.owner == p && sl.dir == dir {
			sl.users++
			return i, sl.fd
		}
	}
	return -1, -1
}

// put hands fd, which p just resolved for dir from its root, to the scope
// and returns its slot (in use once, give it back with release). When the
// scope keeps no more directories or has ended it returns -1 and the
// caller keeps (and closes) fd.
func (s *lookupScope) put(p *Passthrough, dir string, fd int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.active || s.ended {
		return -1
	}
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.owner == nil {
			*sl = scopeSlot{owner: p, dir: dir, fd: fd, users: 1}
			return i
		}
	}
	return -1
}

// release gives back a slot from get or put.
func (s *lookupScope) release(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := &s.slots[i]
	sl.users--
	if s.ended && sl.users == 0 {
		s.free(sl)
	}
}

// end closes the scope: nothing is served or kept any more, and every fd
// is closed as soon as no lookup uses it.
func (s *lookupScope) end() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	for i := range s.slots {
		if sl := &s.slots[i]; sl.owner != nil && sl.users == 0 {
			s.free(sl)
		}
	}
}

func (s *lookupScope) free(sl *scopeSlot) {
	if sl.owner != nil {
		unix.Close(sl.fd)
	}
	*sl = scopeSlot{}
}
