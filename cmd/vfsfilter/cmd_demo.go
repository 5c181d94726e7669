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
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/namespace"
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
	long: `Copy a small sample tree into a temporary backing directory, mount it at a
temporary mountpoint inside this process with a namespace filter (hide
"*.tmp", show README.txt as README.md, add a read-only VERSION file), and
show step by step what the stack does: what the backing directory holds and
what the mount shows, reading and writing through it, and the errors a
filter returns. Then unmount and remove the temporary directories.

Every step checks its outcome: the demo exits 0 only if the stack behaved as
described. It needs what "vfsfilter mount" needs (FUSE, and root or
fusermount3) and no terminal.`,
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

// demo is the state the steps share.
type demo struct {
	out     io.Writer
	backing string // the temporary backing directory
	mnt     string // the temporary mountpoint
	rules   []byte // the rules file, as embedded
}

// demoStep is one step of the demo: a title and the code that shows (and
// checks) one behaviour of the stack. Steps run in order against the live
// mount; a step returns an error when the stack did not behave as the step
// says it should. Filters added later (hsm, crypt) add their steps here.
type demoStep struct {
	title string
	run   func(d *demo) error
}

var demoSteps = []demoStep{
	{"What the mount shows", (*demo).stepListing},
	{"Reading the virtual file VERSION", (*demo).stepReadVirtual},
	{"Sizes: stat through the mount", (*demo).stepStat},
	{"A renamed file is the backing file", (*demo).stepWriteRenamed},
	{"Hidden names cannot be opened", (*demo).stepOpenHidden},
	{"Hidden names cannot be created", (*demo).stepCreateHidden},
	{"Virtual files are read-only", (*demo).stepWriteVirtual},
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
	d.rules, err = demoFiles.ReadFile("demodata/rules.toml")
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "vfsfilter-demo-")
	if err != nil {
		return err
	}
	d.backing, d.mnt = filepath.Join(tmp, "backing"), filepath.Join(tmp, "mnt")
	if err := os.Mkdir(d.mnt, 0o755); err != nil {
		os.RemoveAll(tmp)
		return err
	}

	d.printf("vfsfilter demo: a namespace filter over a sample tree\n")
	d.step(1, "The backing directory")
	if err := copyTree(demoFiles, "demodata/tree", d.backing); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	d.printf("Copied the sample tree to %s:\n", d.backing)
	if err := d.listTree(d.backing); err != nil {
		os.RemoveAll(tmp)
		return err
	}

	d.step(2, "The rules")
	d.printf("The namespace filter gets these rules (the format of --rules FILE):\n")
	d.printIndented(string(d.rules))

	d.step(3, "Mounting")
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if debug {
		logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	stack, err := d.buildStack(logger)
	if err != nil {
		os.RemoveAll(tmp)
		return err
	}
	defer stack.Close()
	// A signal must not kill the demo between mounting and unmounting:
	// that would leave a dead mount behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	srv, err := layer.Mount(d.mnt, stack, layer.MountOptions{Debug: debug, Logger: logger, FsName: "vfsfilter-demo"})
	if err != nil {
		os.RemoveAll(tmp)
		return withCode(classifyMountError(err), fmt.Errorf("cannot mount the demo: %w", err))
	}
	d.printf("Mounted %s at %s; the stack, top first: %s\n", d.backing, d.mnt, filterNames(stack))
	defer func() {
		if cerr := d.teardown(srv, tmp); err == nil {
			err = cerr
		}
	}()

	for i, s := range demoSteps {
		select {
		case sig := <-sigs:
			return fmt.Errorf("interrupted by %v", sig)
		default:
		}
		d.step(4+i, s.title)
		if err := s.run(d); err != nil {
			return fmt.Errorf("step %d (%s): %w", 4+i, s.title, err)
		}
	}
	return nil
}

func (d *demo) buildStack(logger *slog.Logger) (*layer.Stack, error) {
	rules, err := namespace.ParseRules(bytes.NewReader(d.rules), "demo rules.toml")
	if err != nil {
		return nil, err
	}
	m, err := rules.Compile(namespace.CompileOptions{})
	if err != nil {
		return nil, err
	}
	ns, err := namespace.New(m)
	if err != nil {
		return nil, err
	}
	pt, err := layer.NewPassthrough(d.backing)
	if err != nil {
		return nil, err
	}
	stack, err := layer.NewStack(logger, pt, ns)
	if err != nil {
		pt.Close()
		return nil, err
	}
	return stack, nil
}

// teardown unmounts and removes the temporary directories. It removes them
// only once the mount is gone: removing through a live mount would go
// through the filters (and a hidden file would stay behind).
func (d *demo) teardown(srv *layer.Server, tmp string) error {
	d.step(4+len(demoSteps), "Unmounting")
	if err := srv.Unmount(); err != nil {
		if _, lerr := unmountFUSE(d.mnt, true); lerr != nil {
			return fmt.Errorf("cannot unmount %s: %v; lazy unmount failed too: %v (the temporary files stay in %s)", d.mnt, err, lerr, tmp)
		}
		d.printf("%s was busy; detached it lazily\n", d.mnt)
	} else {
		srv.Wait()
	}
	if mounts, err := readMounts(); err == nil {
		if _, ok := mountAt(mounts, d.mnt); ok {
			return fmt.Errorf("%s is still mounted; the temporary files stay in %s", d.mnt, tmp)
		}
	}
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	d.printf("Unmounted %s and removed %s.\n", d.mnt, tmp)
	return nil
}

func (d *demo) stepListing() error {
	d.printf("The mount %s shows:\n", d.mnt)
	if err := d.listTree(d.mnt); err != nil {
		return err
	}
	d.printf("cache.tmp and src/hello.o.tmp are hidden, README.txt is shown as README.md,\nand VERSION exists only in the mount.\n")
	for _, p := range []string{"cache.tmp", "src/hello.o.tmp", "README.txt"} {
		if _, err := os.Lstat(filepath.Join(d.mnt, p)); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: want ENOENT, got %v", p, err)
		}
	}
	return nil
}

func (d *demo) stepReadVirtual() error {
	b, err := os.ReadFile(filepath.Join(d.mnt, "VERSION"))
	if err != nil {
		return err
	}
	d.printf("$ cat %s\n", filepath.Join(d.mnt, "VERSION"))
	d.printIndented(string(b))
	if want := "vfsfilter demo 1.0\n"; string(b) != want {
		return fmt.Errorf("VERSION holds %q, want %q", b, want)
	}
	d.printf("The namespace filter answered the open and the read itself; nothing below it ran.\n")
	return nil
}

func (d *demo) stepStat() error {
	for _, p := range [][2]string{{"VERSION", ""}, {"README.md", "README.txt"}} {
		st, err := os.Stat(filepath.Join(d.mnt, p[0]))
		if err != nil {
			return err
		}
		want := int64(len("vfsfilter demo 1.0\n"))
		what := "the length of its content"
		if p[1] != "" {
			bst, err := os.Stat(filepath.Join(d.backing, p[1]))
			if err != nil {
				return err
			}
			want, what = bst.Size(), "the size of the backing "+p[1]
		}
		d.printf("%-10s %3d bytes, mode %v: %s\n", p[0], st.Size(), st.Mode(), what)
		if st.Size() != want {
			return fmt.Errorf("%s: size %d, want %d", p[0], st.Size(), want)
		}
	}
	return nil
}

func (d *demo) stepWriteRenamed() error {
	f, err := os.OpenFile(filepath.Join(d.mnt, "README.md"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	const line = "This line was appended through the mount, to README.md.\n"
	_, err = f.WriteString(line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(d.backing, "README.txt"))
	if err != nil {
		return err
	}
	d.printf("Appended a line to README.md in the mount; the backing README.txt now reads:\n")
	d.printIndented(string(b))
	if !strings.HasSuffix(string(b), line) {
		return fmt.Errorf("the backing README.txt does not end with the appended line")
	}
	return nil
}

func (d *demo) stepOpenHidden() error {
	p := filepath.Join(d.mnt, "cache.tmp")
	_, err := os.ReadFile(p)
	d.printf("$ cat %s\n    %v\n", p, errnoOf(err))
	if !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("want ENOENT, got %v", err)
	}
	d.printf("The file is still in the backing directory; the filter answers as if it were not.\n")
	return nil
}

func (d *demo) stepCreateHidden() error {
	p := filepath.Join(d.mnt, "new.tmp")
	err := os.WriteFile(p, []byte("x"), 0o644)
	d.printf("$ echo x > %s\n    %v\n", p, errnoOf(err))
	if !errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("want EPERM, got %v", err)
	}
	if _, err := os.Lstat(filepath.Join(d.backing, "new.tmp")); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("new.tmp appeared in the backing directory (%v)", err)
	}
	d.printf("The create never reached the backing directory: a hidden name must not be\ncreated where nobody could see it again.\n")
	return nil
}

func (d *demo) stepWriteVirtual() error {
	p := filepath.Join(d.mnt, "VERSION")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err == nil {
		f.Close()
	}
	d.printf("$ echo 2.0 > %s\n    %v\n", p, errnoOf(err))
	if !errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("want EROFS, got %v", err)
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
	}
	return fmt.Sprintf("errno %d", int(en))
}

// listTree prints every entry under root, sorted, with sizes.
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
			lines = append(lines, fmt.Sprintf("    %-18s", rel+"/"))
			return nil
		}
		info, err := de.Info()
		if err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("    %-18s %3d bytes", rel, info.Size()))
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

// copyTree copies the directory dir of fsys to dst, which must not exist.
func copyTree(fsys fs.FS, dir, dst string) error {
	return fs.WalkDir(fsys, dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, dir), "/")
		target := filepath.Join(dst, filepath.FromSlash(rel))
		if de.IsDir() {
			return os.Mkdir(target, 0o755)
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

func (d *demo) step(n int, title string) {
	d.printf("\nStep %d. %s\n", n, title)
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
