package main

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/spf13/pflag"
	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/internal/settings"
)

var cmdCrypt = &command{
	name:  "crypt",
	usage: "crypt passwd|fsck|masterkey|recover [flags] BACKING",
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
  crypt masterkey BACKING
                         print BACKING's recovery key: its master key and
                         format, 80 hex digits with a checksum. With it,
                         "crypt recover" reads the tree when the passphrase
                         is forgotten or the settings file is lost or
                         damaged; without either, every file is lost. Keep
                         it offline (on paper), never beside the data:
                         anyone who has it and the ciphertext reads
                         everything.
  crypt recover BACKING  set a new passphrase from the recovery key (from
                         --keyfile/--extkey or the terminal), after checking
                         that it decrypts the tree (file contents, or at
                         least 3 names; --force when the tree holds too
                         little). Other settings (an HSM store) are kept;
                         the settings replaced are kept as
                         settings.json.old, a damaged file as
                         settings.json.damaged.

A wrong passphrase or recovery key exits with status 8.`,
	setup: func(fs *pflag.FlagSet) func(*env, []string) error {
		var old, nw, key secretFlags
		old.addFlags(fs)
		nw.addFlagsNamed(fs, "new-passfile", "new-extpass", "the new passphrase (passwd, recover)")
		key.addFlagsNamed(fs, "keyfile", "extkey", "the recovery key (recover)")
		key.noun = "recovery key"
		logN := fs.Int("scrypt-logn", 0, "passwd, recover: scrypt cost of the new wrapping, log2 of N (default: keep the current; recover: 16)")
		repair := fs.Bool("repair", false, "fsck: repair what can be repaired without loss (see above)")
		force := fs.Bool("force", false, "recover: write the settings even when the tree holds too little to check the key against")
		return func(e *env, args []string) error {
			if len(args) != 2 || !slices.Contains([]string{"passwd", "fsck", "masterkey", "recover"}, args[0]) {
				return usageErrorf("crypt needs a sub-command (passwd, fsck, masterkey or recover) and BACKING")
			}
			old.stderr, nw.stderr, key.stderr = e.stderr, e.stderr, e.stderr
			backing := args[1]
			if *repair && args[0] != "fsck" {
				return usageErrorf("--repair is for fsck")
			}
			if *force && args[0] != "recover" {
				return usageErrorf("--force is for recover")
			}
			if args[0] == "recover" {
				return cryptRecover(e, backing, &key, &nw, *logN, *force)
			}
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
			switch args[0] {
			case "passwd":
				return cryptPasswd(e, backing, s, cfg, &old, &nw, *logN)
			case "masterkey":
				return cryptMasterKey(e, backing, cfg, &old)
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

func cryptMasterKey(e *env, backing string, cfg *crypt.Config, sf *secretFlags) error {
	pass, err := sf.read("Passphrase: ", false)
	if err != nil {
		return err
	}
	defer clear(pass)
	key, err := cfg.RecoveryKey(pass)
	if errors.Is(err, crypt.ErrWrongPassword) {
		return withCode(ExitPassword, fmt.Errorf("cannot unlock %s: %w", backing, err))
	}
	if err != nil {
		return withCode(ExitBacking, fmt.Errorf("cannot unlock %s: %w", backing, err))
	}
	defer clear(key)
	if f, ok := e.stdout.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(e.stderr, "vfsfilter: warning: the recovery key goes to a file others can read (mode %04o); chmod 600 it\n", st.Mode().Perm())
		}
	}
	fmt.Fprintf(e.stderr, "The recovery key of %s follows. With it, \"vfsfilter crypt recover\" sets a\nnew passphrase even when the passphrase is forgotten or the settings file\nis lost. Anyone who has it and the ciphertext reads everything: keep it\noffline, never beside the data.\n", backing)
	_, err = e.stdout.Write(append(key, '\n'))
	return err
}

// damagedSuffix names where crypt recover keeps a settings file it could
// not read, oldSuffix one it replaces.
const (
	damagedSuffix = ".damaged"
	oldSuffix     = ".old"
)

// copySecret copies the file at src to dst, mode 0600, atomically.
func copySecret(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	defer clear(data)
	return settings.WriteFileAtomic(dst, data, 0o600)
}

func cryptRecover(e *env, backing string, keyFlags, nw *secretFlags, logN int, force bool) error {
	if logN == 0 {
		logN = crypt.DefaultScryptLogN
	}
	if logN < crypt.MinScryptLogN || logN > crypt.MaxScryptLogN {
		return usageErrorf("--scrypt-logn must be between %d and %d", crypt.MinScryptLogN, crypt.MaxScryptLogN)
	}
	if st, err := os.Stat(backing); err != nil {
		return withCode(ExitBacking, err)
	} else if !st.IsDir() {
		return errorf(ExitBacking, "%s is not a directory", backing)
	}
	text, err := keyFlags.read("Recovery key: ", false)
	if err != nil {
		return err
	}
	r, err := crypt.ParseRecoveryKey(text)
	clear(text)
	if err != nil {
		return withCode(ExitPassword, err)
	}
	defer r.Wipe()
	keys, err := r.Keys()
	if err != nil {
		return err
	}
	kc, err := crypt.CheckKey(backing, keys)
	keys.Wipe()
	switch {
	case errors.Is(err, crypt.ErrNotEncrypted):
		return withCode(ExitBacking, fmt.Errorf("%s: %w", backing, err))
	case errors.Is(err, crypt.ErrKeyUnverified) && force:
		fmt.Fprintf(e.stderr, "vfsfilter: warning: %s: %v; writing the settings anyway (--force)\n", backing, err)
	case errors.Is(err, crypt.ErrKeyUnverified):
		return withCode(ExitFailure, fmt.Errorf("%s: %w; --force writes the settings anyway", backing, err))
	case err != nil:
		return withCode(ExitPassword, fmt.Errorf("%s: %w", backing, err))
	case kc.Blocks > 0:
		fmt.Fprintf(e.stdout, "the recovery key decrypts %s: %d of %d names checked and file contents\n", backing, kc.Names, kc.NamesTried)
	default:
		fmt.Fprintf(e.stdout, "the recovery key decrypts %d of %d names of %s (no file contents authenticate: %d files damaged or none written)\n", kc.Names, kc.NamesTried, backing, kc.BadBlocks)
	}

	s, loadErr := settings.Load(backing)
	if loadErr != nil {
		s = settings.New()
	} else if s.Has(crypt.SectionName) && kc.Blocks == 0 {
		// Settings that still say what the tree is: a key of another
		// format is another tree's (unless file contents proved it:
		// then the settings are what is wrong).
		var old crypt.Config
		if _, err := s.Section(crypt.SectionName, &old); err == nil && old.Validate() == nil && !r.SameFormat(&old) {
			return withCode(ExitPassword, fmt.Errorf("%s: the recovery key is for a tree of another format (block size, features) than its settings say: another tree's key", backing))
		}
	}
	pass, err := nw.read("New passphrase: ", true)
	if err != nil {
		return err
	}
	defer clear(pass)
	cfg, err := r.NewConfig(pass, logN)
	if err != nil {
		return err
	}
	if err := s.SetSection(crypt.SectionName, cfg); err != nil {
		return err
	}
	switch {
	case loadErr == nil:
		// Kept, never over an earlier copy: if the key was not the one
		// the tree was made with after all, the old passphrase still
		// opens this copy.
		kept := settings.Path(backing) + oldSuffix
		for i := 1; ; i++ {
			if _, err := os.Lstat(kept); errors.Is(err, os.ErrNotExist) {
				break
			}
			kept = fmt.Sprintf("%s%s.%d", settings.Path(backing), oldSuffix, i)
		}
		if err := copySecret(settings.Path(backing), kept); err != nil {
			return withCode(ExitBacking, fmt.Errorf("keep a copy of the settings: %w", err))
		}
		fmt.Fprintf(e.stderr, "vfsfilter: the settings replaced are kept as %s\n", kept)
	case errors.Is(loadErr, settings.ErrNone):
		fmt.Fprintf(e.stderr, "vfsfilter: %s is missing; the new one holds the encryption settings only (an HSM store, if the tree had one, must be restored from a backup of the file)\n", settings.Path(backing))
	default:
		// Keep what could not be read: it may hold other sections.
		aside := settings.Path(backing) + damagedSuffix
		if err := os.Rename(settings.Path(backing), aside); err != nil {
			return withCode(ExitBacking, fmt.Errorf("%v; and it cannot be moved aside: %w", loadErr, err))
		}
		fmt.Fprintf(e.stderr, "vfsfilter: %v\nvfsfilter: kept as %s; the new settings hold the encryption settings only (an HSM store, if the tree had one, is named in the damaged file)\n", loadErr, aside)
	}
	if err := s.Save(backing); err != nil {
		return withCode(ExitBacking, fmt.Errorf("write settings: %w", err))
	}
	fmt.Fprintf(e.stdout, "new passphrase set for %s\n", backing)
	return nil
}
