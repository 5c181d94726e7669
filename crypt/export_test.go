package crypt

import "slices"

// NewConfigWithout is NewConfig for a tree without the optional feature,
// as trees made before the feature existed are.
func NewConfigWithout(passphrase []byte, logN int, feature string) (*Config, *Keys, error) {
	cfg, k, err := NewConfig(passphrase, logN)
	if err != nil {
		return nil, nil, err
	}
	k.Wipe()
	master, err := cfg.unwrap(passphrase)
	if err != nil {
		return nil, nil, err
	}
	defer wipe(master)
	cfg.Features = slices.DeleteFunc(cfg.Features, func(f string) bool { return f == feature })
	if err := cfg.wrap(master, passphrase, logN); err != nil {
		return nil, nil, err
	}
	k, err = deriveKeys(master, cfg.BlockSize, cfg.Features)
	return cfg, k, err
}
