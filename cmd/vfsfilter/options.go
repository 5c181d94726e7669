package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// mountConfig is what "vfsfilter mount" was asked to do, after the flags and
// the -o options were merged. It is plain data so that the parsing can be
// tested without mounting anything.
type mountConfig struct {
	backing    string
	mountpoint string

	readOnly           bool
	allowOther         bool
	defaultPermissions bool
	acl                bool
	debug              bool
	// nonempty allows mounting over a directory that has entries; it is
	// checked here and never reaches the kernel (fuse3 dropped it).
	nonempty bool
	fsName   string
	// kernelOptions are passed through to the kernel, in order.
	kernelOptions []string

	entryTimeout, attrTimeout, negativeTimeout time.Duration

	hide      []string
	rulesFile string

	daemon    bool
	logFile   string
	logFormat string
	// secret is how to get the passphrase of an encrypted BACKING.
	secret *secretFlags
	// noNotify leaves the notify filters out of the stack.
	noNotify bool
	// syncWrites turns crypt's write-behind off (crypt.Options).
	syncWrites bool
	// cacheDirs lets the kernel keep directory listings.
	cacheDirs bool
	// entrySet, attrSet, cacheDirsSet: the user gave the value (flag or
	// -o), so it is kept as given (see chooseCaching).
	entrySet, attrSet, cacheDirsSet bool
}

// mountFlags holds the raw values of the mount flags until they are merged
// with -o into a mountConfig. The *Set fields record whether a flag was given
// at all, so that a conflict with -o can be told apart from a default.
type mountFlags struct {
	readOnly, allowOther, debug           bool
	readOnlySet, allowOtherSet, debugSet  bool
	options                               []string // each -o argument, unsplit
	hide                                  []string
	rulesFile                             string
	entryTimeout, attrTimeout, negTimeout time.Duration
	entrySet, attrSet, negSet             bool
	daemon                                bool
	logFile, logFormat                    string
	secret                                secretFlags
	noNotify                              bool
	syncWrites                            bool
	cacheDirs, cacheDirsSet               bool
}

// passthroughOptions are kernel mount options accepted as they are. The
// mount code turns the flag-like ones (nosuid, noatime, ...) into mount(2)
// flags; vfsfilter only checks the spelling so that a typo is an error
// rather than a silently ignored option.
var passthroughOptions = map[string]bool{
	"nosuid": true, "suid": true,
	"nodev": true, "dev": true,
	"noexec": true, "exec": true,
	"noatime": true, "atime": true,
	"nodiratime": true, "diratime": true,
	"relatime": true, "norelatime": true,
	"strictatime": true, "nostrictatime": true,
	"lazytime": true, "nolazytime": true,
	"sync": true, "async": true,
	"dirsync": true,
}

// fstabOnlyOptions mean something to mount(8), systemd or fstab readers, not
// to the file system; they are accepted so that an fstab line can be copied
// as it is, and dropped.
var fstabOnlyOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "nofail": true, "_netdev": true,
}

// reservedOptions are set by the mount machinery itself; a user value would
// break the connection with the kernel or lie about it.
var reservedOptions = map[string]string{
	"fd":         "it is set by vfsfilter",
	"rootmode":   "it is set by vfsfilter",
	"user_id":    "it is set by vfsfilter",
	"group_id":   "it is set by vfsfilter",
	"max_read":   "it is set by vfsfilter",
	"blksize":    "it is only valid for fuseblk mounts",
	"subtype":    "the file system type is always fuse.vfsfilter",
	"allow_root": "use allow_other",
}

// newMountConfig merges the flags and the -o options into a mountConfig.
// Within -o later options win, as with mount(8) ("-o ro,rw" is rw). A flag
// and an -o option that disagree are a usage error: which one the user meant
// cannot be known.
func newMountConfig(f *mountFlags, args []string) (*mountConfig, error) {
	if len(args) != 2 {
		return nil, usageErrorf("mount needs 2 arguments, BACKING and MOUNTPOINT; got %d", len(args))
	}
	switch f.logFormat {
	case "text", "json":
	default:
		return nil, usageErrorf("--log-format must be text or json, not %q", f.logFormat)
	}
	if f.cacheDirs && f.noNotify {
		// Cached listings would never learn of changes made underneath.
		return nil, usageErrorf("--cache-dirs needs notify's cache invalidation; it cannot go with --no-notify")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--entry-timeout", f.entryTimeout}, {"--attr-timeout", f.attrTimeout}, {"--negative-timeout", f.negTimeout}} {
		if d.v < 0 {
			return nil, usageErrorf("%s must not be negative (got %v)", d.name, d.v)
		}
	}
	c := &mountConfig{
		backing:         args[0],
		mountpoint:      args[1],
		readOnly:        f.readOnly,
		allowOther:      f.allowOther,
		debug:           f.debug,
		entryTimeout:    f.entryTimeout,
		attrTimeout:     f.attrTimeout,
		negativeTimeout: f.negTimeout,
		hide:            f.hide,
		rulesFile:       f.rulesFile,
		daemon:          f.daemon,
		logFile:         f.logFile,
		logFormat:       f.logFormat,
		secret:          &f.secret,
		noNotify:        f.noNotify,
		syncWrites:      f.syncWrites,
		cacheDirs:       f.cacheDirs,
		entrySet:        f.entrySet,
		attrSet:         f.attrSet,
		cacheDirsSet:    f.cacheDirsSet,
	}
	if c.backing == "" || c.mountpoint == "" {
		return nil, usageErrorf("BACKING and MOUNTPOINT must not be empty")
	}
	o, err := parseOptions(f.options)
	if err != nil {
		return nil, err
	}
	// Merge. Each -o value applies unless a flag said otherwise.
	type boolOpt struct {
		opt      *bool
		flagSet  bool
		flagVal  bool
		dst      *bool
		flagName string
		optName  string
	}
	for _, b := range []boolOpt{
		{o.readOnly, f.readOnlySet, f.readOnly, &c.readOnly, "--read-only", "ro/rw"},
		{o.allowOther, f.allowOtherSet, f.allowOther, &c.allowOther, "--allow-other", "allow_other"},
		{o.debug, f.debugSet, f.debug, &c.debug, "--debug", "debug"},
	} {
		if b.opt == nil {
			continue
		}
		if b.flagSet && b.flagVal != *b.opt {
			return nil, usageErrorf("%s=%v conflicts with -o %s", b.flagName, b.flagVal, b.optName)
		}
		*b.dst = *b.opt
	}
	for _, d := range []struct {
		opt      *time.Duration
		flagSet  bool
		flagVal  time.Duration
		dst      *time.Duration
		flagName string
		optName  string
	}{
		{o.entryTimeout, f.entrySet, f.entryTimeout, &c.entryTimeout, "--entry-timeout", "entry_timeout"},
		{o.attrTimeout, f.attrSet, f.attrTimeout, &c.attrTimeout, "--attr-timeout", "attr_timeout"},
		{o.negativeTimeout, f.negSet, f.negTimeout, &c.negativeTimeout, "--negative-timeout", "negative_timeout"},
	} {
		if d.opt == nil {
			continue
		}
		if d.flagSet && d.flagVal != *d.opt {
			return nil, usageErrorf("%s=%v conflicts with -o %s=%v", d.flagName, d.flagVal, d.optName, d.opt.Seconds())
		}
		*d.dst = *d.opt
	}
	c.entrySet = c.entrySet || o.entryTimeout != nil
	c.attrSet = c.attrSet || o.attrTimeout != nil
	c.defaultPermissions = o.defaultPermissions
	c.acl = o.acl
	c.nonempty = o.nonempty
	c.fsName = o.fsName
	c.kernelOptions = o.kernel
	return c, nil
}

// parsedOptions is the result of parsing -o; nil pointers mean "not given".
type parsedOptions struct {
	readOnly, allowOther, debug                *bool
	defaultPermissions, acl, nonempty          bool
	entryTimeout, attrTimeout, negativeTimeout *time.Duration
	fsName                                     string
	kernel                                     []string
}

// parseOptions parses -o arguments, each a comma-separated list as in
// fstab(5). Unknown options are an error: FUSE would otherwise reject some
// with a bare EINVAL at mount time and silently ignore others.
func parseOptions(args []string) (*parsedOptions, error) {
	p := &parsedOptions{}
	set := func(dst **bool, v bool) { *dst = &v }
	for _, arg := range args {
		for _, opt := range strings.Split(arg, ",") {
			if opt == "" {
				continue // "-o ro,,nodev" and a trailing comma are harmless
			}
			name, value, hasValue := strings.Cut(opt, "=")
			if hasValue && !optionTakesValue(name) {
				return nil, usageErrorf("mount option %q takes no value", name)
			}
			if !hasValue && optionTakesValue(name) {
				return nil, usageErrorf("mount option %q needs a value (%s=...)", name, name)
			}
			switch {
			case name == "ro":
				set(&p.readOnly, true)
			case name == "rw":
				set(&p.readOnly, false)
			case name == "allow_other":
				set(&p.allowOther, true)
			case name == "debug":
				set(&p.debug, true)
			case name == "default_permissions":
				p.defaultPermissions = true
			case name == "acl":
				p.acl = true
			case name == "nonempty":
				p.nonempty = true
			case name == "entry_timeout", name == "attr_timeout", name == "negative_timeout":
				d, err := parseSeconds(value)
				if err != nil {
					return nil, usageErrorf("mount option %s: %v", name, err)
				}
				switch name {
				case "entry_timeout":
					p.entryTimeout = &d
				case "attr_timeout":
					p.attrTimeout = &d
				default:
					p.negativeTimeout = &d
				}
			case name == "fsname":
				if value == "" {
					return nil, usageErrorf("mount option fsname needs a non-empty value")
				}
				p.fsName = value
			case passthroughOptions[name]:
				p.kernel = append(p.kernel, name)
			case fstabOnlyOptions[name], strings.HasPrefix(name, "x-"), name == "comment":
				// Dropped on purpose; see fstabOnlyOptions.
			case reservedOptions[name] != "":
				return nil, usageErrorf("mount option %q is not allowed: %s", name, reservedOptions[name])
			default:
				return nil, usageErrorf("unknown mount option %q (see 'vfsfilter mount --help' for the list)", opt)
			}
		}
	}
	return p, nil
}

// optionTakesValue reports whether an -o option has the form name=value.
func optionTakesValue(name string) bool {
	switch name {
	case "entry_timeout", "attr_timeout", "negative_timeout", "fsname", "comment":
		return true
	}
	_, reserved := reservedOptions[name]
	return reserved && name != "allow_root"
}

// parseSeconds parses a non-negative number of seconds as libfuse does for
// its *_timeout options ("1", "0.5"), into a Duration.
func parseSeconds(s string) (time.Duration, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a number of seconds", s)
	}
	if f < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	if f > float64(math.MaxInt64)/float64(time.Second) {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return time.Duration(f * float64(time.Second)), nil
}
