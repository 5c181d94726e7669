package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/pflag"
	"github.com/vfsfilter/vfsfilter/internal/settings"
)

// initPart is one filter's share of "vfsfilter init": its flags and what it
// records in the settings when they are given.
type initPart struct {
	// flags defines the part's flags on fs.
	flags func(fs *pflag.FlagSet)
	// apply records the part's section in ic.Settings if its flags ask
	// for it, and reports whether it did.
	apply func(ic *initContext) (bool, error)
}

// initContext is what an initPart's apply gets.
type initContext struct {
	Backing  string
	Settings *settings.Settings
	Log      *slog.Logger
	Stdout   io.Writer
	Stderr   io.Writer
}

var initParts []initPart

// registerInit adds a filter's part to "vfsfilter init" (call from init).
func registerInit(p initPart) { initParts = append(initParts, p) }

var cmdInit = &command{
	name:  "init",
	usage: "init [flags] BACKING",
	short: "record a stack's settings (HSM store, encryption) in BACKING",
	long: `Record the settings of a filter stack in BACKING/.vfsfilter/settings.json
(mode 0600, hidden from the mounted view). The settings travel with the
data: a stub without its store, or ciphertext without its key, is useless.
Afterwards "vfsfilter mount BACKING MOUNTPOINT" stacks the filters the
settings name by itself.

init refuses a BACKING that already has settings.`,
	setup: func(fs *pflag.FlagSet) func(*env, []string) error {
		for _, p := range initParts {
			p.flags(fs)
		}
		return func(e *env, args []string) error {
			if len(args) != 1 {
				return usageErrorf("init takes one argument, BACKING")
			}
			backing := args[0]
			st, err := os.Stat(backing)
			if err != nil || !st.IsDir() {
				return errorf(ExitBacking, "backing directory %s is missing or not a directory", backing)
			}
			if _, err := os.Stat(settings.Path(backing)); err == nil {
				return errorf(ExitBacking, "%s already has settings (%s)", backing, settings.Path(backing))
			}
			ic := &initContext{
				Backing:  backing,
				Settings: settings.New(),
				Log:      slog.New(slog.NewTextHandler(e.stderr, nil)),
				Stdout:   e.stdout,
				Stderr:   e.stderr,
			}
			any := false
			for _, p := range initParts {
				did, err := p.apply(ic)
				if err != nil {
					return err
				}
				any = any || did
			}
			if !any {
				return usageErrorf("init needs at least one filter to set up (see vfsfilter init --help)")
			}
			if err := ic.Settings.Save(backing); err != nil {
				return fmt.Errorf("write settings: %w", err)
			}
			fmt.Fprintf(e.stdout, "initialised %s\n", backing)
			return nil
		}
	},
}

func init() { registerCommand(cmdInit) }
