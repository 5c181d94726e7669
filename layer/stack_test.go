package layer

import (
	"context"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// traceFilter records its callbacks in a shared log and acts as told.
type traceFilter struct {
	name     string
	alt      int
	log      *[]string
	pre      Status
	errno    Errno
	noPost   bool
	att      *Attachment
	register bool
}

func (f *traceFilter) Name() string  { return f.name }
func (f *traceFilter) Altitude() int { return f.alt }
func (f *traceFilter) Attach(a *Attachment) error {
	f.att = a
	if !f.register {
		return nil
	}
	OnPre(a, func(c *Call, op *LookupOp) (Status, Errno) {
		*f.log = append(*f.log, "pre "+f.name)
		op.Path += "/" + f.name
		return f.pre, f.errno
	})
	if !f.noPost {
		OnPost(a, func(c *Call, op *LookupOp, errno Errno) Errno {
			*f.log = append(*f.log, "post "+f.name+" "+errno.Error())
			return errno
		})
	}
	return nil
}

func newTrace(t *testing.T, fs ...*traceFilter) (*Stack, *[]string) {
	log := &[]string{}
	var filters []Filter
	for _, f := range fs {
		f.log = log
		f.register = true
		filters = append(filters, f)
	}
	st, err := NewStack(nil, filters...)
	require.NoError(t, err)
	return st, log
}

func TestStackOrderAndPost(t *testing.T) {
	st, log := newTrace(t,
		&traceFilter{name: "bottom", alt: 0, pre: Complete, errno: 0},
		&traceFilter{name: "top", alt: 500},
		&traceFilter{name: "mid", alt: 300},
	)
	op := &LookupOp{}
	require.Zero(t, st.Do(&Call{Context: context.Background()}, op))
	assert.Equal(t, "/top/mid/bottom", op.Path, "pre-callbacks run top down and see earlier rewrites")
	assert.Equal(t, []string{"pre top", "pre mid", "pre bottom", "post mid errno 0", "post top errno 0"},
		*log, "the completing filter's own post does not run; the others run bottom up")
}

func TestStackCompleteStopsDescent(t *testing.T) {
	st, log := newTrace(t,
		&traceFilter{name: "bottom", alt: 0, pre: Complete},
		&traceFilter{name: "hider", alt: 400, pre: Complete, errno: syscall.ENOENT},
		&traceFilter{name: "top", alt: 500},
	)
	errno := st.Do(&Call{Context: context.Background()}, &LookupOp{})
	assert.Equal(t, syscall.ENOENT, errno)
	assert.Equal(t, []string{"pre top", "pre hider", "post top no such file or directory"}, *log)
}

func TestStackContinueNoPost(t *testing.T) {
	st, log := newTrace(t,
		&traceFilter{name: "bottom", alt: 0, pre: Complete},
		&traceFilter{name: "quiet", alt: 400, pre: ContinueNoPost},
	)
	require.Zero(t, st.Do(&Call{Context: context.Background()}, &LookupOp{}))
	assert.Equal(t, []string{"pre quiet", "pre bottom"}, *log)
}

func TestStackBelowSkipsUpperFilters(t *testing.T) {
	top := &traceFilter{name: "top", alt: 500}
	mid := &traceFilter{name: "mid", alt: 300}
	st, log := newTrace(t, &traceFilter{name: "bottom", alt: 0, pre: Complete}, top, mid)
	_ = st
	op := &LookupOp{}
	require.Zero(t, top.att.Below.Do(InternalCall(context.Background()), op))
	assert.Equal(t, "/mid/bottom", op.Path, "a filter's own I/O starts below it")
	assert.NotContains(t, strings.Join(*log, ","), "top")
}

func TestStackUnregisteredOpReachesNobody(t *testing.T) {
	st, _ := newTrace(t, &traceFilter{name: "bottom", alt: 0, pre: Complete})
	assert.Equal(t, syscall.ENOSYS, st.Do(&Call{Context: context.Background()}, &ReadOp{}),
		"an op the bottom does not complete reports ENOSYS")
	assert.Empty(t, st.chains[KindRead], "no chain for an op nobody registered")
}

func TestStackAltitudeClash(t *testing.T) {
	_, err := NewStack(nil, &traceFilter{name: "a", alt: 1}, &traceFilter{name: "b", alt: 1})
	assert.ErrorContains(t, err, "share altitude")
}

type eventFilter struct {
	traceFilter
	drop string
}

func (f *eventFilter) FilterEvent(ev *Event) bool {
	if ev.Path == f.drop {
		return false
	}
	ev.Path = "visible-" + ev.Path
	return true
}

func TestEventsTravelUp(t *testing.T) {
	bottom := &traceFilter{name: "bottom", alt: 0}
	ef := &eventFilter{traceFilter: traceFilter{name: "ns", alt: 400}, drop: "hidden"}
	st, err := NewStack(nil, bottom, ef)
	require.NoError(t, err)
	var got []string
	st.Subscribe(func(ev Event) { got = append(got, ev.Kind.String()+" "+ev.Path) })
	bottom.att.Publish(Event{Kind: EventCreate, Path: "a"})
	bottom.att.Publish(Event{Kind: EventRemove, Path: "hidden"})
	assert.Equal(t, []string{"create visible-a"}, got)
}

func TestCheckAccess(t *testing.T) {
	a := &Attr{Mode: syscall.S_IFREG | 0640}
	a.Uid, a.Gid = 10, 20
	assert.NoError(t, CheckAccess(a, 10, 99, 6))
	assert.Error(t, CheckAccess(a, 10, 99, 1))
	assert.NoError(t, CheckAccess(a, 11, 20, 4))
	assert.Error(t, CheckAccess(a, 11, 20, 2))
	assert.Error(t, CheckAccess(a, 11, 21, 4))
	assert.NoError(t, CheckAccess(a, 0, 0, 6))
	assert.Error(t, CheckAccess(a, 0, 0, 1), "root needs some execute bit")
}

// belowAtAttach uses its Below layer while it attaches.
type belowAtAttach struct{ got Errno }

func (b *belowAtAttach) Name() string  { return "early" }
func (b *belowAtAttach) Altitude() int { return 300 }
func (b *belowAtAttach) Attach(a *Attachment) error {
	b.got = a.Below.Do(InternalCall(context.Background()), &LookupOp{})
	return nil
}

func TestBelowWorksDuringAttach(t *testing.T) {
	early := &belowAtAttach{}
	_, err := NewStack(nil, &traceFilter{name: "bottom", alt: 0, pre: Complete, register: true, log: &[]string{}}, early)
	require.NoError(t, err)
	assert.Zero(t, early.got, "the layers below are complete when a filter attaches")
}
