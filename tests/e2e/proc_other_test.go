//go:build unix && !linux

package e2e

import (
	"os/exec"
	"syscall"
)

// setProcAttrs puts the child in its own process group, so killGroup reaches
// everything it starts.
func setProcAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// terminate asks the process (only the leader) to shut down gracefully.
func terminate(cmd *exec.Cmd) error {
	return cmd.Process.Signal(syscall.SIGTERM)
}

// killGroup SIGKILLs the child's whole process group. Harmless if it is gone.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}
