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
	return crypt.New(keys, crypt.Options{SyncWrites: sc.SyncWrites})
}

// cryptReadAheadKiB is the read-ahead window of a crypt mount. The kernel
// caps FUSE's read-ahead at its block-device default (128 KiB) whatever
// the mount's MaxReadAhead (layer.Mount) asks for, so a sequential read
// would cost a READ, a read below and a decryption per 128 KiB; 1 MiB
// READs cost the daemon about a tenth less CPU and time. The window is two
// such READs (a READ is at most 1 MiB, the mount's max_pages): with one,
// the kernel sends the next READ only once the reader reaches the current
// one, so the daemon never works on two at once. When the daemon's CPU is
// the limit, two read about 9% faster (cold, from an ext4 image in RAM,
// median of 10 paired rounds); from a disk it made no difference (1.01x).
// Larger windows send the reads below out of order and did not read
// faster.
const cryptReadAheadKiB = 2048

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
