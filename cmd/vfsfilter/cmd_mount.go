package main

import (
	"fmt"
	"github.com/vfsfilter/vfsfilter/internal/control"
	"github.com/vfsfilter/vfsfilter/internal/settings"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/namespace"
)

var cmdMount = &command{
	name:  "mount",
	usage: "mount [flags] BACKING MOUNTPOINT",
	short: "show BACKING at MOUNTPOINT through the filter stack",
	long: `Mount the directory BACKING at MOUNTPOINT through a stack of filters. Every
access to MOUNTPOINT is passed down the stack to BACKING; the filters decide
what is hidden, renamed or added on the way.

The stack is the passthrough to BACKING at the bottom and, when any --hide
pattern or --rules file is given, the namespace filter above it.

By default vfsfilter stays in the foreground and logs to stderr. SIGINT,
SIGTERM or SIGHUP unmount cleanly and exit 0. If the mountpoint is busy,
vfsfilter retries briefly, then detaches it lazily (umount -l), keeps serving
the files still open until they are closed, and exits 1; a second signal
exits at once.

With --daemon, vfsfilter returns once the mount is serving (exit 0), or with
the error that prevented it, and the daemon logs to --log-file (or nowhere).
Stop it with "vfsfilter unmount MOUNTPOINT" or by signalling it.

Options for -o, comma separated, as in fstab(5):
  ro, rw                 read-only / read-write (later wins)
  allow_other            let other users in (implies default_permissions)
  default_permissions, acl
                         let the kernel check permissions (mode bits and
                         POSIX ACLs) and cache ACLs: a warm ls -l asks for
                         no ACL, but every create or unlink in a directory
                         costs one more round trip. Without allow_other
                         only the mount's owner can enter, and the backing
                         file system checks (ACLs are stored either way)
  debug                  the same as --debug
  entry_timeout=SECONDS  kernel cache time of names (e.g. 1, 0.5; 0 = none)
  attr_timeout=SECONDS   kernel cache time of attributes
  negative_timeout=SECONDS  kernel cache time of "no such file" answers
  fsname=NAME            source shown in /proc/mounts (default BACKING)
  nonempty               allow a mountpoint that is not empty
  nosuid, suid, nodev, dev, noexec, exec, noatime, atime, nodiratime,
  diratime, relatime, norelatime, strictatime, nostrictatime, lazytime,
  nolazytime, sync, async, dirsync
                         passed to the kernel as for any mount
  defaults, auto, noauto, nofail, _netdev, x-*, comment=...
                         accepted and ignored (for mount(8) and systemd)
Any other option is an error.

Patterns for --hide are globs (*, ?, [a-z], as in Go's path.Match) matched
against the names users see:
  *.tmp, .git     without "/": a name at any depth
  build/output    with "/": the whole path from the mount root
  /build          a leading "/" anchors a single name at the root
Hiding a directory hides everything below it. Hidden names cannot be
listed, opened, created or renamed onto ("Operation not permitted").

The --rules file is TOML:
  hide = ["*.tmp", ".git"]
  [[rename]]                      # show backing README.txt as README.md
  backing = "README.txt"
  visible = "README.md"
  [[virtual]]                     # a read-only file that exists only here
  path = "VERSION"
  content = "1.0\n"               # or: source = "/abs/path/file"
  [[bind]]                        # graft another directory
  path = "shared"
  source = "/abs/path/dir"`,
	setup: func(fs *pflag.FlagSet) func(*env, []string) error {
		f := &mountFlags{}
		fs.BoolVar(&f.readOnly, "read-only", false, "refuse every change (EROFS), like -o ro")
		fs.BoolVar(&f.allowOther, "allow-other", false, "let users other than the mounting one in, like -o allow_other; permissions are then checked by mode bits (default_permissions)")
		fs.StringArrayVarP(&f.options, "options", "o", nil, "comma-separated mount `OPTIONS` (repeatable; see above)")
		fs.StringArrayVar(&f.hide, "hide", nil, "hide entries matching the glob `PATTERN` (repeatable; see above)")
		fs.StringVar(&f.rulesFile, "rules", "", "load namespace rules (hide, rename, virtual files, binds) from the TOML `FILE`")
		fs.DurationVar(&f.entryTimeout, "entry-timeout", time.Second, "how long the kernel caches names, a Go `DURATION` (1s, 500ms; 0 = no caching); 30s by default where notify's fanotify watch invalidates the caches (see USAGE.md)")
		fs.DurationVar(&f.attrTimeout, "attr-timeout", time.Second, "how long the kernel caches attributes (a `DURATION`); 30s by default where notify's fanotify watch invalidates the caches")
		fs.DurationVar(&f.negTimeout, "negative-timeout", 0, "how long the kernel caches \"no such file\" answers (a `DURATION`)")
		fs.BoolVar(&f.daemon, "daemon", false, "run in the background; return once the mount is serving")
		fs.StringVar(&f.logFile, "log-file", "", "append the log to `FILE` (with --daemon the log is otherwise discarded)")
		fs.StringVar(&f.logFormat, "log-format", "text", "log `FORMAT`: text or json")
		fs.BoolVar(&f.debug, "debug", false, "log at debug level and trace every FUSE request")
		f.secret.addFlags(fs)
		fs.BoolVar(&f.cacheDirs, "cache-dirs", false, "let the kernel keep directory listings across opens (on by default where notify's fanotify watch invalidates the caches; --cache-dirs=false turns it off); with long --entry-timeout/--attr-timeout this makes warm listings (ls -lR) several times faster. Correct only while notify invalidates the caches (not with --no-notify)")
		fs.BoolVar(&f.syncWrites, "sync-writes", false, "encrypted mounts: answer each write only once its ciphertext is written below, instead of writing large writes' ciphertext while the writer goes on (about a quarter slower for large sequential writes; in exchange a daemon killed with SIGKILL cannot lose an answered write)")
		fs.BoolVar(&f.noNotify, "no-notify", false, "leave the notify filter out: no \"vfsfilter watch\" events, no cache invalidation or inotify events for changes made underneath (saves the backing watch's cost)")
		return func(e *env, args []string) error {
			f.readOnlySet = fs.Changed("read-only")
			f.allowOtherSet = fs.Changed("allow-other")
			f.debugSet = fs.Changed("debug")
			f.entrySet = fs.Changed("entry-timeout")
			f.attrSet = fs.Changed("attr-timeout")
			f.negSet = fs.Changed("negative-timeout")
			f.cacheDirsSet = fs.Changed("cache-dirs")
			cfg, err := newMountConfig(f, args)
			if err != nil {
				return err
			}
			if cfg.daemon && e.daemon == nil {
				return startDaemon(e, cfg)
			}
			return runMount(e, cfg)
		}
	},
}

// runMount checks everything that can be checked, builds the stack, mounts
// it and serves until unmounted. In the daemon child it reports readiness
// (or the error) to the parent through e.daemon.
func runMount(e *env, cfg *mountConfig) error {
	logger, closeLog, err := newLogger(e, cfg)
	if err != nil {
		return err
	}
	defer closeLog()

	// Install the handler before mounting: a signal that arrives while the
	// mount is being made must not kill the process and leave a dead mount
	// behind; it is handled once the mount is up.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	backing, err := checkBacking(cfg.backing)
	if err != nil {
		return err
	}
	mnt, err := checkMountpoint(cfg.mountpoint, backing, cfg.nonempty)
	if err != nil {
		return err
	}
	sets, err := loadSettings(backing)
	if err != nil {
		return withCode(ExitBacking, err)
	}
	filters, grafts, err := buildFilters(cfg, sets != nil)
	if err != nil {
		return err
	}
	direct := canMountDirectly()
	if err := checkFUSE(direct); err != nil {
		return err
	}
	if err := checkPrivilege(cfg.allowOther); err != nil {
		return err
	}

	pt, err := layer.NewPassthrough(backing)
	if err != nil {
		return withCode(ExitBacking, describePathError("backing directory", cfg.backing, err))
	}
	// The control socket lets commands (hsm, watch) reach this daemon.
	// Without it the mount still works; the commands then say so.
	ctl, err := control.Listen(control.SocketPath(mnt), logger)
	if err != nil {
		logger.Warn("no control socket; vfsfilter hsm/watch cannot reach this mount", "error", err)
		ctl = nil
	} else {
		defer ctl.Close()
	}
	sc := &stackContext{
		Backing:    backing,
		Mountpoint: mnt,
		Settings:   sets,
		Log:        logger,
		Control:    ctl,
		NoNotify:   cfg.noNotify,
		SyncWrites: cfg.syncWrites,
		Secret: func(prompt string) ([]byte, error) {
			return cfg.secret.read(prompt, false)
		},
	}
	if grafts {
		sc.Incoherent("namespace binds graft directories the backing watch does not cover")
	}
	// The filters that the settings in BACKING and the daemon's services
	// contribute (notify, crypt, hsm), each from its stack_*.go file.
	registered, err := buildStackFilters(sc, pt)
	if err != nil {
		pt.Close()
		return err
	}
	defer func() {
		for i := len(sc.closers) - 1; i >= 0; i-- {
			if err := sc.closers[i](); err != nil {
				logger.Warn("closing a filter", "error", err)
			}
		}
	}()
	stack, err := layer.NewStack(logger, append(registered, filters...)...)
	if err != nil {
		pt.Close()
		return fmt.Errorf("building the filter stack: %w", err)
	}
	// Runs after the mount is gone: the filters' fds (the backing
	// directory, the binds' sources) outlive every request.
	defer stack.Close()
	if e.daemon != nil {
		// Every path is absolute by now. A daemon must not keep the
		// directory it was started from busy: that would stop whatever
		// file system holds it from being unmounted.
		if err := os.Chdir("/"); err != nil {
			return err
		}
	}
	// A signal during the checks: stop before mounting rather than mount
	// only to unmount at once.
	select {
	case sig := <-sigs:
		return fmt.Errorf("interrupted by %v before mounting", sig)
	default:
	}
	// Before the server is made: go-fuse sizes its readers by it.
	raiseProcs()
	watcher := ""
	if sc.watcher != nil {
		watcher = sc.watcher()
	}
	cache := chooseCaching(cfg, backing, watcher, sc.incoherent)
	if cache.long {
		logger.Info("keeping the kernel's caches long: the backing watch invalidates them", "entry_timeout", cache.entry, "attr_timeout", cache.attr, "cache_dirs", cache.cacheDirs)
	} else {
		logger.Debug("kernel caches kept short by default", "reason", cache.why)
	}
	opts := mountOptions(cfg, logger)
	opts.EntryTimeout = kernelTimeout(cache.entry)
	opts.AttrTimeout = kernelTimeout(cache.attr)
	opts.CacheDirs = cache.cacheDirs
	opts.WritebackCache = sc.WritebackCache
	if opts.FsName == "" {
		opts.FsName = backing
	}
	srv, err := layer.Mount(mnt, stack, opts)
	if err != nil {
		// go-fuse's messages may end in a newline; the code is chosen
		// from the error itself.
		return errorf(classifyMountError(err), "cannot mount %s on %s: %s%s", cfg.backing, cfg.mountpoint, strings.TrimSpace(err.Error()), mountErrorHint(err, direct))
	}
	if cache.long && sc.onBlind != nil {
		// At once if the watch stopped already.
		sc.onBlind(cache.fallBack(srv, logger))
	}
	for _, fn := range sc.served {
		fn(srv)
	}
	logger.Info("mounted", "backing", backing, "mountpoint", mnt, "filters", filterNames(stack))
	e.daemon.ready()
	return serve(srv, mnt, sigs, logger)
}

// serve waits until the file system is unmounted, by a signal (which makes
// it unmount) or from outside ("vfsfilter unmount", umount).
func serve(srv *layer.Server, mnt string, sigs <-chan os.Signal, logger *slog.Logger) error {
	done := make(chan struct{})
	go func() {
		srv.Wait()
		close(done)
	}()
	detached := false
	for {
		select {
		case <-done:
			if detached {
				return errorf(ExitFailure, "mountpoint %s was busy at shutdown and had to be detached lazily", mnt)
			}
			logger.Info("unmounted", "mountpoint", mnt)
			return nil
		case sig := <-sigs:
			if detached {
				return errorf(ExitFailure, "received %v again: exiting while files under the lazily detached %s are still open (they now fail with ENOTCONN)", sig, mnt)
			}
			logger.Info("unmounting", "signal", sig.String(), "mountpoint", mnt)
			err := srv.Unmount()
			if err == nil {
				<-done
				logger.Info("unmounted", "mountpoint", mnt)
				return nil
			}
			// Busy: a process has a file open or its working directory
			// in the mount. Detaching lazily takes the mount out of the
			// tree now; the kernel keeps it for the open files, which we
			// go on serving so that their writes are not lost.
			logger.Warn("mountpoint is busy; detaching it lazily", "mountpoint", mnt, "error", err)
			if _, lerr := unmountFUSE(mnt, true); lerr != nil {
				return errorf(ExitFailure, "cannot unmount %s: %v; lazy unmount failed too: %v", mnt, err, lerr)
			}
			detached = true
			logger.Warn("detached lazily; serving the files still open until they are closed (signal again to exit now)", "mountpoint", mnt)
		}
	}
}

// buildFilters returns the filters above the passthrough that the flags ask
// for. The namespace filter is left out when it would do nothing, so that a
// plain mount costs no filter at all.
//
// grafts says the view has namespace binds: directories from elsewhere,
// which the notify filter's backing watch does not cover.
func buildFilters(cfg *mountConfig, hasSettings bool) (filters []layer.Filter, grafts bool, err error) {
	rules := &namespace.Rules{}
	if cfg.rulesFile != "" {
		r, err := namespace.LoadRules(cfg.rulesFile)
		if err != nil {
			return nil, false, withCode(ExitRules, describeRulesError(cfg.rulesFile, err))
		}
		rules = r
	}
	for _, p := range cfg.hide {
		if err := rules.AddHide(p); err != nil {
			return nil, false, errorf(ExitRules, "--hide: %v", err)
		}
	}
	var copts namespace.CompileOptions
	if hasSettings {
		// The stack's own settings directory is never part of the view.
		copts.AlwaysHide = []string{settings.Dir}
	}
	m, err := rules.Compile(copts)
	if err != nil {
		// The error names the rule and where it came from (the file, or
		// the --hide pattern).
		return nil, false, withCode(ExitRules, err)
	}
	if m.Empty() {
		return nil, false, nil
	}
	ns, err := namespace.New(m)
	if err != nil {
		return nil, false, errorf(ExitRules, "namespace filter: %v", err)
	}
	return []layer.Filter{ns}, len(m.Binds()) > 0, nil
}

// describeRulesError names the rules file once, with the cause.
func describeRulesError(path string, err error) error {
	msg := unwrapPathError(err).Error()
	if strings.Contains(msg, path) {
		return err
	}
	return fmt.Errorf("rules file %s: %s", path, msg)
}

// mountOptions translates the configuration into the layer's options.
func mountOptions(cfg *mountConfig, logger *slog.Logger) layer.MountOptions {
	opts := layer.MountOptions{
		ReadOnly:     cfg.readOnly,
		AllowOther:   cfg.allowOther,
		Debug:        cfg.debug,
		Options:      append([]string(nil), cfg.kernelOptions...),
		EntryTimeout: kernelTimeout(cfg.entryTimeout),
		AttrTimeout:  kernelTimeout(cfg.attrTimeout),
		// Zero is "none" here already: a failed lookup is then not
		// cached at all, not even for a jiffy.
		NegativeTimeout: cfg.negativeTimeout,
		FsName:          cfg.fsName,
		Logger:          logger,
		CacheDirs:       cfg.cacheDirs,
	}
	if cfg.defaultPermissions || cfg.acl {
		// The kernel checks permissions, with ACLs (AllowOther
		// implies it).
		opts.KernelPermissions = true
	}
	return opts
}

// kernelTimeout maps a user's cache time for names or attributes to
// layer.MountOptions, where 0 means "the default". A user's 0 means "do not
// cache", which the kernel gets as the shortest positive time: it rounds it
// up to one jiffy.
func kernelTimeout(d time.Duration) time.Duration {
	if d == 0 {
		return time.Nanosecond
	}
	return d
}

// mountErrorHint adds a likely cause to errors the kernel reports tersely.
func mountErrorHint(err error, direct bool) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "invalid argument"):
		return " (the kernel rejected a mount option; check -o)"
	case direct && strings.Contains(msg, "fusermount"):
		// go-fuse falls back to fusermount when mount(2) fails, and
		// reports only the fallback's error.
		return " (mount(2) failed first, most likely on a mount option the kernel does not accept; check -o)"
	}
	return ""
}

func filterNames(s *layer.Stack) string {
	var names []string
	for _, f := range s.Filters() {
		names = append(names, f.Name())
	}
	return strings.Join(names, ",")
}

// newLogger returns the logger the mount logs to and a function to close
// its file. The daemon child logs to its stderr, which its parent pointed
// at --log-file or /dev/null.
func newLogger(e *env, cfg *mountConfig) (*slog.Logger, func(), error) {
	var w io.Writer = e.stderr
	closeFn := func() {}
	if cfg.logFile != "" && e.daemon == nil {
		f, err := openLogFile(cfg.logFile)
		if err != nil {
			return nil, nil, err
		}
		w, closeFn = f, func() { f.Close() }
	}
	level := slog.LevelInfo
	if cfg.debug {
		level = slog.LevelDebug
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, hopts)
	if cfg.logFormat == "json" {
		h = slog.NewJSONHandler(w, hopts)
	}
	return slog.New(h), closeFn, nil
}

func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open log file %s: %w", path, unwrapPathError(err))
	}
	return f, nil
}
