package sipws

// This file holds the wire format: frame headers and their length rules, and
// the frames we send (data, control and close). It and read.go, which parses
// and unmasks what arrives, are the only ones that know the WebSocket engine
// (github.com/gobwas/ws).

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// maxControlPayload is the largest payload of a control frame (RFC 6455 §5.5).
const maxControlPayload = ws.MaxControlFramePayloadSize

const (
	opContinuation = ws.OpContinuation
	opText         = ws.OpText
	opBinary       = ws.OpBinary
	opClose        = ws.OpClose
	opPing         = ws.OpPing
	opPong         = ws.OpPong
)

// appendHeader appends an unmasked final-frame header (server to client).
func appendHeader(b []byte, op ws.OpCode, n int) []byte {
	b = append(b, 0x80|byte(op))
	switch {
	case n < 126:
		return append(b, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
}

func frame(op ws.OpCode, p []byte) []byte {
	b := make([]byte, 0, 10+len(p))
	return append(appendHeader(b, op, len(p)), p...)
}

// maxHeaderLen is the longest header of a frame we send (unmasked).
const maxHeaderLen = 10

// dataFrame builds a complete, unfragmented data frame.
func dataFrame(t MessageType, p []byte) []byte {
	return appendDataFrame(make([]byte, 0, maxHeaderLen+len(p)), t, p)
}

// appendDataFrame appends a complete, unfragmented data frame to b.
func appendDataFrame(b []byte, t MessageType, p []byte) []byte {
	op := opBinary
	if t == MessageText {
		op = opText
	}
	return append(appendHeader(b, op, len(p)), p...)
}

// compressedFrame turns b — maxHeaderLen bytes of room, then a compressed
// payload — into a complete, unfragmented data frame with RSV1 set (RFC 7692
// §6): the header is written just before the payload, which does not move.
func compressedFrame(b []byte, t MessageType) []byte {
	op := opBinary
	if t == MessageText {
		op = opText
	}
	var hb [maxHeaderLen]byte
	h := appendHeader(hb[:0], op, len(b)-maxHeaderLen)
	h[0] |= rsv1
	start := maxHeaderLen - len(h)
	copy(b[start:], h)
	return b[start:]
}

// rsv1 is the bit of a frame's first byte that marks a compressed message
// (RFC 7692 §6); rsvCompressed is it in ws.Header.Rsv.
const (
	rsv1          = 0x40
	rsvCompressed = rsv1 >> 4
)

// controlFrame builds a control frame; p is at most 125 bytes.
func controlFrame(op ws.OpCode, p []byte) []byte { return frame(op, p) }

// closeFrame builds a close frame with a code and a reason that fits.
func closeFrame(code CloseCode, reason string) []byte {
	if len(reason) > maxCloseReason {
		reason = reason[:maxCloseReason]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	b := make([]byte, 0, 4+len(reason))
	b = appendHeader(b, opClose, 2+len(reason))
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	return append(b, reason...)
}

// headerLen is the length of a frame header whose second byte is b1.
func headerLen(b1 byte) int {
	hl := 2
	if b1&0x80 != 0 {
		hl += 4
	}
	switch b1 & 0x7f {
	case 126:
		hl += 2
	case 127:
		hl += 8
	}
	return hl
}

// parseHeader parses a whole frame header (RFC 6455 §5.2), as peekHeader
// returns it. It returns why the length field breaks §5.2 — the most
// significant bit of a 64-bit length set, or a length not in the minimal
// number of bytes — or "" when it is sound.
func parseHeader(b []byte) (h ws.Header, bad string) {
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] & 0x70) >> 4
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	rest := b[2:]
	switch l := b[1] & 0x7f; l {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(rest))
		if h.Length < 126 {
			return h, "non-minimal payload length"
		}
		rest = rest[2:]
	case 127:
		if rest[0]&0x80 != 0 {
			return h, "64-bit payload length with the most significant bit set"
		}
		h.Length = int64(binary.BigEndian.Uint64(rest))
		if h.Length <= 0xffff {
			return h, "non-minimal payload length"
		}
		rest = rest[8:]
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], rest)
	}
	return h, ""
}
