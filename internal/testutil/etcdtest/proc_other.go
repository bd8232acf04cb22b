//go:build !unix

package etcdtest

import (
	"os"
	"os/exec"
)

func terminate(p *os.Process) { p.Kill() }

func setProcAttr(*exec.Cmd) {}
