// Package mpack encodes and decodes ftkvm's snapshot structures with
// msgpack (github.com/vmihailenco/msgpack/v5), checking untrusted input
// before the decoder sees it.
//
// The msgpack decoder sizes a slice from its length prefix (up to a
// million elements) before it reads the elements, so a few bytes can make
// it allocate hundreds of megabytes, and it recurses once per level of
// nesting. Unmarshal first walks the encoding and refuses one whose
// lengths claim more than the input holds (every element takes at least
// one byte, so the elements of all arrays and maps together are at most
// the input's length), nested deeper than MaxDepth, or with bytes after
// the value: what the decoder then allocates is bounded by a small
// multiple of the input's size.
package mpack

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// MaxDepth bounds the nesting of arrays and maps in what Unmarshal accepts.
const MaxDepth = 32

// ErrMalformed is wrapped by every error Check returns.
var ErrMalformed = errors.New("malformed msgpack")

// Marshal encodes v.
func Marshal(v any) ([]byte, error) { return msgpack.Marshal(v) }

// Unmarshal checks b (Check), then decodes it into v.
func Unmarshal(b []byte, v any) error {
	if err := Check(b); err != nil {
		return err
	}
	return msgpack.Unmarshal(b, v)
}

// Check says why b is not exactly one msgpack value whose lengths fit in
// b, nested at most MaxDepth deep, or returns nil.
func Check(b []byte) error {
	fail := func(at int, what string) error { return fmt.Errorf("%w at byte %d: %s", ErrMalformed, at, what) }
	// stack holds, per open array or map, how many values it still has;
	// the bottom entry is the one top-level value.
	stack := []uint64{1}
	var elements uint64
	i := 0
	for len(stack) > 0 {
		if stack[len(stack)-1] == 0 {
			stack = stack[:len(stack)-1]
			continue
		}
		stack[len(stack)-1]--
		if i >= len(b) {
			return fail(i, "truncated")
		}
		at, c := i, b[i]
		i++
		// length reads an n-byte big-endian length after the type byte.
		length := func(n int) (uint64, bool) {
			if len(b)-i < n {
				return 0, false
			}
			var v uint64
			switch n {
			case 1:
				v = uint64(b[i])
			case 2:
				v = uint64(binary.BigEndian.Uint16(b[i:]))
			case 4:
				v = uint64(binary.BigEndian.Uint32(b[i:]))
			}
			i += n
			return v, true
		}
		var skip uint64     // payload bytes
		var children uint64 // nested values
		container := false
		ok := true
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			children, container = 2*uint64(c&0x0f), true
		case c >= 0x90 && c <= 0x9f:
			children, container = uint64(c&0x0f), true
		case c >= 0xa0 && c <= 0xbf:
			skip = uint64(c & 0x1f)
		case c == 0xc4 || c == 0xd9:
			skip, ok = length(1)
		case c == 0xc5 || c == 0xda:
			skip, ok = length(2)
		case c == 0xc6 || c == 0xdb:
			skip, ok = length(4)
		case c == 0xc7, c == 0xc8, c == 0xc9:
			skip, ok = length(1 << (c - 0xc7))
			skip++ // the ext type byte
		case c == 0xca || c == 0xce || c == 0xd2:
			skip = 4
		case c == 0xcb || c == 0xcf || c == 0xd3:
			skip = 8
		case c == 0xcc || c == 0xd0:
			skip = 1
		case c == 0xcd || c == 0xd1:
			skip = 2
		case c >= 0xd4 && c <= 0xd8:
			skip = 1 + 1<<(c-0xd4)
		case c == 0xdc:
			children, ok = length(2)
			container = true
		case c == 0xdd:
			children, ok = length(4)
			container = true
		case c == 0xde:
			children, ok = length(2)
			children *= 2
			container = true
		case c == 0xdf:
			children, ok = length(4)
			children *= 2
			container = true
		default:
			return fail(at, fmt.Sprintf("type byte %#x", c))
		}
		left := uint64(len(b) - i)
		switch {
		case !ok:
			return fail(at, "truncated length")
		case skip > left:
			return fail(at, fmt.Sprintf("%d bytes claimed, %d left", skip, left))
		case children > left:
			return fail(at, fmt.Sprintf("%d elements claimed, %d bytes left", children, left))
		}
		i += int(skip)
		if container {
			if elements += children; elements > uint64(len(b)) {
				return fail(at, "more elements than bytes")
			}
			if len(stack) > MaxDepth {
				return fail(at, fmt.Sprintf("nested deeper than %d", MaxDepth))
			}
			stack = append(stack, children)
		}
	}
	if i != len(b) {
		return fail(i, fmt.Sprintf("%d bytes after the value", len(b)-i))
	}
	return nil
}
