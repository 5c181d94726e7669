package settings

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRoundTripAndModes(t *testing.T) {
	dir := t.TempDir()
	_, err := Load(dir)
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.True(t, errors.Is(err, ErrNone))

	s := New()
	require.NoError(t, s.SetSection("hsm", map[string]string{"store": "file:///x"}))
	require.NoError(t, s.Save(dir))
	st, err := os.Stat(Path(dir))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0600), st.Mode().Perm(), "settings may hold secrets")
	dst, err := os.Stat(filepath.Join(dir, Dir))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0700), dst.Mode().Perm())

	got, err := Load(dir)
	require.NoError(t, err)
	var h map[string]string
	ok, err := got.Section("hsm", &h)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, "file:///x", h["store"])
	ok, err = got.Section("crypt", &h)
	assert.False(t, ok)
	assert.NoError(t, err)
}

func TestDamagedAndFutureVersion(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, Dir), 0700))
	require.NoError(t, os.WriteFile(Path(dir), []byte("{not json"), 0600))
	_, err := Load(dir)
	assert.ErrorContains(t, err, "damaged")
	require.NoError(t, os.WriteFile(Path(dir), []byte(`{"version": 99}`), 0600))
	_, err = Load(dir)
	assert.ErrorContains(t, err, "format version 99")
}
