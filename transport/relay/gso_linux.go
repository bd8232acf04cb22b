package relay

import (
	"encoding/binary"
	"errors"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// gsoSupported says whether segmentSize can work here: Linux offers UDP
// generic segmentation offload (UDP_SEGMENT) since 4.18; a kernel or
// interface without it fails the first send, and the writer stops using it
// (gsoFailed).
const gsoSupported = true

// segmentOOB returns the control message asking the kernel to cut the
// datagram into segments of size bytes.
func segmentOOB(size int) []byte {
	b := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(size))
	return b
}

// gsoFailed reports whether err says the kernel or the interface cannot
// segment (as quic-go reads it).
func gsoFailed(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	return errno == unix.EIO || errno == unix.EINVAL || errno == unix.ENOPROTOOPT || errno == unix.EOPNOTSUPP
}
