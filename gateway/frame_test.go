package gateway

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/gobwas/ws"
)

// clientFrame builds a masked client frame.
func clientFrame(fin bool, op ws.OpCode, payload []byte) []byte {
	b := []byte{byte(op)}
	if fin {
		b[0] |= 0x80
	}
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	b = append(b, mask[:]...)
	p := append([]byte(nil), payload...)
	ws.Cipher(p, mask, 0)
	return append(b, p...)
}

// recorder is a frameHandler that writes down what it sees.
type recorder struct {
	got      []string
	stopOnce bool
}

func (r *recorder) onMessage(op ws.OpCode, p []byte) bool {
	r.got = append(r.got, fmt.Sprintf("msg %d %s", op, p))
	return true
}

func (r *recorder) onControl(op ws.OpCode, p []byte) bool {
	r.got = append(r.got, fmt.Sprintf("ctl %d %q", op, p))
	return !(r.stopOnce && op == ws.OpClose)
}

// decodeAll feeds b to a decoder in chunks of size step (all at once when
// step is 0), keeping incomplete bytes between calls as a poller does.
func decodeAll(b []byte, step, maxMessage int) ([]string, *wsError, int) {
	var d frameDecoder
	var frag *fragments
	r := &recorder{}
	var pending []byte
	if step <= 0 {
		step = len(b)
	}
	for len(b) > 0 {
		k := min(step, len(b))
		pending = append(pending, b[:k]...)
		b = b[k:]
		n, err := d.decode(pending, maxMessage, &frag, r)
		if err != nil {
			return r.got, err, len(pending) - n
		}
		pending = append([]byte(nil), pending[n:]...)
	}
	return r.got, nil, len(pending)
}

func TestDecodeFrames(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 300)
	cases := []struct {
		name    string
		in      []byte
		max     int
		want    []string
		wantErr ws.StatusCode
	}{
		{
			name: "one text frame",
			in:   clientFrame(true, ws.OpText, []byte(`{"event":"pusher:ping"}`)),
			want: []string{`msg 1 {"event":"pusher:ping"}`},
		},
		{
			name: "two frames in one read",
			in:   append(clientFrame(true, ws.OpText, []byte("a")), clientFrame(true, ws.OpText, []byte("b"))...),
			want: []string{"msg 1 a", "msg 1 b"},
		},
		{
			name: "16-bit length",
			in:   clientFrame(true, ws.OpText, long),
			want: []string{"msg 1 " + string(long)},
		},
		{
			name: "fragmented with a ping between the fragments",
			in: bytes.Join([][]byte{
				clientFrame(false, ws.OpText, []byte("hel")),
				clientFrame(true, ws.OpPing, []byte("p")),
				clientFrame(false, ws.OpContinuation, []byte("lo ")),
				clientFrame(true, ws.OpContinuation, []byte("world")),
			}, nil),
			want: []string{`ctl 9 "p"`, "msg 1 hello world"},
		},
		{
			name:    "unmasked frame",
			in:      []byte{0x81, 0x01, 'a'},
			wantErr: ws.StatusProtocolError,
		},
		{
			name:    "declared length over the limit fails before the payload arrives",
			in:      clientFrame(true, ws.OpText, long)[:8],
			max:     100,
			wantErr: ws.StatusMessageTooBig,
		},
		{
			name: "fragments over the limit",
			in: append(clientFrame(false, ws.OpText, long[:60]),
				clientFrame(true, ws.OpContinuation, long[:60])...),
			max:     100,
			wantErr: ws.StatusMessageTooBig,
		},
		{
			name:    "control frame over 125 bytes",
			in:      clientFrame(true, ws.OpPing, long[:126]),
			wantErr: ws.StatusProtocolError,
		},
		{
			name:    "fragmented control frame",
			in:      clientFrame(false, ws.OpPing, []byte("x")),
			wantErr: ws.StatusProtocolError,
		},
		{
			name:    "reserved opcode",
			in:      clientFrame(true, 0x3, []byte("x")),
			wantErr: ws.StatusProtocolError,
		},
		{
			name:    "reserved bits",
			in:      append([]byte{0x80 | 0x40 | 0x1}, clientFrame(true, ws.OpText, []byte("x"))[1:]...),
			wantErr: ws.StatusProtocolError,
		},
		{
			name:    "continuation without a message",
			in:      clientFrame(true, ws.OpContinuation, []byte("x")),
			wantErr: ws.StatusProtocolError,
		},
		{
			name:    "new message inside a fragmented one",
			in:      append(clientFrame(false, ws.OpText, []byte("a")), clientFrame(true, ws.OpText, []byte("b"))...),
			wantErr: ws.StatusProtocolError,
		},
		{
			name:    "invalid UTF-8 text",
			in:      clientFrame(true, ws.OpText, []byte{0xff, 0xfe}),
			wantErr: ws.StatusInvalidFramePayloadData,
		},
		{
			name: "binary frames are not UTF-8 checked",
			in:   clientFrame(true, ws.OpBinary, []byte{0xff}),
			want: []string{"msg 2 \xff"},
		},
		{
			name:    "64-bit length with the top bit set",
			in:      []byte{0x81, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0},
			wantErr: ws.StatusProtocolError,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			max := tc.max
			if max == 0 {
				max = 1 << 16
			}
			// Whole, and split at every byte: the result must not depend on
			// how the bytes arrive.
			for _, step := range []int{0, 1, 2, 3, 7} {
				got, err, _ := decodeAll(tc.in, step, max)
				if tc.wantErr != 0 {
					if err == nil || err.code != tc.wantErr {
						t.Fatalf("step %d: err = %v, want code %d", step, err, tc.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d: unexpected error %v", step, err)
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Fatalf("step %d: got %q, want %q", step, got, tc.want)
				}
			}
		})
	}
}

func TestDecodeKeepsIncompleteFrame(t *testing.T) {
	f := clientFrame(true, ws.OpText, []byte("hello"))
	got, err, left := decodeAll(f[:len(f)-1], 0, 1024)
	if err != nil || len(got) != 0 || left != len(f)-1 {
		t.Fatalf("got %q err %v left %d", got, err, left)
	}
}

func TestDecodeStopsAfterClose(t *testing.T) {
	var d frameDecoder
	var frag *fragments
	r := &recorder{stopOnce: true}
	in := append(clientFrame(true, ws.OpClose, []byte{0x03, 0xe8}), clientFrame(true, ws.OpText, []byte("after"))...)
	n, err := d.decode(in, 1024, &frag, r)
	if err != nil || len(r.got) != 1 || n != len(clientFrame(true, ws.OpClose, []byte{0x03, 0xe8})) {
		t.Fatalf("n=%d err=%v got=%q", n, err, r.got)
	}
}

func TestParseClose(t *testing.T) {
	cases := []struct {
		name    string
		in      []byte
		want    ws.StatusCode
		wantErr bool
	}{
		{"empty", nil, ws.StatusNoStatusRcvd, false},
		{"normal", []byte{0x03, 0xe8}, 1000, false},
		{"with reason", append([]byte{0x0f, 0xa0}, "bye"...), 4000, false},
		{"one byte", []byte{0x03}, 0, true},
		{"reserved code 1005", []byte{0x03, 0xed}, 0, true},
		{"code 999", []byte{0x03, 0xe7}, 0, true},
		{"code 5000", []byte{0x13, 0x88}, 0, true},
		{"reason not UTF-8", []byte{0x03, 0xe8, 0xff}, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseClose(tc.in)
			if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
				t.Fatalf("parseClose(%x) = %d, %v", tc.in, got, err)
			}
		})
	}
}

func TestServerFrames(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 70000} {
		p := bytes.Repeat([]byte("a"), n)
		f := appendFrame(nil, ws.OpText, p)
		if len(f) != frameHeaderSize(n)+n {
			t.Fatalf("n=%d: frame length %d, header size %d", n, len(f), frameHeaderSize(n))
		}
		h, err := ws.ReadHeader(bytes.NewReader(f))
		if err != nil || !h.Fin || h.OpCode != ws.OpText || h.Masked || h.Length != int64(n) {
			t.Fatalf("n=%d: header %+v err %v", n, h, err)
		}
	}
	cf := closeFrame(4201, string(bytes.Repeat([]byte("é"), 100)))
	if len(cf) > 127 {
		t.Fatalf("close frame too long: %d", len(cf))
	}
	if _, err := parseClose(cf[2:]); err != nil {
		t.Fatalf("close frame payload invalid: %v", err)
	}
}

func TestEventFrameAddsSerial(t *testing.T) {
	f := eventFrame([]byte(`{"event":"e","channel":"c","data":"d"}`), 42)
	h, _ := ws.ReadHeader(bytes.NewReader(f))
	body := f[len(f)-int(h.Length):]
	if string(body) != `{"event":"e","channel":"c","data":"d","serial":42}` {
		t.Fatalf("got %s", body)
	}
	f = eventFrame([]byte(`{"event":"e"}`), 0)
	if !bytes.HasSuffix(f, []byte(`{"event":"e"}`)) {
		t.Fatalf("serial 0 must leave the payload alone: %s", f)
	}
}

// FuzzDecode feeds arbitrary bytes, split at an arbitrary point, to the
// decoder: it must never panic, and the split must not change the outcome.
func FuzzDecode(f *testing.F) {
	f.Add(clientFrame(true, ws.OpText, []byte(`{"event":"pusher:ping","data":{}}`)), 3)
	f.Add(append(clientFrame(false, ws.OpText, []byte("a")), clientFrame(true, ws.OpContinuation, []byte("b"))...), 5)
	f.Add(clientFrame(true, ws.OpClose, []byte{0x03, 0xe8}), 1)
	f.Add([]byte{0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 2)
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		whole, werr, wleft := decodeAll(in, 0, 4096)
		if split <= 0 {
			split = 1
		}
		parts, perr, pleft := decodeAll(in, split%17+1, 4096)
		if (werr == nil) != (perr == nil) {
			t.Fatalf("whole err %v, split err %v", werr, perr)
		}
		if werr == nil && (fmt.Sprint(whole) != fmt.Sprint(parts) || wleft != pleft) {
			t.Fatalf("whole %q (left %d) != split %q (left %d)", whole, wleft, parts, pleft)
		}
	})
}

func BenchmarkDecodeFrame(b *testing.B) {
	in := clientFrame(true, ws.OpText, []byte(`{"event":"client-typing","channel":"private-chat","data":{"user":"42"}}`))
	var d frameDecoder
	var frag *fragments
	h := nopHandler{}
	buf := make([]byte, len(in))
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		copy(buf, in)
		if n, err := d.decode(buf, 4096, &frag, h); err != nil || n != len(in) {
			b.Fatal(err)
		}
	}
}

type nopHandler struct{}

func (nopHandler) onMessage(ws.OpCode, []byte) bool { return true }
func (nopHandler) onControl(ws.OpCode, []byte) bool { return true }
