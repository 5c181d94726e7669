package layer_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
)

// TestDeepPaths: requests on entries deeper than the bridge's path buffer
// (and renames of directories above them) reach the right backing file.
func TestDeepPaths(t *testing.T) {
	mnt, backing := conformance.Mount(t, conformance.Passthrough, layer.MountOptions{})
	var comps []string
	for i := 0; i < 40; i++ {
		comps = append(comps, strings.Repeat(string(rune('a'+i%26)), 1+i%3))
	}
	rel := filepath.Join(comps...)
	if err := os.MkdirAll(filepath.Join(mnt, rel), 0755); err != nil {
		t.Fatal(err)
	}
	for _, depth := range []int{1, 2, 23, 24, 25, 40} {
		p := filepath.Join(append(comps[:depth:depth], "f")...)
		if err := os.WriteFile(filepath.Join(mnt, p), []byte(p), 0644); err != nil {
			t.Fatalf("depth %d: %v", depth, err)
		}
		got, err := os.ReadFile(filepath.Join(backing, p))
		if err != nil || string(got) != p {
			t.Fatalf("depth %d in backing: %q, %v", depth, got, err)
		}
	}
	// Rename a directory in the middle: the entries below it follow.
	moved := append([]string{comps[0], "moved"}, comps[2:]...)
	if err := os.Rename(filepath.Join(mnt, comps[0], comps[1]), filepath.Join(mnt, comps[0], "moved")); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(append(moved, "f")...)
	if err := os.Chmod(filepath.Join(mnt, p), 0600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(filepath.Join(backing, p))
	if err != nil || st.Mode().Perm() != 0600 {
		t.Fatalf("chmod through the mount after the rename: %v, %v", st, err)
	}
	ents, err := os.ReadDir(filepath.Join(mnt, filepath.Join(moved[:30]...)))
	if err != nil || len(ents) != 1 {
		t.Fatalf("listing at depth 30: %v, %v", ents, err)
	}
	if err := os.RemoveAll(filepath.Join(mnt, comps[0])); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(backing); len(left) != 0 {
		t.Fatalf("left in backing: %v", left)
	}
}

// TestUnreachable: the bridge's paths for nodes without a name are
// recognised, and nothing else is, whatever a user names an entry.
func TestUnreachable(t *testing.T) {
	root := layer.UnreachablePath("")
	for _, p := range []string{root, layer.UnreachablePath("x"), layer.UnreachablePath("x/y")} {
		require.True(t, layer.Unreachable(p), p)
	}
	for _, p := range []string{"", ".vfsfilter", ".vfsfilter.0123456789abcdef/deleted", root + "x", "a/" + root,
		".vfsfilter." + strings.Repeat("A", 26) + "/deleted"} {
		require.False(t, layer.Unreachable(p), p)
	}
}
