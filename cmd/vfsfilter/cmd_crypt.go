package main

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/internal/settings"
)

var cmdCrypt = &command{
	name:  "crypt",
	usage: "crypt passwd|fsck [flags] BACKING",
	short: "change the passphrase of, or check, an encrypted BACKING",
	long: `Work on a BACKING set up with "vfsfilter init --crypt".

  crypt passwd BACKING   change the passphrase. The master key is re-wrapped
                         under the new passphrase; nothing is re-encrypted.
                         The settings file is replaced atomically. The old
                         passphrase comes from --passfile/--extpass or the
                         terminal, the new one from --new-passfile/
                         --new-extpass or the terminal (asked twice).
  crypt fsck BACKING     check every directory IV, name, symlink target, file
                         header and block, and list what is damaged. Exits 1
                         when anything is. Run it on an unmounted BACKING (a
                         mounted one may be changing under it). With
                         --repair it also undoes what can be undone without
                         losing anything: a directory IV or long-name file
                         whose content a reset lost is rewritten from its
                         journaled copy (an xattr), and a damaged copy from
                         the content; it then exits 0 if nothing else is
                         damaged. Damaged blocks, names and headers are
                         only reported.

A wrong passphrase exits with status 8.`,
	setup: func(fs *pflag.FlagSet) func(*env, []string) error {
		var old, nw secretFlags
		old.addFlags(fs)
		nw.addFlagsNamed(fs, "new-passfile", "new-extpass", "the new passphrase (passwd)")
		logN := fs.Int("scrypt-logn", 0, "passwd: scrypt cost of the new wrapping, log2 of N (default: keep the current)")
		repair := fs.Bool("repair", false, "fsck: repair what can be repaired without loss (see above)")
		return func(e *env, args []string) error {
			if len(args) != 2 || (args[0] != "passwd" && args[0] != "fsck") {
				return usageErrorf("crypt needs a sub-command (passwd or fsck) and BACKING")
			}
			old.stderr, nw.stderr = e.stderr, e.stderr
			backing := args[1]
			s, err := settings.Load(backing)
			if err != nil {
				return withCode(ExitBacking, err)
			}
			if !s.Has(crypt.SectionName) {
				return errorf(ExitBacking, "%s is not encrypted (its settings have no crypt section)", backing)
			}
			cfg, err := loadCryptConfig(s, backing)
			if err != nil {
				return err
			}
			if args[0] == "passwd" {
				if *repair {
					return usageErrorf("--repair is for fsck")
				}
				return cryptPasswd(e, backing, s, cfg, &old, &nw, *logN)
			}
			return cryptFsck(e, backing, cfg, &old, crypt.FsckOptions{Repair: *repair})
		}
	},
}

func init() { registerCommand(cmdCrypt) }

func cryptPasswd(e *env, backing string, s *settings.Settings, cfg *crypt.Config, old, nw *secretFlags, logN int) error {
	if logN != 0 && (logN < crypt.MinScryptLogN || logN > crypt.MaxScryptLogN) {
		return usageErrorf("--scrypt-logn must be between %d and %d", crypt.MinScryptLogN, crypt.MaxScryptLogN)
	}
	oldPass, err := old.read("Old passphrase: ", false)
	if err != nil {
		return err
	}
	defer clear(oldPass)
	// Check the old passphrase before asking for a new one.
	keys, err := unlock(cfg, oldPass, backing)
	if err != nil {
		return err
	}
	keys.Wipe()
	newPass, err := nw.read("New passphrase: ", true)
	if err != nil {
		return err
	}
	defer clear(newPass)
	if err := cfg.ChangePassphrase(oldPass, newPass, logN); err != nil {
		return err
	}
	if err := s.SetSection(crypt.SectionName, cfg); err != nil {
		return err
	}
	if err := s.Save(backing); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	fmt.Fprintf(e.stdout, "passphrase changed for %s\n", backing)
	return nil
}

func cryptFsck(e *env, backing string, cfg *crypt.Config, sf *secretFlags, opts crypt.FsckOptions) error {
	pass, err := sf.read("Password: ", false)
	if err != nil {
		return err
	}
	keys, err := unlock(cfg, pass, backing)
	clear(pass)
	if err != nil {
		return err
	}
	defer keys.Wipe()
	if _, err := os.Stat(backing); err != nil {
		return withCode(ExitBacking, err)
	}
	st, err := crypt.Fsck(backing, keys, opts, func(p crypt.Problem) {
		fmt.Fprintln(e.stdout, p.String())
	})
	if err != nil {
		return withCode(ExitBacking, fmt.Errorf("fsck %s: %w", backing, err))
	}
	xattrs := ""
	if st.Xattrs > 0 {
		xattrs = fmt.Sprintf(", %d encrypted xattrs", st.Xattrs)
	}
	repaired := ""
	if opts.Repair {
		repaired = fmt.Sprintf(", %d repaired", st.Repaired)
	}
	fmt.Fprintf(e.stdout, "checked %d directories, %d files (%d blocks), %d symlinks%s: %d problems%s\n", st.Dirs, st.Files, st.Blocks, st.Symlinks, xattrs, st.Problems, repaired)
	if left := st.Problems - st.Repaired; left > 0 {
		return errorf(ExitFailure, "%s is damaged: %d problems", backing, left)
	}
	return nil
}
