package wire

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/internal/cbordet"
	"github.com/aster-go/aster/status"
)

// ControlService is the reserved service name for protocol calls (contract
// fetch, session end, admission). User services may not use it.
const ControlService = "_aster"

// Control methods on ControlService.
const (
	MethodContract   = "contract"   // unary: returns the server's contract
	MethodEndSession = "endSession" // unary: ends the header's sessionId
	MethodAdmit      = "admit"      // unary: the admission exchange, first call of a connection
)

// Header limits.
const (
	MaxNameLen       = 128 // service and method names
	MaxMetadataPairs = 64
	MaxMetadataLen   = 8 << 10 // one key or value
)

// Header is the first frame of every call.
type Header struct {
	Service string `cbor:"service" json:"service"`
	Method  string `cbor:"method" json:"method"`
	// Version selects the service version; 0 means the highest registered.
	Version uint32 `cbor:"version,omitempty" json:"version,omitempty"`
	// CallID is chosen by the client, unique per connection, for logs.
	CallID uint64 `cbor:"callId,omitempty" json:"callId,omitempty"`
	// Timeout is the call's remaining budget in milliseconds; 0 means none.
	Timeout uint64 `cbor:"timeout,omitempty" json:"timeout,omitempty"`
	// SerializationMode names the codec of the data frames; "" means "cbor".
	SerializationMode string `cbor:"serializationMode,omitempty" json:"serializationMode,omitempty"`
	// Metadata is caller-supplied key/value pairs (tracing, auth tokens, ...).
	Metadata map[string]string `cbor:"metadata,omitempty" json:"metadata,omitempty"`
	// SessionID routes the call to a session-scoped service instance; 0 means
	// no session.
	SessionID uint64 `cbor:"sessionId,omitempty" json:"sessionId,omitempty"`
	// Reuse marks a call whose stream may carry another call after it
	// (PROTOCOL.md 23, stream reuse): the client ends its requests with an
	// end-of-request frame instead of FIN, and the server does not FIN
	// after the trailer. Only a client whose admission verdict offered
	// stream reuse sets it.
	Reuse bool `cbor:"reuse,omitempty" json:"reuse,omitempty"`
}

// Trailer ends every call: the status, and optional details and metadata.
type Trailer struct {
	Code     uint32            `cbor:"code" json:"code"`
	Message  string            `cbor:"message,omitempty" json:"message,omitempty"`
	Details  []status.Detail   `cbor:"details,omitempty" json:"details,omitempty"`
	Metadata map[string]string `cbor:"metadata,omitempty" json:"metadata,omitempty"`
	// NotProcessed says that no part of the call reached the application
	// (PROTOCOL.md §7.1): a client may retry it anywhere.
	NotProcessed bool `cbor:"notProcessed,omitempty" json:"notProcessed,omitempty"`
	// Draining says the server is shutting down and takes no new calls
	// (PROTOCOL.md §7.1): only a draining server's refusal of a call
	// (DrainingRefusal) sets it, never an error a handler returns.
	Draining bool `cbor:"draining,omitempty" json:"draining,omitempty"`
}

// IsJSON reports whether a header or trailer payload is JSON (its first byte
// is '{') rather than CBOR.
func IsJSON(payload []byte) bool { return len(payload) > 0 && payload[0] == '{' }

// DecodeHeader decodes and validates a header payload (CBOR, or JSON when it
// starts with '{'). Errors are INVALID_ARGUMENT.
func DecodeHeader(payload []byte) (*Header, error) {
	h := new(Header)
	if err := DecodeHeaderInto(payload, h); err != nil {
		return nil, err
	}
	return h, nil
}

// DecodeHeaderInto is DecodeHeader into a caller-owned Header, which is
// overwritten.
func DecodeHeaderInto(payload []byte, h *Header) error {
	*h = Header{}
	if IsJSON(payload) || decodeHeaderCBOR(payload, h) != nil {
		slow := new(Header) // decoded separately so h does not escape
		if err := decodeMeta(payload, slow); err != nil {
			return status.Errorf(status.InvalidArgument, "wire: bad header: %v", err)
		}
		*h = *slow
	}
	return h.Validate()
}

// Validate checks the header's limits. Errors are INVALID_ARGUMENT.
func (h *Header) Validate() error {
	switch {
	case h.Service == "":
		return status.New(status.InvalidArgument, "wire: header has no service")
	case h.Method == "":
		return status.New(status.InvalidArgument, "wire: header has no method")
	case len(h.Service) > MaxNameLen || len(h.Method) > MaxNameLen:
		return status.Errorf(status.InvalidArgument, "wire: service or method name longer than %d bytes", MaxNameLen)
	}
	return ValidateMetadata(h.Metadata, status.InvalidArgument)
}

// ValidateMetadata checks metadata against the limits of PROTOCOL.md 5.1
// (at most MaxMetadataPairs pairs; keys 1 to MaxMetadataLen bytes, values at
// most MaxMetadataLen bytes). A violation is an error with the given code.
func ValidateMetadata(md map[string]string, code status.Code) error {
	if len(md) > MaxMetadataPairs {
		return status.Errorf(code, "wire: more than %d metadata pairs", MaxMetadataPairs)
	}
	for k, v := range md {
		if k == "" || len(k) > MaxMetadataLen || len(v) > MaxMetadataLen {
			return status.Errorf(code, "wire: bad metadata key %.32q", k)
		}
	}
	return nil
}

// responseHeader is the JSON form of a response HEADER: metadata only.
type responseHeader struct {
	Metadata map[string]string `json:"metadata"`
}

// AppendResponseHeader appends the HEADER frame a server sends before its
// first response (PROTOCOL.md 5.4): the header encoding with only the
// metadata field, as CBOR or (asJSON, when the call's header was JSON) as
// JSON. It is sent only when there is metadata to send.
func AppendResponseHeader(buf []byte, md map[string]string, asJSON bool) ([]byte, error) {
	buf, off := BeginFrame(buf, FlagHeader)
	if asJSON {
		b, err := json.Marshal(&responseHeader{Metadata: md})
		if err != nil {
			return buf[:off], fmt.Errorf("wire: encode response header: %w", err)
		}
		buf = append(buf, b...)
	} else {
		buf = cbordet.AppendHead(buf, majMap, 1)
		buf = cbordet.AppendStringMap(cbordet.AppendText(buf, "metadata"), md)
	}
	return endMeta(buf, off)
}

// DecodeResponseHeader decodes the payload of a response HEADER frame (one
// a server sends before its first response) and returns its metadata (nil
// when absent). Other keys are ignored. A payload that does not decode or
// whose metadata breaks the limits of PROTOCOL.md 5.1 is an INTERNAL error,
// like a bad trailer.
func DecodeResponseHeader(payload []byte) (map[string]string, error) {
	var h Header
	if IsJSON(payload) || decodeHeaderCBOR(payload, &h) != nil {
		slow := new(Header)
		if err := decodeMeta(payload, slow); err != nil {
			return nil, status.Errorf(status.Internal, "wire: bad response header: %v", err)
		}
		h = *slow
	}
	if err := ValidateMetadata(h.Metadata, status.Internal); err != nil {
		return nil, err
	}
	return h.Metadata, nil
}

// AppendHeader appends a HEADER frame for h, encoded as CBOR (or JSON when
// asJSON).
func AppendHeader(buf []byte, h *Header, asJSON bool) ([]byte, error) {
	buf, off := BeginFrame(buf, FlagHeader)
	if asJSON {
		hc := *h // keep h itself off the heap on the CBOR path
		b, err := json.Marshal(&hc)
		if err != nil {
			return buf[:off], fmt.Errorf("wire: encode header: %w", err)
		}
		buf = append(buf, b...)
	} else {
		buf = appendHeaderCBOR(buf, h)
	}
	return endMeta(buf, off)
}

// AppendTrailer appends a TRAILER frame, encoded as CBOR (or JSON when
// asJSON).
func AppendTrailer(buf []byte, t *Trailer, asJSON bool) ([]byte, error) {
	buf, off := BeginFrame(buf, FlagTrailer)
	if asJSON {
		tc := *t
		b, err := json.Marshal(&tc)
		if err != nil {
			return buf[:off], fmt.Errorf("wire: encode trailer: %w", err)
		}
		buf = append(buf, b...)
	} else {
		buf = appendTrailerCBOR(buf, t)
	}
	return endMeta(buf, off)
}

func endMeta(buf []byte, off int) ([]byte, error) {
	if n := len(buf) - off - prefixLen; n > MaxHeaderSize {
		return buf[:off], FrameTooLarge(uint64(n), MaxHeaderSize)
	}
	EndFrame(buf, off)
	return buf, nil
}

// TrailerFor builds the trailer that reports err (nil means OK). Its
// Draining flag is set only for the error of DrainingRefusal itself (not
// an error wrapping it, and not a *DrainingError a client read from a
// trailer and a handler passed on).
func TrailerFor(err error) Trailer {
	if err == nil {
		return Trailer{}
	}
	if r, ok := err.(drainingRefusal); ok {
		t := TrailerFor(r.err)
		t.Draining = true
		return t
	}
	se := status.FromError(err)
	return Trailer{Code: uint32(se.Code()), Message: se.Message(), Details: se.Details(), Metadata: se.Metadata(), NotProcessed: se.NotProcessed()}
}

// DrainingRefusal returns the error with which a server that is shutting
// down refuses a call before dispatch: UNAVAILABLE with message, marked not
// processed, whose trailer (TrailerFor) carries draining: true. Only the
// server's own refusal path may use it.
func DrainingRefusal(message string) error {
	return drainingRefusal{status.New(status.Unavailable, message).WithNotProcessed()}
}

// drainingRefusal is DrainingRefusal's error. Its type is unexported and
// distinct from DrainingError, so no handler can produce the flag.
type drainingRefusal struct{ err *status.Error }

func (r drainingRefusal) Error() string { return r.err.Error() }
func (r drainingRefusal) Unwrap() error { return r.err }

// DrainingError is the error of a call whose TRAILER carried draining:
// true: the server is shutting down. It wraps the call's *status.Error
// (status.FromError, status.CodeOf and errors.As see it).
type DrainingError struct{ Status *status.Error }

// Error returns the status error's text.
func (e *DrainingError) Error() string { return e.Status.Error() }

// Unwrap returns the status error.
func (e *DrainingError) Unwrap() error { return e.Status }

// IsDraining reports whether err is, or wraps, a *DrainingError: the
// server answered the call with a TRAILER marked draining.
func IsDraining(err error) bool {
	var de *DrainingError
	return errors.As(err, &de)
}

// DecodeTrailer decodes a trailer payload. A trailer that does not decode
// is an INTERNAL error.
func DecodeTrailer(payload []byte) (*Trailer, error) {
	t := new(Trailer)
	if err := DecodeTrailerInto(payload, t); err != nil {
		return nil, err
	}
	return t, nil
}

// DecodeTrailerInto is DecodeTrailer into a caller-owned Trailer.
func DecodeTrailerInto(payload []byte, t *Trailer) error {
	*t = Trailer{}
	if IsJSON(payload) || decodeTrailerCBOR(payload, t) != nil {
		slow := new(Trailer)
		if err := decodeMeta(payload, slow); err != nil {
			return status.Errorf(status.Internal, "wire: bad trailer: %v", err)
		}
		*t = *slow
	}
	return nil
}

// Err returns the trailer's error, or nil when its code is OK.
func (t *Trailer) Err() error {
	if t.Code == 0 {
		return nil
	}
	se := status.FromWire(status.Code(t.Code), t.Message, t.Details, t.Metadata)
	if t.NotProcessed {
		se.WithNotProcessed()
	}
	if t.Draining && se.Code() == status.Unavailable && t.NotProcessed {
		// The mark means something only on the refusal it belongs to
		// (PROTOCOL.md §7.1); elsewhere it is ignored.
		return &DrainingError{Status: se}
	}
	return se
}

func decodeMeta(payload []byte, v any) error {
	if len(payload) == 0 {
		return fmt.Errorf("empty payload")
	}
	if IsJSON(payload) {
		return json.Unmarshal(payload, v)
	}
	return cbor.Unmarshal(payload, v)
}
