//go:build !race

package bus

// raceEnabled: the tests run under the race detector.
const raceEnabled = false
