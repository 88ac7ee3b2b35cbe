//go:build linux

package testkit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Tmpfs mounts a tmpfs of size bytes on a fresh temporary directory and
// returns the directory; it is unmounted when the test ends. Where this
// process may not mount (not root, no CAP_SYS_ADMIN, a container without
// it) the test is skipped with a message saying so: the disk-full tests
// need a filesystem they can fill without filling the box's.
func Tmpfs(t testing.TB, size int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("tmpfs: %v", err)
	}
	if err := syscall.Mount("herald-test", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d", size)); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENODEV) {
			t.Skipf("skipped: this test mounts a small tmpfs to fill, and mounting is not permitted here (%v); run it as root or with CAP_SYS_ADMIN", err)
		}
		t.Fatalf("tmpfs: mount %s: %v", dir, err)
	}
	// Registered after t.TempDir's own cleanup, so it runs first (cleanups
	// run last in, first out) and the directory is empty when removed.
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("tmpfs: unmount %s: %v", dir, err)
		}
	})
	return dir
}

// ResizeTmpfs grows (or shrinks) a tmpfs mounted by Tmpfs, as an operator
// growing a full volume would.
func ResizeTmpfs(t testing.TB, dir string, size int64) {
	t.Helper()
	if err := syscall.Mount("herald-test", dir, "tmpfs", syscall.MS_REMOUNT|syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatalf("tmpfs: resize %s: %v", dir, err)
	}
}

// FillDisk writes path until its filesystem has no space left, as another
// process filling the disk would, and returns the bytes written. Removing
// the file gives the space back.
func FillDisk(t testing.TB, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("fill: %v", err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatalf("fill %s: %v", path, err)
		}
		if w < len(buf) { // a short write is the last that fits
			buf = buf[:max(len(buf)/2, 1)]
		}
	}
	return n
}
