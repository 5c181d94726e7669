package main

import (
	"fmt"
	"sync/atomic"

	"github.com/vfsfilter/vfsfilter/hsm"
	"github.com/vfsfilter/vfsfilter/layer"
)

// The HSM filter joins a mount's stack when BACKING's settings have an
// "hsm" section (written by "vfsfilter init --hsm-store"). Its control
// methods (hsm.migrate, ...) resolve paths through the whole stack, which
// exists once the mount serves.
func init() {
	registerFilter(func(sc *stackContext) (layer.Filter, error) {
		if sc.Settings == nil || !sc.Settings.Has(hsm.SettingsSection) {
			return nil, nil
		}
		var s hsm.Settings
		if _, err := sc.Settings.Section(hsm.SettingsSection, &s); err != nil {
			return nil, err
		}
		cfg, err := s.Config(sc.Backing)
		if err != nil {
			return nil, fmt.Errorf("hsm: %w", err)
		}
		f, err := hsm.New(cfg)
		if err != nil {
			return nil, err
		}
		// Migration and recall change st_blocks (what is local) without
		// telling the kernel, which would show the old value for as long
		// as it caches attributes.
		sc.Incoherent("hsm changes st_blocks without invalidating the kernel's attribute cache")
		var top atomic.Pointer[layer.Stack]
		sc.OnServe(func(srv *layer.Server) { top.Store(srv.Stack()) })
		if sc.Control != nil {
			f.RegisterControl(sc.Control, func() layer.Layer {
				if st := top.Load(); st != nil {
					return st
				}
				return nil
			})
		}
		if sc.Log != nil {
			sc.Log.Info("hsm: store", "store", cfg.Store.String())
		}
		return f, nil
	})
}
