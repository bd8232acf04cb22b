//go:build unix

package etcdtest

import (
	"os"
	"os/exec"
	"syscall"
)

// terminate asks the server to exit cleanly.
func terminate(p *os.Process) { p.Signal(syscall.SIGTERM) }

// setProcAttr puts the server in its own process group, so a terminal's
// Ctrl-C reaches only the test binary, which then stops the server.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setDeathSignal(cmd.SysProcAttr)
}
