package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/vfsfilter/vfsfilter/hsm"
	"github.com/vfsfilter/vfsfilter/internal/control"
)

var cmdHSM = &command{
	name:  "hsm",
	usage: "hsm migrate|recall|status|pin|unpin [flags] PATH...",
	short: "migrate cold files to the HSM store, recall them, show their state",
	long: `Manage the files of a mount whose BACKING was set up with
"vfsfilter init --hsm-store STORE". Each PATH is a file or directory
(recursively) inside a live mount; the command asks that mount's daemon to
do the work, so a file open in an application is never migrated under it.

  migrate  copy files' data to the store, verify it there, then release the
           local data: a stub stays, with its name, size, times, owner,
           mode and xattrs. Open, pinned, empty, immutable and
           append-only (chattr +i, +a) files are left alone.
  recall   bring migrated files' data back (reading a file does so too).
  status   print each file's state: resident (local only), premigrated
           (local and in the store), migrated (in the store only).
  pin      keep files local: recall them if needed; migrate skips them.
  unpin    allow files to migrate again.

SIZE is a number of bytes with an optional K, M, G or T suffix (powers of
1024). DURATION is a Go duration (90s, 36h) or a number of days (30d).
Exit status 1 if any file failed.`,
	setup: func(fs *pflag.FlagSet) func(*env, []string) error {
		o := &hsmFlags{}
		fs.StringVar(&o.olderThan, "older-than", "", "migrate: only files neither read nor written for `DURATION`")
		fs.StringVar(&o.largerThan, "larger-than", "", "migrate: only files larger than `SIZE`")
		fs.BoolVarP(&o.dryRun, "dry-run", "n", false, "migrate: list what would be migrated, change nothing")
		fs.BoolVar(&o.json, "json", false, "migrate, status: print one JSON object per line (per file, then a summary)")
		return func(e *env, args []string) error {
			if len(args) == 0 {
				return usageErrorf("hsm needs a sub-command: migrate, recall, status, pin or unpin")
			}
			sub, paths := args[0], args[1:]
			if len(paths) == 0 {
				return usageErrorf("hsm %s needs at least one PATH", sub)
			}
			switch sub {
			case "migrate":
			case "recall", "status", "pin", "unpin":
				if o.olderThan != "" || o.largerThan != "" || o.dryRun {
					return usageErrorf("--older-than, --larger-than and --dry-run go with hsm migrate only")
				}
				if o.json && sub != "status" {
					return usageErrorf("--json goes with hsm migrate and hsm status only")
				}
			default:
				return usageErrorf("unknown hsm sub-command %q (want migrate, recall, status, pin or unpin)", sub)
			}
			req := hsm.Request{DryRun: o.dryRun, Pin: sub == "pin"}
			var err error
			if o.olderThan != "" {
				if req.OlderThan, err = parseAge(o.olderThan); err != nil {
					return usageErrorf("--older-than: %v", err)
				}
			}
			if o.largerThan != "" {
				if req.LargerThan, err = parseSize(o.largerThan); err != nil {
					return usageErrorf("--larger-than: %v", err)
				}
			}
			return runHSM(e, sub, paths, req, o.json)
		}
	},
}

func init() { registerCommand(cmdHSM) }

type hsmFlags struct {
	olderThan, largerThan string
	dryRun, json          bool
}

// parseSize reads "1048576", "512K", "10M", "1.5G".
func parseSize(s string) (int64, error) {
	mult := int64(1)
	t := strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B")
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = strings.TrimSuffix(t[:len(t)-1], "I")
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad size %q (want e.g. 4096, 512K, 10M, 1G)", s)
	}
	return int64(v * float64(mult)), nil
}

// parseAge reads a Go duration or a number of days ("30d").
func parseAge(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(d, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("bad duration %q (want e.g. 36h, 30d)", s)
	}
	return d, nil
}

// mountPaths groups PATHs by the mount that holds them.
type mountPaths struct {
	mountpoint string
	rels       []string
}

func groupByMount(paths []string) ([]mountPaths, error) {
	var out []mountPaths
	idx := map[string]int{}
	for _, p := range paths {
		mnt, rel, err := control.FindMount(p)
		if err != nil {
			return nil, errorf(ExitMountpoint, "%v", err)
		}
		i, ok := idx[mnt]
		if !ok {
			i = len(out)
			idx[mnt] = i
			out = append(out, mountPaths{mountpoint: mnt})
		}
		out[i].rels = append(out[i].rels, rel)
	}
	return out, nil
}

// displayPath turns a mount-relative path back into one relative to the
// working directory, as the user typed them.
func displayPath(mnt, rel string) string {
	abs := filepath.Join(mnt, rel)
	if wd, err := os.Getwd(); err == nil {
		if r, err := filepath.Rel(wd, abs); err == nil && !strings.HasPrefix(r, "../../") {
			return r
		}
	}
	return abs
}

func runHSM(e *env, sub string, paths []string, req hsm.Request, asJSON bool) error {
	groups, err := groupByMount(paths)
	if err != nil {
		return err
	}
	// ^C cancels the request: the daemon stops after the file at hand,
	// which it leaves consistent.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	method := map[string]string{"migrate": hsm.MethodMigrate, "recall": hsm.MethodRecall, "status": hsm.MethodStatus, "pin": hsm.MethodPin, "unpin": hsm.MethodPin}[sub]
	out := &hsmOutput{e: e, sub: sub, json: asJSON, dryRun: req.DryRun}
	if f, ok := e.stderr.(*os.File); ok && !asJSON && sub == "migrate" && !req.DryRun && term.IsTerminal(int(f.Fd())) {
		out.tty = f
	}
	if sub == "status" && !asJSON {
		out.tw = tabwriter.NewWriter(e.stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintln(out.tw, "STATE\tSIZE\tLOCAL\tPATH")
	}
	for _, g := range groups {
		cl, err := control.Dial(control.SocketPath(g.mountpoint))
		if err != nil {
			return fmt.Errorf("%s: %w", g.mountpoint, err)
		}
		r := req
		r.Paths = g.rels
		out.mnt = g.mountpoint
		err = cl.Call(ctx, method, r, out.handle)
		out.finishBar()
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return errorf(ExitFailure, "interrupted")
			}
			return fmt.Errorf("%s: %w", g.mountpoint, err)
		}
	}
	if out.tw != nil {
		out.tw.Flush()
	}
	if out.failed > 0 {
		return errorf(ExitFailure, "%d file(s) failed", out.failed)
	}
	return nil
}

type hsmOutput struct {
	e      *env
	sub    string
	json   bool
	dryRun bool
	mnt    string
	tty    *os.File
	bar    *progressbar.ProgressBar
	tw     *tabwriter.Writer
	failed int
}

func (o *hsmOutput) finishBar() {
	if o.bar != nil {
		o.bar.Finish()
		fmt.Fprintln(o.tty)
		o.bar = nil
	}
}

func (o *hsmOutput) handle(raw json.RawMessage) error {
	var m hsm.Message
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	if m.Path != "" {
		m.Path = displayPath(o.mnt, m.Path)
	}
	if m.Status != nil {
		m.Status.Path = m.Path
	}
	if m.Result == "failed" {
		o.failed++
	}
	if o.json {
		switch {
		case m.Type == "progress":
			return nil
		case m.Status != nil:
			return json.NewEncoder(o.e.stdout).Encode(m.Status)
		}
		return json.NewEncoder(o.e.stdout).Encode(m)
	}
	switch m.Type {
	case "plan":
		if o.tty != nil && m.Bytes > 0 {
			o.bar = progressbar.NewOptions64(m.Bytes,
				progressbar.OptionSetWriter(o.tty),
				progressbar.OptionSetDescription(fmt.Sprintf("migrating %d files", m.Files)),
				progressbar.OptionShowBytes(true),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionSetWidth(30),
			)
		}
	case "progress":
		if o.bar != nil {
			o.bar.Set64(m.Bytes)
		}
	case "file":
		w := o.e.stdout
		if o.bar != nil {
			o.bar.Clear()
		}
		switch {
		case m.Status != nil:
			fmt.Fprintf(o.tw, "%s\t%s\t%s\t%s\n", m.Status.State, humanBytes(m.Status.Size), humanBytes(m.Status.LocalBytes), m.Path)
		case m.Result == "failed":
			fmt.Fprintf(o.e.stderr, "vfsfilter: %s: %s\n", m.Path, m.Reason)
		case m.Result == "would migrate":
			fmt.Fprintf(w, "would migrate %s (%s)\n", m.Path, humanBytes(m.Size))
		case m.Result == "skipped" || m.Result == "premigrated":
			fmt.Fprintf(w, "%s %s: %s\n", m.Result, m.Path, m.Reason)
		case o.sub != "migrate":
			fmt.Fprintf(w, "%s %s\n", m.Result, m.Path)
		}
	case "summary":
		o.finishBar()
		w := o.e.stdout
		switch o.sub {
		case "migrate":
			if o.dryRun {
				fmt.Fprintf(w, "would migrate %d files, %s\n", m.Files, humanBytes(m.Bytes))
			} else {
				fmt.Fprintf(w, "migrated %d files, %s; skipped %d; failed %d\n", m.Migrated, humanBytes(m.Bytes), m.Skipped, m.Failed)
			}
		case "recall":
			fmt.Fprintf(w, "recalled %d files; failed %d\n", m.Files, m.Failed)
		}
	}
	return nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
