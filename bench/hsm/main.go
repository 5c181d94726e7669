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
	"runtime/pprof"
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
	only    = flag.String("only", "", "run only this part: meta or large")
	cpuProf = flag.String("cpuprofile", "", "write a CPU profile of the whole run (the daemon is in-process) to this file")
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
	if *cpuProf != "" {
		pf, err := os.Create(*cpuProf)
		check(err)
		check(pprof.StartCPUProfile(pf))
		defer pprof.StopCPUProfile()
	}
	if *only == "" || *only == "meta" {
		metadata(tmp)
	}
	if *only == "" || *only == "large" {
		large(tmp)
	}
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
	return mountAt(dir, "mnt", backing, withHSM)
}

func mountAt(dir, mnt, backing string, withHSM bool) *rigT {
	r := &rigT{mnt: filepath.Join(dir, mnt), backing: backing}
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
	// Both stacks mounted at once, runs alternated (and the order
	// within a pair swapped each time), so that load from other work
	// on the machine hits both sides alike; the ratio reported is the
	// median of the per-pair ratios, with their spread.
	b := mountAt(dir, "mnt-base", backing, false)
	h = mountAt(dir, "mnt-hsm", backing, true)
	defer b.unmount()
	defer h.unmount()
	for i, w := range []func(*rigT) time.Duration{lsR, stat} {
		name := []string{"ls -lR", "stat all"}[i]
		var bs, hs, ratios []float64
		for k := 0; k < *runs; k++ {
			var db, dh time.Duration
			if k%2 == 0 {
				db, dh = w(b), w(h)
			} else {
				dh, db = w(h), w(b)
			}
			bs, hs = append(bs, db.Seconds()), append(hs, dh.Seconds())
			ratios = append(ratios, dh.Seconds()/db.Seconds())
		}
		mb, mh, mr := med(bs), med(hs), med(ratios)
		fmt.Printf("| %s, %d files, 1/4 stubs | %v | %v | %.3fx (pairs %.3f..%.3f) | < 1.10x |\n", name, *files,
			secs(mb), secs(mh), mr, minf(ratios), maxf(ratios))
	}
}

func secs(s float64) time.Duration { return time.Duration(s * 1e9).Round(time.Millisecond) }

func med(v []float64) float64 {
	w := append([]float64(nil), v...)
	sort.Float64s(w)
	return w[len(w)/2]
}

func minf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

func maxf(v []float64) float64 {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	return m
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

	// cp of the same file (warm cache, as the recall's source is),
	// measured in each run right before the recall, so that load from
	// other work on the machine hits both alike; the ratio reported is
	// the median of the per-run ratios, with their spread.
	cpOnce := func() time.Duration {
		dst := filepath.Join(dir, "cp-copy")
		os.Remove(dst)
		start := time.Now()
		check(exec.Command("cp", src, dst).Run())
		check(exec.Command("sync", "-f", dst).Run())
		d := time.Since(start)
		os.Remove(dst)
		return d
	}
	var cpTimes []time.Duration

	r := mount(dir, backing, true)
	defer r.unmount()
	var recallTime, firstByte []time.Duration
	for i := 0; i < *runs; i++ {
		// The file has its data here (resident, or premigrated by the
		// last run's recall).
		cpTimes = append(cpTimes, cpOnce())
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
	var speed []float64
	for i := range recallTime {
		speed = append(speed, cpTimes[i].Seconds()/recallTime[i].Seconds())
	}
	sort.Slice(recallTime, func(i, j int) bool { return recallTime[i] < recallTime[j] })
	sort.Slice(cpTimes, func(i, j int) bool { return cpTimes[i] < cpTimes[j] })
	sort.Slice(firstByte, func(i, j int) bool { return firstByte[i] < firstByte[j] })
	rt, cpTime := recallTime[len(recallTime)/2], cpTimes[len(cpTimes)/2]
	mib := float64(size) / (1 << 20)
	fmt.Printf("| recall %d MiB vs cp (dir store) | cp %v (%.0f MiB/s) | recall %v (%.0f MiB/s) | %.2fx speed (runs %.2f..%.2f) | >= 0.8x |\n",
		*sizeMiB, cpTime.Round(time.Millisecond), mib/cpTime.Seconds(), rt.Round(time.Millisecond), mib/rt.Seconds(), med(speed), minf(speed), maxf(speed))
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
