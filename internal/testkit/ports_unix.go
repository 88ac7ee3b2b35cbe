//go:build unix

package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// reserveBlock takes an exclusive, non-blocking flock on block b's file in
// the temporary directory and keeps it open (and locked) until the process
// exits; the kernel drops the lock then, however the process ends. Where
// the file cannot be created it reserves the block without a lock (the
// listen probe still guards each port).
func reserveBlock(b int) bool {
	dir := filepath.Join(os.TempDir(), "herald-testkit-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return true
	}
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("block-%d", portMin+b*portBlock)), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return false
	}
	heldBlocks = append(heldBlocks, f) // never closed: the lock lasts as long as the process
	return true
}

// heldBlocks keeps the reserved blocks' files open. ports must be locked.
var heldBlocks []*os.File
