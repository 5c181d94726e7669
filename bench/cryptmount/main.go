// Command cryptmount mounts an encrypted BACKING (made by "vfsfilter init
// --crypt") through the passthrough and crypt filters, for bench/crypt.sh,
// until the mount command reads passphrases itself. It reads the
// passphrase from the first line of PASSFILE and serves until SIGINT or
// SIGTERM, or until the mount is unmounted.
//
//	cryptmount PASSFILE BACKING MOUNTPOINT
package main

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/internal/settings"
	"github.com/vfsfilter/vfsfilter/layer"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cryptmount:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 4 {
		return fmt.Errorf("usage: cryptmount PASSFILE BACKING MOUNTPOINT")
	}
	passfile, backing, mnt := os.Args[1], os.Args[2], os.Args[3]
	data, err := os.ReadFile(passfile)
	if err != nil {
		return err
	}
	pass, _, _ := bytes.Cut(data, []byte("\n"))
	s, err := settings.Load(backing)
	if err != nil {
		return err
	}
	var cfg crypt.Config
	if _, err := s.Section(crypt.SectionName, &cfg); err != nil {
		return err
	}
	keys, err := cfg.Unlock(pass)
	clear(data)
	if err != nil {
		return err
	}
	f, err := crypt.New(keys, crypt.Options{})
	keys.Wipe()
	if err != nil {
		return err
	}
	pt, err := layer.NewPassthrough(backing)
	if err != nil {
		return err
	}
	st, err := layer.NewStack(nil, pt, f)
	if err != nil {
		return err
	}
	defer st.Close()
	srv, err := layer.Mount(mnt, st, layer.MountOptions{FsName: backing})
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		srv.Unmount()
	}()
	srv.Wait()
	return nil
}
