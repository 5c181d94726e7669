package integration

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vfsfilter/vfsfilter/internal/control"
)

// TestNotifyWatch runs `vfsfilter watch --json` on a daemon mount and
// checks that it reports changes made through the mount and underneath, in
// visible names, and never hidden ones.
func TestNotifyWatch(t *testing.T) {
	requireFUSE(t)
	backing, mnt := t.TempDir(), t.TempDir()
	mountDaemon(t, backing, mnt, "--hide", "*.tmp", "--attr-timeout", "30s", "--entry-timeout", "30s")
	if _, err := os.Stat(control.SocketPath(mnt)); err != nil {
		t.Fatalf("the mount has no control socket: %v", err)
	}
	cmd := command(t, "watch", "--json", mnt)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	evs := make(chan map[string]any, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				evs <- m
			}
		}
		close(evs)
	}()
	time.Sleep(200 * time.Millisecond) // the watch is registered
	expect := func(event, path, old string) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case m, ok := <-evs:
				if !ok {
					t.Fatalf("watch ended before %s %s", event, path)
				}
				if p, _ := m["path"].(string); strings.HasSuffix(p, ".tmp") {
					t.Errorf("hidden entry reported: %v", m)
				}
				if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
					t.Errorf("time: %v", err)
				}
				o, _ := m["old_path"].(string)
				if m["event"] == event && m["path"] == path && o == old {
					return
				}
			case <-deadline:
				t.Fatalf("no %s %s event", event, path)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(mnt, "a"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect("create", "a", "")
	run := func(script string) {
		c := exec.Command("/bin/sh", "-ec", script)
		c.Dir = backing
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", script, err, out)
		}
	}
	run("touch x.tmp b; mv b c; rm a")
	expect("create", "b", "")
	expect("rename", "c", "b")
	expect("remove", "a", "")
	// With 30 s timeouts the mount shows the change at once.
	if _, err := os.Lstat(filepath.Join(mnt, "a")); !os.IsNotExist(err) {
		t.Errorf("a still visible through the mount: %v", err)
	}
}
