package namespace

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// parse parses a TOML rules document, failing the test on error.
func parse(t testing.TB, doc string) *Rules {
	t.Helper()
	r, err := ParseRules(strings.NewReader(doc), "test.toml")
	require.NoError(t, err)
	return r
}

// compile parses and compiles a TOML rules document plus extra hide flags.
func compile(t testing.TB, doc string, opts CompileOptions, hides ...string) *Map {
	t.Helper()
	r := parse(t, doc)
	for _, h := range hides {
		require.NoError(t, r.AddHide(h))
	}
	m, err := r.Compile(opts)
	require.NoError(t, err)
	return m
}

// compileErr parses and compiles doc and returns the error of either step.
func compileErr(doc string, opts CompileOptions) error {
	r, err := ParseRules(strings.NewReader(doc), "test.toml")
	if err != nil {
		return err
	}
	_, err = r.Compile(opts)
	return err
}

func pass(b string) Target { return Target{Kind: Pass, Backing: b} }

var hidden = Target{Kind: Hidden}

func TestCleanRel(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      string
	}{
		{"", "", ""},
		{"/", "", ""},
		{".", "", ""},
		{"./", "", ""},
		{"a", "a", ""},
		{"a/b", "a/b", ""},
		{"/a/b/", "a/b", ""},
		{"a//b", "a/b", ""},
		{"./a", "a", ""},
		{"a/./b/.", "a/b", ""},
		{"///a///b///", "a/b", ""},
		{"a/../b", "b", ""},
		{"a/b/../../c", "c", ""},
		{"a/..", "", ""},
		{"/..a/b..", "..a/b..", ""}, // dots inside names are ordinary
		{"...", "...", ""},
		{"..", "", "escapes"},
		{"../x", "", "escapes"},
		{"/../x", "", "escapes"},
		{"a/../../b", "", "escapes"},
		{"a/./../..", "", "escapes"},
		{"a\x00b", "", "NUL"},
		{"\x00", "", "NUL"},
		{"a/b\x00/../c", "", "NUL"},
	} {
		t.Run(fmt.Sprintf("%q", tc.in), func(t *testing.T) {
			got, err := CleanRel(tc.in)
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				if tc.err == "escapes" {
					assert.ErrorIs(t, err, ErrEscapesRoot)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.True(t, isClean(got))
		})
	}
}

func TestAddHideErrors(t *testing.T) {
	for _, tc := range []struct{ pattern, err string }{
		{"", "empty pattern"},
		{"[", "syntax error"},
		{"a/[b", "syntax error"},
		{`x\`, "syntax error"},
		{"[]", "syntax error"},
		{"a[", "syntax error"},
		{"/", "root"},
		{"//", "root"},
		{"./", "root"},
		{"..", `".."`},
		{"a/../b", `".."`},
		{"a\x00", "NUL"},
	} {
		t.Run(fmt.Sprintf("%q", tc.pattern), func(t *testing.T) {
			var r Rules
			err := r.AddHide(tc.pattern)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)
			assert.Contains(t, err.Error(), fmt.Sprintf("%q", tc.pattern), "the message names the pattern")
			assert.True(t, r.Empty())
		})
	}
}

func TestHidePatterns(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		hidden  []string
		visible []string
	}{
		{"*.tmp", []string{"a.tmp", "x/a.tmp", "x/y/.tmp", "a.tmp/below"}, []string{"a.tmpx", "tmp", "x.tmp.d/y"}},
		{".git", []string{".git", "a/.git", "a/.git/config"}, []string{".gitignore", "a/git"}},
		{"build/output", []string{"build/output", "build/output/x"}, []string{"output", "a/build/output", "build", "build/outputs"}},
		{"/build", []string{"build", "build/x"}, []string{"a/build", "builds"}},
		{"/build/", []string{"build", "build/x"}, []string{"a/build"}},
		{"build/", []string{"build", "build/x"}, []string{"a/build"}}, // contains "/": a path pattern
		{"/a/b/", []string{"a/b", "a/b/c"}, []string{"a", "x/a/b", "a/bc"}},
		{"./a//b", []string{"a/b"}, []string{"a", "x/a/b"}},
		{"src/*/gen", []string{"src/x/gen", "src/y/gen/f"}, []string{"src/gen", "src/x/y/gen", "x/src/y/gen"}},
		{"*/gen", []string{"a/gen", "b/gen/c"}, []string{"gen", "a/b/gen"}},
		{"*/*", []string{"a/b", "a/b/c"}, []string{"a"}},
		{"build/*.o", []string{"build/x.o", "build/x.o/y"}, []string{"x.o", "a/build/x.o", "build/x.c"}},
		{"tmp*", []string{"tmp", "tmpfile", "a/tmp1"}, []string{"atmp", "a/xtmp"}},
		{"*cache*", []string{"cache", "a/.cache", "my-cache-dir/x"}, []string{"cach", "a/b"}},
		{"*", []string{"a", "a/b", ".dot"}, nil},
		{".*", []string{".git", "a/.hidden"}, []string{"a", "a.b"}},
		{"a?c", []string{"abc", "x/a.c"}, []string{"ac", "abbc"}},
		{"[ab]*.log", []string{"a1.log", "x/b.log"}, []string{"c.log"}},
		{`\*star`, []string{"*star", "x/*star"}, []string{"xstar"}},
		{"日本*", []string{"日本語", "x/日本"}, []string{"本日"}},
	} {
		t.Run(tc.pattern, func(t *testing.T) {
			var r Rules
			require.NoError(t, r.AddHide(tc.pattern))
			m, err := r.Compile(CompileOptions{})
			require.NoError(t, err)
			c := &compiler{hides: r.hides}
			for _, p := range tc.hidden {
				assert.Equal(t, hidden, m.Resolve(p), "Resolve(%q)", p)
				assert.NotEmpty(t, c.whyHidden(p), "reference: %q", p)
				_, ok := m.VisiblePath(p)
				assert.False(t, ok, "VisiblePath(%q)", p)
			}
			for _, p := range tc.visible {
				assert.Equal(t, pass(p), m.Resolve(p), "Resolve(%q)", p)
				assert.Empty(t, c.whyHidden(p), "reference: %q", p)
				v, ok := m.VisiblePath(p)
				assert.True(t, ok, "VisiblePath(%q)", p)
				assert.Equal(t, p, v)
				dir, name := splitPath(p)
				v, ok = m.VisibleName(dir, name)
				assert.True(t, ok, "VisibleName(%q, %q)", dir, name)
				assert.Equal(t, name, v)
			}
		})
	}
}

// TestHiddenMatchesReference checks the fast matchers (literal maps, prefix/
// suffix shortcuts, per-directory and per-depth indexes) against the plain
// path.Match reference on many generated paths.
func TestHiddenMatchesReference(t *testing.T) {
	patterns := []string{
		"*.tmp", ".git", "build/output", "/secret", "src/*/gen", "*/x?z",
		"cache*", "*log*", "[ab]c", "a/b/*.o", "/top/*", "*/*/deep", "k",
	}
	var r Rules
	for _, p := range patterns {
		require.NoError(t, r.AddHide(p))
	}
	opts := CompileOptions{AlwaysHide: []string{".vfsfilter", "k2/internal"}}
	m, err := r.Compile(opts)
	require.NoError(t, err)
	c := &compiler{hides: r.hides, internal: []string{".vfsfilter", "k2/internal"}}

	names := []string{
		"a", "b", "ac", "bc", "c", "x.tmp", ".git", "build", "output", "secret",
		"src", "gen", "xyz", "x_z", "cache", "cachedir", "mylog.txt", "b.o", "top",
		"deep", "k", "k2", "internal", ".vfsfilter", "tmp",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		n := 1 + rng.IntN(4)
		comps := make([]string, n)
		for i := range comps {
			comps[i] = names[rng.IntN(len(names))]
		}
		p := strings.Join(comps, "/")
		want := c.whyHidden(p) != ""
		assert.Equal(t, want, m.Resolve(p).Kind == Hidden, "Resolve(%q)", p)
		_, ok := m.VisiblePath(p)
		assert.Equal(t, want, !ok, "VisiblePath(%q)", p)
		dir, name := splitPath(p)
		if c.whyHidden(dir) == "" {
			_, ok := m.VisibleName(dir, name)
			assert.Equal(t, want, !ok, "VisibleName(%q, %q)", dir, name)
		}
	}
}

func TestCompileName(t *testing.T) {
	for _, tc := range []struct {
		pat  string
		kind matchKind
	}{
		{"abc", matchLiteral}, {"*", matchAny}, {"*.tmp", matchSuffix}, {"tmp*", matchPrefix},
		{"*x*", matchContains}, {"**", matchContains}, {"a*b", matchGlob}, {"?", matchGlob},
		{`\*`, matchGlob}, {"*[a]", matchGlob}, {"[a]*", matchGlob}, {"*a*b*", matchGlob},
	} {
		n := compileName(tc.pat)
		assert.Equal(t, tc.kind, n.kind, tc.pat)
		for _, name := range []string{"", "a", "abc", "x", "a.tmp", "tmpx", "axb", "*", "[a]", "ab", "aab"} {
			want, err := filepathMatch(tc.pat, name)
			require.NoError(t, err)
			assert.Equal(t, want, n.match(name), "%q vs %q", tc.pat, name)
		}
	}
}

// filepathMatch is path.Match under another name, to make the reference
// explicit.
func filepathMatch(pattern, name string) (bool, error) { return filepath.Match(pattern, name) }

func TestRename(t *testing.T) {
	m := compile(t, `
[[rename]]
backing = "docs/README.txt"
visible = "docs/README.md"
[[rename]]
backing = "olddir"
visible = "newdir"
[[rename]]
backing = "olddir/sub"
visible = "olddir/sub2"
[[rename]]
backing = "olddir/sub/f.txt"
visible = "olddir/sub/f.md"
[[rename]]
backing = "/a/"       # cleaned
visible = "./b"
[[rename]]
backing = "b"         # chain: backing a shows as b, backing b shows as c
visible = "c"
[[rename]]
backing = "p"         # swap
visible = "q"
[[rename]]
backing = "q"
visible = "p"
`, CompileOptions{})

	for _, tc := range []struct {
		visible string
		want    Target
	}{
		{"", pass("")},
		{"docs", pass("docs")},
		{"docs/README.md", pass("docs/README.txt")},
		{"docs/README.txt", hidden}, // the backing name is invisible
		{"docs/README.md/x", pass("docs/README.txt/x")},
		{"other/README.md", pass("other/README.md")}, // renames are per directory
		{"newdir", pass("olddir")},
		{"newdir/x", pass("olddir/x")},
		{"newdir/x/y/z", pass("olddir/x/y/z")},
		{"olddir", hidden},
		{"olddir/x", hidden},
		{"newdir/sub2", pass("olddir/sub")},
		{"newdir/sub2/g", pass("olddir/sub/g")},
		{"newdir/sub", hidden},
		{"newdir/sub2/f.md", pass("olddir/sub/f.txt")},
		{"newdir/sub2/f.txt", hidden},
		{"newdir/sub2/f.md/deeper", pass("olddir/sub/f.txt/deeper")},
		{"x/olddir", pass("x/olddir")},
		{"a", hidden},
		{"b", pass("a")},
		{"c", pass("b")},
		{"b/x", pass("a/x")},
		{"p", pass("q")},
		{"q", pass("p")},
		{"p/q", pass("q/q")},
	} {
		assert.Equal(t, tc.want, m.Resolve(tc.visible), "Resolve(%q)", tc.visible)
		if tc.want.Kind == Pass {
			v, ok := m.VisiblePath(tc.want.Backing)
			assert.True(t, ok, "VisiblePath(%q)", tc.want.Backing)
			assert.Equal(t, tc.visible, v, "VisiblePath(%q)", tc.want.Backing)
		}
	}

	for _, tc := range []struct {
		dir, backing, want string
		ok                 bool
	}{
		{"docs", "README.txt", "README.md", true},
		{"docs", "README.md", "", false}, // shadowed by the rename target
		{"docs", "other", "other", true},
		{"", "olddir", "newdir", true},
		{"", "newdir", "", false},
		{"newdir", "sub", "sub2", true},
		{"newdir", "sub2", "", false},
		{"newdir/sub2", "f.txt", "f.md", true},
		{"newdir/sub2", "f.md", "", false},
		{"olddir/sub", "f.txt", "f.txt", true}, // rules are keyed by visible directory
		{"", "a", "b", true},
		{"", "b", "c", true},
		{"", "c", "", false},
		{"", "p", "q", true},
		{"", "q", "p", true},
		{"", ".", ".", true},
		{"", "..", "..", true},
	} {
		got, ok := m.VisibleName(tc.dir, tc.backing)
		assert.Equal(t, tc.ok, ok, "VisibleName(%q, %q)", tc.dir, tc.backing)
		assert.Equal(t, tc.want, got, "VisibleName(%q, %q)", tc.dir, tc.backing)
	}

	for _, tc := range []struct {
		backing, want string
		ok            bool
	}{
		{"olddir/sub/f.txt", "newdir/sub2/f.md", true},
		{"olddir/sub/x/y", "newdir/sub2/x/y", true},
		{"newdir", "", false},
		{"newdir/x", "", false},
		{"c/x", "", false},
		{"x/y", "x/y", true},
	} {
		got, ok := m.VisiblePath(tc.backing)
		assert.Equal(t, tc.ok, ok, "VisiblePath(%q)", tc.backing)
		assert.Equal(t, tc.want, got, "VisiblePath(%q)", tc.backing)
	}
	assert.False(t, m.Empty())
	assert.Empty(t, m.Injected(""))
}

// TestRenameRescuesFromPattern shows why patterns match visible names: a
// backing name matching a pattern can be shown under another name, and a
// visible name matching it is hidden no matter what the backing name is.
func TestRenameRescuesFromPattern(t *testing.T) {
	m := compile(t, `
hide = ["*.tmp"]
[[rename]]
backing = "notes.tmp"
visible = "notes.txt"
`, CompileOptions{})
	assert.Equal(t, pass("notes.tmp"), m.Resolve("notes.txt"))
	assert.Equal(t, hidden, m.Resolve("notes.tmp"))
	v, ok := m.VisibleName("", "notes.tmp")
	assert.True(t, ok)
	assert.Equal(t, "notes.txt", v)
	v, ok = m.VisiblePath("notes.tmp")
	assert.True(t, ok)
	assert.Equal(t, "notes.txt", v)
	_, ok = m.VisibleName("", "other.tmp")
	assert.False(t, ok)

	// Path patterns follow renamed directories by their visible name.
	m = compile(t, `
hide = ["new/secret", "old/public"]
[[rename]]
backing = "old"
visible = "new"
`, CompileOptions{})
	assert.Equal(t, hidden, m.Resolve("new/secret"))
	assert.Equal(t, pass("old/public"), m.Resolve("new/public"))
	_, ok = m.VisiblePath("old/secret")
	assert.False(t, ok)
	v, ok = m.VisiblePath("old/public")
	assert.True(t, ok)
	assert.Equal(t, "new/public", v)
}

func TestVirtual(t *testing.T) {
	src := filepath.Join(t.TempDir(), "license")
	require.NoError(t, os.WriteFile(src, []byte("MIT\n"), 0o600))
	m := compile(t, fmt.Sprintf(`
[[virtual]]
path = "VERSION"
content = "1.2.3\n"
[[virtual]]
path = "/docs/LICENSE"
source = %q
mode = 0o640
[[virtual]]
path = "docs/EMPTY"
content = ""
mode = 0
[[virtual]]
path = "a/b/c/only-in-backing"
content = "x"
`, src), CompileOptions{})

	tv := m.Resolve("VERSION")
	require.Equal(t, Virtual, tv.Kind)
	assert.Equal(t, "VERSION", tv.Virtual.Path)
	assert.Equal(t, []byte("1.2.3\n"), tv.Virtual.Content)
	assert.Equal(t, uint32(0o444), tv.Virtual.Mode)
	assert.NotZero(t, tv.Virtual.Ino&(1<<63), "synthetic inode has the high bit set")
	assert.Equal(t, virtualIno("VERSION"), tv.Virtual.Ino, "stable")

	tl := m.Resolve("docs/LICENSE")
	require.Equal(t, Virtual, tl.Kind)
	assert.Equal(t, []byte("MIT\n"), tl.Virtual.Content)
	assert.Equal(t, uint32(0o640), tl.Virtual.Mode)
	assert.NotEqual(t, tv.Virtual.Ino, tl.Virtual.Ino)

	te := m.Resolve("docs/EMPTY")
	require.Equal(t, Virtual, te.Kind)
	assert.Equal(t, uint32(0), te.Virtual.Mode, "an explicit mode 0 is kept")
	assert.NotNil(t, te.Virtual.Content)
	assert.Empty(t, te.Virtual.Content)

	assert.Equal(t, Virtual, m.Resolve("a/b/c/only-in-backing").Kind)
	assert.Equal(t, pass("a/b"), m.Resolve("a/b"))
	assert.Equal(t, hidden, m.Resolve("VERSION/x"), "nothing lies below a file")
	assert.Equal(t, pass("docs/README"), m.Resolve("docs/README"))

	// A virtual file shadows the backing entry of the same name.
	_, ok := m.VisibleName("", "VERSION")
	assert.False(t, ok)
	_, ok = m.VisiblePath("VERSION")
	assert.False(t, ok)
	_, ok = m.VisiblePath("VERSION/x")
	assert.False(t, ok)
	v, ok := m.VisibleName("", "VERSION.txt")
	assert.True(t, ok)
	assert.Equal(t, "VERSION.txt", v)

	inj := m.Injected("docs")
	require.Len(t, inj, 2)
	assert.Equal(t, "EMPTY", inj[0].Name)
	assert.Equal(t, "LICENSE", inj[1].Name, "sorted by name")
	assert.Same(t, tl.Virtual, inj[1].Virtual)
	assert.Nil(t, inj[1].Bind)
	assert.Len(t, m.Injected(""), 1)
	assert.Empty(t, m.Injected("a/b"))
	assert.Empty(t, m.Binds())
}

func TestBind(t *testing.T) {
	dir := t.TempDir()
	m := compile(t, fmt.Sprintf(`
hide = ["*.tmp", "shared/other/secret"]
[[bind]]
path = "shared/other"
source = %q
[[bind]]
path = "b2"
source = "%s/."
`, dir, dir), CompileOptions{})

	binds := m.Binds()
	require.Len(t, binds, 2)
	assert.Equal(t, "b2", binds[0].Path, "sorted by path")
	assert.Equal(t, dir, binds[0].Source, "source is cleaned")
	b := binds[1]
	assert.Equal(t, BindDir{Path: "shared/other", Source: dir}, *b)

	assert.Equal(t, Target{Kind: Bind, Bind: b}, m.Resolve("shared/other"))
	assert.Equal(t, Target{Kind: Bind, Bind: b, Backing: "x/y"}, m.Resolve("shared/other/x/y"))
	assert.Equal(t, hidden, m.Resolve("shared/other/x/y.tmp"), "patterns apply inside binds")
	assert.Equal(t, hidden, m.Resolve("shared/other/secret/z"))
	assert.Equal(t, pass("shared"), m.Resolve("shared"))
	assert.Equal(t, pass("shared/x"), m.Resolve("shared/x"))

	inj := m.Injected("shared")
	require.Len(t, inj, 1)
	assert.Equal(t, Injected{Name: "other", Bind: b}, inj[0])

	// The backing entry at the bind's path is shadowed.
	_, ok := m.VisibleName("shared", "other")
	assert.False(t, ok)
	_, ok = m.VisiblePath("shared/other/x")
	assert.False(t, ok)

	// Listing inside the bind.
	v, ok := m.VisibleName("shared/other", "x")
	assert.True(t, ok)
	assert.Equal(t, "x", v)
	_, ok = m.VisibleName("shared/other", "secret")
	assert.False(t, ok)
	_, ok = m.VisibleName("shared/other/x", "y.tmp")
	assert.False(t, ok)

	for _, tc := range []struct {
		rel, want string
		ok        bool
	}{
		{"", "shared/other", true},
		{"x", "shared/other/x", true},
		{"x/y", "shared/other/x/y", true},
		{"x/y.tmp", "", false},
		{"secret", "", false},
		{"secret/z", "", false},
		{"x/secret", "shared/other/x/secret", true},
	} {
		got, ok := m.BindVisiblePath(b, tc.rel)
		assert.Equal(t, tc.ok, ok, "BindVisiblePath(%q)", tc.rel)
		assert.Equal(t, tc.want, got, "BindVisiblePath(%q)", tc.rel)
		if ok {
			assert.Equal(t, Target{Kind: Bind, Bind: b, Backing: tc.rel}, m.Resolve(got))
		}
	}
	_, ok = m.BindVisiblePath(&BindDir{Path: "shared/other", Source: dir}, "x")
	assert.False(t, ok, "a BindDir of another Map")
	_, ok = m.BindVisiblePath(nil, "x")
	assert.False(t, ok)
}

func TestAlwaysHide(t *testing.T) {
	opts := CompileOptions{AlwaysHide: []string{"/.vfsfilter/", "sub/.internal"}}
	m := compile(t, ``, opts)
	assert.False(t, m.Empty())
	assert.Equal(t, hidden, m.Resolve(".vfsfilter"))
	assert.Equal(t, hidden, m.Resolve(".vfsfilter/settings.toml"))
	assert.Equal(t, pass("x/.vfsfilter"), m.Resolve("x/.vfsfilter"), "anchored at the root")
	assert.Equal(t, hidden, m.Resolve("sub/.internal"))
	_, ok := m.VisibleName("", ".vfsfilter")
	assert.False(t, ok)
	_, ok = m.VisiblePath(".vfsfilter/a")
	assert.False(t, ok)
	_, ok = m.VisibleName("x", ".vfsfilter")
	assert.True(t, ok)

	for _, tc := range []struct{ doc, err string }{
		{"[[rename]]\nbacking = \".vfsfilter\"\nvisible = \"settings\"", `would move the internal path ".vfsfilter"`},
		{"[[rename]]\nbacking = \"sub\"\nvisible = \"sub2\"", `would move the internal path "sub/.internal"`},
		{"[[rename]]\nbacking = \"sub/.internal/x\"\nvisible = \"sub/.internal/y\"", `would move the internal path`},
		{"[[rename]]\nbacking = \"settings\"\nvisible = \".vfsfilter\"", `is hidden by the internal name ".vfsfilter"`},
		{"[[virtual]]\npath = \".vfsfilter\"\ncontent = \"\"", `is hidden by the internal name`},
		{"[[virtual]]\npath = \".vfsfilter/x\"\ncontent = \"\"", `parent directory ".vfsfilter" is not visible: hidden by the internal name`},
	} {
		err := compileErr(tc.doc, opts)
		require.Error(t, err, tc.doc)
		assert.Contains(t, err.Error(), tc.err)
	}

	_, err := (&Rules{}).Compile(CompileOptions{AlwaysHide: []string{"/"}})
	assert.ErrorContains(t, err, "is the root")
	_, err = (&Rules{}).Compile(CompileOptions{AlwaysHide: []string{"../x"}})
	assert.ErrorIs(t, err, ErrEscapesRoot)
}

func TestEmpty(t *testing.T) {
	var nilMap *Map
	for name, m := range map[string]*Map{
		"nil":   nilMap,
		"empty": compile(t, ``, CompileOptions{}),
	} {
		t.Run(name, func(t *testing.T) {
			assert.True(t, m.Empty())
			assert.Equal(t, pass("a/b"), m.Resolve("a/b"))
			v, ok := m.VisibleName("a", "b")
			assert.True(t, ok)
			assert.Equal(t, "b", v)
			v, ok = m.VisiblePath("a/b")
			assert.True(t, ok)
			assert.Equal(t, "a/b", v)
			assert.Nil(t, m.Injected(""))
			assert.Nil(t, m.Binds())
		})
	}
	var r Rules
	assert.True(t, r.Empty())
	require.NoError(t, r.AddHide("x"))
	assert.False(t, r.Empty())
	m, err := r.Compile(CompileOptions{})
	require.NoError(t, err)
	assert.False(t, m.Empty())
}

// TestRoundTrip is a property test over a rule set that uses every kind of
// rule: for every backing path built from a set of names, listing it
// component by component (VisibleName) must agree with VisiblePath, and the
// visible path must Resolve back to the backing path. Conversely, every
// visible path that resolves to a backing path maps back to it, and every
// virtual file or bind that resolves is listed by Injected.
func TestRoundTrip(t *testing.T) {
	m := compile(t, fmt.Sprintf(`
hide = ["*.tmp", ".git", "build/output", "/secret", "src/*/gen", "newdir/hid*"]
[[rename]]
backing = "olddir"
visible = "newdir"
[[rename]]
backing = "olddir/sub"
visible = "olddir/sub2"
[[rename]]
backing = "olddir/sub/f.txt"
visible = "olddir/sub/f.md"
[[rename]]
backing = "a"
visible = "b"
[[rename]]
backing = "b"
visible = "c"
[[rename]]
backing = "p"
visible = "q"
[[rename]]
backing = "q"
visible = "p"
[[rename]]
backing = "x.tmp"
visible = "x.txt"
[[rename]]
backing = "docs/README.txt"
visible = "docs/README.md"
[[virtual]]
path = "VERSION"
content = "1"
[[virtual]]
path = "newdir/info"
content = "2"
[[virtual]]
path = "docs/README.txt"
content = "the backing README.txt is shown as README.md"
[[bind]]
path = "shared/other"
source = %q
`, t.TempDir()), CompileOptions{AlwaysHide: []string{".vfsfilter"}})

	names := []string{
		"olddir", "newdir", "sub", "sub2", "f.txt", "f.md", "a", "b", "c", "p", "q",
		"x.tmp", "x.txt", "docs", "README.txt", "README.md", "VERSION", "info", "shared",
		"other", ".git", "build", "output", "secret", "src", "gen", "hidden", ".vfsfilter",
	}
	var paths []string
	var gen func(prefix string, depth int)
	gen = func(prefix string, depth int) {
		for _, n := range names {
			p := joinPath(prefix, n)
			paths = append(paths, p)
			if depth > 1 {
				gen(p, depth-1)
			}
		}
	}
	gen("", 3)

	visibleSeen := map[string]string{}
	for _, bp := range paths {
		// What a user listing directory after directory would see.
		vis, listed := "", true
		for c := range strings.SplitSeq(bp, "/") {
			n, ok := m.VisibleName(vis, c)
			if !ok {
				listed = false
				break
			}
			vis = joinPath(vis, n)
		}
		vp, ok := m.VisiblePath(bp)
		require.Equal(t, listed, ok, "VisiblePath(%q) vs listing", bp)
		if !ok {
			continue
		}
		require.Equal(t, vis, vp, "VisiblePath(%q) vs listing", bp)
		require.Equal(t, pass(bp), m.Resolve(vp), "Resolve(VisiblePath(%q))", bp)
		if prev, dup := visibleSeen[vp]; dup {
			t.Fatalf("backing %q and %q both visible as %q", prev, bp, vp)
		}
		visibleSeen[vp] = bp
	}
	require.NotEmpty(t, visibleSeen)

	kinds := map[Kind]int{}
	for _, vp := range paths {
		tg := m.Resolve(vp)
		kinds[tg.Kind]++
		dir, name := splitPath(vp)
		switch tg.Kind {
		case Pass:
			back, ok := m.VisiblePath(tg.Backing)
			require.True(t, ok, "VisiblePath(Resolve(%q))", vp)
			require.Equal(t, vp, back, "VisiblePath(Resolve(%q))", vp)
		case Virtual, Bind:
			if tg.Kind == Bind && tg.Backing != "" {
				back, ok := m.BindVisiblePath(tg.Bind, tg.Backing)
				require.True(t, ok)
				require.Equal(t, vp, back)
				continue
			}
			require.True(t, slices.ContainsFunc(m.Injected(dir), func(i Injected) bool { return i.Name == name }),
				"%q resolves to %v but is not injected", vp, tg.Kind)
		case Hidden:
			_, seen := visibleSeen[vp]
			require.False(t, seen, "%q is Hidden but listed", vp)
		}
	}
	for _, k := range []Kind{Pass, Hidden, Virtual, Bind} {
		assert.NotZero(t, kinds[k], "no %v target generated", k)
	}
}

func TestCompileErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o600))
	big := filepath.Join(dir, "big")
	require.NoError(t, os.WriteFile(big, nil, 0o600))
	require.NoError(t, os.Truncate(big, MaxVirtualSize+1))

	for _, tc := range []struct {
		name, doc, err string
	}{
		{"rename visible hidden",
			"hide = [\"*.md\"]\n[[rename]]\nbacking = \"a.txt\"\nvisible = \"a.md\"",
			`test.toml: rename #1: visible path "a.md" is hidden by test.toml: hide #1 "*.md"`},
		{"rename visible under hidden dir",
			"hide = [\"/d\"]\n[[rename]]\nbacking = \"d/a\"\nvisible = \"d/b\"",
			`test.toml: rename #1: backing directory "d" is not visible: "d" is hidden by test.toml: hide #1 "/d"`},
		{"rename below a hidden ancestor",
			"hide = [\"/d\"]\n[[rename]]\nbacking = \"d/e/a\"\nvisible = \"d/e/b\"",
			`test.toml: rename #1: backing directory "d/e" is not visible: "d" is hidden by test.toml: hide #1 "/d"`},
		{"rename visible under renamed hidden dir",
			"hide = [\"/new\"]\n[[rename]]\nbacking = \"old\"\nvisible = \"new\"",
			`visible path "new" is hidden`},
		{"two renames to the same visible path",
			"[[rename]]\nbacking = \"a\"\nvisible = \"c\"\n[[rename]]\nbacking = \"b\"\nvisible = \"c\"",
			`test.toml: rename #2: visible path "c" is already the target of test.toml: rename #1`},
		{"two renames from the same backing path",
			"[[rename]]\nbacking = \"a\"\nvisible = \"b\"\n[[rename]]\nbacking = \"a\"\nvisible = \"c\"",
			`test.toml: rename #2: backing path "a" is already renamed by test.toml: rename #1`},
		{"rename uses visible parent",
			"[[rename]]\nbacking = \"old\"\nvisible = \"new\"\n[[rename]]\nbacking = \"new/a\"\nvisible = \"new/b\"",
			`test.toml: rename #2: backing directory "new" is not visible: "new" is shadowed by the target of a rename (the paths of a rename are backing paths)`},
		{"rename under bind",
			fmt.Sprintf("[[bind]]\npath = \"s\"\nsource = %q\n[[rename]]\nbacking = \"s/a\"\nvisible = \"s/b\"", dir),
			`test.toml: rename #1: backing directory "s" is not visible: "s" is shadowed by the virtual file or bind "s"`},
		{"rename onto virtual",
			"[[virtual]]\npath = \"v\"\ncontent = \"\"\n[[rename]]\nbacking = \"a\"\nvisible = \"v\"",
			`test.toml: rename #1: visible path "v" collides with test.toml: virtual #1`},
		{"virtual hidden",
			"hide = [\"*.tmp\"]\n[[virtual]]\npath = \"d/v.tmp\"\ncontent = \"\"",
			`test.toml: virtual #1: path "d/v.tmp" is hidden by test.toml: hide #1 "*.tmp"`},
		{"bind hidden",
			fmt.Sprintf("hide = [\"s/*\"]\n[[bind]]\npath = \"s/b\"\nsource = %q", dir),
			`test.toml: bind #1: path "s/b" is hidden by test.toml: hide #1 "s/*"`},
		{"virtual parent hidden",
			"hide = [\"build\"]\n[[virtual]]\npath = \"build/v\"\ncontent = \"\"",
			`test.toml: virtual #1: parent directory "build" is not visible: hidden by test.toml: hide #1 "build"`},
		{"virtual ancestor hidden",
			"hide = [\"/a/b\"]\n[[virtual]]\npath = \"a/b/c/v\"\ncontent = \"\"",
			`parent directory "a/b/c" is not visible: "a/b" is hidden by test.toml: hide #1 "/a/b"`},
		{"virtual parent is rename source",
			"[[rename]]\nbacking = \"old\"\nvisible = \"new\"\n[[virtual]]\npath = \"old/v\"\ncontent = \"\"",
			`test.toml: virtual #1: parent directory "old" is not visible: "old" is the backing name of an entry renamed to "new"; use the visible name`},
		{"virtual under virtual",
			"[[virtual]]\npath = \"f\"\ncontent = \"\"\n[[virtual]]\npath = \"f/g\"\ncontent = \"\"",
			`test.toml: virtual #2: path "f/g" lies under the virtual file "f" (test.toml: virtual #1)`},
		{"virtual deep under virtual",
			"[[virtual]]\npath = \"f/g/h\"\ncontent = \"\"\n[[virtual]]\npath = \"f\"\ncontent = \"\"",
			`test.toml: virtual #1: path "f/g/h" lies under the virtual file "f" (test.toml: virtual #2)`},
		{"virtual under bind",
			fmt.Sprintf("[[bind]]\npath = \"s\"\nsource = %q\n[[virtual]]\npath = \"s/v\"\ncontent = \"\"", dir),
			`test.toml: virtual #1: path "s/v" lies under the bind "s" (test.toml: bind #1)`},
		{"bind under bind",
			fmt.Sprintf("[[bind]]\npath = \"s/t\"\nsource = %q\n[[bind]]\npath = \"s\"\nsource = %q", dir, dir),
			`test.toml: bind #1: path "s/t" lies under the bind "s" (test.toml: bind #2)`},
		{"bind under virtual",
			fmt.Sprintf("[[virtual]]\npath = \"s\"\ncontent = \"\"\n[[bind]]\npath = \"s/b\"\nsource = %q", dir),
			`test.toml: bind #1: path "s/b" lies under the virtual file "s"`},
		{"two virtuals at the same path",
			"[[virtual]]\npath = \"v\"\ncontent = \"\"\n[[virtual]]\npath = \"/v/\"\ncontent = \"\"",
			`test.toml: virtual #2: path "v" is already used by test.toml: virtual #1`},
		{"virtual and bind at the same path",
			fmt.Sprintf("[[virtual]]\npath = \"v\"\ncontent = \"\"\n[[bind]]\npath = \"v\"\nsource = %q", dir),
			`test.toml: bind #1: path "v" is already used by test.toml: virtual #1`},
		{"bind source missing",
			fmt.Sprintf("[[bind]]\npath = \"b\"\nsource = %q", filepath.Join(dir, "nope")),
			`test.toml: bind #1: source: stat ` + filepath.Join(dir, "nope") + `: no such file or directory`},
		{"bind source not a directory",
			fmt.Sprintf("[[bind]]\npath = \"b\"\nsource = %q", file),
			`test.toml: bind #1: source "` + file + `" is not a directory`},
		{"virtual source missing",
			fmt.Sprintf("[[virtual]]\npath = \"v\"\nsource = %q", filepath.Join(dir, "nope")),
			`test.toml: virtual #1: source: open ` + filepath.Join(dir, "nope") + `: no such file or directory`},
		{"virtual source a directory",
			fmt.Sprintf("[[virtual]]\npath = \"v\"\nsource = %q", dir),
			`test.toml: virtual #1: source: "` + dir + `" is not a regular file`},
		{"virtual source too big",
			fmt.Sprintf("[[virtual]]\npath = \"v\"\nsource = %q", big),
			`test.toml: virtual #1: source: "` + big + `" is larger than`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := compileErr(tc.doc, CompileOptions{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)
		})
	}

	if os.Geteuid() != 0 {
		unreadable := filepath.Join(dir, "unreadable")
		require.NoError(t, os.WriteFile(unreadable, []byte("x"), 0))
		err := compileErr(fmt.Sprintf("[[virtual]]\npath = \"v\"\nsource = %q", unreadable), CompileOptions{})
		assert.ErrorContains(t, err, "permission denied")
	}
}

// TestRulesAPIErrors covers the checks done when a rule is added in code.
func TestRulesAPIErrors(t *testing.T) {
	var r Rules
	for _, tc := range []struct {
		err  error
		want string
	}{
		{r.AddRename(RenameRule{Backing: "", Visible: "a"}), "rename #1: backing path is the root"},
		{r.AddRename(RenameRule{Backing: "a", Visible: "/"}), "rename #1: visible path is the root"},
		{r.AddRename(RenameRule{Backing: "a", Visible: "a/"}), `backing and visible path are both "a"`},
		{r.AddRename(RenameRule{Backing: "d/a", Visible: "e/b"}), `visible path "e/b" must be in the same directory as backing path "d/a"`},
		{r.AddRename(RenameRule{Backing: "d/a", Visible: "b"}), `must be in the same directory`},
		{r.AddRename(RenameRule{Backing: "../a", Visible: "b"}), "backing: path \"../a\": path escapes the mount root"},
		{r.AddRename(RenameRule{Backing: "a", Visible: "b\x00"}), "visible: path \"b\\x00\" contains a NUL byte"},
		{r.AddVirtual(VirtualRule{Path: "/"}), "virtual #1: path is the root"},
		{r.AddVirtual(VirtualRule{Path: "v", Content: []byte{}, Source: "/x"}), "both content and source"},
		{r.AddVirtual(VirtualRule{Path: "v", Source: "rel"}), `source: "rel" is not an absolute path`},
		{r.AddVirtual(VirtualRule{Path: "v", Mode: 0o4755}), "mode 04755: only permission bits"},
		{r.AddVirtual(VirtualRule{Path: "a/../../v"}), "escapes the mount root"},
		{r.AddBind(BindRule{Path: "", Source: "/"}), "bind #1: path is the root"},
		{r.AddBind(BindRule{Path: "b", Source: "rel/dir"}), `source: "rel/dir" is not an absolute path`},
		{r.AddBind(BindRule{Path: "b"}), "source: empty path"},
	} {
		require.Error(t, tc.err, tc.want)
		assert.Contains(t, tc.err.Error(), tc.want)
	}
	assert.True(t, r.Empty(), "failed rules are not added")

	require.NoError(t, r.AddRename(RenameRule{Backing: "/d/a/", Visible: "d/b"}))
	require.NoError(t, r.AddVirtual(VirtualRule{Path: "v"}))
	require.NoError(t, r.AddBind(BindRule{Path: "b", Source: t.TempDir() + "/"}))
	m, err := r.Compile(CompileOptions{})
	require.NoError(t, err)
	assert.Equal(t, pass("d/a"), m.Resolve("d/b"))
	tv := m.Resolve("v")
	require.Equal(t, Virtual, tv.Kind)
	assert.Equal(t, uint32(DefaultVirtualMode), tv.Virtual.Mode, "Mode 0 means the default in code")
	assert.Equal(t, Bind, m.Resolve("b").Kind)

	// Compile can run again and is not affected by later additions.
	require.NoError(t, r.AddRename(RenameRule{Backing: "d/b", Visible: "d/c"}))
	m2, err := r.Compile(CompileOptions{})
	require.NoError(t, err)
	assert.Equal(t, pass("d/b"), m2.Resolve("d/c"))
	assert.Equal(t, pass("d/c"), m.Resolve("d/c"))
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc, err string
	}{
		{"toml syntax", "hide = [", "test.toml: toml: line 1"},
		{"unknown top-level key", "hide = []\nhidden = [\"x\"]", `test.toml: unknown key "hidden"`},
		{"unknown key in rule",
			"[[rename]]\nbacking = \"a\"\nvisible = \"b\"\n[[rename]]\nbacking = \"c\"\nvisibel = \"d\"",
			`test.toml: rename #2: unknown key "visibel"`},
		{"unknown key in virtual", "[[virtual]]\npath = \"v\"\ncontent = \"\"\nowner = 0", `test.toml: virtual #1: unknown key "owner"`},
		{"unknown table in bind", "[[bind]]\npath = \"b\"\nsource = \"/x\"\n[bind.opts]\nro = true", `test.toml: bind #1: unknown key "opts"`},
		{"unknown table", "[mounts]\nx = 1", `test.toml: unknown key "mounts"`},
		{"hide wrong type", "hide = \"*.tmp\"", "test.toml: hide: must be an array of strings"},
		{"hide element wrong type", "hide = [\"a\", 1]", "test.toml: hide: must be an array of strings"},
		{"hide bad pattern", "hide = [\"ok\", \"[\"]", `test.toml: hide #2 "[": invalid pattern: syntax error in pattern`},
		{"rename not an array", "rename = \"a\"", "test.toml: toml: line 1"},
		{"rename wrong type", "[[rename]]\nbacking = 1\nvisible = \"b\"", `test.toml: rename #1: toml: line 2 (last key "rename.backing"): incompatible types`},
		{"rename missing backing", "[[rename]]\nvisible = \"b\"", `test.toml: rename #1: missing required key "backing"`},
		{"rename missing visible", "[[rename]]\nbacking = \"b\"", `test.toml: rename #1: missing required key "visible"`},
		{"rename other dir", "[[rename]]\nbacking = \"a/b\"\nvisible = \"c/b\"", `test.toml: rename #1: visible path "c/b" must be in the same directory`},
		{"rename escapes", "[[rename]]\nbacking = \"../b\"\nvisible = \"c\"", `test.toml: rename #1: backing: path "../b": path escapes the mount root`},
		{"virtual missing path", "[[virtual]]\ncontent = \"x\"", `test.toml: virtual #1: missing required key "path"`},
		{"virtual both", "[[virtual]]\npath = \"v\"\ncontent = \"x\"\nsource = \"/x\"", "test.toml: virtual #1: both content and source are set"},
		{"virtual neither", "[[virtual]]\npath = \"v\"", "test.toml: virtual #1: neither content nor source is set"},
		{"virtual empty source", "[[virtual]]\npath = \"v\"\nsource = \"\"", "test.toml: virtual #1: source is empty"},
		{"virtual relative source", "[[virtual]]\npath = \"v\"\nsource = \"x\"", `test.toml: virtual #1: source: "x" is not an absolute path`},
		{"virtual mode string", "[[virtual]]\npath = \"v\"\ncontent = \"\"\nmode = \"0444\"", "test.toml: virtual #1: toml: line 4"},
		{"virtual mode type bits", "[[virtual]]\npath = \"v\"\ncontent = \"\"\nmode = 0o100444", "test.toml: virtual #1: mode 0100444: only permission bits"},
		{"virtual mode negative", "[[virtual]]\npath = \"v\"\ncontent = \"\"\nmode = -1", "test.toml: virtual #1: mode -01: only permission bits"},
		{"virtual content wrong type", "[[virtual]]\npath = \"v\"\ncontent = 3", "test.toml: virtual #1: toml: line 3"},
		{"virtual root", "[[virtual]]\npath = \"/\"\ncontent = \"\"", "test.toml: virtual #1: path is the root"},
		{"bind missing source", "[[bind]]\npath = \"b\"", `test.toml: bind #1: missing required key "source"`},
		{"bind missing path", "[[bind]]\nsource = \"/x\"", `test.toml: bind #1: missing required key "path"`},
		{"bind relative source", "[[bind]]\npath = \"b\"\nsource = \"x/y\"", `test.toml: bind #1: source: "x/y" is not an absolute path`},
		{"bind escapes", "[[bind]]\npath = \"a/../..\"\nsource = \"/x\"", "test.toml: bind #1: path: path \"a/../..\": path escapes the mount root"},
		{"bind path wrong type", "[[bind]]\npath = [\"b\"]\nsource = \"/x\"", "test.toml: bind #1: toml: line 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRules(strings.NewReader(tc.doc), "test.toml")
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)
		})
	}
}

func TestExampleFiles(t *testing.T) {
	const dir = "../../testdata/rules"

	// example.toml has placeholder sources: parse only.
	f, err := os.Open(filepath.Join(dir, "example.toml"))
	require.NoError(t, err)
	defer f.Close()
	r, err := ParseRules(f, "example.toml")
	require.NoError(t, err)
	require.Len(t, r.hides, 4)
	assert.Equal(t, []string{"*.tmp", ".git", "build/output", "/secret"},
		[]string{r.hides[0].raw, r.hides[1].raw, r.hides[2].raw, r.hides[3].raw})
	assert.Equal(t, []renameRule{{"example.toml: rename #1", RenameRule{"docs/README.txt", "docs/README.md"}}}, r.renames)
	require.Len(t, r.virtuals, 2)
	assert.Equal(t, VirtualRule{Path: "VERSION", Content: []byte("1.2.3\n"), Mode: 0o444}, r.virtuals[0].VirtualRule)
	assert.Equal(t, VirtualRule{Path: "docs/LICENSE", Source: "/path/to/LICENSE", Mode: 0o440, modeSet: true}, r.virtuals[1].VirtualRule)
	assert.Equal(t, []bindRule{{"example.toml: bind #1", BindRule{"shared/other", "/path/to/other"}}}, r.binds)

	// docs.toml compiles.
	r, err = LoadRules(filepath.Join(dir, "docs.toml"))
	require.NoError(t, err)
	m, err := r.Compile(CompileOptions{AlwaysHide: []string{".vfsfilter"}})
	require.NoError(t, err)
	assert.Equal(t, pass("documentation/README.txt"), m.Resolve("docs/README.md"))
	assert.Equal(t, pass("documentation/x"), m.Resolve("docs/x"))
	assert.Equal(t, pass("notes.tmp"), m.Resolve("notes.txt"))
	assert.Equal(t, hidden, m.Resolve("docs/x.bak"))
	assert.Equal(t, hidden, m.Resolve("src/a/generated/x.go"))
	assert.Equal(t, Virtual, m.Resolve("docs/VERSION").Kind)
	v, ok := m.VisiblePath("documentation/README.txt")
	assert.True(t, ok)
	assert.Equal(t, "docs/README.md", v)

	_, err = LoadRules(filepath.Join(dir, "does-not-exist.toml"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.ErrorContains(t, err, "does-not-exist.toml")
}

func TestConcurrentUse(t *testing.T) {
	m := compile(t, `
hide = ["*.tmp"]
[[rename]]
backing = "a"
visible = "b"
[[virtual]]
path = "v"
content = "x"
`, CompileOptions{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				assert.Equal(t, pass("a/x"), m.Resolve("b/x"))
				n, ok := m.VisibleName("", "a")
				assert.True(t, ok)
				assert.Equal(t, "b", n)
				assert.Len(t, m.Injected(""), 1)
			}
		})
	}
	wg.Wait()
}

// hideRules20 is a realistic set of 20 hide patterns of every shape.
var hideRules20 = []string{
	"*.tmp", "*.swp", "*~", ".git", ".svn", ".hg", "node_modules", "__pycache__",
	"*.pyc", ".DS_Store", "Thumbs.db", "build/output", "/dist", "src/*/generated",
	"*/.cache", "tmp*", "*.o", "core.[0-9]*", "/secret", "logs/*.log",
}

func benchMap(b testing.TB, n int) *Map {
	var r Rules
	for _, h := range hideRules20[:n] {
		require.NoError(b, r.AddHide(h))
	}
	m, err := r.Compile(CompileOptions{AlwaysHide: []string{".vfsfilter"}})
	require.NoError(b, err)
	return m
}

// TestNoAllocs checks that the common case (nothing matches, no rename)
// does not allocate.
func TestNoAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("instrumentation changes allocation counts")
	}
	m := benchMap(t, len(hideRules20))
	const p = "src/project/pkg/internal/file.go"
	assert.Zero(t, testing.AllocsPerRun(100, func() { m.Resolve(p) }))
	assert.Zero(t, testing.AllocsPerRun(100, func() { m.VisibleName("src/project/pkg/internal", "file.go") }))
	assert.Zero(t, testing.AllocsPerRun(100, func() { m.VisiblePath(p) }))
	assert.Zero(t, testing.AllocsPerRun(100, func() { m.Resolve("src/x/generated/y") }))
}

func BenchmarkResolve(b *testing.B) {
	for _, n := range []int{0, 20} {
		m := benchMap(b, n)
		b.Run(fmt.Sprintf("hide=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m.Resolve("src/project/pkg/internal/file.go")
			}
		})
	}
}

func BenchmarkVisibleName(b *testing.B) {
	for _, n := range []int{0, 20} {
		m := benchMap(b, n)
		b.Run(fmt.Sprintf("hide=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m.VisibleName("src/project/pkg/internal", "file.go")
			}
		})
	}
}

func TestKindString(t *testing.T) {
	assert.Equal(t, "pass", Pass.String())
	assert.Equal(t, "hidden", Hidden.String())
	assert.Equal(t, "virtual", Virtual.String())
	assert.Equal(t, "bind", Bind.String())
	assert.Equal(t, "unknown", Kind(42).String())
}
