package notify_test

import (
	"os"
	"testing"

	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"github.com/vfsfilter/vfsfilter/notify"
)

// TestNamespaceTranslatesEvents: events found underneath travel up through
// the namespace filter: hidden entries never appear, renamed entries appear
// under their visible names.
func TestNamespaceTranslatesEvents(t *testing.T) {
	for _, w := range []string{"fanotify", "inotify"} {
		t.Run(w, func(t *testing.T) {
			r := newRig(t, rigOpts{watcher: w, hide: []string{"*.tmp", ".git"}, rename: [][2]string{{"README.txt", "README.md"}}})
			sh(t, r.backing, "mkdir .git; touch .git/x a.tmp; echo hi > README.txt; mv a.tmp b.tmp; rm b.tmp; touch plain")
			// Through the mount as well: hidden names cannot be made,
			// renamed ones are reported by their visible name.
			write(t, r.mnt+"/README.md", "through")
			if err := os.WriteFile(r.mnt+"/c.tmp", nil, 0o644); err == nil {
				t.Error("created a hidden name through the mount")
			}
			// The two sources are not ordered with each other.
			r.rec.wait(t, notifyWant{"create", "README.md", "", "backing"}, notifyWant{"create", "plain", "", "backing"})
			evs := r.rec.wait(t, notifyWant{"modify", "README.md", "", "mount"})
			for _, e := range evs {
				for _, p := range []string{e.Path, e.OldPath} {
					if p == "README.txt" || p == ".git" || p == ".git/x" || len(p) > 4 && p[len(p)-4:] == ".tmp" {
						t.Errorf("hidden or backing name leaked: %+v\n%s", e, dump(evs))
					}
				}
			}
		})
	}
}

// notifyStack is a StackFunc with the notifier in the stack (without the
// mount-time parts, which need the server conformance.Mount keeps).
func notifyStack(t testing.TB, backing string) *layer.Stack {
	pt, err := layer.NewPassthrough(backing)
	if err != nil {
		t.Fatal(err)
	}
	n, err := notify.New(notify.Options{Backing: backing})
	if err != nil {
		t.Fatal(err)
	}
	st, err := layer.NewStack(nil, pt, n.Source(), n.Filter())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close(); pt.Close() })
	return st
}

// The stack with notify in it behaves as a local file system, with the
// default timeouts and with long timeouts and cached listings.
func TestConformance(t *testing.T) {
	long := layer.MountOptions{EntryTimeout: 30e9, AttrTimeout: 30e9, CacheDirs: true}
	t.Run("posix", func(t *testing.T) { conformance.RunPosix(t, notifyStack, layer.MountOptions{}) })
	t.Run("scenarios", func(t *testing.T) { conformance.RunScenarios(t, notifyStack, layer.MountOptions{}) })
	t.Run("exerciser", func(t *testing.T) { conformance.RunExerciser(t, notifyStack, layer.MountOptions{}, 300) })
	t.Run("posix-long", func(t *testing.T) { conformance.RunPosix(t, notifyStack, long) })
	t.Run("exerciser-long", func(t *testing.T) { conformance.RunExerciser(t, notifyStack, long, 300) })
}
