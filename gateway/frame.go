package gateway

import (
	"bytes"
	"encoding/binary"
	"io"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// This file is the WebSocket mechanism layer: RFC 6455 frames decoded from bytes
// as they arrive, and server frames encoded into caller-owned buffers. It knows
// nothing about sockets or the Pusher protocol.

// wsError is a reason to fail the WebSocket connection (RFC 6455 section 7.1.7).
type wsError struct {
	code   ws.StatusCode
	reason string
}

var (
	errNotMasked      = &wsError{ws.StatusProtocolError, "client frames must be masked"}
	errReservedBits   = &wsError{ws.StatusProtocolError, "reserved bits set without an extension"}
	errBadControl     = &wsError{ws.StatusProtocolError, "fragmented or oversized control frame"}
	errBadOpcode      = &wsError{ws.StatusProtocolError, "unknown opcode"}
	errUnexpectedCont = &wsError{ws.StatusProtocolError, "continuation frame without a message"}
	errExpectedCont   = &wsError{ws.StatusProtocolError, "new message inside a fragmented message"}
	errTooBig         = &wsError{ws.StatusMessageTooBig, "message too big"}
	errBadUTF8        = &wsError{ws.StatusInvalidFramePayloadData, "text message is not valid UTF-8"}
	errBadHeader      = &wsError{ws.StatusProtocolError, "malformed frame header"}
)

// fragments is the state of a message that arrived in several frames. It
// exists only while such a message is incomplete.
type fragments struct {
	op  ws.OpCode
	buf []byte
}

// frameHandler receives what the decoder finds. payload is valid only during
// the call: it points into the caller's read buffer. Returning false stops
// decoding (the connection is closing).
type frameHandler interface {
	onMessage(op ws.OpCode, payload []byte) bool
	onControl(op ws.OpCode, payload []byte) bool
}

// frameDecoder decodes client frames. One decoder serves every connection of a
// poller; it holds only scratch space, never connection state.
type frameDecoder struct {
	rd      bytes.Reader
	scratch [ws.MaxHeaderSize]byte
}

// decode consumes every complete frame at the start of b, unmasking payloads in
// place, and returns how many bytes it consumed; b[n:] is an incomplete frame to
// keep until more bytes arrive. Limits are checked against the declared length
// before waiting for (or allocating) the payload. *frag is the connection's
// fragmentation state: allocated when a fragmented message starts, set to nil
// when it completes.
func (d *frameDecoder) decode(b []byte, maxMessage int, frag **fragments, h frameHandler) (int, *wsError) {
	n := 0
	for n < len(b) {
		d.rd.Reset(b[n:])
		hdr, err := ws.ReadHeaderBuffer(&d.rd, d.scratch[:])
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return n, nil
		}
		if err != nil {
			return n, errBadHeader
		}
		if werr := checkHeader(hdr, maxMessage); werr != nil {
			return n, werr
		}
		hl := len(b) - n - d.rd.Len()
		if int64(len(b)-n-hl) < hdr.Length {
			return n, nil
		}
		payload := b[n+hl : n+hl+int(hdr.Length)]
		n += hl + int(hdr.Length)
		ws.Cipher(payload, hdr.Mask, 0)
		more, werr := dispatchFrame(hdr, payload, maxMessage, frag, h)
		if werr != nil {
			return n, werr
		}
		if !more {
			return n, nil
		}
	}
	return n, nil
}

func checkHeader(h ws.Header, maxMessage int) *wsError {
	if !h.Masked {
		return errNotMasked
	}
	if h.Rsv != 0 {
		return errReservedBits
	}
	if h.OpCode.IsControl() {
		if !h.Fin || h.Length > 125 {
			return errBadControl
		}
		return nil
	}
	if h.OpCode.IsReserved() {
		return errBadOpcode
	}
	if h.Length > int64(maxMessage) {
		return errTooBig
	}
	return nil
}

func dispatchFrame(h ws.Header, payload []byte, maxMessage int, frag **fragments, fh frameHandler) (bool, *wsError) {
	switch h.OpCode {
	case ws.OpPing, ws.OpPong, ws.OpClose:
		return fh.onControl(h.OpCode, payload), nil
	case ws.OpContinuation:
		f := *frag
		if f == nil {
			return false, errUnexpectedCont
		}
		if len(f.buf)+len(payload) > maxMessage {
			return false, errTooBig
		}
		f.buf = append(f.buf, payload...)
		if !h.Fin {
			return true, nil
		}
		*frag = nil
		return deliverMessage(f.op, f.buf, fh)
	case ws.OpText, ws.OpBinary:
		if *frag != nil {
			return false, errExpectedCont
		}
		if !h.Fin {
			buf := make([]byte, len(payload), len(payload)*2+64)
			copy(buf, payload)
			*frag = &fragments{op: h.OpCode, buf: buf}
			return true, nil
		}
		return deliverMessage(h.OpCode, payload, fh)
	}
	return false, errBadOpcode
}

func deliverMessage(op ws.OpCode, payload []byte, fh frameHandler) (bool, *wsError) {
	if op == ws.OpText && !utf8.Valid(payload) {
		return false, errBadUTF8
	}
	return fh.onMessage(op, payload), nil
}

// parseClose reads a close frame's payload. A payload of one byte, an invalid
// code or a reason that is not UTF-8 are protocol errors (RFC 6455 7.1.5, 7.4).
func parseClose(p []byte) (ws.StatusCode, *wsError) {
	switch {
	case len(p) == 0:
		return ws.StatusNoStatusRcvd, nil
	case len(p) == 1:
		return 0, &wsError{ws.StatusProtocolError, "close frame payload of one byte"}
	}
	code := ws.StatusCode(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return 0, &wsError{ws.StatusProtocolError, "invalid close code"}
	}
	if !utf8.Valid(p[2:]) {
		return 0, &wsError{ws.StatusInvalidFramePayloadData, "close reason is not UTF-8"}
	}
	return code, nil
}

func validCloseCode(c ws.StatusCode) bool {
	switch {
	case c >= 1000 && c <= 1003, c >= 1007 && c <= 1011:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}

// appendFrame appends an unmasked server frame (FIN set) holding payload.
func appendFrame(b []byte, op ws.OpCode, payload []byte) []byte {
	b = appendFrameHeader(b, op, len(payload))
	return append(b, payload...)
}

// textFrame returns a new server text frame holding msg.
func textFrame(msg []byte) []byte {
	return appendFrame(make([]byte, 0, frameHeaderSize(len(msg))+len(msg)), ws.OpText, msg)
}

// appendFrameHeader appends the header of an unmasked, final server frame
// whose payload is n bytes long.
func appendFrameHeader(b []byte, op ws.OpCode, n int) []byte {
	b = append(b, 0x80|byte(op))
	switch {
	case n < 126:
		return append(b, byte(n))
	case n <= 0xffff:
		return append(b, 126, byte(n>>8), byte(n))
	default:
		return append(b, 127,
			byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40), byte(uint64(n)>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// frameHeaderSize is the size of the header appendFrameHeader writes.
func frameHeaderSize(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xffff:
		return 4
	}
	return 10
}

// closeFrame builds a close frame with a status code and a reason, which is
// cut to fit the 125-byte control payload limit.
func closeFrame(code ws.StatusCode, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	p := make([]byte, 0, 2+2+len(reason))
	p = appendFrameHeader(p, ws.OpClose, 2+len(reason))
	p = binary.BigEndian.AppendUint16(p, uint16(code))
	return append(p, reason...)
}
