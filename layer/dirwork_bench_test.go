package layer_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
)

// Directory-heavy work through a mount, in process: the daemon's
// allocations and CPU show up in the benchmark's own profiles
// (go test -bench DirWork -benchmem -memprofile m.out -cpuprofile c.out).
// Each iteration untars GOROOT/src/net (or the tarball VFS_BENCH_TAR
// names), lists it with ls -lR and removes it with rm -rf. Put TMPDIR on
// the file system to measure.

func benchTar(b *testing.B) string {
	if p := os.Getenv("VFS_BENCH_TAR"); p != "" {
		return p
	}
	p := filepath.Join(b.TempDir(), "tree.tar")
	out, err := exec.Command("tar", "-C", filepath.Join(runtime.GOROOT(), "src"), "-cf", p, "net").CombinedOutput()
	if err != nil {
		b.Fatalf("tar: %v\n%s", err, out)
	}
	return p
}

var benchKeys = sync.OnceValue(func() *crypt.Keys {
	_, k, err := crypt.NewConfig([]byte("bench"), crypt.MinScryptLogN)
	if err != nil {
		panic(err)
	}
	return k
})

func benchCryptStack(t testing.TB, backing string) *layer.Stack {
	pt, err := layer.NewPassthrough(backing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pt.Close() })
	f, err := crypt.New(benchKeys(), crypt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := layer.NewStack(nil, pt, f)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func benchDirWork(b *testing.B, mk conformance.StackFunc) {
	tarball := benchTar(b)
	mnt, _ := conformance.Mount(b, mk, layer.MountOptions{})
	run := func(name string, args ...string) {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			b.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	var phases [3]time.Duration // CPU time of this process (the daemon) per phase
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for ph, args := range [][]string{
			{"tar", "-C", mnt, "-xf", tarball},
			{"ls", "-lR", mnt},
			{"rm", "-rf", mnt + "/net"},
		} {
			c0 := cpu()
			run(args[0], args[1:]...)
			phases[ph] += cpu() - c0
		}
	}
	for ph, name := range []string{"untar", "ls-lR", "rm-rf"} {
		b.ReportMetric(float64(phases[ph].Microseconds())/1e3/float64(b.N), name+"-cpu-ms/op")
	}
}

func BenchmarkDirWorkPassthrough(b *testing.B) { benchDirWork(b, conformance.Passthrough) }
func BenchmarkDirWorkCrypt(b *testing.B)       { benchDirWork(b, benchCryptStack) }

// BenchmarkPassthroughOps: single path-based requests at the bottom of the
// stack on an entry at depth 4, as untar and rm -rf send them: the cost of
// resolving the path and of the call itself, without FUSE.
func BenchmarkPassthroughOps(b *testing.B) {
	root := b.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "a/b/c"), 0755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "a/b/c/file.go"), nil, 0644); err != nil {
		b.Fatal(err)
	}
	st := conformance.Passthrough(b, root)
	c := layer.InternalCall(context.Background())
	ops := map[string]func() layer.Op{
		"lookup":         func() layer.Op { return &layer.LookupOp{Path: "a/b/c/file.go"} },
		"lookup-missing": func() layer.Op { return &layer.LookupOp{Path: "a/b/c/missing.go"} },
		"getxattr-nodata": func() layer.Op {
			return &layer.GetxattrOp{Path: "a/b/c/file.go", Name: "security.capability"}
		},
		"setattr-mtime": func() layer.Op {
			return &layer.SetattrOp{Path: "a/b/c/file.go", In: fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_MTIME, Mtime: 1}}}
		},
	}
	for _, name := range []string{"lookup", "lookup-missing", "getxattr-nodata", "setattr-mtime"} {
		mk := ops[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				st.Do(c, mk())
			}
		})
	}
}
