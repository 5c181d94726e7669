package integration

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// mountPoints returns the mount points of /proc/self/mountinfo (field 5,
// unescaped), in mount order.
func mountPoints() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		panic(err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 4 {
			out = append(out, unescapeOctal(f[4]))
		}
	}
	return out
}

// unescapeOctal undoes the kernel's \ooo escapes of mountinfo.
func unescapeOctal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// resolve makes p absolute and resolves symlinks in its directory, as the
// kernel records mount points; the last component is kept, since a stat of
// a dead mount fails.
func resolve(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		return filepath.Join(dir, filepath.Base(abs))
	}
	return abs
}

// isMounted reports whether something is mounted at p.
func isMounted(p string) bool {
	p = resolve(p)
	for _, m := range mountPoints() {
		if m == p {
			return true
		}
	}
	return false
}

// waitMounted waits until p is mounted (want) or not, and reports whether
// it happened within timeout.
func waitMounted(p string, want bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if isMounted(p) == want {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mountsUnder lists the mount points at or below dir, deepest first, so
// that they can be unmounted in that order.
func mountsUnder(dir string) []string {
	dir = resolve(dir)
	var out []string
	for _, m := range mountPoints() {
		if m == dir || strings.HasPrefix(m, dir+"/") {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// lazyUnmountUnder detaches every mount at or below dir. It is the last
// resort of a cleanup: it works on busy mounts and on mounts whose daemon
// died.
func lazyUnmountUnder(dir string) {
	for _, m := range mountsUnder(dir) {
		unix.Unmount(m, unix.MNT_DETACH)
	}
}

// taggedPids returns the processes whose environment holds tagEnv=tag, or
// a tag below it (tag/subtest).
func taggedPids(tag string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		// A zombie's environ is empty: it is not running.
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			v, ok := bytes.CutPrefix(kv, []byte(tagEnv+"="))
			if ok && (string(v) == tag || bytes.HasPrefix(v, []byte(tag+"/"))) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// waitTaggedExit waits until no process carries tag, and returns those
// still running after timeout.
func waitTaggedExit(tag string, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		pids := taggedPids(tag)
		if len(pids) == 0 || time.Now().After(deadline) {
			return pids
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killTagged kills the processes carrying tag. Only processes started by
// this run carry it.
func killTagged(tag string) {
	for _, pid := range taggedPids(tag) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}
