// Command smallfiles creates many small files for bench/run.sh.
//
//	smallfiles [-n 10000] [-size 4096] [-per-dir 100] DIR
//
// It creates DIR/dNNNN/fNNNNNNN, per-dir files per sub-directory, each file
// written with one write(2) of size bytes. It uses raw system calls
// (mkdir, open(O_CREAT|O_EXCL), write, close) from a single thread, so the
// time it takes is the file system's, not a shell's: a bash loop that starts
// one process per file would spend more time in fork/exec than in the file
// system. The caller times the whole run (including the few milliseconds
// of process start-up).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

func main() {
	n := flag.Int("n", 10000, "number of files to create")
	size := flag.Int("size", 4096, "bytes per file")
	perDir := flag.Int("per-dir", 100, "files per sub-directory")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [flags] DIR\n", filepath.Base(os.Args[0]))
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 || *n < 0 || *size < 0 || *perDir < 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *n, *size, *perDir); err != nil {
		fmt.Fprintln(os.Stderr, "smallfiles:", err)
		os.Exit(1)
	}
}

func run(root string, n, size, perDir int) error {
	if err := syscall.Mkdir(root, 0o755); err != nil && err != syscall.EEXIST {
		return fmt.Errorf("mkdir %s: %w", root, err)
	}
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte('a' + i%26)
	}
	dir := ""
	for i := 0; i < n; i++ {
		if i%perDir == 0 {
			dir = fmt.Sprintf("%s/d%04d", root, i/perDir)
			if err := syscall.Mkdir(dir, 0o755); err != nil {
				return fmt.Errorf("mkdir %s: %w", dir, err)
			}
		}
		name := fmt.Sprintf("%s/f%07d", dir, i)
		fd, err := syscall.Open(name, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, 0o644)
		if err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		for off := 0; off < len(buf); {
			w, err := syscall.Write(fd, buf[off:])
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				syscall.Close(fd)
				return fmt.Errorf("write %s: %w", name, err)
			}
			off += w
		}
		if err := syscall.Close(fd); err != nil {
			return fmt.Errorf("close %s: %w", name, err)
		}
	}
	return nil
}
