//go:build !unix

package testkit

// reserveBlock reserves block b for this process only: without flock, test
// binaries running at once rely on the listen probe and the pid-spread start.
func reserveBlock(b int) bool { return true }
