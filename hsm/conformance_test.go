package hsm

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/internal/settings"
	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"github.com/vfsfilter/vfsfilter/layer/namespace"
)

// hsmStack is passthrough + HSM over a directory store beside the backing
// directory. With migrator set, a goroutine migrates every closed file of
// the tree again and again while the test runs, so the suites meet stubs
// at random points.
func hsmStack(migrator bool) conformance.StackFunc { return hsmStackWith(migrator) }

// hsmStackWith is hsmStack with more filters (crypt) in the stack.
func hsmStackWith(migrator bool, more ...func(t testing.TB) layer.Filter) conformance.StackFunc {
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
		filters := []layer.Filter{pt, f, ns}
		for _, mk := range more {
			filters = append(filters, mk(t))
		}
		s, err := layer.NewStack(nil, filters...)
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

// cryptFilter is a crypt filter with fresh keys: with the HSM below it, as
// in a mount with both, only ciphertext reaches the store.
func cryptFilter(t testing.TB) layer.Filter {
	_, keys, err := crypt.NewConfig([]byte("a passphrase for the crypt-over-hsm tests"), crypt.MinScryptLogN)
	require.NoError(t, err)
	f, err := crypt.New(keys, crypt.Options{})
	require.NoError(t, err)
	keys.Wipe()
	return f
}

// TestExerciserCryptMigrating: crypt over the HSM while every closed file
// migrates again and again: recalls run under crypt's header and block
// reads, size translation happens over stubs.
func TestExerciserCryptMigrating(t *testing.T) {
	conformance.RunExerciser(t, hsmStackWith(true, cryptFilter), layer.MountOptions{}, 300)
}
