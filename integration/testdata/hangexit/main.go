// Command hangexit reproduces the hang that .ci/fuse-watchdog.sh ends: a
// process that serves a FUSE mount itself exits with a file open on it.
//
// Usage: hangexit BACKING MOUNTPOINT
//
// It mounts a go-fuse loopback of BACKING at MOUNTPOINT (type
// fuse.vfsfilter, as vfsfilter's own mounts), opens a file on it under a
// lower descriptor number than the mount's /dev/fuse, prints "ready" and
// exits. The kernel closes descriptors in ascending order as the process
// exits, so the file goes first: its FLUSH reaches a connection whose
// readers are gone, and the exit waits for an answer that never comes
// until the connection is aborted.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: hangexit BACKING MOUNTPOINT")
		os.Exit(2)
	}
	// Hold a low descriptor number for the file opened on the mount.
	hold, err := os.Open(os.DevNull)
	check(err)
	root, err := fs.NewLoopbackRoot(os.Args[1])
	check(err)
	_, err = fs.Mount(os.Args[2], root, &fs.Options{MountOptions: fuse.MountOptions{
		DirectMount: true,
		Name:        "vfsfilter",
		FsName:      os.Args[1],
	}})
	check(err)
	check(hold.Close())
	f, err := os.Create(filepath.Join(os.Args[2], "open-at-exit"))
	check(err)
	fmt.Printf("ready fd=%d\n", f.Fd())
	os.Exit(0)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "hangexit:", err)
		os.Exit(1)
	}
}
