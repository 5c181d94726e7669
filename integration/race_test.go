//go:build race

package integration

// raceEnabled says the tests run with -race; the binary is then built with
// it too.
const raceEnabled = true
