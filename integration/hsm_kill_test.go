package integration

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHSMKill9 kills the daemon with SIGKILL at different moments of a
// migration and then of a recall, restarts it, and requires every file to
// read back byte-exactly with a consistent state: two-phase migration and
// the journal lose nothing, whatever was in flight.
func TestHSMKill9(t *testing.T) {
	requireFUSE(t)
	backing, mnt, store := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "store")
	if r := vfsfilter(t, "init", "--hsm-store", store, backing); r.code != 0 {
		t.Fatalf("init: exit %d\n%s", r.code, r.stderr)
	}
	want := map[string][]byte{}
	for i := 0; i < 6; i++ {
		data := make([]byte, (4+i)<<20)
		rand.Read(data)
		want[fmt.Sprintf("f%d", i)] = data
		if err := os.WriteFile(filepath.Join(backing, fmt.Sprintf("f%d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for round := 0; round < 6; round++ {
		srv := command(t, "mount", backing, mnt)
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		if !waitMounted(mnt, true, 10*time.Second) {
			t.Fatalf("round %d: %s did not get mounted", round, mnt)
		}
		// Even rounds kill during a migration, odd rounds during the
		// recalls that reading brings; the moment moves each round.
		work := command(t, "hsm", "migrate", mnt)
		if round%2 == 1 {
			work = exec.Command("sh", "-c", "cat "+mnt+"/f* > /dev/null")
		}
		work.Start()
		time.Sleep(time.Duration(20+round*40) * time.Millisecond)
		srv.Process.Signal(syscall.SIGKILL)
		// Unmount before waiting: a daemon killed while it had a file
		// open on its own mount cannot finish dying until the
		// connection is aborted, which "vfsfilter unmount" does.
		time.Sleep(100 * time.Millisecond)
		if r := vfsfilter(t, "unmount", mnt); r.code != 0 && !strings.Contains(r.stderr, "not mounted") {
			t.Fatalf("round %d: unmount after kill -9: exit %d\n%s", round, r.code, r.stderr)
		}
		srv.Wait()
		work.Wait()

		// Restart: recovery runs, and every file is intact.
		mountDaemon(t, backing, mnt)
		for name, data := range want {
			got, err := os.ReadFile(filepath.Join(mnt, name))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("round %d: %s after kill -9 and restart: %d bytes, %v; want the original %d bytes", round, name, len(got), err, len(data))
			}
		}
		r := vfsfilter(t, "hsm", "status", "--json", mnt)
		if r.code != 0 || strings.Count(r.stdout, `"path"`) != len(want) {
			t.Fatalf("round %d: status: exit %d\n%s%s", round, r.code, r.stdout, r.stderr)
		}
		unmount(t, mnt)
	}
}
