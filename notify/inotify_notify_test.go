package notify_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"github.com/vfsfilter/vfsfilter/notify"
)

// TestInotifyOnMountSeesChangesUnderneath runs the real inotifywait on the
// mountpoint and changes the backing dir from another process: the replay
// thread must make the kernel emit the events a local file system would.
func TestInotifyOnMountSeesChangesUnderneath(t *testing.T) {
	if _, err := exec.LookPath("inotifywait"); err != nil {
		t.Skip("inotifywait not installed (.ci/setup-notify.sh installs inotify-tools)")
	}
	r := newRig(t, rigOpts{mount: layer.MountOptions{EntryTimeout: 30 * time.Second, AttrTimeout: 30 * time.Second}})
	sh(t, r.backing, "mkdir d; echo x > d/old")
	time.Sleep(100 * time.Millisecond)
	// inotifywait is a separate process; it runs from outside the mount.
	cmd := exec.Command("inotifywait", "-m", "-r", "--format", "%e %w%f", r.mnt)
	cmd.Dir = "/"
	out, err := cmd.StdoutPipe()
	must(t, err)
	stderr, err := cmd.StderrPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	// Wait until it watches.
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "Watches established") {
			break
		}
	}
	lines := make(chan string, 100)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			lines <- strings.TrimPrefix(s.Text(), "")
		}
		close(lines)
	}()
	expect := func(want ...string) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		var got []string
		for i := 0; i < len(want); {
			select {
			case l := <-lines:
				l = strings.Replace(l, r.mnt+"/", "", 1)
				got = append(got, l)
				if l == want[i] {
					i++
				}
			case <-deadline:
				t.Fatalf("inotifywait: want %q (in order), got %q", want, got)
			}
		}
	}
	sh(t, r.backing, "echo new > d/f")
	expect("CREATE d/f", "MODIFY d/f")
	sh(t, r.backing, "chmod 600 d/f")
	expect("ATTRIB d/f")
	sh(t, r.backing, "mv d/f d/g")
	expect("MOVED_FROM d/f", "MOVED_TO d/g")
	sh(t, r.backing, "rm d/g d/old")
	expect("DELETE d/g", "DELETE d/old")
	sh(t, r.backing, "mkdir d/sub")
	expect("CREATE,ISDIR d/sub")
	sh(t, r.backing, "rmdir d/sub")
	expect("DELETE,ISDIR d/sub")
	// With 30 s timeouts, the mount shows the state underneath at once.
	if _, err := os.Lstat(r.mnt + "/d/g"); !os.IsNotExist(err) {
		t.Errorf("d/g after removal underneath: %v", err)
	}
	t.Logf("stats %+v", r.n.Stats())
}

// TestInvalidationWithLongTimeouts: a stat through the mount sees a change
// made underneath at once although the kernel may cache for 30 s.
func TestInvalidationWithLongTimeouts(t *testing.T) {
	for _, replay := range []bool{true, false} {
		name := "replay"
		if !replay {
			name = "noreplay"
		}
		t.Run(name, func(t *testing.T) {
			r := newRig(t, rigOpts{noReplay: !replay, mount: layer.MountOptions{
				EntryTimeout: 30 * time.Second, AttrTimeout: 30 * time.Second, NegativeTimeout: 30 * time.Second, CacheDirs: true,
			}})
			m := r.mnt
			// Made underneath, not through the mount: a change made
			// underneath between a writer's close and its RELEASE
			// (which the kernel sends later) counts as the writer's.
			sh(t, r.backing, "echo one > f")
			r.rec.wait(t, notifyWant{"create", "f", "", "backing"})
			if _, err := os.Lstat(m + "/g"); !os.IsNotExist(err) {
				t.Fatal(err)
			}
			ents, _ := os.ReadDir(m)
			if len(ents) != 1 {
				t.Fatalf("listing %v", ents)
			}
			sh(t, r.backing, "echo twotwo > f; touch g; chmod 700 f")
			r.rec.wait(t, notifyWant{"attrib", "f", "", "backing"})
			conformance.Eventually(t, func() string {
				st, err := os.Lstat(m + "/f")
				if err != nil || st.Size() != 7 || st.Mode().Perm() != 0o700 {
					return "f not updated"
				}
				if b, _ := os.ReadFile(m + "/f"); string(b) != "twotwo\n" {
					return "f content " + string(b)
				}
				if _, err := os.Lstat(m + "/g"); err != nil {
					return "g: " + err.Error()
				}
				if ents, _ := os.ReadDir(m); len(ents) != 2 {
					return "listing not updated"
				}
				return ""
			})
			sh(t, r.backing, "rm g; mv f h")
			r.rec.wait(t, notifyWant{"rename", "h", "f", "backing"})
			conformance.Eventually(t, func() string {
				if _, err := os.Lstat(m + "/g"); !os.IsNotExist(err) {
					return "g still there"
				}
				if _, err := os.Lstat(m + "/f"); !os.IsNotExist(err) {
					return "f still there"
				}
				if b, err := os.ReadFile(m + "/h"); err != nil || string(b) != "twotwo\n" {
					return "h wrong"
				}
				return ""
			})

			// A hard link made underneath to h, which the kernel
			// knows: the kernel must keep one inode for both names
			// (the replay re-enacts it as a link, not a mknod), or a
			// write through one name leaves the other's cached size
			// stale for the 30 s: own writes cause no invalidation.
			done := r.n.Stats()
			sh(t, r.backing, "ln h l")
			r.rec.wait(t, notifyWant{"create", "l", "", "backing"})
			// Every event so far handled, the link's replay
			// included: a count of replays alone may be an earlier
			// event's finishing late, and the write below would
			// then race with the replay (replayCreate says what
			// that costs).
			conformance.Eventually(t, func() string {
				st := r.n.Stats()
				if st.Invalidated == done.Invalidated || replay && !replayIdle(st) {
					return "the link's creation was not invalidated and replayed"
				}
				return ""
			})
			var st syscall.Stat_t
			if err := syscall.Lstat(m+"/l", &st); err != nil || st.Size != 7 || st.Nlink != 2 {
				t.Fatalf("l after ln underneath: %v, size %d, nlink %d", err, st.Size, st.Nlink)
			}
			f, err := os.OpenFile(m+"/h", os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString("more\n"); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Lstat(m+"/l", &st); err != nil || st.Size != 12 {
				t.Errorf("l after a write through h: %v, size %d, want 12", err, st.Size)
			}
			if b, err := os.ReadFile(m + "/l"); err != nil || string(b) != "twotwo\nmore\n" {
				t.Errorf("l after a write through h: %q, %v", b, err)
			}
			// A replay may fail when a lookup races with it (the
			// test's own stat of l can: the kernel then has the name
			// before the replayed mknod, which gets EEXIST); the
			// replay thread then only invalidates, which is the
			// design. The sizes above are what must hold.
			if st := r.n.Stats(); st.ReplayFailed != done.ReplayFailed {
				t.Logf("replays failed: %d", st.ReplayFailed-done.ReplayFailed)
			}
		})
	}
}

// TestReplayedLinkJoinsTheLiveInode: the replay of a hard link made
// underneath answers the kernel with the inode it knows the file by, not
// with one go-fuse replaced. When the kernel learns a name between the
// invalidation of its creation and the replay (here: a process opens it),
// the replay's MKNOD puts a new node under the name; the node it replaces
// still records the name as its parent after the kernel forgets it. A
// link replayed later that took that node would give the kernel a second
// inode for the file, whose cached size no write through the first name
// updates (30 s here).
func TestReplayedLinkJoinsTheLiveInode(t *testing.T) {
	held := make(chan struct{})
	gate := make(chan struct{})
	r := newRig(t, rigOpts{
		mount: layer.MountOptions{EntryTimeout: 30 * time.Second, AttrTimeout: 30 * time.Second, NegativeTimeout: 30 * time.Second},
		beforeReplay: func(ev layer.Event) {
			if ev.Kind == layer.EventCreate && ev.Path == "f" {
				close(held)
				<-gate
			}
		},
	})
	m := r.mnt
	sh(t, r.backing, "echo one > f")
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the creation of f was not replayed")
	}
	// The kernel learns f now, and the open file keeps that inode alive
	// through the replay, which drops the name and creates it anew.
	old, err := os.Open(m + "/f")
	if err != nil {
		close(gate)
		t.Fatal(err)
	}
	close(gate)
	conformance.Eventually(t, func() string {
		if st := r.n.Stats(); st.Replayed+st.ReplayFailed == 0 || !replayIdle(st) {
			return "the creation of f was not replayed"
		}
		return ""
	})
	if st := r.n.Stats(); st.ReplayFailed != 0 {
		t.Fatalf("the creation of f was not re-enacted: %+v", st)
	}
	must(t, old.Close()) // the kernel forgets that inode

	before := r.n.Stats()
	sh(t, r.backing, "ln f h")
	r.rec.wait(t, notifyWant{"create", "h", "", "backing"})
	conformance.Eventually(t, func() string {
		if st := r.n.Stats(); st.Invalidated == before.Invalidated || !replayIdle(st) {
			return "the creation of h was not replayed"
		}
		return ""
	})
	if st := r.n.Stats(); st.ReplayFailed != before.ReplayFailed {
		t.Fatalf("the creation of h was not re-enacted: %+v", st)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(m+"/h", &st); err != nil || st.Size != 4 || st.Nlink != 2 {
		t.Fatalf("h after ln underneath: %v, size %d, nlink %d", err, st.Size, st.Nlink)
	}
	f, err := os.OpenFile(m+"/f", os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.WriteString("more\n")
	must(t, err)
	must(t, f.Close())
	if err := syscall.Lstat(m+"/h", &st); err != nil || st.Size != 9 {
		t.Errorf("h after a write through f: %v, size %d, want 9 (two kernel inodes for one file)", err, st.Size)
	}
	if b, err := os.ReadFile(m + "/h"); err != nil || string(b) != "one\nmore\n" {
		t.Errorf("h after a write through f: %q, %v", b, err)
	}
}

// TestNoGhostAfterEvent: once a subscriber has an event for a removal or a
// rename made underneath, a stat through the mount no longer finds the old
// name, although the kernel may cache names for 30 s and the replay thread
// is re-enacting the same change on the mount at that moment. The replay
// looks the old name up to unlink or rename it; were that answer cached
// even for a jiffy, a stat racing with it would find the name again.
func TestNoGhostAfterEvent(t *testing.T) {
	const n = 150
	r := newRig(t, rigOpts{mount: layer.MountOptions{
		EntryTimeout: 30 * time.Second, AttrTimeout: 30 * time.Second, NegativeTimeout: 30 * time.Second,
	}})
	sub := r.n.Subscribe()
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ghosts := make(chan string, 2*n)
	done := make(chan int)
	go func() {
		seen := 0
		defer func() { done <- seen }()
		for seen < 2*n {
			ev, _, err := sub.Next(ctx)
			if err != nil {
				return
			}
			var gone string
			switch {
			case ev.Kind == layer.EventRemove && strings.HasPrefix(ev.Path, "r"):
				gone = ev.Path
			case ev.Kind == layer.EventRename:
				gone = ev.OldPath
			default:
				continue
			}
			seen++
			// Each name is used once: after its event it never exists
			// again.
			if _, err := os.Lstat(r.mnt + "/" + gone); !os.IsNotExist(err) {
				ghosts <- fmt.Sprintf("%s after %s: %v", gone, ev.Kind, err)
			}
		}
	}()
	// One shell makes every change: the names must be in the kernel's
	// cache first (the replayed creation puts them there).
	sh(t, r.backing, fmt.Sprintf(`i=0
while [ $i -lt %d ]; do
	touch r$i m$i
	sleep 0.01
	rm r$i
	mv m$i n$i
	i=$((i+1))
done`, n))
	if seen := <-done; seen != 2*n {
		t.Fatalf("saw %d of %d removals and renames", seen, 2*n)
	}
	close(ghosts)
	for g := range ghosts {
		t.Error("still visible through the mount: " + g)
	}
}

// replayIdle reports whether the replay thread has dealt with every event
// the invalidator has (replayed, failed or dropped it). Rescans are not
// replayed: it holds only in tests that cause none.
func replayIdle(st notify.Stats) bool {
	return st.Replayed+st.ReplayFailed+st.ReplayDropped == st.Invalidated
}
