package control

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCallStreamsAndErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	s, err := Listen(path, nil)
	require.NoError(t, err)
	defer s.Close()
	s.Handle("count", func(ctx context.Context, params json.RawMessage, send func(any) error) error {
		var n int
		if err := json.Unmarshal(params, &n); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if err := send(i); err != nil {
				return err
			}
		}
		return nil
	})
	s.Handle("fail", func(ctx context.Context, params json.RawMessage, send func(any) error) error {
		return errors.New("store is down")
	})
	block := make(chan struct{})
	s.Handle("block", func(ctx context.Context, params json.RawMessage, send func(any) error) error {
		<-ctx.Done()
		close(block)
		return ctx.Err()
	})

	c, err := Dial(path)
	require.NoError(t, err)
	var got []int
	require.NoError(t, c.Call(context.Background(), "count", 3, func(d json.RawMessage) error {
		var i int
		require.NoError(t, json.Unmarshal(d, &i))
		got = append(got, i)
		return nil
	}))
	assert.Equal(t, []int{0, 1, 2}, got)
	assert.EqualError(t, c.Call(context.Background(), "fail", nil, nil), "store is down")
	assert.ErrorContains(t, c.Call(context.Background(), "nope", nil, nil), "unknown method")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	assert.Error(t, c.Call(ctx, "block", nil, nil))
	select {
	case <-block:
	case <-time.After(5 * time.Second):
		t.Fatal("a client that goes away must cancel its request")
	}
}

func TestSecondDaemonRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	s, err := Listen(path, nil)
	require.NoError(t, err)
	defer s.Close()
	_, err = Listen(path, nil)
	assert.ErrorContains(t, err, "in use")
}

func TestDialNoDaemon(t *testing.T) {
	_, err := Dial(filepath.Join(t.TempDir(), "none.sock"))
	assert.ErrorIs(t, err, ErrNoDaemon)
}

func TestUnescapeMountinfo(t *testing.T) {
	assert.Equal(t, "/tmp/a b", unescapeMountinfo(`/tmp/a\040b`))
	assert.Equal(t, "/plain", unescapeMountinfo("/plain"))
}

// A daemon that shuts down after a new one took over the path (the mount
// is gone before the old daemon finishes) leaves the new socket alone.
func TestCloseLeavesSuccessorsSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	old, err := Listen(path, nil)
	require.NoError(t, err)
	// The successor finds the path taken by a server that still answers
	// in real life; here the old one has stopped listening but not yet
	// cleaned up, as between ln.Close and the remove.
	require.NoError(t, old.ln.Close())
	require.NoError(t, os.Remove(path))
	succ, err := Listen(path, nil)
	require.NoError(t, err)
	defer succ.Close()
	old.Close()
	_, err = Dial(path)
	assert.NoError(t, err, "the successor's socket is still there")
	succ.Close()
	_, err = os.Stat(path)
	assert.True(t, os.IsNotExist(err), "a server removes its own socket: %v", err)
}
