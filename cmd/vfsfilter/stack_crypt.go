package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/internal/settings"
	"github.com/vfsfilter/vfsfilter/layer"
	"golang.org/x/sys/unix"
)

func init() { registerFilter(buildCrypt) }

// buildCrypt adds the crypt filter when BACKING's settings have a crypt
// section. Everything that can be wrong is found here, before mounting:
// a damaged section (ExitBacking), a wrong passphrase (ExitPassword).
func buildCrypt(sc *stackContext) (layer.Filter, error) {
	if sc.Settings == nil || !sc.Settings.Has(crypt.SectionName) {
		return nil, nil
	}
	cfg, err := loadCryptConfig(sc.Settings, sc.Backing)
	if err != nil {
		return nil, err
	}
	if sc.Secret == nil {
		return nil, errors.New("this build cannot ask for a passphrase")
	}
	pass, err := sc.Secret("Password: ")
	if err != nil {
		return nil, err
	}
	keys, err := unlock(cfg, pass, sc.Backing)
	clear(pass)
	if err != nil {
		return nil, err
	}
	defer keys.Wipe()
	sc.OnServe(func(*layer.Server) { raiseReadAhead(sc) })
	return crypt.New(keys, crypt.Options{})
}

// cryptReadAheadKiB is the read-ahead window of a crypt mount: the
// mount's MaxReadAhead (layer.Mount). The kernel caps FUSE's read-ahead at
// its block-device default (128 KiB) whatever the mount asks for, so a
// sequential read costs a READ, a read below and a decryption per 128 KiB;
// 1 MiB READs cost the daemon about a tenth less CPU and time.
const cryptReadAheadKiB = 1024

// raiseReadAhead sets the mount's read-ahead (its backing device info in
// sysfs) to cryptReadAheadKiB. It needs root; without it the kernel's
// default stays, which is only slower.
func raiseReadAhead(sc *stackContext) {
	var st unix.Stat_t
	if err := unix.Stat(sc.Mountpoint, &st); err != nil {
		sc.Log.Debug("cannot raise the read-ahead", "error", err)
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(strconv.Itoa(cryptReadAheadKiB)), 0); err != nil {
		sc.Log.Debug("cannot raise the read-ahead", "error", err)
	}
}

// loadCryptConfig reads and checks the crypt section.
func loadCryptConfig(s *settings.Settings, backing string) (*crypt.Config, error) {
	var cfg crypt.Config
	if _, err := s.Section(crypt.SectionName, &cfg); err != nil {
		return nil, withCode(ExitBacking, fmt.Errorf("%s: %w", settings.Path(backing), err))
	}
	if err := cfg.Validate(); err != nil {
		return nil, withCode(ExitBacking, fmt.Errorf("%s: %w", settings.Path(backing), err))
	}
	return &cfg, nil
}

// unlock unwraps the master key; a wrong passphrase exits with
// ExitPassword.
func unlock(cfg *crypt.Config, pass []byte, backing string) (*crypt.Keys, error) {
	keys, err := cfg.Unlock(pass)
	if errors.Is(err, crypt.ErrWrongPassword) {
		return nil, withCode(ExitPassword, fmt.Errorf("cannot unlock %s: %w", backing, err))
	}
	if err != nil {
		return nil, withCode(ExitBacking, fmt.Errorf("cannot unlock %s: %w", backing, err))
	}
	return keys, nil
}
