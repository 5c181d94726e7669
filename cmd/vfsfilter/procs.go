package main

import (
	"os"
	"runtime"
)

// minProcs is the smallest GOMAXPROCS a process serving a mount runs with.
//
// Why: go-fuse reads requests with blocking read(2)s on /dev/fuse, from
// one goroutine per P. With GOMAXPROCS at a small machine's core count,
// every P soon sits in such a read; the runtime's monitor then takes each
// P back from its syscall after 20 us and wakes another thread to run it,
// which finds nothing to do, and the read, when it returns, has to get a
// P back. With Ps to spare, the monitor leaves them alone. On 2 cores,
// for an untar and an rm -rf of Go's source tree through crypt, 8 Ps
// instead of 2 take the daemon's context switches down by a quarter, its
// futex calls by two thirds and its CPU time by 20-30% (README, crypt).
// GOMAXPROCS only caps the threads running Go code at once: the extra Ps
// are idle unless there is work. gocryptfs raises it to 4 for the same
// reason.
const minProcs = 8

// raiseProcs raises GOMAXPROCS to minProcs on machines with fewer cores,
// unless the user set GOMAXPROCS.
func raiseProcs() {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	if runtime.GOMAXPROCS(0) < minProcs {
		runtime.GOMAXPROCS(minProcs)
	}
}
