package main

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/internal/settings"
)

// cryptInit is crypt's part of "vfsfilter init": --crypt with its
// passphrase and key-derivation flags.
var cryptInit = struct {
	enable bool
	logN   int
	secret secretFlags
}{}

func init() {
	registerInit(initPart{
		flags: func(fs *pflag.FlagSet) {
			fs.BoolVar(&cryptInit.enable, "crypt", false, "encrypt names and contents (AES-256-GCM, EME names); asks for a new passphrase")
			cryptInit.secret.addFlags(fs)
			fs.IntVar(&cryptInit.logN, "scrypt-logn", crypt.DefaultScryptLogN, fmt.Sprintf("scrypt cost: log2 of N (%d..%d); each step doubles the time and memory of unlocking", crypt.MinScryptLogN, crypt.MaxScryptLogN))
		},
		apply: applyCryptInit,
	})
}

func applyCryptInit(ic *initContext) (bool, error) {
	if !cryptInit.enable {
		if cryptInit.secret.passfile != "" || cryptInit.secret.extpass != "" {
			return false, usageErrorf("--passfile and --extpass need --crypt")
		}
		return false, nil
	}
	if cryptInit.logN < crypt.MinScryptLogN || cryptInit.logN > crypt.MaxScryptLogN {
		return false, usageErrorf("--scrypt-logn must be between %d and %d", crypt.MinScryptLogN, crypt.MaxScryptLogN)
	}
	// Files already in BACKING would stay in the clear and, their names
	// not decrypting, vanish from the mounted view.
	ents, err := os.ReadDir(ic.Backing)
	if err != nil {
		return false, withCode(ExitBacking, err)
	}
	for _, e := range ents {
		if e.Name() != settings.Dir {
			return false, errorf(ExitBacking, "--crypt needs an empty BACKING; %s holds %q", ic.Backing, e.Name())
		}
	}
	cryptInit.secret.stderr = ic.Stderr
	pass, err := cryptInit.secret.read("New passphrase: ", true)
	if err != nil {
		return false, err
	}
	defer clear(pass)
	cfg, keys, err := crypt.NewConfig(pass, cryptInit.logN)
	if err != nil {
		return false, err
	}
	keys.Wipe()
	if err := crypt.NewRoot(ic.Backing); err != nil {
		return false, withCode(ExitBacking, fmt.Errorf("create the root directory IV: %w", err))
	}
	if err := ic.Settings.SetSection(crypt.SectionName, cfg); err != nil {
		return false, err
	}
	fmt.Fprintf(ic.Stdout, "encryption set up (scrypt logN=%d); keep the passphrase safe\n", cryptInit.logN)
	fmt.Fprintf(ic.Stdout, "if the passphrase or the settings file is lost, only the recovery key reads the data:\n  vfsfilter crypt masterkey %s   (shows it; keep it offline)\n", ic.Backing)
	return true, nil
}
