package etcdtest

import "syscall"

// setDeathSignal kills the server if the test binary dies without stopping
// it (a panic, a timeout, SIGKILL).
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
