package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckBacking(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(dir)
	if got, err := checkBacking(link); err != nil || got != real {
		t.Errorf("checkBacking(symlink to dir) = %q, %v; want %q", got, err, real)
	}
	for path, want := range map[string]string{
		filepath.Join(dir, "missing"): "does not exist",
		file:                          "is not a directory (it is a regular file)",
		filepath.Join(file, "below"):  "a component of the path is not a directory",
	} {
		_, err := checkBacking(path)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
			t.Errorf("checkBacking(%s) = %v, want the path and %q", path, err, want)
		}
		if exitCodeOf(err) != ExitBacking {
			t.Errorf("checkBacking(%s): exit code %d, want %d", path, exitCodeOf(err), ExitBacking)
		}
	}
}

func TestCheckMountpoint(t *testing.T) {
	dir := t.TempDir()
	mk := func(p string) string {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	backing := mk("backing")
	empty := mk("empty")
	full := mk("full/sub")
	full = filepath.Dir(full)
	inside := mk("backing/inner")
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	backing, _ = filepath.EvalSymlinks(backing)

	if got, err := checkMountpoint(empty, backing, false); err != nil || !strings.HasSuffix(got, "/empty") {
		t.Errorf("checkMountpoint(empty) = %q, %v", got, err)
	}
	if _, err := checkMountpoint(full, backing, true); err != nil {
		t.Errorf("checkMountpoint(full, nonempty) = %v", err)
	}
	tests := []struct {
		path     string
		nonempty bool
		want     string
	}{
		{filepath.Join(dir, "missing"), false, "does not exist"},
		{file, false, "is not a directory"},
		{full, false, "is not empty (use -o nonempty to mount anyway)"},
		{inside, true, "is inside the backing directory"},
		{backing, false, "is the backing directory"},
		{"/", true, "is already mounted"},
	}
	for _, tt := range tests {
		_, err := checkMountpoint(tt.path, backing, tt.nonempty)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("checkMountpoint(%s) = %v, want %q", tt.path, err, tt.want)
		}
		if exitCodeOf(err) != ExitMountpoint {
			t.Errorf("checkMountpoint(%s): exit code %d, want %d", tt.path, exitCodeOf(err), ExitMountpoint)
		}
	}
	// Mounting over the backing directory itself is allowed when asked.
	if _, err := checkMountpoint(backing, backing, true); err != nil {
		t.Errorf("checkMountpoint(backing, nonempty) = %v", err)
	}
}

func TestCheckFUSE(t *testing.T) {
	defer func(old string) { fuseDevice = old }(fuseDevice)
	dir := t.TempDir()

	fuseDevice = filepath.Join(dir, "missing")
	if err := checkFUSE(true); exitCodeOf(err) != ExitNoFUSE || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing device: %v (code %d)", err, exitCodeOf(err))
	}
	fuseDevice = filepath.Join(dir, "regular")
	os.WriteFile(fuseDevice, nil, 0o644)
	if err := checkFUSE(false); exitCodeOf(err) != ExitNoFUSE || !strings.Contains(err.Error(), "not a character device") {
		t.Errorf("regular file as device: %v (code %d)", err, exitCodeOf(err))
	}
	// /dev/null is a character device that is not FUSE; a stat cannot
	// tell, which is why a privileged check opens the real device.
	fuseDevice = os.DevNull
	if err := checkFUSE(false); err != nil {
		t.Errorf("unprivileged check of a character device: %v", err)
	}
}

func TestCapSysAdminFrom(t *testing.T) {
	const status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t%s\nCapBnd:\t000001ffffffffff\n"
	for capEff, want := range map[string]bool{
		"000001ffffffffff": true,  // root
		"0000000000200000": true,  // CAP_SYS_ADMIN alone
		"00000000a80425fb": false, // docker's default set
		"0000000000000000": false,
		"garbage":          false,
	} {
		if got := capSysAdminFrom(strings.NewReader(strings.Replace(status, "%s", capEff, 1))); got != want {
			t.Errorf("CapEff %s: got %v, want %v", capEff, got, want)
		}
	}
	if capSysAdminFrom(strings.NewReader("Name:\tx\n")) {
		t.Error("no CapEff line: got true")
	}
}

func TestFuseConfAllowsOther(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]bool{
		"user_allow_other\n":                       true,
		"# mount_max = 1000\n  user_allow_other  ": true,
		"#user_allow_other\n":                      false,
		"mount_max = 10\n":                         false,
	} {
		p := filepath.Join(dir, "fuse.conf")
		os.WriteFile(p, []byte(content), 0o644)
		if got, err := fuseConfAllowsOther(p); err != nil || got != want {
			t.Errorf("fuse.conf %q: got %v, %v; want %v", content, got, err, want)
		}
	}
	if ok, err := fuseConfAllowsOther(filepath.Join(dir, "missing")); ok || err == nil {
		t.Errorf("missing fuse.conf: %v, %v", ok, err)
	}
}
