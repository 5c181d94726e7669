package main

import (
	"strings"
	"testing"
)

const sampleMountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 0:40 / /tmp/a\040b rw,nosuid,nodev,relatime shared:20 master:3 - fuse.vfsfilter /data/back\134up rw,user_id=0,group_id=0
37 22 0:41 / /mnt rw - tmpfs tmpfs rw
38 37 0:42 / /mnt rw,nosuid,nodev - fuse /src rw,user_id=0
39 22 0:43 / /blk rw - fuseblk /dev/sdb1 rw
`

func TestParseMountinfo(t *testing.T) {
	ms, err := parseMountinfo(strings.NewReader(sampleMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 5 {
		t.Fatalf("got %d entries, want 5", len(ms))
	}
	m := ms[1]
	if m.ID != 36 || m.ParentID != 22 || m.MountPoint != "/tmp/a b" || m.FSType != "fuse.vfsfilter" || m.Source != `/data/back\up` {
		t.Errorf("entry with escapes and two optional fields: %+v", m)
	}
	if uid, ok := m.fuseOwner(); !ok || uid != 0 || m.SuperOptions != "rw,user_id=0,group_id=0" {
		t.Errorf("fuseOwner = %d, %v; super options %q", uid, ok, m.SuperOptions)
	}
	if _, ok := ms[2].fuseOwner(); ok {
		t.Error("tmpfs has a FUSE owner")
	}
	if !m.isFUSE() || ms[0].isFUSE() || ms[2].isFUSE() || !ms[3].isFUSE() || !ms[4].isFUSE() {
		t.Error("isFUSE is wrong")
	}
	// The mount stacked last on a path is the one seen there.
	if top, ok := mountAt(ms, "/mnt"); !ok || top.ID != 38 {
		t.Errorf("mountAt(/mnt) = %+v, %v; want id 38", top, ok)
	}
	if _, ok := mountAt(ms, "/tmp/a"); ok {
		t.Error("mountAt matched a prefix")
	}
}

func TestParseMountinfoMalformed(t *testing.T) {
	for _, line := range []string{
		"22 1 8:1 / / rw,relatime shared:1 ext4 /dev/sda1 rw", // no "-"
		"x 1 8:1 / / rw - ext4 /dev/sda1 rw",
		"22 1 8:1 / / rw -",
	} {
		if _, err := parseMountinfo(strings.NewReader(line + "\n")); err == nil {
			t.Errorf("parseMountinfo(%q): no error", line)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:         "plain",
		`a\040b\011c`:   "a b\tc",
		`new\012line`:   "new\nline",
		`back\134slash`: `back\slash`,
		`trailing\04`:   `trailing\04`, // too short: left alone
		`not\999octal`:  `not\999octal`,
		`\040`:          " ",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
