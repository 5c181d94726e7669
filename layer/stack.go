package layer

import (
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Layer is anything that carries ops: the whole stack seen from the top, or
// the part of it below one filter (Attachment.Below).
type Layer interface {
	// Do runs op and returns its errno. It may block for long (a recall);
	// callers must not assume it completes at once, and must not hold a
	// lock that the layers below could need.
	Do(c *Call, op Op) Errno
}

// Stack is an ordered set of filters; the last (lowest altitude) must
// complete every op it is given, as the passthrough does.
type Stack struct {
	filters []Filter
	atts    []*Attachment
	// chains[k] lists the levels that registered a pre or post callback
	// for kind k, top first.
	chains [numKinds][]int

	subMu sync.RWMutex
	subs  []func(Event)
}

// NewStack builds a stack from filters in any order; they are sorted by
// altitude. The filter with the lowest altitude is the bottom.
func NewStack(log *slog.Logger, filters ...Filter) (*Stack, error) {
	if log == nil {
		log = slog.Default()
	}
	fs := append([]Filter(nil), filters...)
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].Altitude() > fs[j].Altitude() })
	for i := 1; i < len(fs); i++ {
		if fs[i].Altitude() == fs[i-1].Altitude() {
			return nil, fmt.Errorf("filters %s and %s share altitude %d", fs[i-1].Name(), fs[i].Name(), fs[i].Altitude())
		}
	}
	if len(fs) == 0 {
		return nil, fmt.Errorf("empty stack")
	}
	s := &Stack{filters: fs}
	for i, f := range fs {
		s.atts = append(s.atts, &Attachment{
			stack: s,
			level: i,
			Log:   log.With("filter", f.Name()),
			Below: below{s, i + 1},
		})
	}
	// Attach bottom first, and rebuild the chains after each, so a filter
	// may use its Below layer while it attaches (to recover in-flight work
	// or read its own files, say): everything below it is complete.
	for i := len(fs) - 1; i >= 0; i-- {
		if err := fs[i].Attach(s.atts[i]); err != nil {
			return nil, fmt.Errorf("attach %s: %w", fs[i].Name(), err)
		}
		s.buildChains()
	}
	return s, nil
}

// buildChains lists, per kind of op, the levels that registered for it.
func (s *Stack) buildChains() {
	for k := OpKind(0); k < numKinds; k++ {
		s.chains[k] = s.chains[k][:0]
		for i, a := range s.atts {
			if a.pre[k] != nil || a.post[k] != nil {
				s.chains[k] = append(s.chains[k], i)
			}
		}
	}
}

// Close closes every filter that implements io.Closer, top first, and
// returns the first error.
func (s *Stack) Close() error {
	var first error
	for _, f := range s.filters {
		if c, ok := f.(io.Closer); ok {
			if err := c.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// Filters returns the filters, top first.
func (s *Stack) Filters() []Filter { return s.filters }

// Do runs op from the top of the stack.
func (s *Stack) Do(c *Call, op Op) Errno { return s.do(c, op, 0) }

type below struct {
	s    *Stack
	from int
}

func (b below) Do(c *Call, op Op) Errno { return b.s.do(c, op, b.from) }

// maxDepth bounds the number of filters; the post-callback set is a bitmask.
const maxDepth = 64

func (s *Stack) do(c *Call, op Op, from int) Errno {
	chain := s.chains[op.Kind()]
	k := op.Kind()
	var wantPost uint64
	errno := Errno(syscall.ENOSYS)
	i := 0
	for i < len(chain) && chain[i] < from {
		i++
	}
	completed := false
	last := i
	for ; i < len(chain); i++ {
		lvl := chain[i]
		a := s.atts[lvl]
		last = i
		if pre := a.pre[k]; pre != nil {
			st, en := pre(c, op)
			if st == Complete {
				errno = en
				completed = true
				break
			}
			if st == ContinueNoPost {
				continue
			}
		}
		if a.post[k] != nil {
			wantPost |= 1 << uint(i)
		}
	}
	if !completed {
		// Nobody completed: the bottom did not register this op.
		errno = syscall.ENOSYS
		last = len(chain)
	}
	for j := last - 1; j >= 0; j-- {
		if wantPost&(1<<uint(j)) != 0 {
			errno = s.atts[chain[j]].post[k](c, op, errno)
		}
	}
	return errno
}

// EventKind is the kind of a change event.
type EventKind uint8

// Event kinds, as users of `vfsfilter watch` see them.
const (
	EventCreate EventKind = iota + 1
	EventRemove
	EventModify
	EventAttrib
	EventRename
	EventRescan
)

func (k EventKind) String() string {
	switch k {
	case EventCreate:
		return "create"
	case EventRemove:
		return "remove"
	case EventModify:
		return "modify"
	case EventAttrib:
		return "attrib"
	case EventRename:
		return "rename"
	case EventRescan:
		return "rescan"
	}
	return "unknown"
}

// Event is a change to the tree, in the names of the layer that holds it.
type Event struct {
	Kind    EventKind
	Path    string
	OldPath string // renames only
	Dir     bool
	Time    time.Time
}

// Subscribe registers fn to receive every event that reaches the top of the
// stack, in the names users see. fn must not block.
func (s *Stack) Subscribe(fn func(Event)) {
	s.subMu.Lock()
	s.subs = append(s.subs, fn)
	s.subMu.Unlock()
}

func (s *Stack) publish(from int, ev Event) {
	for i := from - 1; i >= 0; i-- {
		if ef, ok := s.filters[i].(EventFilter); ok && !ef.FilterEvent(&ev) {
			return
		}
	}
	s.subMu.RLock()
	defer s.subMu.RUnlock()
	for _, fn := range s.subs {
		fn(ev)
	}
}
