package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want parsedOptions
	}{
		{name: "none"},
		{name: "empty items", args: []string{",,", ""}},
		{
			name: "fstab line",
			args: []string{"ro,allow_other,default_permissions,acl,nosuid,nodev,noatime,fsname=data"},
			want: parsedOptions{
				readOnly: ptr(true), allowOther: ptr(true), defaultPermissions: true, acl: true,
				fsName: "data", kernel: []string{"nosuid", "nodev", "noatime"},
			},
		},
		{
			name: "later wins within -o, like mount(8)",
			args: []string{"ro", "rw"},
			want: parsedOptions{readOnly: ptr(false)},
		},
		{
			name: "timeouts in seconds",
			args: []string{"entry_timeout=2,attr_timeout=0.5,negative_timeout=0"},
			want: parsedOptions{
				entryTimeout:    ptr(2 * time.Second),
				attrTimeout:     ptr(500 * time.Millisecond),
				negativeTimeout: ptr(time.Duration(0)),
			},
		},
		{
			name: "fstab-only options are dropped",
			args: []string{"defaults,noauto,nofail,_netdev,x-systemd.automount,comment=x"},
		},
		{
			name: "debug and nonempty stay in vfsfilter",
			args: []string{"debug,nonempty"},
			want: parsedOptions{debug: ptr(true), nonempty: true},
		},
		{
			name: "every pass-through option",
			args: []string{"suid,dev,exec,atime,diratime,nodiratime,relatime,norelatime,strictatime,nostrictatime,lazytime,nolazytime,sync,async,dirsync,noexec"},
			want: parsedOptions{kernel: []string{"suid", "dev", "exec", "atime", "diratime", "nodiratime", "relatime", "norelatime", "strictatime", "nostrictatime", "lazytime", "nolazytime", "sync", "async", "dirsync", "noexec"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOptions(tt.args)
			if err != nil {
				t.Fatalf("parseOptions(%q): %v", tt.args, err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("parseOptions(%q) =\n%+v\nwant\n%+v", tt.args, *got, tt.want)
			}
		})
	}
}

func TestParseOptionsErrors(t *testing.T) {
	tests := []struct {
		arg, wantMsg string
	}{
		{"bogus", `unknown mount option "bogus"`},
		{"ro,nosiud", `unknown mount option "nosiud"`},
		{"allow_root", `"allow_root" is not allowed: use allow_other`},
		{"fd=3", `"fd" is not allowed`},
		{"max_read=4096", `"max_read" is not allowed`},
		{"subtype=x", `"subtype" is not allowed`},
		{"ro=1", `"ro" takes no value`},
		{"nosuid=yes", `"nosuid" takes no value`},
		{"entry_timeout", `"entry_timeout" needs a value`},
		{"entry_timeout=", `is not a number of seconds`},
		{"attr_timeout=abc", `"abc" is not a number of seconds`},
		{"attr_timeout=-1", `"-1" is negative`},
		{"negative_timeout=NaN", `is not a number of seconds`},
		{"entry_timeout=Inf", `is not a number of seconds`},
		{"entry_timeout=1e300", `is too large`},
		{"fsname=", `fsname needs a non-empty value`},
		{"fsname", `"fsname" needs a value`},
	}
	for _, tt := range tests {
		_, err := parseOptions([]string{tt.arg})
		if err == nil {
			t.Errorf("parseOptions(%q): no error, want %q", tt.arg, tt.wantMsg)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantMsg) {
			t.Errorf("parseOptions(%q) = %q, want it to contain %q", tt.arg, err, tt.wantMsg)
		}
		if code := exitCodeOf(err); code != ExitUsage {
			t.Errorf("parseOptions(%q): exit code %d, want %d", tt.arg, code, ExitUsage)
		}
	}
}

// defaultFlags is what the mount flags hold when none is given.
func defaultFlags() *mountFlags {
	return &mountFlags{entryTimeout: time.Second, attrTimeout: time.Second, logFormat: "text"}
}

func TestNewMountConfig(t *testing.T) {
	f := defaultFlags()
	f.options = []string{"ro,entry_timeout=5,nosuid", "fsname=x,default_permissions"}
	f.hide = []string{"*.tmp", "a,b"} // a pattern may hold a comma
	c, err := newMountConfig(f, []string{"back", "mnt"})
	if err != nil {
		t.Fatal(err)
	}
	want := &mountConfig{
		backing: "back", mountpoint: "mnt",
		readOnly: true, defaultPermissions: true, fsName: "x",
		kernelOptions: []string{"nosuid"},
		entryTimeout:  5 * time.Second, attrTimeout: time.Second,
		entrySet: true, // by -o: kept as given, not raised by default (caching.go)
		hide:     []string{"*.tmp", "a,b"}, logFormat: "text",
	}
	// Fields that other flag groups fill in (the passphrase source) are
	// tested with them.
	want.secret = c.secret
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got\n%+v\nwant\n%+v", c, want)
	}
}

func TestNewMountConfigFlagsAndOptions(t *testing.T) {
	tests := []struct {
		name    string
		set     func(f *mountFlags)
		wantErr string
		check   func(c *mountConfig) bool
	}{
		{
			name:  "flag and option agree",
			set:   func(f *mountFlags) { f.readOnly, f.readOnlySet, f.options = true, true, []string{"ro"} },
			check: func(c *mountConfig) bool { return c.readOnly },
		},
		{
			name:    "flag and option disagree",
			set:     func(f *mountFlags) { f.readOnly, f.readOnlySet, f.options = true, true, []string{"rw"} },
			wantErr: "--read-only=true conflicts with -o ro/rw",
		},
		{
			name: "timeout flag and option disagree",
			set: func(f *mountFlags) {
				f.entryTimeout, f.entrySet, f.options = 2*time.Second, true, []string{"entry_timeout=3"}
			},
			wantErr: "--entry-timeout=2s conflicts with -o entry_timeout=3",
		},
		{
			name: "timeout flag and option agree",
			set: func(f *mountFlags) {
				f.attrTimeout, f.attrSet, f.options = 1500*time.Millisecond, true, []string{"attr_timeout=1.5"}
			},
			check: func(c *mountConfig) bool { return c.attrTimeout == 1500*time.Millisecond },
		},
		{
			name:  "option overrides a default",
			set:   func(f *mountFlags) { f.options = []string{"allow_other,debug,negative_timeout=2"} },
			check: func(c *mountConfig) bool { return c.allowOther && c.debug && c.negativeTimeout == 2*time.Second },
		},
		{
			name:    "negative duration",
			set:     func(f *mountFlags) { f.negTimeout = -time.Second },
			wantErr: "--negative-timeout must not be negative",
		},
		{
			name:    "bad log format",
			set:     func(f *mountFlags) { f.logFormat = "xml" },
			wantErr: `--log-format must be text or json, not "xml"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := defaultFlags()
			tt.set(f)
			c, err := newMountConfig(f, []string{"b", "m"})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if exitCodeOf(err) != ExitUsage {
					t.Errorf("exit code %d, want %d", exitCodeOf(err), ExitUsage)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

func TestNewMountConfigArgs(t *testing.T) {
	for _, args := range [][]string{nil, {"a"}, {"a", "b", "c"}, {"", "b"}, {"a", ""}} {
		_, err := newMountConfig(defaultFlags(), args)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("newMountConfig(%q) = %v, want a usage error", args, err)
		}
	}
}

func TestParseSeconds(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"0": 0, "1": time.Second, "0.25": 250 * time.Millisecond, "1e-3": time.Millisecond, "86400": 24 * time.Hour,
	} {
		got, err := parseSeconds(in)
		if err != nil || got != want {
			t.Errorf("parseSeconds(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestMountOptions(t *testing.T) {
	c := &mountConfig{
		readOnly: true, defaultPermissions: true,
		kernelOptions: []string{"nosuid"},
		entryTimeout:  0, attrTimeout: 3 * time.Second, negativeTimeout: 0,
		fsName: "x",
	}
	o := mountOptions(c, nil)
	if !o.ReadOnly || o.AllowOther || o.FsName != "x" {
		t.Errorf("flags lost: %+v", o)
	}
	if want := []string{"nosuid"}; !reflect.DeepEqual(o.Options, want) || !o.KernelPermissions {
		t.Errorf("Options = %q, want %q and KernelPermissions", o.Options, want)
	}
	c.defaultPermissions = false
	if o := mountOptions(c, nil); o.KernelPermissions {
		t.Error("KernelPermissions without default_permissions or acl")
	}
	c.acl = true
	if o := mountOptions(c, nil); !o.KernelPermissions {
		t.Error("acl does not ask for KernelPermissions")
	}
	// 0 means "no caching" to users but "default" to the layer.
	if o.EntryTimeout <= 0 || o.EntryTimeout > time.Millisecond || o.AttrTimeout != 3*time.Second {
		t.Errorf("timeouts = %v, %v", o.EntryTimeout, o.AttrTimeout)
	}

	// allow_other implies KernelPermissions in the layer.
	c.allowOther = true
	if o := mountOptions(c, nil); !reflect.DeepEqual(o.Options, []string{"nosuid"}) {
		t.Errorf("with allow_other, Options = %q", o.Options)
	}
	// The config's slice is not aliased.
	o.Options[0] = "changed"
	if c.kernelOptions[0] != "nosuid" {
		t.Error("mountOptions aliases the config's options")
	}
}
