package layer_test

import (
	"testing"

	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
)

func TestPosixPassthrough(t *testing.T) {
	conformance.RunPosix(t, conformance.Passthrough, layer.MountOptions{})
}

func TestScenariosPassthrough(t *testing.T) {
	conformance.RunScenarios(t, conformance.Passthrough, layer.MountOptions{})
}

func TestScenariosPassthroughAllowOther(t *testing.T) {
	conformance.RunScenarios(t, conformance.Passthrough, layer.MountOptions{AllowOther: true})
}
