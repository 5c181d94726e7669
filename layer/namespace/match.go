package namespace

import (
	"path"
	"strings"
)

// This file holds the compiled, read-only side of the rules engine: the Map
// and the name matchers it is built from. Everything here runs on the
// filter's hot paths (every Lookup, Getattr and Readdir entry goes through
// Resolve or VisibleName), so the code avoids allocating and walks paths by
// index instead of splitting them.

// Kind says what a visible path refers to.
type Kind uint8

const (
	// Pass is an ordinary backing entry; Target.Backing is its backing path.
	Pass Kind = iota
	// Hidden is an entry users cannot see: hidden by a pattern, an internal
	// name, the backing name of a renamed entry, or something shadowed.
	// Lookups give ENOENT; creating or renaming onto it gives EPERM.
	Hidden
	// Virtual is a read-only file injected by a rule; Target.Virtual is set.
	Virtual
	// Bind is an entry inside (or the root of) a grafted directory;
	// Target.Bind is set and Target.Backing is the path relative to the
	// bind's source ("" is the bind root).
	Bind
)

// String returns the lower-case name of k ("pass", "hidden", ...).
func (k Kind) String() string {
	switch k {
	case Pass:
		return "pass"
	case Hidden:
		return "hidden"
	case Virtual:
		return "virtual"
	case Bind:
		return "bind"
	}
	return "unknown"
}

// Target is what a visible path refers to (see Map.Resolve).
type Target struct {
	Kind Kind
	// Backing is the backing path for Pass, the path relative to the bind
	// source for Bind, and "" otherwise.
	Backing string
	// Virtual is set for Kind == Virtual.
	Virtual *VirtualFile
	// Bind is set for Kind == Bind.
	Bind *BindDir
}

// VirtualFile is a read-only file injected into the visible tree. Values are
// shared by every caller of the Map and must not be modified.
type VirtualFile struct {
	// Path is the visible path of the file.
	Path string
	// Content is the whole content of the file.
	Content []byte
	// Mode holds the permission bits only (at most 0777); the filter adds
	// the file type (S_IFREG).
	Mode uint32
	// Ino is a stable synthetic inode number: the 64-bit FNV-1a hash of Path
	// with the high bit set. Real file systems (ext4, xfs, btrfs) hand out
	// inode numbers far below 2^63, so the two cannot collide in practice,
	// and the number survives remounts because it depends only on Path.
	Ino uint64
}

// BindDir is a real directory grafted into the visible tree.
type BindDir struct {
	// Path is the visible path where the directory appears.
	Path string
	// Source is the absolute, cleaned path of the real directory.
	Source string
}

// Injected is an entry a rule adds to a directory listing: exactly one of
// Virtual and Bind is set.
type Injected struct {
	Name    string
	Virtual *VirtualFile
	Bind    *BindDir
}

// Map is the compiled form of a Rules value: the single authority on how
// visible paths and backing paths correspond. Lookups, listings, renames and
// change notifications all go through the same Map so that they agree with
// each other. A Map is immutable once Compile returns it and is safe for
// concurrent use. A nil *Map behaves like an empty one (the identity).
//
// All paths given to and returned by a Map are clean relative paths as
// produced by CleanRel ("" is the root); behaviour for other input is
// unspecified.
type Map struct {
	// Hide patterns, split by the fastest way to evaluate them.
	base nameSet // base-name patterns
	// deepGlobs[n] holds the path patterns of n components whose directory
	// part has wildcards. Path patterns with a literal directory part live
	// in dirRules of that directory instead.
	deepGlobs [][]pathPattern

	// dirs holds everything that is specific to one visible directory;
	// maxDirDepth is the largest number of components of its keys, so that
	// deeper directories skip the lookup.
	dirs        map[string]*dirRules
	maxDirDepth int

	binds      []*BindDir // sorted by Path
	bindByPath map[string]*BindDir
	empty      bool
}

// dirRules collects the rules that apply to the entries of one visible
// directory, so a lookup or listing needs one map access per component.
type dirRules struct {
	hide      nameSet           // names hidden here (path patterns with a literal dir, internal names)
	toBacking map[string]string // rename: visible name -> backing name
	toVisible map[string]string // rename: backing name -> visible name
	injected  map[string]*Injected
	list      []Injected // injected, sorted by name
}

// Empty reports whether the Map is the identity: no hide pattern, no internal
// name, no rename, virtual file or bind. The filter can then be left out of
// the stack. Note that CompileOptions.AlwaysHide entries count as rules: a Map
// that hides the stack's settings directory is not empty.
func (m *Map) Empty() bool { return m == nil || m.empty }

// Binds returns the bind directories sorted by visible path. The slice is a
// copy; the BindDir values are shared and must not be modified.
func (m *Map) Binds() []*BindDir {
	if m == nil || len(m.binds) == 0 {
		return nil
	}
	return append([]*BindDir(nil), m.binds...)
}

// HoldsInjected reports whether a virtual file or a bind lies inside the
// visible directory visibleDir, at any depth ("" is the root).
func (m *Map) HoldsInjected(visibleDir string) bool {
	if m == nil || m.empty {
		return false
	}
	for d, r := range m.dirs {
		if len(r.list) > 0 && (visibleDir == "" || d == visibleDir || strings.HasPrefix(d, visibleDir+"/")) {
			return true
		}
	}
	return false
}

// Injected returns the virtual files and bind roots that sit directly in the
// visible directory visibleDir, sorted by name, so a listing can add them
// after the (translated) backing entries. The slice is shared: callers must
// not modify it.
func (m *Map) Injected(visibleDir string) []Injected {
	if m == nil || m.empty {
		return nil
	}
	if d := m.dirs[visibleDir]; d != nil {
		return d.list
	}
	return nil
}

// Resolve maps a visible path to what it refers to. It walks the path one
// component at a time, carrying the visible directory and (when a rename
// changed it) the backing directory:
//
//   - a component hidden by a pattern or an internal name makes the result
//     Hidden, whatever follows (hiding a directory hides its subtree);
//   - a bind at a prefix gives Bind with the rest of the path as
//     Target.Backing; the rest is still checked against hide patterns,
//     because patterns match visible paths wherever they come from;
//   - a virtual file at the full path gives Virtual; a path going below a
//     virtual file is Hidden;
//   - a rename translates the component from its visible name to its
//     backing name; a name that is the backing name of a rename (and not
//     itself the target of one) is Hidden, because that entry is shown under
//     its new name only;
//   - a virtual file or bind wins over a backing entry of the same name.
//
// Otherwise the result is Pass with the backing path. When no rename applies
// the backing path is the visible string itself and Resolve does not
// allocate.
func (m *Map) Resolve(visible string) Target {
	if m == nil || m.empty || visible == "" {
		return Target{Kind: Pass, Backing: visible}
	}
	var (
		b       strings.Builder // backing path, used once a rename applied
		renamed bool
		bind    *Injected
		bindEnd int
		depth   int
	)
	for start := 0; ; {
		end := strings.IndexByte(visible[start:], '/')
		if end < 0 {
			end = len(visible)
		} else {
			end += start
		}
		name := visible[start:end]
		dir := ""
		if start > 0 {
			dir = visible[:start-1]
		}
		depth++
		d := m.dirRules(dir, depth-1)
		if m.hidden(d, dir, name, depth) {
			return Target{Kind: Hidden}
		}
		if bind == nil {
			var inj *Injected
			if d != nil {
				inj = d.injected[name]
			}
			switch {
			case inj != nil && inj.Bind != nil:
				bind, bindEnd = inj, end
			case inj != nil:
				if end == len(visible) {
					return Target{Kind: Virtual, Virtual: inj.Virtual}
				}
				return Target{Kind: Hidden} // below a file
			default:
				bn := name
				if d != nil {
					if x, ok := d.toBacking[name]; ok {
						bn = x
					} else if _, ok := d.toVisible[name]; ok {
						return Target{Kind: Hidden} // shown under its new name only
					}
				}
				if bn != name && !renamed {
					renamed = true
					b.Grow(len(visible) + len(bn))
					if start > 0 {
						b.WriteString(visible[:start-1])
					}
				}
				if renamed {
					if b.Len() > 0 {
						b.WriteByte('/')
					}
					b.WriteString(bn)
				}
			}
		}
		if end == len(visible) {
			break
		}
		start = end + 1
	}
	if bind != nil {
		rest := ""
		if bindEnd < len(visible) {
			rest = visible[bindEnd+1:]
		}
		return Target{Kind: Bind, Backing: rest, Bind: bind.Bind}
	}
	if renamed {
		return Target{Kind: Pass, Backing: b.String()}
	}
	return Target{Kind: Pass, Backing: visible}
}

// VisibleName translates one entry name found when listing the backing
// directory that is shown at visible path visibleDir (for a bind, the source
// directory shown at visibleDir). It returns the name to list, or ok=false
// when the entry must not be listed because it is
//
//   - hidden by a pattern or an internal name (matched against the name it
//     would be shown under);
//   - shadowed: a virtual file, bind or rename target has the same visible
//     name, so Resolve of that name gives something else.
//
// An entry renamed by a rule is returned under its new name. "." and ".."
// are returned unchanged. visibleDir itself is assumed visible (the caller is
// listing it). VisibleName does not allocate.
func (m *Map) VisibleName(visibleDir, backingName string) (visible string, ok bool) {
	if m == nil || m.empty || backingName == "." || backingName == ".." {
		return backingName, true
	}
	depth := 1
	if visibleDir != "" && len(m.deepGlobs) > 0 {
		depth = strings.Count(visibleDir, "/") + 2
	}
	return m.visibleName(m.dirs[visibleDir], visibleDir, backingName, depth)
}

// visibleName is VisibleName with the directory's rules and the depth of the
// entry (components of visibleDir plus one) already known.
func (m *Map) visibleName(d *dirRules, visibleDir, backingName string, depth int) (string, bool) {
	name := backingName
	if d != nil {
		if vn, ok := d.toVisible[backingName]; ok {
			name = vn
		} else if _, ok := d.toBacking[backingName]; ok {
			return "", false // shadowed by a rename target
		}
		if _, ok := d.injected[name]; ok {
			return "", false // shadowed by a virtual file or bind
		}
	}
	if m.hidden(d, visibleDir, name, depth) {
		return "", false
	}
	return name, true
}

// VisiblePath translates a full backing path (from a change event, say) to the
// path users see, or ok=false when they cannot see it: it or an ancestor is
// hidden by a pattern or an internal name, or is shadowed by a virtual file,
// bind or rename target of the same visible name. It is the inverse of Resolve for Pass
// targets: Resolve(v) == Target{Pass, b} if and only if VisiblePath(b) == v.
// It does not allocate unless a rename applies.
func (m *Map) VisiblePath(backing string) (visible string, ok bool) {
	if m == nil || m.empty || backing == "" {
		return backing, true
	}
	var (
		b       strings.Builder // visible path, used once a rename applied
		renamed bool
		depth   int
	)
	for start := 0; ; {
		end := strings.IndexByte(backing[start:], '/')
		if end < 0 {
			end = len(backing)
		} else {
			end += start
		}
		bn := backing[start:end]
		var dir string
		if renamed {
			dir = b.String()
		} else if start > 0 {
			dir = backing[:start-1]
		}
		depth++
		name, ok := m.visibleName(m.dirRules(dir, depth-1), dir, bn, depth)
		if !ok {
			return "", false
		}
		if name != bn && !renamed {
			renamed = true
			b.Grow(len(backing) + len(name))
			b.WriteString(dir)
		}
		if renamed {
			if b.Len() > 0 {
				b.WriteByte('/')
			}
			b.WriteString(name)
		}
		if end == len(backing) {
			break
		}
		start = end + 1
	}
	if renamed {
		return b.String(), true
	}
	return backing, true
}

// BindVisiblePath translates rel, a clean path relative to the source of
// bind b (one of m.Binds()), to the visible path, or ok=false when users
// cannot see it (a hide pattern matches it or an ancestor below the bind
// root) or b does not belong to m. rel == "" is the bind root.
func (m *Map) BindVisiblePath(b *BindDir, rel string) (string, bool) {
	if m == nil || b == nil || m.bindByPath[b.Path] != b {
		return "", false
	}
	if rel == "" {
		return b.Path, true
	}
	full := b.Path + "/" + rel
	depth := strings.Count(b.Path, "/") + 1
	for start := len(b.Path) + 1; ; {
		end := strings.IndexByte(full[start:], '/')
		if end < 0 {
			end = len(full)
		} else {
			end += start
		}
		dir := full[:start-1]
		depth++
		if m.hidden(m.dirRules(dir, depth-1), dir, full[start:end], depth) {
			return "", false
		}
		if end == len(full) {
			break
		}
		start = end + 1
	}
	return full, true
}

// dirRules returns the rules of visible directory dir, which has depth
// components, or nil.
func (m *Map) dirRules(dir string, depth int) *dirRules {
	if depth > m.maxDirDepth {
		return nil
	}
	return m.dirs[dir]
}

// hidden reports whether the visible entry name in visible directory dir
// (whose rules are d, possibly nil) is hidden by a pattern or an internal
// name. depth is the number of components of dir/name.
func (m *Map) hidden(d *dirRules, dir, name string, depth int) bool {
	if m.base.match(name) || d != nil && d.hide.match(name) {
		return true
	}
	if depth < len(m.deepGlobs) {
		for i := range m.deepGlobs[depth] {
			if m.deepGlobs[depth][i].match(dir, name) {
				return true
			}
		}
	}
	return false
}

// nameSet is a set of name patterns evaluated together, arranged so that a
// name matching none of them (the common case) is rejected with a few mask
// tests: literal names are looked up only when some literal has the name's
// length, and "*lit" / "lit*" patterns are compared only when some pattern
// ends / starts with the name's last / first byte.
type nameSet struct {
	lits      map[string]struct{}
	litLens   uint64 // bit min(len, 63) for each literal
	suffixes  []string
	lastMask  [4]uint64 // bit b for each last byte b of a suffix
	prefixes  []string
	firstMask [4]uint64 // bit b for each first byte b of a prefix
	others    []nameMatcher
}

func (s *nameSet) add(n nameMatcher) {
	switch n.kind {
	case matchLiteral:
		if s.lits == nil {
			s.lits = map[string]struct{}{}
		}
		s.lits[n.lit] = struct{}{}
		s.litLens |= 1 << min(len(n.lit), 63)
	case matchSuffix:
		if n.lit != "" {
			c := n.lit[len(n.lit)-1]
			s.lastMask[c>>6] |= 1 << (c & 63)
			s.suffixes = append(s.suffixes, n.lit)
			return
		}
		s.others = append(s.others, n)
	case matchPrefix:
		if n.lit != "" {
			c := n.lit[0]
			s.firstMask[c>>6] |= 1 << (c & 63)
			s.prefixes = append(s.prefixes, n.lit)
			return
		}
		s.others = append(s.others, n)
	default:
		s.others = append(s.others, n)
	}
}

func (s *nameSet) match(name string) bool {
	if name == "" {
		return false
	}
	if s.litLens&(1<<min(len(name), 63)) != 0 {
		if _, ok := s.lits[name]; ok {
			return true
		}
	}
	if c := name[len(name)-1]; s.lastMask[c>>6]&(1<<(c&63)) != 0 {
		for _, suf := range s.suffixes {
			if strings.HasSuffix(name, suf) {
				return true
			}
		}
	}
	if c := name[0]; s.firstMask[c>>6]&(1<<(c&63)) != 0 {
		for _, pre := range s.prefixes {
			if strings.HasPrefix(name, pre) {
				return true
			}
		}
	}
	for i := range s.others {
		if s.others[i].match(name) {
			return true
		}
	}
	return false
}

// matchKind selects how a nameMatcher compares. Most real patterns are a
// plain name or have one leading or trailing "*", which plain string
// comparisons evaluate far faster than path.Match.
type matchKind uint8

const (
	matchLiteral  matchKind = iota // name == lit
	matchAny                       // "*"
	matchPrefix                    // "lit*"
	matchSuffix                    // "*lit"
	matchContains                  // "*lit*"
	matchGlob                      // anything else: path.Match(lit, name)
)

// nameMatcher matches one path component against one glob component. It is
// equivalent to path.Match(pattern, name) for names without "/".
type nameMatcher struct {
	kind matchKind
	lit  string
	// For matchGlob: literal text every match starts / ends with, checked
	// before the comparatively slow path.Match.
	pre, suf string
}

// hasMeta reports whether s contains a path.Match special character.
func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// compileName builds the matcher for a syntactically valid glob component.
func compileName(pat string) nameMatcher {
	switch {
	case !hasMeta(pat):
		return nameMatcher{kind: matchLiteral, lit: pat}
	case pat == "*":
		return nameMatcher{kind: matchAny}
	case len(pat) >= 2 && pat[0] == '*' && pat[len(pat)-1] == '*' && !hasMeta(pat[1:len(pat)-1]):
		return nameMatcher{kind: matchContains, lit: pat[1 : len(pat)-1]}
	case pat[0] == '*' && !hasMeta(pat[1:]):
		return nameMatcher{kind: matchSuffix, lit: pat[1:]}
	case pat[len(pat)-1] == '*' && !hasMeta(pat[:len(pat)-1]):
		return nameMatcher{kind: matchPrefix, lit: pat[:len(pat)-1]}
	}
	n := nameMatcher{kind: matchGlob, lit: pat}
	if i := strings.IndexAny(pat, `*?[\`); i > 0 {
		n.pre = pat[:i]
	}
	if i := strings.LastIndexAny(pat, `*?[]\`); i >= 0 {
		n.suf = pat[i+1:]
	}
	return n
}

func (n *nameMatcher) match(name string) bool {
	switch n.kind {
	case matchLiteral:
		return name == n.lit
	case matchAny:
		return true
	case matchPrefix:
		return strings.HasPrefix(name, n.lit)
	case matchSuffix:
		return strings.HasSuffix(name, n.lit)
	case matchContains:
		return strings.Contains(name, n.lit)
	}
	if !strings.HasPrefix(name, n.pre) || !strings.HasSuffix(name, n.suf) {
		return false
	}
	ok, _ := path.Match(n.lit, name) // syntax checked when the rule was added
	return ok
}

// pathPattern is a hide pattern of several components, matched component by
// component against a path with the same number of components. This equals
// path.Match on the whole path because "*" and "?" never match "/".
type pathPattern struct {
	comps []nameMatcher
}

// match reports whether dir/name matches; dir must have len(p.comps)-1
// components (the caller indexes patterns by depth).
func (p *pathPattern) match(dir, name string) bool {
	last := len(p.comps) - 1
	if !p.comps[last].match(name) {
		return false // the cheapest rejection first
	}
	start := 0
	for i := 0; i < last; i++ {
		end := strings.IndexByte(dir[start:], '/')
		if end < 0 {
			end = len(dir)
		} else {
			end += start
		}
		if !p.comps[i].match(dir[start:end]) {
			return false
		}
		start = end + 1
	}
	return true
}
