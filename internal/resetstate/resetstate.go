// Package resetstate keeps the local-reset bookkeeping that the QUIC-based
// stream wrappers (transport/quic, transport/webtransport) share.
//
// transport.Stream promises that after Reset, Read fails with the reset's
// StreamError and Close sends no FIN. quic-go can report io.EOF after a
// local CancelRead, when the peer's answering RESET_STREAM arrived while a
// Read was pending; State turns that io.EOF back into the reset, unless the
// stream had really reached its end before the Reset.
package resetstate

import (
	"io"
	"sync/atomic"

	"github.com/aster-go/aster/transport"
)

// State is the reset bookkeeping of one stream; the zero value is ready.
// Its methods are safe for concurrent use.
type State struct {
	reset   atomic.Bool   // Reset was called
	failEOF atomic.Uint64 // 1+code of a Reset made before Read saw io.EOF, else 0
	sawEOF  atomic.Bool   // Read returned io.EOF
}

// Reset records a local reset with code, the code as sent on the wire.
func (s *State) Reset(code transport.StreamErrorCode) {
	s.reset.Store(true)
	if !s.sawEOF.Load() {
		s.failEOF.CompareAndSwap(0, uint64(code)+1)
	}
}

// WasReset reports whether Reset was called (Close then sends no FIN).
func (s *State) WasReset() bool { return s.reset.Load() }

// EOF is what Read returns when the underlying stream reports io.EOF: the
// reset's *transport.StreamError if the stream was reset before its end
// was read, else io.EOF (and the end is recorded).
func (s *State) EOF() error {
	if r := s.failEOF.Load(); r != 0 {
		return &transport.StreamError{Code: transport.StreamErrorCode(r - 1)}
	}
	s.sawEOF.Store(true)
	return io.EOF
}
