package e2e

import (
	"os/exec"
	"syscall"
)

// setProcAttrs puts the child in its own process group, so killGroup reaches
// everything it starts, and has the kernel SIGKILL it if the test binary dies
// (a -timeout panic or ^C skips t.Cleanup).
func setProcAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
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
