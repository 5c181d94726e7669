package notify_test

import (
	"os"
	"testing"
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
