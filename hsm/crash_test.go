package hsm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vfsfilter/vfsfilter/layer"
)

func TestMain(m *testing.M) {
	if os.Getenv("HSM_CRASH_HELPER") != "" {
		crashHelper()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const crashFiles = 12

func crashContent(i int) []byte {
	rng := rand.New(rand.NewPCG(uint64(i), 42))
	b := make([]byte, 256<<10+i*4099)
	for j := range b {
		b[j] = byte(rng.Uint32())
	}
	return b
}

// stackOver builds passthrough + HSM (running recovery) without a mount:
// ops sent to it with a non-internal Call behave as users' requests.
func stackOver(backing, store string) (*layer.Stack, *Filter, error) {
	st, err := CreateDirStore(store)
	if err != nil {
		return nil, nil, err
	}
	f, err := New(Config{Store: st, Backing: backing, ChunkShift: 14})
	if err != nil {
		return nil, nil, err
	}
	pt, err := layer.NewPassthrough(backing)
	if err != nil {
		return nil, nil, err
	}
	s, err := layer.NewStack(nil, pt, f)
	return s, f, err
}

// crashHelper is the "daemon" the crash test kills: it migrates and
// recalls the files in a loop until it is killed.
func crashHelper() {
	backing, store := os.Getenv("HSM_BACKING"), os.Getenv("HSM_STORE")
	s, f, err := stackOver(backing, store)
	if err != nil {
		fmt.Println("error", err)
		return
	}
	fmt.Println("ready")
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 1))
	for {
		i := rng.IntN(crashFiles)
		walk(ctx, s, []string{fmt.Sprintf("f%d", i)}, func(p string, fd int, err error) error {
			if err != nil {
				return nil
			}
			if rng.IntN(2) == 0 {
				f.Migrate(ctx, fd, nil)
			} else {
				f.Recall(ctx, fd)
			}
			return nil
		})
	}
}

// readUser reads path through the stack as a user would (open, reads,
// release), which recalls a stub.
func readUser(s *layer.Stack, path string) ([]byte, error) {
	c := &layer.Call{Context: context.Background()}
	op := &layer.OpenOp{Path: path, Flags: syscall.O_RDONLY}
	if errno := s.Do(c, op); errno != 0 {
		return nil, errno
	}
	defer s.Do(c, &layer.ReleaseOp{Handle: op.Handle})
	var out []byte
	buf := make([]byte, 128<<10)
	for {
		rd := &layer.ReadOp{Handle: op.Handle, Off: int64(len(out)), Dest: buf}
		if errno := s.Do(c, rd); errno != 0 {
			return nil, errno
		}
		b, _ := rd.Out.Bytes(buf)
		if len(b) == 0 {
			return out, nil
		}
		out = append(out, b...)
	}
}

// TestCrashSafety kills the daemon (-9) at random moments of migrations
// and recalls, then restarts it and checks that every file still has its
// exact data and the journal is empty.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	backing, store := t.TempDir(), filepath.Join(t.TempDir(), "store")
	for i := 0; i < crashFiles; i++ {
		require.NoError(t, os.WriteFile(filepath.Join(backing, fmt.Sprintf("f%d", i)), crashContent(i), 0o644))
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for round := 0; round < 30; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "HSM_CRASH_HELPER=1", "HSM_BACKING="+backing, "HSM_STORE="+store)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		line, _ := bufio.NewReader(out).ReadString('\n')
		require.Equal(t, "ready\n", line)
		time.Sleep(time.Duration(20+rng.IntN(300)) * time.Millisecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		cmd.Wait()

		s, f, err := stackOver(backing, store)
		require.NoError(t, err)
		ents, _ := os.ReadDir(f.jdir)
		require.Empty(t, ents, "round %d: recovery leaves no journal entry", round)
		states := map[string]int{}
		for i := 0; i < crashFiles; i++ {
			name := fmt.Sprintf("f%d", i)
			var fs FileStatus
			walk(context.Background(), s, []string{name}, func(p string, fd int, err error) error {
				require.NoError(t, err)
				fs, err = f.Status(fd)
				require.NoError(t, err)
				return nil
			})
			states[fs.State]++
			if i%3 == 0 {
				continue // leave some stubs for the next round
			}
			got, err := readUser(s, name)
			require.NoError(t, err, "round %d %s (%s)", round, name, fs.State)
			require.True(t, bytes.Equal(crashContent(i), got), "round %d: %s (%s) lost data", round, name, fs.State)
		}
		t.Logf("round %d: states after recovery %v", round, states)
		s.Close()
	}
}
