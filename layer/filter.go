package layer

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Altitudes of the filters this project ships. A higher altitude sits nearer
// the user and sees each request first; see doc.go for why the order is
// notify > namespace > crypt > hsm > passthrough.
const (
	AltitudeNotify      = 500
	AltitudeNamespace   = 400
	AltitudeCrypt       = 300
	AltitudeHSM         = 200
	AltitudePassthrough = 0
)

// Status is what a pre-callback decides.
type Status uint8

const (
	// Continue passes the request down and asks for the post-callback.
	Continue Status = iota
	// ContinueNoPost passes the request down; this filter's post-callback
	// is skipped for this request.
	ContinueNoPost
	// Complete ends the request at this filter: nothing below runs, this
	// filter's post-callback does not run, the post-callbacks of the
	// filters above still do. The errno returned with it is the result.
	Complete
)

// PreFunc is a pre-operation callback for op type O. It may read and change
// the op's inputs. The errno is used only with Complete.
type PreFunc[O Op] func(c *Call, op O) (Status, Errno)

// PostFunc is a post-operation callback for op type O. It sees the result
// errno of the layers below and returns the errno to pass up; it may change
// the op's outputs.
type PostFunc[O Op] func(c *Call, op O, errno Errno) Errno

// Filter is one layer of the stack. A filter registers the callbacks it
// needs in Attach; every operation it does not register passes it at no cost.
type Filter interface {
	// Name is a short identifier used in logs ("namespace", "hsm").
	Name() string
	// Altitude orders the stack: higher is nearer the user. Two filters
	// may not share an altitude.
	Altitude() int
	// Attach is called once while the stack is built, top filter first.
	// The filter registers its callbacks with OnPre/OnPost and keeps a for
	// its own I/O (a.Below) and its context slots.
	Attach(a *Attachment) error
}

// EventFilter is implemented by filters that translate change events found
// below them on their way up (issue "notify"): rewrite the paths into the
// names the layers above use, or drop the event (return false) when it
// concerns something the filter hides or its own behind-the-scenes work.
type EventFilter interface {
	FilterEvent(ev *Event) bool
}

// Attachment is a filter's instance in one stack: its position, its handle
// on the layers below, and its registrations.
type Attachment struct {
	stack *Stack
	level int // index in stack.filters, 0 is the top
	// Log is the filter's logger (slog with a "filter" attribute).
	Log *slog.Logger
	// Below dispatches to the layers under this filter. A filter's own I/O
	// (reading a file to migrate it, writing recalled data) must go here,
	// never through the mountpoint, which would re-enter the stack from the
	// top and can deadlock.
	Below Layer

	pre  [numKinds]func(*Call, Op) (Status, Errno)
	post [numKinds]func(*Call, Op, Errno) Errno
}

// OnPre registers f as the pre-callback of a for ops of type O.
func OnPre[O Op](a *Attachment, f PreFunc[O]) {
	var zero O
	a.pre[zero.Kind()] = func(c *Call, op Op) (Status, Errno) { return f(c, op.(O)) }
}

// OnPost registers f as the post-callback of a for ops of type O.
func OnPost[O Op](a *Attachment, f PostFunc[O]) {
	var zero O
	a.post[zero.Kind()] = func(c *Call, op Op, errno Errno) Errno { return f(c, op.(O), errno) }
}

// Publish sends an event found at this filter's level (or below it) up
// through the filters above it, each of which may translate or drop it,
// and then to the stack's subscribers.
func (a *Attachment) Publish(ev Event) {
	a.stack.publish(a.level, ev)
}

// NodeContext returns this filter's context stored on n, or nil.
func (a *Attachment) NodeContext(n *Node) any {
	if n == nil {
		return nil
	}
	return n.slot(a.level)
}

// SetNodeContext stores v as this filter's context on n.
func (a *Attachment) SetNodeContext(n *Node, v any) {
	if n != nil {
		n.setSlot(a.level, len(a.stack.filters), v)
	}
}

// HandleContext returns this filter's context stored on h, or nil.
func (a *Attachment) HandleContext(h *Handle) any {
	if h == nil {
		return nil
	}
	return h.slot(a.level)
}

// SetHandleContext stores v as this filter's context on h.
func (a *Attachment) SetHandleContext(h *Handle, v any) {
	h.setSlot(a.level, len(a.stack.filters), v)
}

// Call describes who issued a request and carries its cancellation: the
// context is cancelled when the kernel interrupts the request (the caller
// got a signal), so long work (a recall) must watch it and return EINTR.
type Call struct {
	context.Context
	Uid, Gid, Pid uint32
	// Internal marks requests that filters issue for their own work; such
	// requests are not the user's and never produce user-visible events.
	Internal bool
}

// InternalCall returns a Call for a filter's own I/O, running as root.
func InternalCall(ctx context.Context) *Call {
	return &Call{Context: ctx, Internal: true}
}

// slots holds one context value per filter. It is shared by Node and Handle.
type slots struct {
	mu sync.Mutex
	v  []any
}

func (s *slots) slot(i int) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i < len(s.v) {
		return s.v[i]
	}
	return nil
}

func (s *slots) setSlot(i, n int, v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.v == nil {
		s.v = make([]any, n)
	}
	s.v[i] = v
}

// Node is the per-inode state the stack keeps for an entry the kernel knows.
// Filters keep their per-node contexts here (Attachment.NodeContext).
type Node struct {
	slots
}

// Handle is an open file or directory. The layer that completes Open or
// Create fills it in; filters above keep per-open-file contexts in it.
type Handle struct {
	slots
	// Fd is the backing file descriptor, or -1 when the file has none
	// (a virtual file served by a filter).
	Fd int
	// Flags are the open(2) flags the file was opened with.
	Flags uint32
	// Passthrough says the kernel may do reads and writes on Fd directly
	// (FUSE passthrough), bypassing every filter. The bottom layer sets it
	// for plain files; a filter that needs to see the data clears it in its
	// post-callback of Open/Create. The decision holds per inode.
	Passthrough bool
	// KeepCache lets the kernel keep cached pages across opens.
	KeepCache bool
	// DirectIO makes the kernel bypass its page cache for this file.
	DirectIO bool

	// wb is the passthrough's writeback of a sequential stream of
	// large writes (see Passthrough.stream); nil until the first.
	wb atomic.Pointer[streamWriteback]
}

// NewHandle returns a Handle for fd that a layer hands up from Open/Create.
func NewHandle(fd int, flags uint32) *Handle {
	return &Handle{Fd: fd, Flags: flags}
}
