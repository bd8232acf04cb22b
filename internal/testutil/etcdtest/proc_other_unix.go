//go:build unix && !linux

package etcdtest

import "syscall"

func setDeathSignal(*syscall.SysProcAttr) {}
