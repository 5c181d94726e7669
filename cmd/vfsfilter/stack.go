package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/internal/control"
	"github.com/vfsfilter/vfsfilter/internal/settings"
	"github.com/vfsfilter/vfsfilter/layer"
)

// stackContext is what each filter's builder gets while a mount's stack is
// built: where the data is, the settings recorded in it, and the daemon's
// shared services.
type stackContext struct {
	Backing    string
	Mountpoint string
	// Settings are BACKING/.vfsfilter/settings.json, or nil when BACKING
	// is a plain directory.
	Settings *settings.Settings
	Log      *slog.Logger
	// Control is the mount's control socket; builders register the
	// methods their commands use (hsm migrate, watch).
	Control *control.Server
	// NoNotify leaves the notify filters out (mount --no-notify).
	NoNotify bool
	// SyncWrites turns crypt's write-behind off (mount --sync-writes).
	SyncWrites bool
	// WritebackCache is set by a builder whose filter sees every file's
	// data, so the kernel's writeback cache can replace FUSE passthrough
	// (layer.MountOptions.WritebackCache).
	WritebackCache bool
	// Secret returns the passphrase the user gave for this mount
	// (--passfile, --extpass or a terminal prompt), asking once.
	Secret func(prompt string) ([]byte, error)
	// watcher returns the notify filter's backing watch ("fanotify",
	// "inotify"); nil without notify.
	watcher func() string
	// onBlind registers a function to run when changes made underneath
	// stop invalidating the kernel's caches; nil without notify.
	onBlind func(func())
	// incoherent are the reasons filters gave why the kernel's caches
	// would go stale if kept long (see caching.go).
	incoherent []string
	// served are called once the mount serves, with its server (notify
	// uses it to invalidate the kernel's caches).
	served []func(*layer.Server)
	// closers run after unmount, in reverse order.
	closers []func() error
}

// Incoherent records that this mount's filters change what users see
// without invalidating the kernel's caches, so they must not be kept long
// by default (caching.go); reason is logged.
func (sc *stackContext) Incoherent(reason string) { sc.incoherent = append(sc.incoherent, reason) }

// OnServe registers fn to run once the mount is serving.
func (sc *stackContext) OnServe(fn func(*layer.Server)) { sc.served = append(sc.served, fn) }

// OnClose registers fn to run after the file system is unmounted.
func (sc *stackContext) OnClose(fn func() error) { sc.closers = append(sc.closers, fn) }

// filterBuilder returns the filter a package contributes to a mount, or nil
// when this mount does not use it (no settings section, no flags).
type filterBuilder func(sc *stackContext) (layer.Filter, error)

// filterBuilders are registered by each filter's stack_*.go file in init.
var filterBuilders []filterBuilder

// registerFilter adds a filter builder (call from init).
func registerFilter(b filterBuilder) { filterBuilders = append(filterBuilders, b) }

// registerCommand adds a sub-command (call from init).
func registerCommand(c *command) { commands = append(commands, c) }

// buildStackFilters runs every builder and returns the filters this mount uses,
// the passthrough first.
func buildStackFilters(sc *stackContext, pt *layer.Passthrough) ([]layer.Filter, error) {
	filters := []layer.Filter{pt}
	for _, b := range filterBuilders {
		f, err := b(sc)
		if err != nil {
			return nil, err
		}
		if f != nil {
			filters = append(filters, f)
		}
	}
	return filters, nil
}

// loadSettings reads BACKING's settings; a plain directory gives nil. An
// encrypted tree that lost its settings is refused, not shown plain: users
// would see its ciphertext, and what they wrote would land in it in the
// clear.
func loadSettings(backing string) (*settings.Settings, error) {
	s, err := settings.Load(backing)
	// The root IV crypt writes: a regular file of exactly its size.
	iv, ivErr := os.Lstat(filepath.Join(backing, crypt.DirIVFile))
	encrypted := ivErr == nil && iv.Mode().IsRegular() && iv.Size() == crypt.DirIVLen
	recover := fmt.Sprintf("with the tree's recovery key, \"vfsfilter crypt recover %s\" writes new settings", backing)
	switch {
	case errors.Is(err, settings.ErrNone) && encrypted:
		return nil, fmt.Errorf("%s holds an encrypted tree (%s) but no settings (%s); %s", backing, crypt.DirIVFile, settings.Path(backing), recover)
	case errors.Is(err, settings.ErrNone):
		return nil, nil
	case err != nil && encrypted:
		return nil, fmt.Errorf("settings of %s: %w; %s", backing, err, recover)
	case err != nil:
		return nil, fmt.Errorf("settings of %s: %w", backing, err)
	}
	return s, nil
}
