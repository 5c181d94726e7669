package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vfsfilter/vfsfilter/internal/settings"
	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/namespace"
)

// namespaceDemo is the namespace filter's part of the demo: the embedded
// rules (demodata/rules.toml) hide "*.tmp", show README.txt as README.md
// and add a read-only VERSION file.
func namespaceDemo() *demoPart {
	ns := &namespaceDemoState{}
	return &demoPart{
		name:     "namespace",
		describe: ns.describe,
		filters:  ns.filters,
		steps: []demoStep{
			{"what the mount shows", ns.stepListing},
			{"reading the virtual file VERSION", ns.stepReadVirtual},
			{"sizes as stat shows them", ns.stepStat},
			{"a renamed file is the backing file", ns.stepWriteRenamed},
			{"hidden names cannot be opened", ns.stepOpenHidden},
			{"hidden names cannot be created", ns.stepCreateHidden},
			{"virtual files are read-only", ns.stepWriteVirtual},
		},
	}
}

type namespaceDemoState struct {
	rules []byte // the rules file, as embedded
}

func (ns *namespaceDemoState) describe(d *demo) error {
	var err error
	ns.rules, err = demoFiles.ReadFile("demodata/rules.toml")
	if err != nil {
		return err
	}
	d.printf("namespace: these rules (the format of --rules FILE):\n")
	d.printIndented(string(ns.rules))
	return nil
}

func (ns *namespaceDemoState) filters(d *demo) ([]layer.Filter, error) {
	rules, err := namespace.ParseRules(bytes.NewReader(ns.rules), "demo rules.toml")
	if err != nil {
		return nil, err
	}
	// As in a real mount whose BACKING has settings: the stack's own
	// directory (the HSM's journal) is never part of the view.
	m, err := rules.Compile(namespace.CompileOptions{AlwaysHide: []string{settings.Dir}})
	if err != nil {
		return nil, err
	}
	f, err := namespace.New(m)
	if err != nil {
		return nil, err
	}
	return []layer.Filter{f}, nil
}

func (ns *namespaceDemoState) stepListing(d *demo) error {
	d.printf("The mount %s shows:\n", d.mnt)
	if err := d.listTree(d.mnt); err != nil {
		return err
	}
	d.printf("cache.tmp and src/hello.o.tmp are hidden, README.txt is shown as README.md,\nand VERSION exists only in the mount.\n")
	for _, p := range []string{"cache.tmp", "src/hello.o.tmp", "README.txt", settings.Dir} {
		if _, err := os.Lstat(filepath.Join(d.mnt, p)); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: want ENOENT, got %v", p, err)
		}
	}
	return nil
}

func (ns *namespaceDemoState) stepReadVirtual(d *demo) error {
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

func (ns *namespaceDemoState) stepStat(d *demo) error {
	for _, p := range [][2]string{{"VERSION", ""}, {"README.md", "README.txt"}} {
		st, err := os.Stat(filepath.Join(d.mnt, p[0]))
		if err != nil {
			return err
		}
		want := int64(len("vfsfilter demo 1.0\n"))
		what := "the length of its content"
		if p[1] != "" {
			b, err := d.readBacking(p[1])
			if err != nil {
				return err
			}
			want, what = int64(len(b)), "the size of the backing "+p[1]
			if d.has("crypt") {
				what += " (decrypted)"
			}
		}
		d.printf("%-10s %3d bytes, mode %v: %s\n", p[0], st.Size(), st.Mode(), what)
		if st.Size() != want {
			return fmt.Errorf("%s: size %d, want %d", p[0], st.Size(), want)
		}
	}
	return nil
}

func (ns *namespaceDemoState) stepWriteRenamed(d *demo) error {
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
	b, err := d.readBacking("README.txt")
	if err != nil {
		return err
	}
	if d.has("crypt") {
		bp, err := d.backingPath("README.txt")
		if err != nil {
			return err
		}
		d.printf("Appended a line to README.md in the mount. The backing README.txt (stored by\ncrypt as %s), decrypted with the demo's key, now reads:\n", strings.TrimPrefix(bp, d.backing+"/"))
	} else {
		d.printf("Appended a line to README.md in the mount; the backing README.txt now reads:\n")
	}
	d.printIndented(string(b))
	if !strings.HasSuffix(string(b), line) {
		return fmt.Errorf("the backing README.txt does not end with the appended line")
	}
	return nil
}

func (ns *namespaceDemoState) stepOpenHidden(d *demo) error {
	p := filepath.Join(d.mnt, "cache.tmp")
	_, err := os.ReadFile(p)
	d.printf("$ cat %s\n    %v\n", p, errnoOf(err))
	if !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("want ENOENT, got %v", err)
	}
	d.printf("The file is still in the backing directory; the filter answers as if it were not.\n")
	return nil
}

func (ns *namespaceDemoState) stepCreateHidden(d *demo) error {
	p := filepath.Join(d.mnt, "new.tmp")
	err := os.WriteFile(p, []byte("x"), 0o644)
	d.printf("$ echo x > %s\n    %v\n", p, errnoOf(err))
	if !errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("want EPERM, got %v", err)
	}
	bp, err := d.backingPath("new.tmp")
	if err != nil {
		return err
	}
	if _, err := os.Lstat(bp); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("new.tmp appeared in the backing directory (%v)", err)
	}
	d.printf("The create never reached the backing directory: a hidden name must not be\ncreated where nobody could see it again.\n")
	return nil
}

func (ns *namespaceDemoState) stepWriteVirtual(d *demo) error {
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
