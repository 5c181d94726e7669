package hsm

import (
	"fmt"
	"time"
)

// SettingsSection is the name of the HSM's section in the stack settings
// (BACKING/.vfsfilter/settings.json).
const SettingsSection = "hsm"

// Settings is the HSM's settings section. Secrets (S3 keys) are never
// stored: they come from the daemon's environment.
type Settings struct {
	// Version of this section's format: 1.
	Version int `json:"version"`
	// Store is the canonical store URL (file:///path or s3://bucket/prefix).
	Store string `json:"store"`
	// ChunkShift is log2 of the chunk size of new objects (0: default).
	ChunkShift uint8 `json:"chunk_shift,omitempty"`
	// Timeout bounds store calls, as a Go duration ("30s"; "": default).
	Timeout string `json:"timeout,omitempty"`
}

// SettingsVersion is the section format this code writes and reads.
const SettingsVersion = 1

// Config returns the filter configuration the settings describe for the
// backing directory backing, opening the store.
func (s *Settings) Config(backing string) (Config, error) {
	if s.Version != SettingsVersion {
		return Config{}, fmt.Errorf("hsm settings have format version %d; this vfsfilter reads version %d", s.Version, SettingsVersion)
	}
	st, err := OpenStore(s.Store)
	if err != nil {
		return Config{}, err
	}
	cfg := Config{Store: st, Backing: backing, ChunkShift: s.ChunkShift}
	if s.Timeout != "" {
		if cfg.Timeout, err = time.ParseDuration(s.Timeout); err != nil {
			return Config{}, fmt.Errorf("hsm settings: timeout: %v", err)
		}
	}
	return cfg, nil
}
