package notify_test

import (
	"bufio"
	"context"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/notify"
)

// worker is a filter between the notify source and the top that does work
// of its own below it, as HSM and crypt do: ops marked Call.Internal, and
// syscalls on the fds of handles the layer below opened.
type worker struct{ att *layer.Attachment }

func (w *worker) Name() string                     { return "worker" }
func (w *worker) Altitude() int                    { return 100 }
func (w *worker) Attach(a *layer.Attachment) error { w.att = a; return nil }

func (w *worker) do(t *testing.T, op layer.Op) {
	t.Helper()
	if errno := w.att.Below.Do(layer.InternalCall(context.Background()), op); errno != 0 {
		t.Fatalf("%s: %v", op.Kind(), errno)
	}
}

// TestFiltersOwnWorkInvisible: what filters do below themselves is never
// reported, whatever the backing watch; even inotify, which cannot tell
// who made a change.
func TestFiltersOwnWorkInvisible(t *testing.T) {
	for _, wname := range []string{"fanotify", "inotify"} {
		t.Run(wname, func(t *testing.T) {
			w := &worker{}
			r := newRig(t, rigOpts{watcher: wname, extra: []layer.Filter{w}})
			sh(t, r.backing, "echo x > f; mkdir d")
			r.rec.wait(t, notifyWant{"create", "d", "", "backing"})
			r.rec.reset()

			// Ops.
			cr := &layer.CreateOp{Path: "own", Flags: syscall.O_WRONLY, Mode: 0o644}
			w.do(t, cr)
			w.do(t, &layer.WriteOp{Handle: cr.Handle, Data: []byte("header")})
			w.do(t, &layer.ReleaseOp{Handle: cr.Handle})
			sa := &layer.SetattrOp{Path: "f"}
			sa.In.Valid = fuse.FATTR_MODE
			sa.In.Mode = 0o600
			w.do(t, sa)
			w.do(t, &layer.SetxattrOp{Path: "f", Name: "trusted.vfsfilter-test", Data: []byte("1")})
			w.do(t, &layer.RemovexattrOp{Path: "f", Name: "trusted.vfsfilter-test"})
			w.do(t, &layer.MkdirOp{Path: "d/sub", Mode: 0o755})
			w.do(t, &layer.RenameOp{OldPath: "own", NewPath: "d/own2"})
			w.do(t, &layer.UnlinkOp{Path: "d/own2"})
			w.do(t, &layer.RmdirOp{Path: "d/sub"})
			w.do(t, &layer.SymlinkOp{Path: "l", Target: "f"})
			w.do(t, &layer.UnlinkOp{Path: "l"})
			// Syscalls on the fd of a handle opened below (HSM's
			// migration and recall work this way).
			op := &layer.OpenOp{Path: "f", Flags: syscall.O_RDWR}
			w.do(t, op)
			must(t, unix.Fsetxattr(op.Handle.Fd, "trusted.vfsfilter-test", []byte("2"), 0))
			must(t, unix.Ftruncate(op.Handle.Fd, 0))
			if _, err := unix.Pwrite(op.Handle.Fd, []byte("recalled data"), 0); err != nil {
				t.Fatal(err)
			}
			w.do(t, &layer.ReleaseOp{Handle: op.Handle})

			// A change by another program: once it is seen, the
			// backing watch delivered everything before it.
			sh(t, r.backing, "touch marker")
			evs := r.rec.wait(t, notifyWant{"create", "marker", "", "backing"})
			for _, e := range evs {
				if e.Path != "marker" && e.Event != "rescan" {
					t.Errorf("a filter's own work was reported: %+v\n%s", e, dump(evs))
				}
			}
		})
	}
}

// TestChangeUnderneathAfterWriteReported: a change made underneath right
// after a file written through the mount was closed is a change of its
// own, not the late report of the write.
func TestChangeUnderneathAfterWriteReported(t *testing.T) {
	for _, wname := range []string{"fanotify", "inotify"} {
		t.Run(wname, func(t *testing.T) {
			r := newRig(t, rigOpts{watcher: wname})
			// From other processes: fanotify drops the events of the
			// daemon's own pid, which in this test is ours.
			sh(t, r.mnt, "echo data > f")
			sh(t, r.backing, "echo more >> f")
			r.rec.wait(t, notifyWant{"modify", "f", "", "mount"}, notifyWant{"modify", "f", "", "backing"})
			// And a metadata change alone.
			sh(t, r.mnt, "echo data > g")
			sh(t, r.backing, "chmod 600 g")
			r.rec.wait(t, notifyWant{"modify", "g", "", "mount"}, notifyWant{"attrib", "g", "", "backing"})
		})
	}
}

// releaseGate holds users' RELEASE requests until opened: the kernel
// sends RELEASE some time after the last close(2) returned, and under load
// that moment can be long.
type releaseGate struct {
	gate chan struct{}
	once sync.Once
}

func (g *releaseGate) Name() string  { return "release-gate" }
func (g *releaseGate) Altitude() int { return 100 }
func (g *releaseGate) Attach(a *layer.Attachment) error {
	layer.OnPre(a, func(c *layer.Call, op *layer.ReleaseOp) (layer.Status, layer.Errno) {
		if !c.Internal {
			<-g.gate
		}
		return layer.ContinueNoPost, 0
	})
	return nil
}

// open lets the held RELEASE requests and all later ones pass.
func (g *releaseGate) open() { g.once.Do(func() { close(g.gate) }) }

// gatedRig is a rig whose users' RELEASE requests wait for the returned
// function.
func gatedRig(t *testing.T, watcher string) (*rig, func()) {
	g := &releaseGate{gate: make(chan struct{})}
	r := newRig(t, rigOpts{watcher: watcher, extra: []layer.Filter{g}})
	t.Cleanup(g.open) // the unmount waits for the RELEASE
	return r, g.open
}

// TestChangeUnderneathBeforeReleaseReported: a change made underneath
// after a writer's last close but before the kernel's RELEASE of its
// handle is reported once, as the backing's, after the mount's own
// modify; with inotify, which cannot tell who made it, too. (Without the
// stamp of the last close it was taken for the writer's.)
func TestChangeUnderneathBeforeReleaseReported(t *testing.T) {
	for _, wname := range []string{"fanotify", "inotify"} {
		t.Run(wname, func(t *testing.T) {
			r, release := gatedRig(t, wname)
			sh(t, r.mnt, "echo data > f")
			sh(t, r.backing, "echo more >> f")
			release()
			r.rec.wait(t, notifyWant{"modify", "f", "", "mount"}, notifyWant{"modify", "f", "", "backing"})
			// Once the marker is seen, the watch delivered every
			// report of the change before it.
			sh(t, r.backing, "touch marker")
			evs := r.rec.wait(t, notifyWant{"create", "marker", "", "backing"})
			n := 0
			for _, e := range evs {
				if e.Path == "f" && e.Source == "backing" {
					n++
				}
			}
			if n != 1 {
				t.Errorf("the change underneath was reported %d times, want once:\n%s", n, dump(evs))
			}
		})
	}
}

// TestOwnChangesBeforeReleaseNotReported: what the mount itself does to a
// file after its writer's last close and before the RELEASE (chmod,
// rename, link, unlink) is never taken for a change underneath.
func TestOwnChangesBeforeReleaseNotReported(t *testing.T) {
	for _, wname := range []string{"fanotify", "inotify"} {
		t.Run(wname, func(t *testing.T) {
			r, release := gatedRig(t, wname)
			sh(t, r.mnt, "echo a > f; echo b > g; chmod 600 f; mv f f2; ln f2 f3; rm g")
			release()
			sh(t, r.backing, "touch marker")
			evs := r.rec.wait(t, notifyWant{"create", "marker", "", "backing"})
			for _, e := range evs {
				if e.Source == "backing" && e.Path != "marker" {
					t.Errorf("the mount's own change was reported as one underneath: %+v\n%s", e, dump(evs))
				}
			}
		})
	}
}

// TestChangeUnderneathWhileOpenReported: with fanotify, a change made
// underneath by another program while a file is open for writing through
// the mount is reported at once; the writes of the process holding it open
// (FUSE passthrough writes, made under its pid) and of a child writing
// through the inherited descriptor are the mount's, reported at the close.
func TestChangeUnderneathWhileOpenReported(t *testing.T) {
	r := newRig(t, rigOpts{watcher: "fanotify"})
	if r.n.Watcher() != "fanotify" {
		t.Skip("no fanotify")
	}
	// The holder changes into the mount itself (see sh).
	holder := exec.Command("/bin/sh", "-ec", `cd "$1"
exec 3>f
echo a >&3
/bin/sh -c 'echo b >&3'
echo ready
read x
echo c >&3
/bin/sh -c 'echo d >&3'
exec 3>&-
echo closed`, "sh", r.mnt)
	in, err := holder.StdinPipe()
	must(t, err)
	out, err := holder.StdoutPipe()
	must(t, err)
	must(t, holder.Start())
	t.Cleanup(func() { in.Close(); holder.Wait() })
	lines := bufio.NewScanner(out)
	next := func(want string) {
		t.Helper()
		if !lines.Scan() || lines.Text() != want {
			t.Fatalf("holder: got %q (%v), want %q", lines.Text(), lines.Err(), want)
		}
	}
	noBackingModify := func(evs []notify.WireEvent) {
		t.Helper()
		for _, e := range evs {
			if e.Path == "f" && e.Source == "backing" {
				t.Errorf("the holder's write was reported as a change underneath: %+v\n%s", e, dump(evs))
			}
		}
	}
	next("ready")
	sh(t, r.backing, "touch marker1")
	noBackingModify(r.rec.wait(t, notifyWant{"create", "marker1", "", "backing"}))

	r.rec.reset()
	sh(t, r.backing, "echo more >> f")
	r.rec.wait(t, notifyWant{"modify", "f", "", "backing"})

	r.rec.reset()
	_, err = in.Write([]byte("go\n"))
	must(t, err)
	next("closed")
	r.rec.wait(t, notifyWant{"modify", "f", "", "mount"})
	sh(t, r.backing, "touch marker2")
	noBackingModify(r.rec.wait(t, notifyWant{"create", "marker2", "", "backing"}))
}

// TestNoRescanForDirsElsewhere: fanotify watches the whole file system;
// directories elsewhere on it that come and go are none of the mount's
// business and must not turn into rescans.
func TestNoRescanForDirsElsewhere(t *testing.T) {
	r := newRig(t, rigOpts{watcher: "fanotify"})
	if r.n.Watcher() != "fanotify" {
		t.Skip("no fanotify")
	}
	other := t.TempDir() // the same file system as the backing dir
	if out, err := helper(t, "churn", other).Output(); err != nil {
		t.Fatalf("churn: %v %s", err, out)
	}
	sh(t, r.backing, "touch marker")
	evs := r.rec.wait(t, notifyWant{"create", "marker", "", "backing"})
	for _, e := range evs {
		if e.Path != "marker" {
			t.Errorf("unexpected event: %+v\n%s", e, dump(evs))
		}
	}
}

// TestLostDirInsideStillReported: a directory inside the tree that came
// and went before the watch could place it is a rescan of it: what
// happened in it is unknown.
func TestLostDirInsideStillReported(t *testing.T) {
	r := newRig(t, rigOpts{watcher: "fanotify"})
	if r.n.Watcher() != "fanotify" {
		t.Skip("no fanotify")
	}
	cmd := helper(t, "churn", r.backing)
	cmd.Env = append(cmd.Env, "VFS_NOTIFY_CHURN=300")
	if out, err := cmd.Output(); err != nil {
		t.Fatalf("churn: %v %s", err, out)
	}
	sh(t, r.backing, "touch marker")
	evs := r.rec.wait(t, notifyWant{"create", "marker", "", "backing"})
	lost := 0
	for _, e := range evs {
		switch {
		case e.Event == "rescan":
			if !strings.HasPrefix(e.Path, "c") {
				t.Errorf("rescan of %q, want one of a lost directory c<n>", e.Path)
			}
			lost++
		case e.Path != "marker" && !strings.HasPrefix(e.Path, "c"):
			t.Errorf("unexpected event: %+v\n%s", e, dump(evs))
		}
	}
	t.Logf("%d events, %d rescans", len(evs), lost)
}
