// Package namespace implements the rules engine of the namespace filter,
// which virtualizes the directory tree users see at the mountpoint: it hides
// entries, shows backing entries under another name, injects read-only
// virtual files and grafts other real directories ("binds").
//
// The rules engine (rules.go and match.go) is pure: no FUSE and no system
// calls besides reading rule files and, at Compile time, virtual file
// sources and bind sources. The FUSE-facing Filter is built on top of it. Rules are collected in a Rules value (from --hide flags, a TOML
// file or code), validated and compiled into an immutable *Map, and the
// filter answers every lookup, listing, rename and change event through that
// one Map so that they all agree.
//
// # Paths
//
// Every path is relative to the mount root, "/"-separated, with no leading
// or trailing slash and no "." or ".." component; "" is the root. CleanRel
// turns user input into that form.
//
// # Visible and backing names
//
// A visible path is what users see and type at the mountpoint; a backing
// path names an entry of the directory below the filter. They differ only
// where a rename rule applies (or below a bind, whose entries come from the
// bind's source). Hide patterns and virtual and bind paths are visible paths;
// the backing side of a rename is a backing path.
package namespace

import (
	"cmp"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// ErrEscapesRoot is wrapped by CleanRel errors for paths whose ".."
// components climb above the mount root.
var ErrEscapesRoot = errors.New("path escapes the mount root")

// CleanRel turns a user-supplied path into the canonical relative form used
// throughout this package: "/a/b/", "a//b" and "./a/b" all become "a/b", and
// "/" or "" become "" (the root). A leading "/" means the mount root, not
// the host's root. ".." is resolved lexically ("a/../b" is "b"); a path
// whose ".." would climb above the root is rejected with ErrEscapesRoot, and
// a path containing a NUL byte is rejected too (no file name can hold one).
func CleanRel(p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("path %q contains a NUL byte", p)
	}
	if isClean(p) {
		return p, nil
	}
	var comps []string
	for c := range strings.SplitSeq(p, "/") {
		switch c {
		case "", ".":
		case "..":
			if len(comps) == 0 {
				return "", fmt.Errorf("path %q: %w", p, ErrEscapesRoot)
			}
			comps = comps[:len(comps)-1]
		default:
			comps = append(comps, c)
		}
	}
	return strings.Join(comps, "/"), nil
}

// isClean reports whether p already is in canonical form.
func isClean(p string) bool {
	if p == "" {
		return true
	}
	for c := range strings.SplitSeq(p, "/") {
		if c == "" || c == "." || c == ".." {
			return false
		}
	}
	return true
}

// splitPath splits a clean non-root path into its directory and base name.
func splitPath(p string) (dir, name string) {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return "", p
}

// joinPath joins a clean directory and a name.
func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// isBelow reports whether clean path p lies strictly below clean path dir.
func isBelow(p, dir string) bool {
	if dir == "" {
		return p != ""
	}
	return len(p) > len(dir) && p[len(dir)] == '/' && p[:len(dir)] == dir
}

// DefaultVirtualMode is the permission of a virtual file whose rule gives no
// mode.
const DefaultVirtualMode = 0o444

// MaxVirtualSize bounds the content of a virtual file read from a source
// file: the content is held in memory for the life of the mount.
const MaxVirtualSize = 16 << 20

// RenameRule shows the backing entry Backing under the visible path Visible.
// Both must be in the same directory: only the base name changes. Backing is
// a backing path; its directory is shown wherever the other rules put it (if
// a rule renames "old" to "new", the rule {"old/a.txt", "old/a.md"} shows
// backing "old/a.txt" as "new/a.md"). Renaming a directory renames the whole
// subtree: visible "new/x" is backing "old/x".
type RenameRule struct {
	Backing string
	Visible string
}

// VirtualRule injects a read-only file at visible path Path. Its content is
// Content, or, when Source is set, the content of the real file Source (an
// absolute path) read at Compile time; setting both is an error. Mode holds
// permission bits only; 0 means DefaultVirtualMode.
type VirtualRule struct {
	Path    string
	Content []byte
	Source  string
	Mode    uint32

	modeSet bool // Mode was given explicitly (a rules file's "mode = 0")
}

// BindRule grafts the real directory Source (an absolute path; it must exist
// and be a directory at Compile time) at visible path Path.
type BindRule struct {
	Path   string
	Source string
}

// Rules is a set of namespace rules, not yet validated as a whole. The zero
// value is an empty set ready to use. Add* check each rule on its own (path
// syntax, pattern syntax); Compile checks how the rules fit together. A Rules
// value must not be modified concurrently.
type Rules struct {
	hides    []hideRule
	renames  []renameRule
	virtuals []virtualRule
	binds    []bindRule
}

// Each stored rule remembers where it came from ("rules.toml: rename #2")
// so that Compile's errors point at it.
type (
	hideRule struct {
		origin string
		raw    string   // as given, for messages
		comps  []string // glob components
		path   bool     // matched against the whole path, not a base name
	}
	renameRule struct {
		origin string
		RenameRule
	}
	virtualRule struct {
		origin string
		VirtualRule
	}
	bindRule struct {
		origin string
		BindRule
	}
)

// Empty reports whether r holds no rule at all.
func (r *Rules) Empty() bool {
	return len(r.hides) == 0 && len(r.renames) == 0 && len(r.virtuals) == 0 && len(r.binds) == 0
}

// AddHide adds a hide pattern (the --hide flag). The pattern is a glob in
// path.Match syntax and is matched against visible paths:
//
//   - without "/" it matches a base name at any depth ("*.tmp", ".git");
//   - with "/" it matches the whole relative path ("build/output",
//     "src/*/gen"); a leading "/" anchors a single name at the root
//     ("/build" hides "build" but not "src/build"); a trailing "/" is
//     stripped, and since the pattern then still contains a "/", "build/"
//     is the same as "/build".
//
// Hiding a directory hides its whole subtree. Patterns match visible names,
// not backing names, because they describe what users should not see: a
// rename can show a backing "notes.tmp" as "notes.txt" despite "*.tmp", and
// "*.md" hides a "README.md" that is a renamed "README.txt". It also means a
// rule can be checked against the other rules at Compile time without
// looking at the backing directory.
//
// An invalid pattern (path.ErrBadPattern), an empty one, one that would
// match the root or one with a ".." component is rejected.
func (r *Rules) AddHide(pattern string) error {
	return r.addHide(fmt.Sprintf("hide pattern %q", pattern), pattern)
}

func (r *Rules) addHide(origin, pattern string) error {
	h, err := parseHide(pattern)
	if err != nil {
		return fmt.Errorf("%s: %w", origin, err)
	}
	h.origin = origin
	r.hides = append(r.hides, h)
	return nil
}

func parseHide(pattern string) (hideRule, error) {
	h := hideRule{raw: pattern, path: strings.Contains(pattern, "/")}
	switch {
	case pattern == "":
		return h, errors.New("empty pattern")
	case strings.IndexByte(pattern, 0) >= 0:
		return h, errors.New("pattern contains a NUL byte")
	}
	for c := range strings.SplitSeq(strings.Trim(pattern, "/"), "/") {
		switch c {
		case "", ".":
			continue // "a//b", "./a"
		case "..":
			return h, errors.New(`".." is not allowed in a pattern`)
		}
		if _, err := path.Match(c, ""); err != nil {
			return h, fmt.Errorf("invalid pattern: %w", err)
		}
		h.comps = append(h.comps, c)
	}
	if len(h.comps) == 0 {
		return h, errors.New("pattern would hide the root")
	}
	return h, nil
}

// AddRename adds a rename rule. The paths are cleaned with CleanRel; they
// must not be the root and must share their directory.
func (r *Rules) AddRename(rule RenameRule) error {
	return r.addRename(fmt.Sprintf("rename #%d", len(r.renames)+1), rule)
}

func (r *Rules) addRename(origin string, rule RenameRule) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", origin, fmt.Sprintf(format, args...))
	}
	b, err := CleanRel(rule.Backing)
	if err != nil {
		return fail("backing: %v", err)
	}
	v, err := CleanRel(rule.Visible)
	if err != nil {
		return fail("visible: %v", err)
	}
	switch {
	case b == "":
		return fail("backing path is the root")
	case v == "":
		return fail("visible path is the root")
	case b == v:
		return fail("backing and visible path are both %q", b)
	}
	bd, _ := splitPath(b)
	if vd, _ := splitPath(v); bd != vd {
		return fail("visible path %q must be in the same directory as backing path %q (%q); only the base name can change", v, b, bd)
	}
	r.renames = append(r.renames, renameRule{origin, RenameRule{Backing: b, Visible: v}})
	return nil
}

// AddVirtual adds a virtual file rule. Path is cleaned with CleanRel and
// must not be the root; Source, when set, must be absolute and excludes
// Content; Mode may hold permission bits only. The source is read by
// Compile, not here.
func (r *Rules) AddVirtual(rule VirtualRule) error {
	return r.addVirtual(fmt.Sprintf("virtual #%d", len(r.virtuals)+1), rule)
}

func (r *Rules) addVirtual(origin string, rule VirtualRule) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", origin, fmt.Sprintf(format, args...))
	}
	p, err := CleanRel(rule.Path)
	if err != nil {
		return fail("path: %v", err)
	}
	if p == "" {
		return fail("path is the root")
	}
	rule.Path = p
	if rule.Source != "" {
		if rule.Content != nil {
			return fail("both content and source are set")
		}
		if err := checkSource(rule.Source); err != nil {
			return fail("source: %v", err)
		}
		rule.Source = filepath.Clean(rule.Source)
	}
	if rule.Mode&^0o777 != 0 {
		return fail("mode %#o: only permission bits (0777) are allowed", rule.Mode)
	}
	if rule.Mode == 0 && !rule.modeSet {
		rule.Mode = DefaultVirtualMode
	}
	r.virtuals = append(r.virtuals, virtualRule{origin, rule})
	return nil
}

// AddBind adds a bind rule. Path is cleaned with CleanRel and must not be the
// root; Source must be absolute. Whether Source is a directory is checked by
// Compile.
func (r *Rules) AddBind(rule BindRule) error {
	return r.addBind(fmt.Sprintf("bind #%d", len(r.binds)+1), rule)
}

func (r *Rules) addBind(origin string, rule BindRule) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", origin, fmt.Sprintf(format, args...))
	}
	p, err := CleanRel(rule.Path)
	if err != nil {
		return fail("path: %v", err)
	}
	if p == "" {
		return fail("path is the root")
	}
	if err := checkSource(rule.Source); err != nil {
		return fail("source: %v", err)
	}
	rule.Path, rule.Source = p, filepath.Clean(rule.Source)
	r.binds = append(r.binds, bindRule{origin, rule})
	return nil
}

func checkSource(s string) error {
	switch {
	case s == "":
		return errors.New("empty path")
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("%q contains a NUL byte", s)
	case !filepath.IsAbs(s):
		return fmt.Errorf("%q is not an absolute path", s)
	}
	return nil
}

// LoadRules reads a TOML rules file; see ParseRules for the format.
func LoadRules(path string) (*Rules, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err // *PathError names the file
	}
	defer f.Close()
	return ParseRules(f, path)
}

// The TOML document. Rule tables are kept as Primitives and decoded one by
// one, so that every error can name the rule (e.g. "rename #2").
type (
	fileDoc struct {
		Hide    toml.Primitive   `toml:"hide"`
		Rename  []toml.Primitive `toml:"rename"`
		Virtual []toml.Primitive `toml:"virtual"`
		Bind    []toml.Primitive `toml:"bind"`
	}
	fileRename struct {
		Backing *string `toml:"backing"`
		Visible *string `toml:"visible"`
	}
	fileVirtual struct {
		Path    *string `toml:"path"`
		Content *string `toml:"content"`
		Source  *string `toml:"source"`
		Mode    *int64  `toml:"mode"`
	}
	fileBind struct {
		Path   *string `toml:"path"`
		Source *string `toml:"source"`
	}
)

// ParseRules parses a TOML rules document; name (usually the file name)
// prefixes every error message. The format:
//
//	hide = ["*.tmp", ".git", "build/output"]   # see AddHide
//
//	[[rename]]                    # see RenameRule
//	backing = "docs/README.txt"
//	visible = "docs/README.md"
//
//	[[virtual]]                   # see VirtualRule
//	path = "VERSION"
//	content = "1.2.3\n"           # or: source = "/abs/path/file"
//	mode = 0o444                  # optional
//
//	[[bind]]                      # see BindRule
//	path = "shared/other"
//	source = "/abs/path/to/dir"
//
// Unknown keys, values of the wrong type, missing required keys and both or
// neither of content and source are errors naming the file, the rule
// ("virtual #1", counting from 1 per kind) and the problem. Sources are not
// read and not checked for existence here; Compile does that.
func ParseRules(r io.Reader, name string) (*Rules, error) {
	var doc fileDoc
	md, err := toml.NewDecoder(r).Decode(&doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	rules := &Rules{}

	var hide []string
	if md.IsDefined("hide") {
		if err := md.PrimitiveDecode(doc.Hide, &hide); err != nil {
			return nil, fmt.Errorf("%s: hide: must be an array of strings: %w", name, err)
		}
	}
	renames := make([]fileRename, len(doc.Rename))
	for i, p := range doc.Rename {
		if err := md.PrimitiveDecode(p, &renames[i]); err != nil {
			return nil, fmt.Errorf("%s: rename #%d: %w", name, i+1, err)
		}
	}
	virtuals := make([]fileVirtual, len(doc.Virtual))
	for i, p := range doc.Virtual {
		if err := md.PrimitiveDecode(p, &virtuals[i]); err != nil {
			return nil, fmt.Errorf("%s: virtual #%d: %w", name, i+1, err)
		}
	}
	binds := make([]fileBind, len(doc.Bind))
	for i, p := range doc.Bind {
		if err := md.PrimitiveDecode(p, &binds[i]); err != nil {
			return nil, fmt.Errorf("%s: bind #%d: %w", name, i+1, err)
		}
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, unknownKeyError(name, md, &doc, und[0])
	}

	for i, h := range hide {
		if err := rules.addHide(fmt.Sprintf("%s: hide #%d %q", name, i+1, h), h); err != nil {
			return nil, err
		}
	}
	for i, f := range renames {
		origin := fmt.Sprintf("%s: rename #%d", name, i+1)
		if err := required(origin, "backing", f.Backing, "visible", f.Visible); err != nil {
			return nil, err
		}
		if err := rules.addRename(origin, RenameRule{Backing: *f.Backing, Visible: *f.Visible}); err != nil {
			return nil, err
		}
	}
	for i, f := range virtuals {
		origin := fmt.Sprintf("%s: virtual #%d", name, i+1)
		if err := required(origin, "path", f.Path); err != nil {
			return nil, err
		}
		v := VirtualRule{Path: *f.Path}
		switch {
		case f.Content != nil && f.Source != nil:
			return nil, fmt.Errorf("%s: both content and source are set; give exactly one", origin)
		case f.Content != nil:
			v.Content = []byte(*f.Content)
		case f.Source != nil:
			if *f.Source == "" {
				return nil, fmt.Errorf("%s: source is empty", origin)
			}
			v.Source = *f.Source
		default:
			return nil, fmt.Errorf("%s: neither content nor source is set; give exactly one", origin)
		}
		if f.Mode != nil {
			if *f.Mode < 0 || *f.Mode&^0o777 != 0 {
				return nil, fmt.Errorf("%s: mode %#o: only permission bits (0777) are allowed", origin, *f.Mode)
			}
			v.Mode, v.modeSet = uint32(*f.Mode), true
		}
		if err := rules.addVirtual(origin, v); err != nil {
			return nil, err
		}
	}
	for i, f := range binds {
		origin := fmt.Sprintf("%s: bind #%d", name, i+1)
		if err := required(origin, "path", f.Path, "source", f.Source); err != nil {
			return nil, err
		}
		if err := rules.addBind(origin, BindRule{Path: *f.Path, Source: *f.Source}); err != nil {
			return nil, err
		}
	}
	return rules, nil
}

// required checks (key, value) pairs and names the first missing key.
func required(origin string, kv ...any) error {
	for i := 0; i < len(kv); i += 2 {
		if v := kv[i+1].(*string); v == nil {
			return fmt.Errorf("%s: missing required key %q", origin, kv[i])
		}
	}
	return nil
}

// unknownKeyError describes an undecoded key. Undecoded keys of rule tables
// do not say which element of the array they came from, so the rule is
// found by decoding each element into a map (after Undecoded was taken, since
// this marks the keys as decoded).
func unknownKeyError(name string, md toml.MetaData, doc *fileDoc, key toml.Key) error {
	if len(key) >= 2 {
		var list []toml.Primitive
		switch key[0] {
		case "rename":
			list = doc.Rename
		case "virtual":
			list = doc.Virtual
		case "bind":
			list = doc.Bind
		}
		for i, p := range list {
			var m map[string]any
			if md.PrimitiveDecode(p, &m) == nil {
				if _, ok := m[key[1]]; ok {
					return fmt.Errorf("%s: %s #%d: unknown key %q", name, key[0], i+1, strings.Join(key[1:], "."))
				}
			}
		}
	}
	return fmt.Errorf("%s: unknown key %q", name, key.String())
}

// CompileOptions are settings of the stack that the Map must honour besides
// the user's rules.
type CompileOptions struct {
	// AlwaysHide lists internal paths that users must never see, such as
	// the stack's settings directory ".vfsfilter". They are exact paths
	// anchored at the root (not patterns), cleaned with CleanRel. No rule
	// may show anything under these names, and no rename may move them or
	// one of their ancestors, so they stay hidden under their own name.
	AlwaysHide []string
}

// compiler holds what Compile needs besides the Map under construction.
type compiler struct {
	m        *Map
	hides    []hideRule
	internal []string
}

// whyHidden explains why the visible path p is hidden by a pattern or an
// internal name, or returns "" when it is not. It is the slow reference
// implementation of Map.hidden, used for error messages (and tests).
func (c *compiler) whyHidden(p string) string {
	for i := 0; i < len(p); i++ {
		end := strings.IndexByte(p[i:], '/')
		if end < 0 {
			end = len(p)
		} else {
			end += i
		}
		prefix := p[:end]
		for _, in := range c.internal {
			if prefix == in {
				return fmt.Sprintf("the internal name %q", in)
			}
		}
		for _, h := range c.hides {
			if h.matches(prefix) {
				if prefix == p {
					return h.origin
				}
				return fmt.Sprintf("%s (via %q)", h.origin, prefix)
			}
		}
		i = end
	}
	return ""
}

// matches reports whether h matches the clean path p itself (not its
// ancestors).
func (h *hideRule) matches(p string) bool {
	if !h.path {
		_, name := splitPath(p)
		ok, _ := path.Match(h.comps[0], name)
		return ok
	}
	ok, _ := path.Match(strings.Join(h.comps, "/"), p)
	return ok && strings.Count(p, "/") == len(h.comps)-1
}

// dir returns the rules of visible directory d, creating them.
func (m *Map) dir(d string) *dirRules {
	r := m.dirs[d]
	if r == nil {
		r = &dirRules{}
		m.dirs[d] = r
		if d != "" {
			m.maxDirDepth = max(m.maxDirDepth, strings.Count(d, "/")+1)
		}
	}
	return r
}

func (m *Map) addHide(h hideRule) {
	if !h.path {
		m.base.add(compileName(h.comps[0]))
		return
	}
	dirComps, last := h.comps[:len(h.comps)-1], h.comps[len(h.comps)-1]
	if !slices.ContainsFunc(dirComps, hasMeta) {
		// The directory is a plain path: file the pattern under it.
		m.addHiddenName(strings.Join(dirComps, "/"), compileName(last))
		return
	}
	p := pathPattern{}
	for _, c := range h.comps {
		p.comps = append(p.comps, compileName(c))
	}
	for len(m.deepGlobs) <= len(p.comps) {
		m.deepGlobs = append(m.deepGlobs, nil)
	}
	m.deepGlobs[len(p.comps)] = append(m.deepGlobs[len(p.comps)], p)
}

func (m *Map) addHiddenName(dir string, n nameMatcher) {
	m.dir(dir).hide.add(n)
}

// virtualIno returns the synthetic inode number of the virtual file at p.
func virtualIno(p string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(p))
	return h.Sum64() | 1<<63
}

// Compile validates the rules as a whole and builds the Map. Errors name the
// offending rule. Compile rejects:
//
//   - a rename whose visible path is hidden by a pattern or internal name,
//     or collides with a virtual file or bind; two renames from the same
//     backing path or to the same visible path; a rename whose backing
//     directory is not visible (hidden, shadowed, or the backing name of a
//     renamed directory: rename paths are backing paths); a rename of an
//     internal path or of one of its ancestors;
//   - a virtual file or bind at the root, at a hidden path, in a hidden
//     directory, below a bind or below another virtual file; two of them at
//     the same path;
//   - a bind source that is not absolute, does not exist or is not a
//     directory; a virtual source that cannot be read, is not a regular file
//     or is larger than MaxVirtualSize.
//
// Virtual files and binds may sit in directories that exist only in the
// backing tree (or nowhere): the Map never looks at the backing directory.
// Compile does not modify r and may be called again.
func (r *Rules) Compile(opts CompileOptions) (*Map, error) {
	m := &Map{dirs: map[string]*dirRules{}, bindByPath: map[string]*BindDir{}}
	c := &compiler{m: m, hides: r.hides}
	for _, h := range r.hides {
		m.addHide(h)
	}
	for _, p := range opts.AlwaysHide {
		cp, err := CleanRel(p)
		if err != nil {
			return nil, fmt.Errorf("always-hidden path: %w", err)
		}
		if cp == "" {
			return nil, fmt.Errorf("always-hidden path %q is the root", p)
		}
		dir, name := splitPath(cp)
		m.addHiddenName(dir, nameMatcher{kind: matchLiteral, lit: name})
		c.internal = append(c.internal, cp)
	}

	// Virtual files and binds, keyed by visible path.
	type injRule struct {
		origin string
		inj    *Injected
	}
	var injs []injRule
	injAt := map[string]injRule{}
	add := func(origin, p string, inj *Injected) error {
		if prev, dup := injAt[p]; dup {
			return fmt.Errorf("%s: path %q is already used by %s", origin, p, prev.origin)
		}
		dir, name := splitPath(p)
		inj.Name = name
		d := m.dir(dir)
		if d.injected == nil {
			d.injected = map[string]*Injected{}
		}
		d.injected[name] = inj
		d.list = append(d.list, *inj)
		ir := injRule{origin, inj}
		injAt[p] = ir
		injs = append(injs, ir)
		return nil
	}
	for _, v := range r.virtuals {
		if v.Path == "" {
			return nil, fmt.Errorf("%s: path is the root", v.origin)
		}
		content := v.Content
		if v.Source != "" {
			var err error
			if content, err = readSource(v.Source); err != nil {
				return nil, fmt.Errorf("%s: source: %w", v.origin, err)
			}
		} else {
			content = slices.Clone(content)
		}
		if content == nil {
			content = []byte{}
		}
		vf := &VirtualFile{Path: v.Path, Content: content, Mode: v.Mode, Ino: virtualIno(v.Path)}
		if err := add(v.origin, v.Path, &Injected{Virtual: vf}); err != nil {
			return nil, err
		}
	}
	for _, b := range r.binds {
		if b.Path == "" {
			return nil, fmt.Errorf("%s: path is the root", b.origin)
		}
		if err := checkSource(b.Source); err != nil {
			return nil, fmt.Errorf("%s: source: %w", b.origin, err)
		}
		src := filepath.Clean(b.Source)
		fi, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("%s: source: %w", b.origin, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("%s: source %q is not a directory", b.origin, src)
		}
		bd := &BindDir{Path: b.Path, Source: src}
		if err := add(b.origin, b.Path, &Injected{Bind: bd}); err != nil {
			return nil, err
		}
		m.binds = append(m.binds, bd)
		m.bindByPath[bd.Path] = bd
	}

	// Renames, parents before children: the visible directory of a rename
	// is where the renames above it put its backing directory.
	renames := slices.Clone(r.renames)
	slices.SortStableFunc(renames, func(a, b renameRule) int {
		return cmp.Compare(strings.Count(a.Backing, "/"), strings.Count(b.Backing, "/"))
	})
	byBacking := map[string]string{} // backing path -> origin
	byVisible := map[string]string{} // visible path -> origin
	for _, rn := range renames {
		if prev, dup := byBacking[rn.Backing]; dup {
			return nil, fmt.Errorf("%s: backing path %q is already renamed by %s", rn.origin, rn.Backing, prev)
		}
		byBacking[rn.Backing] = rn.origin
		for _, in := range c.internal {
			if rn.Backing == in || isBelow(rn.Backing, in) || isBelow(in, rn.Backing) {
				return nil, fmt.Errorf("%s: backing path %q would move the internal path %q", rn.origin, rn.Backing, in)
			}
		}
		bdir, bname := splitPath(rn.Backing)
		_, vname := splitPath(rn.Visible)
		vdir, ok := m.VisiblePath(bdir)
		if !ok {
			return nil, fmt.Errorf("%s: backing directory %q is not visible: %s (the paths of a rename are backing paths)", rn.origin, bdir, c.explainBacking(bdir))
		}
		vpath := joinPath(vdir, vname)
		if why := c.whyHidden(vpath); why != "" {
			return nil, fmt.Errorf("%s: visible path %q is hidden by %s", rn.origin, vpath, why)
		}
		if prev, dup := injAt[vpath]; dup {
			return nil, fmt.Errorf("%s: visible path %q collides with %s", rn.origin, vpath, prev.origin)
		}
		if prev, dup := byVisible[vpath]; dup {
			return nil, fmt.Errorf("%s: visible path %q is already the target of %s", rn.origin, vpath, prev)
		}
		byVisible[vpath] = rn.origin
		d := m.dir(vdir)
		if d.toBacking == nil {
			d.toBacking, d.toVisible = map[string]string{}, map[string]string{}
		}
		d.toBacking[vname] = bname
		d.toVisible[bname] = vname
	}

	// Now that every rule is in, check where the virtual files and binds
	// landed.
	for _, ir := range injs {
		p := ir.inj.path()
		for q := range ancestors(p) {
			if above, ok := injAt[q]; ok {
				what := "virtual file"
				if above.inj.Bind != nil {
					what = "bind"
				}
				return nil, fmt.Errorf("%s: path %q lies under the %s %q (%s)", ir.origin, p, what, q, above.origin)
			}
		}
		dir, _ := splitPath(p)
		if t := m.Resolve(dir); t.Kind == Hidden {
			return nil, fmt.Errorf("%s: parent directory %q is not visible: %s", ir.origin, dir, c.explainVisible(dir))
		}
		if why := c.whyHidden(p); why != "" {
			return nil, fmt.Errorf("%s: path %q is hidden by %s", ir.origin, p, why)
		}
	}

	for _, d := range m.dirs {
		slices.SortFunc(d.list, func(a, b Injected) int { return strings.Compare(a.Name, b.Name) })
	}
	slices.SortFunc(m.binds, func(a, b *BindDir) int { return strings.Compare(a.Path, b.Path) })
	m.empty = len(r.hides) == 0 && len(c.internal) == 0 && len(r.renames) == 0 && len(injs) == 0
	return m, nil
}

// explainVisible says why Resolve(p) is Hidden, for error messages.
func (c *compiler) explainVisible(p string) string {
	for q := range prefixes(p) {
		if c.m.Resolve(q).Kind != Hidden {
			continue
		}
		if why := c.whyHidden(q); why != "" {
			if q != p {
				return fmt.Sprintf("%q is hidden by %s", q, why)
			}
			return "hidden by " + why
		}
		dir, name := splitPath(q)
		if d := c.m.dirs[dir]; d != nil {
			if vn, ok := d.toVisible[name]; ok {
				return fmt.Sprintf("%q is the backing name of an entry renamed to %q; use the visible name", q, joinPath(dir, vn))
			}
		}
		return fmt.Sprintf("%q lies under a virtual file", q)
	}
	return "it is visible"
}

// explainBacking says why VisiblePath(p) fails, for error messages.
func (c *compiler) explainBacking(p string) string {
	vdir := ""
	for q := range prefixes(p) {
		_, bn := splitPath(q)
		vq, ok := c.m.VisiblePath(q)
		if ok {
			vdir = vq
			continue
		}
		name := bn
		if d := c.m.dirs[vdir]; d != nil {
			if vn, ok := d.toVisible[bn]; ok {
				name = vn
			} else if _, ok := d.toBacking[bn]; ok {
				return fmt.Sprintf("%q is shadowed by the target of a rename", q)
			}
			if inj := d.injected[name]; inj != nil {
				return fmt.Sprintf("%q is shadowed by the virtual file or bind %q", q, inj.path())
			}
		}
		if why := c.whyHidden(joinPath(vdir, name)); why != "" {
			return fmt.Sprintf("%q is hidden by %s", q, why)
		}
		break
	}
	return "it is not visible"
}

// prefixes yields the non-root prefixes of clean path p, from the top,
// ending with p itself.
func prefixes(p string) func(yield func(string) bool) {
	return func(yield func(string) bool) {
		if p == "" {
			return
		}
		for i := 0; i < len(p); i++ {
			if p[i] == '/' && !yield(p[:i]) {
				return
			}
		}
		yield(p)
	}
}

// ancestors yields the proper, non-root ancestors of clean path p, from the
// top.
func ancestors(p string) func(yield func(string) bool) {
	return func(yield func(string) bool) {
		for i := 0; i < len(p); i++ {
			if p[i] == '/' && !yield(p[:i]) {
				return
			}
		}
	}
}

func (in *Injected) path() string {
	if in.Virtual != nil {
		return in.Virtual.Path
	}
	return in.Bind.Path
}

// readSource reads the content of a virtual file from a real file.
func readSource(src string) ([]byte, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%q is not a regular file", src)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxVirtualSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxVirtualSize {
		return nil, fmt.Errorf("%q is larger than %d bytes", src, MaxVirtualSize)
	}
	return data, nil
}
