package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/pflag"
)

var cmdVersion = &command{
	name:  "version",
	usage: "version",
	short: "print the version of vfsfilter, Go and go-fuse",
	long: `Print the version of vfsfilter (the module version, or "(devel)" for a
build from a checkout, with the VCS revision when it was recorded), the Go
version it was built with and the go-fuse version it contains. The same as
"vfsfilter --version".`,
	setup: func(fs *pflag.FlagSet) func(*env, []string) error {
		return func(e *env, args []string) error {
			if len(args) != 0 {
				return usageErrorf("version takes no arguments")
			}
			return printVersion(e.stdout)
		}
	},
}

// goFusePath is the module whose version "vfsfilter version" reports.
const goFusePath = "github.com/hanwen/go-fuse/v2"

// versionInfo is what "vfsfilter version" prints.
type versionInfo struct {
	Version  string // module version or "(devel)"
	Revision string // VCS revision, with "+dirty" when modified; may be empty
	Go       string
	GoFuse   string
	Platform string
}

func buildVersion() versionInfo {
	v := versionInfo{
		Version:  "(unknown)",
		Go:       runtime.Version(),
		GoFuse:   "(unknown)",
		Platform: runtime.GOOS + "/" + runtime.GOARCH,
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == goFusePath {
			v.GoFuse = d.Version
			if d.Replace != nil {
				v.GoFuse += " => " + d.Replace.Path + " " + d.Replace.Version
			}
		}
	}
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if v.Revision != "" && dirty {
		v.Revision += "+dirty"
	}
	return v
}

func printVersion(w io.Writer) error {
	v := buildVersion()
	fmt.Fprintf(w, "vfsfilter %s\n", v.Version)
	if v.Revision != "" {
		fmt.Fprintf(w, "  revision: %s\n", v.Revision)
	}
	fmt.Fprintf(w, "  go:       %s %s\n", v.Go, v.Platform)
	fmt.Fprintf(w, "  go-fuse:  %s\n", v.GoFuse)
	return nil
}
