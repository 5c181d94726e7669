package hsm

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vfsfilter/vfsfilter/internal/settings"
	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"github.com/vfsfilter/vfsfilter/layer/namespace"
)

// hsmStack is passthrough + HSM over a directory store beside the backing
// directory. With migrator set, a goroutine migrates every closed file of
// the tree again and again while the test runs, so the suites meet stubs
// at random points.
func hsmStack(migrator bool) conformance.StackFunc {
	return func(t testing.TB, backing string) *layer.Stack {
		st, err := CreateDirStore(filepath.Join(t.TempDir(), "store"))
		require.NoError(t, err)
		f, err := New(Config{Store: st, Backing: backing, ChunkShift: 16})
		require.NoError(t, err)
		pt, err := layer.NewPassthrough(backing)
		require.NoError(t, err)
		// As a real mount: the namespace filter hides .vfsfilter (the
		// HSM journal lives there).
		m, err := (&namespace.Rules{}).Compile(namespace.CompileOptions{AlwaysHide: []string{settings.Dir}})
		require.NoError(t, err)
		ns, err := namespace.New(m)
		require.NoError(t, err)
		s, err := layer.NewStack(nil, pt, f, ns)
		require.NoError(t, err)
		if migrator {
			ctx, cancel := context.WithCancel(context.Background())
			var migrated atomic.Int64
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					walk(ctx, s, []string{""}, func(p string, fd int, err error) error {
						if err == nil {
							if res, _ := f.Migrate(ctx, fd, nil); res.Outcome == OutMigrated {
								migrated.Add(1)
							}
						}
						return ctx.Err()
					})
					time.Sleep(20 * time.Millisecond)
				}
			}()
			// Cleanups run last-registered first: stop the migrator
			// before the mount goes.
			t.Cleanup(func() { s.Close() })
			t.Cleanup(func() {
				cancel()
				wg.Wait()
				t.Logf("migrated %d times during the test", migrated.Load())
			})
		} else {
			t.Cleanup(func() { s.Close() })
		}
		return s
	}
}

func TestPosix(t *testing.T) {
	conformance.RunPosix(t, hsmStack(false), layer.MountOptions{})
}

func TestScenarios(t *testing.T) {
	conformance.RunScenarios(t, hsmStack(false), layer.MountOptions{})
}

func TestExerciser(t *testing.T) {
	conformance.RunExerciser(t, hsmStack(false), layer.MountOptions{}, 300)
}

func TestPosixMigrating(t *testing.T) {
	conformance.RunPosix(t, hsmStack(true), layer.MountOptions{})
}

func TestExerciserMigrating(t *testing.T) {
	conformance.RunExerciser(t, hsmStack(true), layer.MountOptions{}, 1000)
}
