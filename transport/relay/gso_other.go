//go:build !linux

package relay

const gsoSupported = false

func segmentOOB(int) []byte { return nil }

func gsoFailed(error) bool { return true }
