package main

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/vfsfilter/vfsfilter/internal/settings"
	"github.com/vfsfilter/vfsfilter/layer"
)

// demoFiles holds the sample tree (demodata/tree) and the rules the demo
// mounts it with (demodata/rules.toml).
//
//go:embed demodata
var demoFiles embed.FS

var cmdDemo = &command{
	name:  "demo",
	usage: "demo [flags]",
	short: "mount a sample tree and show, step by step, what the filters do",
	long: `Write a small sample tree, a 1.5 MiB generated file and a 12 KiB text file
into a temporary backing directory, encrypted (through a mount of the crypt
filter alone), mount it at a temporary mountpoint inside this process
through the stack notify > namespace > crypt > hsm > passthrough (as
"vfsfilter mount" orders them), and show step by step what each filter does:

  namespace  hides "*.tmp", shows README.txt as README.md, adds a read-only
             VERSION file: the mount next to the backing directory, reading
             and writing through it, and the errors a filter returns.
  notify     what "vfsfilter watch" reports for a file written through the
             mount and for files another program deletes directly in the
             backing directory, by their encrypted names: the watch reports
             them in the names users see, and the hidden "*.tmp" not at all.
  hsm        migrates two files to a store (a directory in the temporary
             directory): the mount still shows their sizes and times, the
             backing files are empty stubs (st_blocks before and after), the
             store holds the objects, reading a file recalls it byte for
             byte, and none of the HSM's own work reaches a watch.
  crypt      the backing directory holds only encrypted names and
             ciphertext (each file a little larger than in the mount), one
             damaged block fails alone with EIO and a log line, and the HSM's
             store holds only ciphertext. The demo uses a fixed passphrase
             and a low scrypt cost (logN 10) so that it starts at once;
             "vfsfilter init --crypt" asks for a passphrase and uses logN 16.

Then unmount and remove the temporary directories.

Every step checks its outcome: the demo exits 0 only if the stack behaved as
described. It needs what "vfsfilter mount" needs (FUSE, and root or
fusermount3), sh and dd for the changes made underneath, and no terminal.
The HSM keeps each file's state in a trusted.* extended attribute, which
needs root (CAP_SYS_ADMIN): without it the hsm filter is left out and its
steps are skipped.`,
	setup: func(fs *pflag.FlagSet) func(*env, []string) error {
		debug := fs.Bool("debug", false, "log every FUSE request to stderr")
		return func(e *env, args []string) error {
			if len(args) != 0 {
				return usageErrorf("demo takes no arguments")
			}
			return runDemo(e, *debug)
		}
	},
}

// demoParts are the parts of the demo, one per filter, in the order the
// demo shows them (the stack orders the filters by altitude, whatever the
// order here). Showing another filter is adding its part here; each part
// lives in its demo_*.go file.
var demoParts = []func() *demoPart{
	namespaceDemo, // demo_namespace.go
	notifyDemo,    // demo_notify.go
	hsmDemo,       // demo_hsm.go
	cryptDemo,     // demo_crypt.go
}

// demoPart is what one filter contributes to the demo. Every hook is
// optional. A hook may return a demoSkip error: the filter cannot run
// here (say, it needs a privilege the demo lacks); the part is then left
// out, with the reason printed, and the demo goes on without it.
type demoPart struct {
	// name is the filter's name, as the stack lists it.
	name string
	// prepare runs before the sample tree is written to the (empty)
	// backing directory: it may add files to the tree (d.addFile), set
	// the backing directory up (crypt's settings) or make directories in
	// d.tmp.
	prepare func(d *demo) error
	// writer returns the filters the sample tree must be written
	// through: those that change how files are stored in the backing
	// directory (crypt). With any, the tree is written through a mount of
	// them alone over the passthrough, unmounted before the demo's stack
	// is built; without, it is copied into the backing directory.
	writer func(d *demo) ([]layer.Filter, error)
	// describe prints, in the step that introduces the stack, what the
	// filter is configured with.
	describe func(d *demo) error
	// filters returns the filters the part adds to the stack (built over
	// d.backing; the stack is not built yet).
	filters func(d *demo) ([]layer.Filter, error)
	// serve runs once the mount serves, before the first step.
	serve func(d *demo, srv *layer.Server) error
	// steps show and check the filter at work, in order, on the live mount.
	steps []demoStep
	// close runs after the last step, before unmounting, even when a step
	// failed.
	close func(d *demo)

	skipped string // why the part was left out, or ""
}

// demoStep is one step of the demo: a title and the code that shows (and
// checks) one behaviour of the stack. Steps run in order against the live
// mount; a step returns an error when the stack did not behave as the step
// says it should.
type demoStep struct {
	title string
	run   func(d *demo) error
}

// demoSkip is returned by a part's prepare or filters hook when the filter
// cannot be shown on this machine.
type demoSkip string

func (s demoSkip) Error() string { return string(s) }

// demo is the state the steps share.
type demo struct {
	out     io.Writer
	tmp     string       // the temporary directory that holds everything below
	backing string       // the temporary backing directory
	mnt     string       // the temporary mountpoint
	log     *slog.Logger // the filters' log (discarded unless --debug)
	stack   *layer.Stack
	srv     *layer.Server
	parts   []*demoPart
	steps   int // steps printed so far

	// watch is the notify part's source of events, for every part's
	// steps to check what watchers see (nil when notify is left out).
	watch func() *demoWatch

	files []demoFile // added to the sample tree by the parts (addFile)
	// logged keeps the filters' warnings and errors, for steps to show
	// the log line a behaviour leaves.
	logged *demoLog
	// hsmStore is the HSM's store directory ("" without hsm).
	hsmStore string
	// storedName maps a path as the filters above crypt see it
	// (README.txt) to the path the backing directory stores it under,
	// and decrypt maps a backing file's content to what they read; both
	// are set by the crypt part (nil without crypt). See backingPath and
	// readBacking.
	storedName func(rel string) (string, error)
	decrypt    func(b []byte) ([]byte, error)
}

// demoFile is a file a part adds to the sample tree.
type demoFile struct {
	path string // slash-separated, relative to the tree
	data []byte
}

// addFile adds a file to the sample tree (from a prepare hook).
func (d *demo) addFile(path string, data []byte) {
	d.files = append(d.files, demoFile{path, data})
}

// has reports whether the part named name is in the stack.
func (d *demo) has(name string) bool {
	p := d.part(name)
	return p != nil && p.skipped == ""
}

// backingPath returns the backing file of rel, a path as the filters
// above crypt see it: under its encrypted name when crypt is in the stack.
func (d *demo) backingPath(rel string) (string, error) {
	if d.storedName != nil {
		var err error
		if rel, err = d.storedName(rel); err != nil {
			return "", err
		}
	}
	return filepath.Join(d.backing, filepath.FromSlash(rel)), nil
}

// readBacking reads the backing file of rel (see backingPath) directly,
// and returns its content as the filters above crypt see it: decrypted,
// with the demo's key, when crypt is in the stack.
func (d *demo) readBacking(rel string) ([]byte, error) {
	p, err := d.backingPath(rel)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil || d.decrypt == nil {
		return b, err
	}
	return d.decrypt(b)
}

// demoLog keeps log records, as text without times.
type demoLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *demoLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// take returns the lines logged since the last take.
func (l *demoLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.TrimSpace(l.buf.String())
	l.buf.Reset()
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func runDemo(e *env, debug bool) (err error) {
	direct := canMountDirectly()
	if err := checkFUSE(direct); err != nil {
		return err
	}
	if err := checkPrivilege(false); err != nil {
		return err
	}
	d := &demo{out: e.stdout}
	for _, mk := range demoParts {
		d.parts = append(d.parts, mk())
	}
	d.tmp, err = os.MkdirTemp("", "vfsfilter-demo-")
	if err != nil {
		return err
	}
	mounted := false
	defer func() {
		if !mounted {
			os.RemoveAll(d.tmp)
		}
	}()
	d.backing, d.mnt = filepath.Join(d.tmp, "backing"), filepath.Join(d.tmp, "mnt")
	if err := os.Mkdir(d.mnt, 0o755); err != nil {
		return err
	}

	if err := os.Mkdir(d.backing, 0o755); err != nil {
		return err
	}
	// The filters log to a buffer that steps read (warnings and errors
	// only), and with --debug to stderr.
	d.logged = &demoLog{}
	var out slog.Handler = slog.DiscardHandler
	if debug {
		out = slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	d.log = slog.New(slog.NewMultiHandler(out, slog.NewTextHandler(d.logged, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})))

	d.printf("vfsfilter demo: the filters %s over a sample tree\n", d.partNames())
	d.step("The backing directory")
	if err := d.eachPart(func(p *demoPart) error { return call(p.prepare, d) }); err != nil {
		return err
	}
	if err := d.writeTree(debug); err != nil {
		return err
	}

	d.step("The filters")
	if err := d.eachPart(func(p *demoPart) error { return call(p.describe, d) }); err != nil {
		return err
	}

	d.step("Mounting")
	d.stack, err = d.buildStack()
	if err != nil {
		return err
	}
	// A signal must not kill the demo between mounting and unmounting:
	// that would leave a dead mount behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	// Nor must a reader that goes away ("vfsfilter demo | head"): with
	// SIGPIPE ignored, writes to stdout fail instead, and the demo still
	// unmounts and cleans up.
	signal.Ignore(syscall.SIGPIPE)
	defer signal.Stop(sigs)
	raiseProcs()
	d.srv, err = layer.Mount(d.mnt, d.stack, layer.MountOptions{Debug: debug, Logger: d.log, FsName: "vfsfilter-demo"})
	if err != nil {
		d.stack.Close()
		return withCode(classifyMountError(err), fmt.Errorf("cannot mount the demo: %w", err))
	}
	mounted = true
	d.printf("Mounted %s at %s.\nThe stack, top first: %s\n", d.backing, d.mnt, filterNames(d.stack))
	if p := d.part("notify"); p != nil && p.skipped == "" {
		d.printf("(notify-source, notify's lower half, watches the backing directory.)\n")
	}
	defer func() {
		if cerr := d.teardown(); err == nil {
			err = cerr
		}
	}()
	for _, p := range d.parts {
		if p.skipped == "" && p.serve != nil {
			if err := p.serve(d, d.srv); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
		}
	}

	for _, p := range d.parts {
		if p.skipped != "" {
			continue
		}
		for _, s := range p.steps {
			select {
			case sig := <-sigs:
				return fmt.Errorf("interrupted by %v", sig)
			default:
			}
			title := p.name + ": " + s.title
			n := d.step(title)
			if err := s.run(d); err != nil {
				return fmt.Errorf("step %d (%s): %w", n, title, err)
			}
		}
	}
	return nil
}

// call runs an optional hook.
func call(hook func(*demo) error, d *demo) error {
	if hook == nil {
		return nil
	}
	return hook(d)
}

// eachPart runs fn for every part not left out. A demoSkip leaves the
// part out: its reason is printed and the demo goes on.
func (d *demo) eachPart(fn func(p *demoPart) error) error {
	for _, p := range d.parts {
		if p.skipped != "" {
			continue
		}
		err := fn(p)
		var skip demoSkip
		if errors.As(err, &skip) {
			p.skipped = string(skip)
			d.printf("%s is left out of the demo, and its steps skipped:\n", p.name)
			d.printIndented(string(skip))
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}
	return nil
}

// part returns the part named name, or nil.
func (d *demo) part(name string) *demoPart {
	for _, p := range d.parts {
		if p.name == name {
			return p
		}
	}
	return nil
}

func (d *demo) partNames() string {
	var names []string
	for _, p := range d.parts {
		names = append(names, p.name)
	}
	return strings.Join(names, ", ")
}

// writeTree writes the sample tree, and the files the parts added, to the
// backing directory: through a mount of the parts' writer filters when
// there are any (see demoPart.writer), or by copying.
func (d *demo) writeTree(debug bool) error {
	var filters []layer.Filter
	var names []string
	err := d.eachPart(func(p *demoPart) error {
		if p.writer == nil {
			return nil
		}
		fs, err := p.writer(d)
		filters = append(filters, fs...)
		if err == nil {
			names = append(names, p.name)
		}
		return err
	})
	if err != nil {
		closeFilters(filters)
		return err
	}
	if len(filters) == 0 {
		if err := d.copySample(d.backing); err != nil {
			return err
		}
		d.printf("Copied the sample tree to %s. It holds:\n", d.backing)
		return d.listTree(d.backing)
	}
	pt, err := layer.NewPassthrough(d.backing)
	if err != nil {
		closeFilters(filters)
		return err
	}
	stack, err := layer.NewStack(d.log, append([]layer.Filter{pt}, filters...)...)
	if err != nil {
		closeFilters(append(filters, pt))
		return err
	}
	dir := filepath.Join(d.tmp, "write")
	if err := os.Mkdir(dir, 0o755); err != nil {
		stack.Close()
		return err
	}
	srv, err := layer.Mount(dir, stack, layer.MountOptions{Debug: debug, Logger: d.log, FsName: "vfsfilter-demo"})
	if err != nil {
		stack.Close()
		return withCode(classifyMountError(err), fmt.Errorf("cannot mount the demo: %w", err))
	}
	err = d.copySample(dir)
	if err == nil {
		d.printf("Mounted it at %s\nthrough %s alone (without the namespace rules, which refuse to create the\nhidden *.tmp files) and copied the sample tree into it. Through that mount,\nit holds:\n", dir, strings.Join(names, ", "))
		err = d.listTree(dir)
	}
	if uerr := srv.Unmount(); uerr != nil {
		if _, lerr := unmountFUSE(dir, true); lerr != nil {
			return fmt.Errorf("cannot unmount %s: %v; lazy unmount failed too: %v", dir, uerr, lerr)
		}
	} else {
		srv.Wait()
	}
	stack.Close()
	if err != nil {
		return err
	}
	d.printf("Unmounted it. The backing directory itself now holds ciphertext only (the\ncrypt steps below list it).\n")
	return os.Remove(dir)
}

// copySample copies the sample tree and the files the parts added to
// dst, an existing directory.
func (d *demo) copySample(dst string) error {
	if err := copyTree(demoFiles, "demodata/tree", dst); err != nil {
		return err
	}
	for _, f := range d.files {
		p := filepath.Join(dst, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func closeFilters(filters []layer.Filter) {
	for _, f := range filters {
		if c, ok := f.(io.Closer); ok {
			c.Close()
		}
	}
}

// buildStack stacks every part's filters on the passthrough to the
// backing directory; layer.NewStack orders them by altitude.
func (d *demo) buildStack() (*layer.Stack, error) {
	pt, err := layer.NewPassthrough(d.backing)
	if err != nil {
		return nil, err
	}
	filters := []layer.Filter{pt}
	err = d.eachPart(func(p *demoPart) error {
		if p.filters == nil {
			return nil
		}
		fs, err := p.filters(d)
		filters = append(filters, fs...)
		return err
	})
	if err == nil {
		var stack *layer.Stack
		if stack, err = layer.NewStack(d.log, filters...); err == nil {
			return stack, nil
		}
	}
	closeFilters(filters)
	return nil, err
}

// teardown ends the parts' work, unmounts, closes the filters and removes
// the temporary directories. It removes them only once the mount is gone:
// removing through a live mount would go through the filters (and a
// hidden file would stay behind).
func (d *demo) teardown() error {
	for _, p := range d.parts {
		if p.skipped == "" && p.close != nil {
			p.close(d)
		}
	}
	d.step("Unmounting")
	if err := d.srv.Unmount(); err != nil {
		if _, lerr := unmountFUSE(d.mnt, true); lerr != nil {
			return fmt.Errorf("cannot unmount %s: %v; lazy unmount failed too: %v (the temporary files stay in %s)", d.mnt, err, lerr, d.tmp)
		}
		d.printf("%s was busy; detached it lazily\n", d.mnt)
	} else {
		d.srv.Wait()
	}
	// The filters' goroutines (the backing watch, recalls) stop before
	// their files go.
	d.stack.Close()
	if mounts, err := readMounts(); err == nil {
		if _, ok := mountAt(mounts, d.mnt); ok {
			return fmt.Errorf("%s is still mounted; the temporary files stay in %s", d.mnt, d.tmp)
		}
	}
	if err := os.RemoveAll(d.tmp); err != nil {
		return err
	}
	d.printf("Unmounted %s and removed %s.\n", d.mnt, d.tmp)
	return nil
}

// underneath runs script with sh, as another program working directly in
// the backing directory would: in its own process, so that the backing
// watch sees a change that is not the daemon's own. The script refers to
// its arguments as "$1", "$2"...; the command is printed with them
// substituted.
func (d *demo) underneath(script string, args ...string) error {
	shown := script
	for i, a := range args {
		shown = strings.ReplaceAll(shown, fmt.Sprintf(`"$%d"`, i+1), a)
	}
	d.printf("$ %s\n", shown)
	cmd := exec.Command("sh", append([]string{"-c", script, "sh"}, args...)...)
	cmd.Dir = d.backing
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sh -c %q: %v %s", script, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// errnoOf renders a syscall result as the shell would print it.
func errnoOf(err error) string {
	if err == nil {
		return "(succeeded)"
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return fmt.Sprintf("%s (%s)", strings.ToUpper(en.Error()[:1])+en.Error()[1:], errnoName(en))
	}
	return err.Error()
}

func errnoName(en syscall.Errno) string {
	switch en {
	case syscall.ENOENT:
		return "ENOENT"
	case syscall.EPERM:
		return "EPERM"
	case syscall.EROFS:
		return "EROFS"
	case syscall.EXDEV:
		return "EXDEV"
	case syscall.EACCES:
		return "EACCES"
	case syscall.EIO:
		return "EIO"
	}
	return fmt.Sprintf("errno %d", int(en))
}

// listTree prints every entry under root, sorted, with sizes; the stack's
// settings directory (.vfsfilter, where the HSM keeps its journal) is left
// out.
func (d *demo) listTree(root string) error {
	var lines []string
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if de.IsDir() {
			if rel == settings.Dir {
				return filepath.SkipDir
			}
			lines = append(lines, fmt.Sprintf("    %-18s", rel+"/"))
			return nil
		}
		info, err := de.Info()
		if err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("    %-18s %7d bytes", rel, info.Size()))
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(lines)
	for _, l := range lines {
		d.printf("%s\n", strings.TrimRight(l, " "))
	}
	return nil
}

// copyTree copies the directory dir of fsys to dst, which may exist.
func copyTree(fsys fs.FS, dir, dst string) error {
	return fs.WalkDir(fsys, dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, dir), "/")
		target := filepath.Join(dst, filepath.FromSlash(rel))
		if de.IsDir() {
			if rel == "" {
				return os.MkdirAll(target, 0o755)
			}
			return os.Mkdir(target, 0o755)
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

// step starts the next step and returns its number.
func (d *demo) step(title string) int {
	d.steps++
	d.printf("\nStep %d. %s\n", d.steps, title)
	return d.steps
}

func (d *demo) printf(format string, args ...any) {
	fmt.Fprintf(d.out, format, args...)
}

func (d *demo) printIndented(s string) {
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if l == "" {
			d.printf("\n")
			continue
		}
		d.printf("    %s\n", l)
	}
}
