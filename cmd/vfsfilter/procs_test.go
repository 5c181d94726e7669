package main

import (
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRaiseProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))

	t.Run("raised", func(t *testing.T) {
		t.Setenv("GOMAXPROCS", "")
		runtime.GOMAXPROCS(1)
		raiseProcs()
		require.Equal(t, minProcs, runtime.GOMAXPROCS(0))
	})
	t.Run("more cores: left alone", func(t *testing.T) {
		t.Setenv("GOMAXPROCS", "")
		runtime.GOMAXPROCS(minProcs + 4)
		raiseProcs()
		require.Equal(t, minProcs+4, runtime.GOMAXPROCS(0))
	})
	t.Run("set by the user: left alone", func(t *testing.T) {
		t.Setenv("GOMAXPROCS", "1")
		runtime.GOMAXPROCS(1)
		raiseProcs()
		require.Equal(t, 1, runtime.GOMAXPROCS(0))
	})
}
