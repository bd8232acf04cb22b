// Package codec defines how aster turns messages into bytes and back.
//
// A Codec is chosen per call: the client names it in the call header
// ("serializationMode") and the server decodes the request and encodes the
// response with the same codec. codec/cbor is the default; codec/json serves
// the CLI, browsers and debugging. Codecs know nothing about transports or
// framing.
package codec

// Codec marshals and unmarshals messages. Implementations must be safe for
// concurrent use.
type Codec interface {
	// Name is the codec's name on the wire ("cbor", "json").
	Name() string
	// Marshal encodes v.
	Marshal(v any) ([]byte, error)
	// AppendMarshal encodes v, appending to buf, and returns the extended
	// buffer. It lets callers reuse buffers on the hot path.
	AppendMarshal(buf []byte, v any) ([]byte, error)
	// Unmarshal decodes data into v, which must be a non-nil pointer.
	Unmarshal(data []byte, v any) error
}
