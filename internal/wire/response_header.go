package wire

import (
	"encoding/json"
	"fmt"

	"github.com/aster-go/aster/internal/cbordet"
	"github.com/aster-go/aster/status"
)

// Response metadata (PROTOCOL.md §5): before its first DATA frame, or before
// its TRAILER when it sends no message, a server may send at most one frame
// with the HEADER flag whose payload is the HEADER encoding holding only the
// metadata field. It is sent only when the handler set response metadata; a
// HEADER frame after a DATA frame, or a second one, is a protocol error.

// AppendResponseHeader appends a response HEADER frame carrying md, encoded
// as CBOR (or JSON when asJSON). Metadata over the limits of a call header
// (MaxMetadataPairs, MaxMetadataLen) is INTERNAL: it is the server's own.
func AppendResponseHeader(buf []byte, md map[string]string, asJSON bool) ([]byte, error) {
	if err := checkMetadata(md, status.Internal); err != nil {
		return buf, err
	}
	buf, off := BeginFrame(buf, FlagHeader)
	if asJSON {
		b, err := json.Marshal(struct {
			Metadata map[string]string `json:"metadata"`
		}{md})
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

// DecodeResponseHeader decodes the payload of a response HEADER frame (CBOR,
// or JSON when it starts with '{') and returns its metadata. Fields other
// than metadata are ignored. A payload that does not decode, or metadata
// over the call header's limits, is INTERNAL (a server's protocol error).
func DecodeResponseHeader(payload []byte) (map[string]string, error) {
	var h Header
	if IsJSON(payload) || decodeHeaderCBOR(payload, &h) != nil {
		slow := new(Header)
		if err := decodeMeta(payload, slow); err != nil {
			return nil, status.Errorf(status.Internal, "wire: bad response header: %v", err)
		}
		h = *slow
	}
	if err := checkMetadata(h.Metadata, status.Internal); err != nil {
		return nil, err
	}
	return h.Metadata, nil
}

// checkMetadata checks metadata against the call header's limits.
func checkMetadata(md map[string]string, code status.Code) error {
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
