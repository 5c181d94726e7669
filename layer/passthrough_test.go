package layer_test

import (
	"os"
	"sync/atomic"
	"testing"

	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
)

func TestPosixPassthrough(t *testing.T) {
	conformance.RunPosix(t, conformance.Passthrough, layer.MountOptions{})
}

func TestScenariosPassthrough(t *testing.T) {
	conformance.RunScenarios(t, conformance.Passthrough, layer.MountOptions{})
}

func TestScenariosPassthroughAllowOther(t *testing.T) {
	conformance.RunScenarios(t, conformance.Passthrough, layer.MountOptions{AllowOther: true})
}

// readCounter counts the reads and writes that reach the daemon.
type readCounter struct {
	reads, writes, ptOpens atomic.Int64
}

func (r *readCounter) Name() string  { return "counter" }
func (r *readCounter) Altitude() int { return 100 }
func (r *readCounter) Attach(a *layer.Attachment) error {
	layer.OnPost(a, func(c *layer.Call, op *layer.ReadOp, errno layer.Errno) layer.Errno { r.reads.Add(1); return errno })
	layer.OnPost(a, func(c *layer.Call, op *layer.WriteOp, errno layer.Errno) layer.Errno { r.writes.Add(1); return errno })
	layer.OnPost(a, func(c *layer.Call, op *layer.OpenOp, errno layer.Errno) layer.Errno {
		if errno == 0 && op.Handle.Passthrough {
			r.ptOpens.Add(1)
		}
		return errno
	})
	return nil
}

// TestFUSEPassthroughBypassesDaemon: plain files are read and written by the
// kernel directly; no read or write reaches any filter.
func TestFUSEPassthroughBypassesDaemon(t *testing.T) {
	rc := &readCounter{}
	mnt, _ := conformance.Mount(t, func(t testing.TB, backing string) *layer.Stack {
		pt, err := layer.NewPassthrough(backing)
		if err != nil {
			t.Fatal(err)
		}
		st, err := layer.NewStack(nil, pt, rc)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}, layer.MountOptions{})
	data := make([]byte, 1<<20)
	if err := os.WriteFile(mnt+"/f", data, 0644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(mnt + "/f")
	if err != nil || len(got) != len(data) {
		t.Fatalf("read back: %d bytes, %v", len(got), err)
	}
	if rc.ptOpens.Load() == 0 {
		t.Fatalf("no open used passthrough")
	}
	if r, w := rc.reads.Load(), rc.writes.Load(); r != 0 || w != 0 {
		t.Errorf("%d reads and %d writes reached the daemon; passthrough should bypass it", r, w)
	}
}

func TestExercisePassthrough(t *testing.T) {
	conformance.RunExerciser(t, conformance.Passthrough, layer.MountOptions{}, 400)
}
