package crypt

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/vfsfilter/vfsfilter/layer"
)

// NewConfigWithout is NewConfig for a tree without the optional feature,
// as trees made before the feature existed are.
func NewConfigWithout(passphrase []byte, logN int, feature string) (*Config, *Keys, error) {
	cfg, k, err := NewConfig(passphrase, logN)
	if err != nil {
		return nil, nil, err
	}
	k.Wipe()
	master, err := cfg.unwrap(passphrase)
	if err != nil {
		return nil, nil, err
	}
	defer wipe(master)
	cfg.Features = slices.DeleteFunc(cfg.Features, func(f string) bool { return f == feature })
	if err := cfg.wrap(master, passphrase, logN); err != nil {
		return nil, nil, err
	}
	k, err = deriveKeys(master, cfg.BlockSize, cfg.Features)
	return cfg, k, err
}

// AsNobody runs this test binary's tests matching run again, as uid and
// gid 65534 (nobody), with the environment variable env set to val, and
// fails t if the child fails. The child runs from a copy of the binary
// in dir, a directory of t's, which it makes reachable for nobody. It
// needs root.
func AsNobody(t *testing.T, run, env, val, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child as another user")
	}
	// The testing package makes t.TempDir's directories 0700 up to
	// TMPDIR.
	for d := dir; d != "/" && d != filepath.Clean(os.TempDir()); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "crypt.test")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run="+run, "-test.v")
	cmd.Env = append(os.Environ(), env+"="+val)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child as nobody: %v\n%s", err, out)
	}
}

// BehindStarted is the number of write-behinds f has started.
func (f *Filter) BehindStarted() int64 { return f.behindStarted.Load() }

// SetBehindTest makes every write-behind of f run run first (a non-zero
// errno fails it without writing), and waitBehind run waiting when it
// finds write-behinds running; nil for both removes the hooks.
func (f *Filter) SetBehindTest(run func() layer.Errno, waiting func()) {
	if run == nil && waiting == nil {
		f.testHooks.Store(nil)
		return
	}
	f.testHooks.Store(&behindHooks{run: run, waiting: waiting})
}
