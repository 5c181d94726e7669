package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/vfsfilter/vfsfilter/hsm"
)

// "vfsfilter init --hsm-store STORE BACKING" records the HSM's settings
// section. The store is opened (a directory is created, an S3 bucket
// checked) so that a typo fails now rather than at the first migration.
func init() {
	var store string
	registerInit(initPart{
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&store, "hsm-store", "", "migrate cold files to `STORE`: an absolute directory, file:///path, or s3://bucket/prefix (credentials and endpoint from AWS_* variables)")
		},
		apply: func(ic *initContext) (bool, error) {
			if store == "" {
				return false, nil
			}
			canon, err := hsm.CanonicalStore(store)
			if err != nil {
				return false, usageErrorf("--hsm-store: %v", err)
			}
			if dir, ok := strings.CutPrefix(canon, "file://"); ok {
				backing, _ := filepath.Abs(ic.Backing)
				if rel, err := filepath.Rel(backing, dir); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
					return false, usageErrorf("--hsm-store %s lies inside BACKING %s; migrated data must go elsewhere", dir, ic.Backing)
				}
			}
			if dir, ok := strings.CutPrefix(canon, "file://"); ok {
				// init makes the store; a mount never does (a store
				// directory that vanished is a store that is down).
				if _, err := hsm.CreateDirStore(dir); err != nil {
					return false, err
				}
			}
			st, err := hsm.OpenStore(canon)
			if err != nil {
				return false, err
			}
			if s3, ok := st.(*hsm.S3Store); ok {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := s3.EnsureBucket(ctx); err != nil {
					return false, fmt.Errorf("--hsm-store %s: %w", st, err)
				}
			}
			if err := ic.Settings.SetSection(hsm.SettingsSection, hsm.Settings{Version: hsm.SettingsVersion, Store: canon}); err != nil {
				return false, err
			}
			fmt.Fprintf(ic.Stdout, "hsm: migrated data goes to %s\n", st)
			return true, nil
		},
	})
}
