package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
)

// WebSocket opcodes (RFC 6455 5.2).
const (
	opCont  = 0x0
	opText  = 0x1
	opBin   = 0x2
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

// maxFrame caps the payload a server frame may declare; larger ones fail the
// connection before anything is buffered for them.
const maxFrame = 1 << 20

var (
	errFrameTooBig = errors.New("frame too large")
	errFrameMasked = errors.New("masked server frame")
	errFrameRSV    = errors.New("reserved bits set")
)

// frame is one parsed server frame; payload aliases the input buffer.
type frame struct {
	fin     bool
	op      byte
	payload []byte
}

// parseFrame parses one server (unmasked) frame from the start of b. It
// returns the frame and the bytes it used, or n == 0 when b holds only part
// of a frame. It never allocates and checks the declared length before
// waiting for the payload.
func parseFrame(b []byte) (f frame, n int, err error) {
	if len(b) < 2 {
		return f, 0, nil
	}
	if b[0]&0x70 != 0 {
		return f, 0, errFrameRSV
	}
	if b[1]&0x80 != 0 {
		return f, 0, errFrameMasked
	}
	f.fin = b[0]&0x80 != 0
	f.op = b[0] & 0x0f
	hdr := 2
	length := uint64(b[1] & 0x7f)
	switch length {
	case 126:
		if len(b) < 4 {
			return f, 0, nil
		}
		length, hdr = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return f, 0, nil
		}
		length, hdr = binary.BigEndian.Uint64(b[2:]), 10
	}
	if length > maxFrame {
		return f, 0, errFrameTooBig
	}
	if uint64(len(b)-hdr) < length {
		return f, 0, nil
	}
	end := hdr + int(length)
	f.payload = b[hdr:end]
	return f, end, nil
}

// appendClientFrame appends a final, masked client frame with the given
// opcode and payload to dst (RFC 6455 5.3). mask is the masking key.
func appendClientFrame(dst []byte, op byte, payload []byte, mask uint32) []byte {
	dst = append(dst, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	var key [4]byte
	binary.BigEndian.PutUint32(key[:], mask)
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	for i := range payload {
		dst[start+i] ^= key[i&3]
	}
	return dst
}

// Byte patterns the scanners look for. Server frames are JSON objects whose
// data is a JSON string, so keys inside data appear escaped (\"t\":).
var (
	keyEvent   = []byte(`"event":"`)
	keyChannel = []byte(`"channel":"`)
	keyCode    = []byte(`"code":`)
	keyDataT   = []byte(`\"t\":`)
	keyDataI   = []byte(`\"i\":`)
	prefPusher = []byte("pusher")
)

// eventName returns the event name of a Pusher message (no unescaping: the
// events the bench cares about have plain names), or nil.
func eventName(msg []byte) []byte {
	return stringAfter(msg, keyEvent)
}

// stringAfter returns the bytes between key (which ends with an opening
// quote) and the next quote, or nil.
func stringAfter(msg, key []byte) []byte {
	i := bytes.Index(msg, key)
	if i < 0 {
		return nil
	}
	rest := msg[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil
	}
	return rest[:j]
}

// intAfter parses the unsigned decimal right after key; ok is false when key
// is missing or not followed by a digit.
func intAfter(msg, key []byte) (v int64, ok bool) {
	i := bytes.Index(msg, key)
	if i < 0 {
		return 0, false
	}
	return parseUint(msg[i+len(key):])
}

// parseUint parses leading decimal digits; ok is false when there are none
// or the value does not fit an int64.
func parseUint(b []byte) (v int64, ok bool) {
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		d := int64(b[n] - '0')
		if v > (math.MaxInt64-d)/10 {
			return 0, false
		}
		v = v*10 + d
		n++
	}
	return v, n > 0
}

// benchEvent is what a receiver needs from a channel event.
type benchEvent struct {
	channel int   // k of "bench-<k>"
	sent    int64 // publisher's send time, unix nanoseconds
	seq     int64 // message sequence number
}

// parseBenchEvent extracts the channel index, send time and sequence number
// of an event published by this bench (data {"t":<ns>,"i":<seq>,...}). It
// does not allocate.
func parseBenchEvent(msg []byte) (ev benchEvent, ok bool) {
	ch := stringAfter(msg, keyChannel)
	if !bytes.HasPrefix(ch, []byte(channelPrefix)) {
		return ev, false
	}
	k, ok := parseUint(ch[len(channelPrefix):])
	if !ok || len(ch) != len(channelPrefix)+digits(k) {
		return ev, false
	}
	t, ok1 := intAfter(msg, keyDataT)
	i, ok2 := intAfter(msg, keyDataI)
	if !ok1 || !ok2 {
		return ev, false
	}
	return benchEvent{channel: int(k), sent: t, seq: i}, true
}

func digits(v int64) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

// channelPrefix names the bench channels: conn i subscribes to
// channelPrefix + strconv.Itoa(i % channels).
const channelPrefix = "bench-"
