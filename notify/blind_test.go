package notify

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestOnBlind: functions registered with OnBlind run once when the watch
// stops, and at once when registered after that.
func TestOnBlind(t *testing.T) {
	n, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	var before, after int
	n.OnBlind(func() { before++ })
	assert.Zero(t, before, "not before the watch stops")
	n.blind()
	n.blind() // a second failure report runs nothing again
	assert.Equal(t, 1, before)
	n.OnBlind(func() { after++ })
	assert.Equal(t, 1, after, "registered after the watch stopped: at once")
}
