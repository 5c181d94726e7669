package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nobody is the unprivileged user the test runs the binary as.
const nobody = 65534

// asNobody runs the binary as uid/gid 65534 with args.
func asNobody(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := command(t, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// userMountsPossible reports whether an unprivileged user can mount here:
// a setuid fusermount3 (or fusermount) and a /dev/fuse open to everyone.
func userMountsPossible() bool {
	st, err := os.Stat("/dev/fuse")
	if err != nil || st.Mode().Perm()&0o006 != 0o006 {
		return false
	}
	for _, name := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(name); err == nil {
			if st, err := os.Stat(p); err == nil && st.Mode()&os.ModeSetuid != 0 {
				return true
			}
		}
	}
	return false
}

// A user without CAP_SYS_ADMIN mounts through fusermount3 when the system
// allows it, and otherwise gets exit code 6 with the reason, before
// anything is mounted. Either way, a user cannot unmount root's mounts.
func TestUnprivileged(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	// Let nobody reach and write the directory.
	for _, d := range []string{testRoot, filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"backing", "mnt", "rootmnt"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o777); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "backing", "a.txt"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	if userMountsPossible() {
		r := asNobody(t, dir, "mount", "--daemon", "backing", "mnt")
		if r.code != 0 {
			t.Fatalf("mount as nobody: exit %d\n%s", r.code, r.stderr)
		}
		mnt := filepath.Join(dir, "mnt")
		t.Cleanup(func() { lazyUnmountUnder(mnt) })
		if b, err := os.ReadFile(filepath.Join(mnt, "a.txt")); err != nil || string(b) != "a\n" {
			t.Errorf("read through nobody's mount: %q, %v", b, err)
		}
		if r := asNobody(t, dir, "unmount", "mnt"); r.code != 0 {
			t.Errorf("unmount as nobody: exit %d\n%s", r.code, r.stderr)
		}
		if isMounted(mnt) {
			t.Errorf("%s still mounted", mnt)
		}
	} else {
		r := asNobody(t, dir, "mount", "--daemon", "backing", "mnt")
		if r.code != 6 || !strings.Contains(r.stderr, "vfsfilter: ") {
			t.Errorf("mount as nobody without user mounts: exit %d, want 6\n%s", r.code, r.stderr)
		}
		t.Logf("as expected here: %s", strings.TrimSpace(r.stderr))
		if isMounted(filepath.Join(dir, "mnt")) {
			t.Error("mounted anyway")
		}
	}

	// root's mount is not nobody's to unmount.
	rootmnt := filepath.Join(dir, "rootmnt")
	mountDaemon(t, filepath.Join(dir, "backing"), rootmnt)
	r := asNobody(t, dir, "unmount", "rootmnt")
	if r.code != 6 || !strings.Contains(r.stderr, "was mounted by uid 0; only that user or root can unmount it") {
		t.Errorf("unmount of root's mount as nobody: exit %d, want 6\n%s", r.code, r.stderr)
	}
	if !isMounted(rootmnt) {
		t.Error("nobody unmounted root's mount")
	}
}
