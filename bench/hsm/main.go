// Command hsm benchmarks the HSM filter against the passthrough alone, in
// one run on one machine, and prints ratios (see bench/README.md for why
// only side-by-side ratios mean anything). It mounts in-process, as root:
//
//	go run ./bench/hsm [-files 10000] [-size-mib 1024] [-runs 3]
//
// Workloads:
//   - ls -lR and a stat of every file, over FILES files of which a quarter
//     are stubs, through passthrough+hsm vs passthrough only (target: under
//     1.10x);
//   - recall of a SIZE file from a directory store vs cp of the same file
//     (target: at least 0.8x the speed of cp);
//   - first byte of a SIZE stub: open + read 4 KiB at offset 0 through the
//     mount (target: under 0.2 s).
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/vfsfilter/vfsfilter/hsm"
	"github.com/vfsfilter/vfsfilter/layer"
)

var (
	files   = flag.Int("files", 10000, "files in the metadata tree")
	sizeMiB = flag.Int("size-mib", 1024, "size of the large file")
	runs    = flag.Int("runs", 3, "runs per workload (median reported)")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	tmp, err := os.MkdirTemp("", "hsm-bench-")
	check(err)
	defer os.RemoveAll(tmp)

	fmt.Printf("# HSM benchmark (%d files, %d MiB, median of %d)\n\n", *files, *sizeMiB, *runs)
	fmt.Println("| workload | passthrough | hsm | ratio | target |")
	fmt.Println("|---|---|---|---|---|")
	metadata(tmp)
	large(tmp)
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

type rigT struct {
	mnt, backing string
	srv          *layer.Server
	stack        *layer.Stack
	f            *hsm.Filter
}

func mount(dir, backing string, withHSM bool) *rigT {
	r := &rigT{mnt: filepath.Join(dir, "mnt"), backing: backing}
	check(os.MkdirAll(r.mnt, 0o755))
	pt, err := layer.NewPassthrough(backing)
	check(err)
	filters := []layer.Filter{pt}
	if withHSM {
		st, err := hsm.CreateDirStore(filepath.Join(dir, "store"))
		check(err)
		r.f, err = hsm.New(hsm.Config{Store: st, Backing: backing})
		check(err)
		filters = append(filters, r.f)
	}
	r.stack, err = layer.NewStack(nil, filters...)
	check(err)
	r.srv, err = layer.Mount(r.mnt, r.stack, layer.MountOptions{})
	check(err)
	return r
}

func (r *rigT) unmount() {
	check(r.srv.Unmount())
	r.stack.Close()
}

func median(f func() time.Duration) time.Duration {
	var ds []time.Duration
	for i := 0; i < *runs; i++ {
		ds = append(ds, f())
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

func row(name string, base, h time.Duration, target string) {
	fmt.Printf("| %s | %v | %v | %.3fx | %s |\n", name, base.Round(time.Millisecond), h.Round(time.Millisecond), float64(h)/float64(base), target)
}

// migrateAll migrates every path in rels through the filter's control
// walk (the same code path as "vfsfilter hsm migrate").
func migrateAll(r *rigT, rels []string) {
	check(hsm.Walk(context.Background(), r.stack, rels, func(rel string, fd int, err error) error {
		check(err)
		res, err := r.f.Migrate(context.Background(), fd, nil)
		check(err)
		if res.Outcome != hsm.OutMigrated {
			log.Fatalf("migrate %s: %s %v", rel, res.Outcome, res.Reason)
		}
		return nil
	}))
}

func metadata(tmp string) {
	dir := filepath.Join(tmp, "meta")
	backing := filepath.Join(dir, "backing")
	var stubs []string
	buf := make([]byte, 1024)
	for i := 0; i < *files; i++ {
		rel := fmt.Sprintf("d%02d/f%05d", i%100, i)
		p := filepath.Join(backing, rel)
		check(os.MkdirAll(filepath.Dir(p), 0o755))
		check(os.WriteFile(p, buf[:100+i%900], 0o644))
		if i%4 == 0 {
			stubs = append(stubs, rel)
		}
	}
	// The same tree, stubs included, through both stacks: the
	// passthrough-only stack shows stubs as empty files, the cost of
	// what it does not do is what is measured.
	h := mount(dir, backing, true)
	migrateAll(h, stubs)
	h.unmount()

	lsR := func(r *rigT) time.Duration {
		time.Sleep(1100 * time.Millisecond) // let the 1 s caches expire
		start := time.Now()
		cmd := exec.Command("ls", "-lR", r.mnt)
		cmd.Stdout = io.Discard
		check(cmd.Run())
		return time.Since(start)
	}
	stat := func(r *rigT) time.Duration {
		time.Sleep(1100 * time.Millisecond)
		start := time.Now()
		n := 0
		check(filepath.WalkDir(r.mnt, func(p string, d fs.DirEntry, err error) error {
			check(err)
			var st syscall.Stat_t
			check(syscall.Lstat(p, &st))
			n++
			return nil
		}))
		return time.Since(start)
	}
	var base, withH [2]time.Duration
	for i, w := range []func(*rigT) time.Duration{lsR, stat} {
		b := mount(dir, backing, false)
		base[i] = median(func() time.Duration { return w(b) })
		b.unmount()
		h := mount(dir, backing, true)
		withH[i] = median(func() time.Duration { return w(h) })
		h.unmount()
	}
	row(fmt.Sprintf("ls -lR, %d files, 1/4 stubs", *files), base[0], withH[0], "< 1.10x")
	row(fmt.Sprintf("stat all, %d files, 1/4 stubs", *files), base[1], withH[1], "< 1.10x")
}

func large(tmp string) {
	dir := filepath.Join(tmp, "large")
	backing := filepath.Join(dir, "backing")
	check(os.MkdirAll(backing, 0o755))
	size := int64(*sizeMiB) << 20
	src := filepath.Join(backing, "big")
	fh, err := os.Create(src)
	check(err)
	_, err = io.CopyN(fh, rand.Reader, size)
	check(err)
	check(fh.Close())

	// cp of the same file (warm cache, as the recall's source is).
	cpTime := median(func() time.Duration {
		dst := filepath.Join(dir, "cp-copy")
		os.Remove(dst)
		start := time.Now()
		check(exec.Command("cp", src, dst).Run())
		check(exec.Command("sync", "-f", dst).Run())
		d := time.Since(start)
		os.Remove(dst)
		return d
	})

	r := mount(dir, backing, true)
	defer r.unmount()
	var recallTime, firstByte []time.Duration
	for i := 0; i < *runs; i++ {
		migrateAll(r, []string{"big"})
		// Warm the object in the page cache, as cp's source is.
		obj, _ := filepath.Glob(filepath.Join(dir, "store", "*", "*", "*"))
		for _, o := range obj {
			f, _ := os.Open(o)
			io.Copy(io.Discard, f)
			f.Close()
		}
		time.Sleep(1100 * time.Millisecond)
		start := time.Now()
		f, err := os.Open(filepath.Join(r.mnt, "big"))
		check(err)
		b := make([]byte, 4096)
		_, err = f.ReadAt(b, 0)
		check(err)
		firstByte = append(firstByte, time.Since(start))
		f.Close()
		// Wait for that recall to finish, then measure a whole one.
		waitPremigrated(r)
		migrateAll(r, []string{"big"})
		check(hsm.Walk(context.Background(), r.stack, []string{"big"}, func(_ string, fd int, err error) error {
			check(err)
			start := time.Now()
			check(r.f.Recall(context.Background(), fd))
			recallTime = append(recallTime, time.Since(start))
			return nil
		}))
	}
	sort.Slice(recallTime, func(i, j int) bool { return recallTime[i] < recallTime[j] })
	sort.Slice(firstByte, func(i, j int) bool { return firstByte[i] < firstByte[j] })
	rt := recallTime[len(recallTime)/2]
	mib := float64(size) / (1 << 20)
	fmt.Printf("| recall %d MiB vs cp (dir store) | cp %v (%.0f MiB/s) | recall %v (%.0f MiB/s) | %.2fx speed | >= 0.8x |\n",
		*sizeMiB, cpTime.Round(time.Millisecond), mib/cpTime.Seconds(), rt.Round(time.Millisecond), mib/rt.Seconds(), cpTime.Seconds()/rt.Seconds())
	fmt.Printf("| first byte of a %d MiB stub | | %v | | < 0.2 s |\n", *sizeMiB, firstByte[len(firstByte)/2].Round(100*time.Microsecond))
}

func waitPremigrated(r *rigT) {
	for i := 0; i < 6000; i++ {
		state := ""
		check(hsm.Walk(context.Background(), r.stack, []string{"big"}, func(_ string, fd int, err error) error {
			check(err)
			st, err := r.f.Status(fd)
			state = st.State
			return err
		}))
		if state == "premigrated" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	log.Fatal("recall did not finish")
}
