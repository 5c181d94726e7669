package notify_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"github.com/vfsfilter/vfsfilter/layer/namespace"
	"github.com/vfsfilter/vfsfilter/notify"
)

// rig is a live mount with the notifier in its stack.
type rig struct {
	mnt, backing string
	srv          *layer.Server
	n            *notify.Notifier
	rec          *recorder
}

type rigOpts struct {
	watcher  string // "", "fanotify", "inotify"
	noReplay bool
	hide     []string
	rename   [][2]string // backing, visible
	mount    layer.MountOptions
	extra    []layer.Filter // more filters for the stack
	// beforeReplay runs on the replay thread before each event's replay.
	beforeReplay func(layer.Event)
}

func newRig(t testing.TB, o rigOpts) *rig {
	t.Helper()
	conformance.RequireFUSE(t)
	r := &rig{backing: t.TempDir(), mnt: t.TempDir()}
	st := r.stack(t, o)
	srv, err := layer.Mount(r.mnt, st, o.mount)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	r.srv = srv
	t.Cleanup(func() { st.Close() })
	conformance.UnmountAtEnd(t, srv) // runs first
	if err := r.n.Serve(srv); err != nil {
		t.Fatal(err)
	}
	r.rec = record(t, r.n)
	return r
}

func (r *rig) stack(t testing.TB, o rigOpts) *layer.Stack {
	pt, err := layer.NewPassthrough(r.backing)
	if err != nil {
		t.Fatal(err)
	}
	n, err := notify.New(notify.Options{Backing: r.backing, Watcher: o.watcher, NoReplay: o.noReplay})
	if err != nil {
		t.Fatal(err)
	}
	r.n = n
	if o.beforeReplay != nil {
		n.SetBeforeReplay(o.beforeReplay)
	}
	filters := append([]layer.Filter{pt, n.Source(), n.Filter()}, o.extra...)
	if len(o.hide) > 0 || len(o.rename) > 0 {
		rules := &namespace.Rules{}
		for _, h := range o.hide {
			if err := rules.AddHide(h); err != nil {
				t.Fatal(err)
			}
		}
		for _, rn := range o.rename {
			must(t, rules.AddRename(namespace.RenameRule{Backing: rn[0], Visible: rn[1]}))
		}
		m, err := rules.Compile(namespace.CompileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ns, err := namespace.New(m)
		if err != nil {
			t.Fatal(err)
		}
		filters = append(filters, ns)
	}
	st, err := layer.NewStack(nil, filters...)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// recorder collects the events a subscriber gets.
type recorder struct {
	mu   sync.Mutex
	evs  []notify.WireEvent
	cond chan struct{}
}

func record(t testing.TB, n *notify.Notifier) *recorder {
	rec := &recorder{cond: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	sub := n.Subscribe()
	go func() {
		defer close(done)
		defer sub.Close()
		for {
			ev, source, err := sub.Next(ctx)
			if err != nil {
				return
			}
			rec.mu.Lock()
			rec.evs = append(rec.evs, notify.Wire(ev, source))
			rec.mu.Unlock()
			select {
			case rec.cond <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return rec
}

func (w notifyWant) String() string {
	s := w.event + " " + w.path
	if w.old != "" {
		s = w.event + " " + w.old + " -> " + w.path
	}
	if w.source != "" {
		s += " (" + w.source + ")"
	}
	return s
}

type notifyWant struct{ event, path, old, source string }

func (w notifyWant) matches(e notify.WireEvent) bool {
	return e.Event == w.event && e.Path == w.path && e.OldPath == w.old && (w.source == "" || w.source == e.Source)
}

// wait waits until every want was seen (in order) and returns the events.
func (rec *recorder) wait(t testing.TB, wants ...notifyWant) []notify.WireEvent {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		rec.mu.Lock()
		evs := append([]notify.WireEvent(nil), rec.evs...)
		rec.mu.Unlock()
		i := 0
		for _, e := range evs {
			if i < len(wants) && wants[i].matches(e) {
				i++
			}
		}
		if i == len(wants) {
			return evs
		}
		select {
		case <-rec.cond:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("did not see %v (in order); got:\n%s", wants[i:], dump(evs))
		}
	}
}

func (rec *recorder) reset() {
	rec.mu.Lock()
	rec.evs = nil
	rec.mu.Unlock()
}

func (rec *recorder) all() []notify.WireEvent {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]notify.WireEvent(nil), rec.evs...)
}

func dump(evs []notify.WireEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s %q old=%q dir=%v src=%s\n", e.Event, e.Path, e.OldPath, e.Dir, e.Source)
	}
	return b.String()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func write(t testing.TB, p, s string) { t.Helper(); must(t, os.WriteFile(p, []byte(s), 0o644)) }

// sh runs a shell script in another process: changes "made underneath by
// another program". The test process itself serves the mount, so its own
// changes to the backing dir would count as the daemon's.
func sh(t testing.TB, dir, script string) {
	t.Helper()
	// The shell changes into dir itself: with the daemon in this process,
	// a chdir into the mount between fork and exec (cmd.Dir) would wait
	// for a FUSE_ACCESS that this process serves, while the forking
	// thread holds its P outside a syscall, so a GC stopping the world
	// never completes: a deadlock (Go runs the child's chdir before
	// exec, with the parent suspended by vfork).
	cmd := exec.Command("/bin/sh", "-ec", "cd \"$1\"\n"+script, "sh", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sh %q: %v\n%s", script, err, out)
	}
}
