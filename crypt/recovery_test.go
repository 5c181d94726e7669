package crypt_test

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/internal/settings"
)

// goldenRecoveryKey is the golden tree's recovery key. It pins the text
// form: keys written on paper years ago must still parse.
const goldenRecoveryKey = "010c000f-86c4fbb3-b1774f88-df7ce600-b083ca1f-e67a7835-868275b6-44b4ee22-a99e4669-6c8293ca"

// goldenCopy copies the golden tree (see TestGolden) and returns it with
// its crypt settings.
func goldenCopy(t *testing.T) (string, *crypt.Config) {
	t.Helper()
	backing := t.TempDir()
	out, err := exec.Command("cp", "-a", filepath.Join(goldenDir, "backing")+"/.", backing).CombinedOutput()
	require.NoError(t, err, "cp: %s", out)
	s, err := settings.Load(backing)
	require.NoError(t, err)
	var cfg crypt.Config
	_, err = s.Section(crypt.SectionName, &cfg)
	require.NoError(t, err)
	return backing, &cfg
}

// TestRecoveryKey: the recovery key shown for a tree is pinned, parses
// back (whatever the case, dashes and spaces), opens the tree, and makes
// settings with a new passphrase that unlock the same keys; a typo, a
// wrong length or another tree's key is refused with a clear error.
func TestRecoveryKey(t *testing.T) {
	backing, cfg := goldenCopy(t)
	_, err := cfg.RecoveryKey([]byte("not it"))
	require.ErrorIs(t, err, crypt.ErrWrongPassword)
	key, err := cfg.RecoveryKey([]byte(goldenPass))
	require.NoError(t, err)
	require.Equal(t, goldenRecoveryKey, string(key))

	for _, text := range []string{string(key), strings.ToUpper(string(key)), strings.ReplaceAll(string(key), "-", " ") + "\n", strings.ReplaceAll(string(key), "-", "")} {
		r, err := crypt.ParseRecoveryKey([]byte(text))
		require.NoError(t, err, "%q", text)
		keys, err := r.Keys()
		require.NoError(t, err)
		kc, err := crypt.CheckKey(backing, keys)
		require.NoError(t, err)
		require.Positive(t, kc.Blocks, "a block authenticated")
		keys.Wipe()

		nc, err := r.NewConfig([]byte("new passphrase"), crypt.MinScryptLogN)
		require.NoError(t, err)
		r.Wipe()
		again, err := nc.RecoveryKey([]byte("new passphrase"))
		require.NoError(t, err)
		require.Equal(t, key, again, "the new settings hold the same master key and format")
	}

	typo := bytes.Clone(key)
	typo[3] ^= 1 // '0'<->'1', 'a'<->'`'... keep it a hex digit
	if typo[3] == '`' {
		typo[3] = 'b'
	}
	_, err = crypt.ParseRecoveryKey(typo)
	require.ErrorIs(t, err, crypt.ErrRecoveryChecksum)
	_, err = crypt.ParseRecoveryKey(key[:len(key)-1])
	require.ErrorContains(t, err, "80 hex digits")
	_, err = crypt.ParseRecoveryKey(append(bytes.Clone(key[:len(key)-1]), 'g'))
	require.ErrorContains(t, err, "only hex digits")

	other, _, err := crypt.NewConfig([]byte("other"), crypt.MinScryptLogN)
	require.NoError(t, err)
	okey, err := other.RecoveryKey([]byte("other"))
	require.NoError(t, err)
	r, err := crypt.ParseRecoveryKey(okey)
	require.NoError(t, err)
	defer r.Wipe()
	keys, err := r.Keys()
	require.NoError(t, err)
	defer keys.Wipe()
	_, err = crypt.CheckKey(backing, keys)
	require.True(t, errors.Is(err, crypt.ErrRecoveryKeyWrong), "another tree's key: %v", err)
	for _, s := range []string{string(okey), string(key)} {
		require.NotContains(t, err.Error(), s[:9], "errors never carry a key")
	}
}
