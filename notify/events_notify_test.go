package notify_test

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestEventsThroughMount(t *testing.T) {
	for _, w := range []string{"fanotify", "inotify"} {
		t.Run(w, func(t *testing.T) {
			r := newRig(t, rigOpts{watcher: w})
			m := r.mnt
			write(t, m+"/f", "hello")
			must(t, os.Mkdir(m+"/d", 0o755))
			must(t, os.Chmod(m+"/f", 0o600))
			must(t, os.Rename(m+"/f", m+"/d/g"))
			must(t, os.Remove(m+"/d/g"))
			must(t, os.Remove(m+"/d"))
			evs := r.rec.wait(t,
				notifyWant{"create", "f", "", "mount"},
				notifyWant{"modify", "f", "", "mount"},
				notifyWant{"create", "d", "", "mount"},
				notifyWant{"attrib", "f", "", "mount"},
				notifyWant{"rename", "d/g", "f", "mount"},
				notifyWant{"remove", "d/g", "", "mount"},
				notifyWant{"remove", "d", "", "mount"},
			)
			// The backing watch must not report them again.
			sh(t, r.backing, "touch marker")
			evs = r.rec.wait(t, notifyWant{"create", "marker", "", "backing"})
			for _, e := range evs {
				if e.Source == "backing" && e.Path != "marker" {
					t.Errorf("change through the mount reported again by the backing watch: %+v\n%s", e, dump(evs))
				}
			}
		})
	}
}

func TestEventsUnderneath(t *testing.T) {
	for _, w := range []string{"fanotify", "inotify"} {
		t.Run(w, func(t *testing.T) {
			r := newRig(t, rigOpts{watcher: w})
			// One step at a time: inotify must add a watch on d before
			// anything happens in it (fanotify needs no such care).
			sh(t, r.backing, "echo hello > f; mkdir d")
			r.rec.wait(t,
				notifyWant{"create", "f", "", "backing"},
				notifyWant{"modify", "f", "", "backing"},
				notifyWant{"create", "d", "", "backing"},
			)
			sh(t, r.backing, "chmod 600 f; mv f d/g; rm d/g; rmdir d")
			evs := r.rec.wait(t,
				notifyWant{"attrib", "f", "", "backing"},
				notifyWant{"rename", "d/g", "f", "backing"},
				notifyWant{"remove", "d/g", "", "backing"},
				notifyWant{"remove", "d", "", "backing"},
			)
			for _, e := range evs {
				if e.Source == "mount" {
					t.Errorf("replay leaked into the stream: %+v", e)
				}
			}
			t.Logf("stats %+v", r.n.Stats())
		})
	}
}

// TestPassthroughWriteReportedOnce: a write through the mount goes to the
// backing file in the kernel (FUSE passthrough), under the writer's pid, so
// the backing watch sees it too, possibly after the close. It must still be
// one modify event, from the mount.
func TestPassthroughWriteReportedOnce(t *testing.T) {
	for _, w := range []string{"fanotify", "inotify"} {
		t.Run(w, func(t *testing.T) {
			r := newRig(t, rigOpts{watcher: w})
			// Both from another process: fanotify drops the events of
			// the daemon's own pid, which in this test is ours.
			sh(t, r.mnt, "for i in $(seq 20); do echo data > f$i; done")
			// A marker made underneath after the write: once it is seen,
			// every backing report of the write has been delivered.
			sh(t, r.backing, "echo m > marker")
			evs := r.rec.wait(t, notifyWant{event: "create", path: "marker", source: "backing"})
			modifies := map[string]int{}
			for _, e := range evs {
				if e.Event == "modify" {
					modifies[e.Path]++
				}
			}
			for i := 1; i <= 20; i++ {
				if n := modifies[fmt.Sprintf("f%d", i)]; n != 1 {
					t.Errorf("f%d: %d modify events for one write through the mount, want 1:\n%s", i, n, dump(evs))
				}
			}
		})
	}
}

// TestNoEventsForNamelessFiles: changes through the descriptor of an open
// file whose name is gone (fsetxattr, fchmod) change no name users see,
// so they are reported under none (as on ext4, where only a watch on the
// file itself would see them), and never under the bridge's internal name
// for such a file.
func TestNoEventsForNamelessFiles(t *testing.T) {
	r := newRig(t, rigOpts{})
	m := r.mnt
	write(t, m+"/f", "hello")
	f, err := os.OpenFile(m+"/f", os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	must(t, os.Remove(m+"/f"))
	must(t, unix.Fsetxattr(int(f.Fd()), "user.x", []byte("1"), 0))
	must(t, unix.Fremovexattr(int(f.Fd()), "user.x"))
	must(t, f.Chmod(0o600))
	must(t, f.Close())
	write(t, m+"/marker", "")
	evs := r.rec.wait(t, notifyWant{"remove", "f", "", "mount"}, notifyWant{"create", "marker", "", "mount"})
	for _, e := range evs {
		if e.Path != "f" && e.Path != "marker" {
			t.Errorf("event for a nameless file: %+v\n%s", e, dump(evs))
		}
	}
}
