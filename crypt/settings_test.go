package crypt

import (
	"testing"

	"github.com/vfsfilter/vfsfilter/internal/settings"
)

func TestSettingsDirName(t *testing.T) {
	if settingsDir != settings.Dir {
		t.Fatalf("crypt hides %q, the stack keeps its settings in %q", settingsDir, settings.Dir)
	}
}
