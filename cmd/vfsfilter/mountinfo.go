package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// mountEntry is one line of /proc/self/mountinfo (see proc_pid_mountinfo(5)).
type mountEntry struct {
	ID, ParentID int
	// MountPoint is relative to the process's root, with the kernel's
	// octal escapes (\040 for a space, ...) undone.
	MountPoint string
	FSType     string // "fuse.vfsfilter", "ext4", ...
	// Dev is the mount's device, "major:minor"; for FUSE the minor names
	// the connection in /sys/fs/fuse/connections.
	Dev    string
	Source string
	// SuperOptions are the file system's own options (field 11); for
	// FUSE they include user_id, the uid that mounted it.
	SuperOptions string
}

// fuseOwner returns the uid that made a FUSE mount (its user_id option).
func (m mountEntry) fuseOwner() (int, bool) {
	for _, o := range strings.Split(m.SuperOptions, ",") {
		if v, ok := strings.CutPrefix(o, "user_id="); ok {
			uid, err := strconv.Atoi(v)
			return uid, err == nil
		}
	}
	return 0, false
}

// isFUSE reports whether the entry is a FUSE mount (fuse, fuse.NAME,
// fuseblk), whatever daemon serves it.
func (m mountEntry) isFUSE() bool {
	return m.FSType == "fuse" || m.FSType == "fuseblk" || strings.HasPrefix(m.FSType, "fuse.")
}

// parseMountinfo parses the format of /proc/PID/mountinfo:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//	(1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)
//
// Field 7 is a list of zero or more optional fields ended by "-".
func parseMountinfo(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || len(f) < sep+3 {
			return nil, fmt.Errorf("mountinfo: malformed line %q", line)
		}
		id, err1 := strconv.Atoi(f[0])
		parent, err2 := strconv.Atoi(f[1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo: malformed ids in %q", line)
		}
		e := mountEntry{
			ID:         id,
			ParentID:   parent,
			MountPoint: unescapeMountinfo(f[4]),
			Dev:        f[2],
			FSType:     f[sep+1],
			Source:     unescapeMountinfo(f[sep+2]),
		}
		if len(f) > sep+3 {
			e.SuperOptions = f[sep+3]
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// unescapeMountinfo undoes the kernel's mangling of space, tab, newline and
// backslash as three-digit octal escapes (\040, \011, \012, \134).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
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

// readMounts returns the mounts visible to this process.
func readMounts() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMountinfo(f)
}

// mountAt returns the topmost mount on path (an absolute, clean path), if
// any. Later lines of mountinfo are mounted on top of earlier ones.
func mountAt(mounts []mountEntry, path string) (mountEntry, bool) {
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].MountPoint == path {
			return mounts[i], true
		}
	}
	return mountEntry{}, false
}
