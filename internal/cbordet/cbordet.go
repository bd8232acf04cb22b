// Package cbordet holds the few CBOR primitives (RFC 8949) that aster's
// hand-written fast paths share: heads with the shortest argument, text
// strings and string maps in core deterministic order (what codec/cbor's
// reflective encoder writes), and reading a definite-length head. Both the
// call header/trailer codec (internal/wire) and the flat-struct fast path
// of codec/cbor build on it, so they cannot drift apart.
package cbordet

import (
	"encoding/binary"
	"slices"
	"strings"
)

// Major types, as numbers 0–7 (not shifted into the initial byte).
const (
	MajUint   byte = 0
	MajNeg    byte = 1
	MajBytes  byte = 2
	MajText   byte = 3
	MajArray  byte = 4
	MajMap    byte = 5
	MajTag    byte = 6
	MajSimple byte = 7
)

// AppendHead appends the head of an item of major type major with argument
// n, using the shortest encoding of n.
func AppendHead(b []byte, major byte, n uint64) []byte {
	major <<= 5
	switch {
	case n < 24:
		return append(b, major|byte(n))
	case n <= 0xff:
		return append(b, major|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, major|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, major|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, major|27), n)
}

// AppendText appends s as a text string.
func AppendText(b []byte, s string) []byte {
	return append(AppendHead(b, MajText, uint64(len(s))), s...)
}

// CompareKeys orders text map keys as core deterministic CBOR does: by
// their encoding bytewise, which for text keys is shorter first, then
// bytewise.
func CompareKeys(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// AppendStringMap appends m as a map of text keys to text values, keys in
// deterministic order. Maps of up to 8 keys sort without allocating.
func AppendStringMap(b []byte, m map[string]string) []byte {
	b = AppendHead(b, MajMap, uint64(len(m)))
	var small [8]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, CompareKeys)
	for _, k := range keys {
		b = AppendText(AppendText(b, k), m[k])
	}
	return b
}

// Head reads the item head at b[i]: its major type, its argument and the
// offset just after it. ok is false for a truncated head, a reserved
// additional-information value or an indefinite length.
func Head(b []byte, i int) (major byte, arg uint64, next int, ok bool) {
	if i >= len(b) {
		return 0, 0, 0, false
	}
	c := b[i]
	major, ai := c>>5, c&0x1f
	i++
	switch {
	case ai < 24:
		return major, uint64(ai), i, true
	case ai == 24 && i+1 <= len(b):
		return major, uint64(b[i]), i + 1, true
	case ai == 25 && i+2 <= len(b):
		return major, uint64(binary.BigEndian.Uint16(b[i:])), i + 2, true
	case ai == 26 && i+4 <= len(b):
		return major, uint64(binary.BigEndian.Uint32(b[i:])), i + 4, true
	case ai == 27 && i+8 <= len(b):
		return major, binary.BigEndian.Uint64(b[i:]), i + 8, true
	}
	return 0, 0, 0, false
}
