package durable

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWriteClose(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(p)
	require.NoError(t, err)
	require.NoError(t, WriteClose(f, []byte("data")))
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, "data", string(got))
	// Closed: a second close reports it.
	require.ErrorIs(t, f.Close(), os.ErrClosed)
}

func TestWriteCloseReportsWriteError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(p, nil, 0o600))
	f, err := os.Open(p) // read-only: the write fails
	require.NoError(t, err)
	require.Error(t, WriteClose(f, []byte("data")))
	require.ErrorIs(t, f.Close(), os.ErrClosed, "closed even when the write failed")
}
