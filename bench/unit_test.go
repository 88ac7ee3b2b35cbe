package bench

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"herald/client"
)

// The query signedPost sends is client.SignQuery's, with nothing in params:
// to the letter the one of the example Pusher documents for signing POST
// /apps/3/events (client/sign_test.go checks the same vector field by field).
func TestSignedQueryVector(t *testing.T) {
	body := []byte(`{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`)
	q := client.SignQuery("278d425bdf160c739803", "7ad3773142a6692b25b8", http.MethodPost, "/apps/3/events", nil, body, time.Unix(1353088179, 0))
	want := "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0" +
		"&body_md5=ec365a775a4cd0599faeb73354201b6f" +
		"&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
	if q != want {
		t.Fatalf("got  %s\nwant %s", q, want)
	}
}

func TestParseFrame(t *testing.T) {
	long := bytes.Repeat([]byte("a"), 300)
	for _, tc := range []struct {
		name    string
		in      []byte
		n       int
		op      byte
		payload []byte
		err     error
	}{
		{name: "empty", in: nil},
		{name: "one byte", in: []byte{0x81}},
		{name: "text", in: []byte{0x81, 2, 'h', 'i', 0x81}, n: 4, op: opText, payload: []byte("hi")},
		{name: "partial payload", in: []byte{0x81, 3, 'h', 'i'}},
		{name: "16-bit length", in: append([]byte{0x81, 126, 1, 44}, long...), n: 304, op: opText, payload: long},
		{name: "16-bit partial header", in: []byte{0x81, 126, 1}},
		{name: "ping", in: []byte{0x89, 0}, n: 2, op: opPing, payload: []byte{}},
		{name: "masked", in: []byte{0x81, 0x82, 0, 0, 0, 0, 'h', 'i'}, err: errFrameMasked},
		{name: "rsv", in: []byte{0xC1, 0}, err: errFrameRSV},
		{name: "too big", in: []byte{0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0}, err: errFrameTooBig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, n, err := parseFrame(tc.in)
			if err != tc.err || n != tc.n {
				t.Fatalf("n %d err %v, want %d %v", n, err, tc.n, tc.err)
			}
			if n > 0 && (f.op != tc.op || !bytes.Equal(f.payload, tc.payload) || !f.fin) {
				t.Fatalf("frame %+v", f)
			}
		})
	}
}

func TestClientFrameRoundTrip(t *testing.T) {
	for _, size := range []int{0, 5, 125, 126, 65535, 65536} {
		payload := bytes.Repeat([]byte("x"), size)
		fr := appendClientFrame(nil, opText, payload, 0xdeadbeef)
		// Unmask, clear the mask bit, and read it as a server frame.
		hdr := len(fr) - size - 4
		key := fr[hdr : hdr+4]
		un := append([]byte{}, fr[:hdr]...)
		un[1] &^= 0x80
		for i := range size {
			un = append(un, fr[hdr+4+i]^key[i&3])
		}
		f, n, err := parseFrame(un)
		if err != nil || n != len(un) || !bytes.Equal(f.payload, payload) {
			t.Fatalf("size %d: n %d err %v", size, n, err)
		}
	}
}

// serverFrame is how a Pusher server delivers a published event.
func serverFrame(channel string, data string) []byte {
	d, _ := json.Marshal(data)
	return []byte(`{"event":"bench","channel":"` + channel + `","data":` + string(d) + `,"serial":7}`)
}

func TestParseBenchEvent(t *testing.T) {
	p := &publisher{cfg: &Config{Channels: 16, Payload: 100}}
	data := p.appendData(nil, 35, 1790000000123456789)
	var unescaped string
	if err := json.Unmarshal([]byte(`"`+string(data)+`"`), &unescaped); err != nil {
		t.Fatal(err)
	}
	if len(unescaped) != 100 {
		t.Fatalf("data is %d bytes, want 100: %s", len(unescaped), unescaped)
	}
	ev, ok := parseBenchEvent(serverFrame("bench-3", unescaped))
	if !ok || ev != (benchEvent{channel: 3, sent: 1790000000123456789, seq: 35}) {
		t.Fatalf("got %+v %v", ev, ok)
	}
	for _, bad := range [][]byte{
		serverFrame("other-3", unescaped),
		serverFrame("bench-03", unescaped),
		serverFrame("bench-3", `{"x":1}`),
		[]byte(`{"event":"bench","channel":"bench-1","data":"{\"t\":99999999999999999999,\"i\":1}"}`),
	} {
		if ev, ok := parseBenchEvent(bad); ok {
			t.Errorf("%s: parsed %+v", bad, ev)
		}
	}
	msg := serverFrame("bench-3", unescaped)
	if n := testing.AllocsPerRun(100, func() { parseBenchEvent(msg) }); n != 0 {
		t.Fatalf("parseBenchEvent allocates %v times", n)
	}
}

func TestPublisherBody(t *testing.T) {
	p := &publisher{cfg: &Config{Channels: 4, Payload: 100, Batch: 1}}
	var one struct {
		Name     string   `json:"name"`
		Channels []string `json:"channels"`
		Data     string   `json:"data"`
	}
	if err := json.Unmarshal(p.body(nil, 6, 1, 1700000000000000000), &one); err != nil {
		t.Fatal(err)
	}
	if one.Name != "bench" || len(one.Channels) != 1 || one.Channels[0] != "bench-2" || len(one.Data) != 100 {
		t.Fatalf("body %+v", one)
	}
	p.cfg.Batch = 3
	var batch struct {
		Batch []struct {
			Channel string `json:"channel"`
			Data    string `json:"data"`
		} `json:"batch"`
	}
	if err := json.Unmarshal(p.body(nil, 3, 3, 1700000000000000000), &batch); err != nil {
		t.Fatal(err)
	}
	if len(batch.Batch) != 3 || batch.Batch[0].Channel != "bench-3" || batch.Batch[1].Channel != "bench-0" ||
		!strings.Contains(batch.Batch[2].Data, `"i":5`) {
		t.Fatalf("batch %+v", batch)
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	for v := int64(1); v <= 100000; v++ {
		h.Record(v * 1000) // 1 µs .. 100 ms
	}
	for _, tc := range []struct {
		q    float64
		want int64
	}{{0.5, 50_000_000}, {0.9, 90_000_000}, {0.99, 99_000_000}, {1, 100_000_000}} {
		got := h.Quantile(tc.q)
		if d := float64(got-tc.want) / float64(tc.want); d < 0 || d > 0.01 {
			t.Errorf("q%v = %d, want %d (+1%%)", tc.q, got, tc.want)
		}
	}
	var w Histogram
	w.mergeWire(h.wire())
	if w.Quantile(0.99) != h.Quantile(0.99) || w.Count() != h.Count() || w.Max() != h.Max() {
		t.Fatal("wire round trip changed the histogram")
	}
	for i := range histBuckets {
		if histIndex(histUpper(i)) != i || (i > 0 && histIndex(histUpper(i-1)+1) != i) {
			t.Fatalf("bucket %d bounds are off", i)
		}
	}
}

func TestFailedSet(t *testing.T) {
	// 10 messages over 3 channels: channel 1 gets 1, 4, 7.
	f := newFailedSet([]int64{4, 4, 5, 99}, 3, 10)
	if f.count(1) != 1 || f.count(2) != 1 || f.count(0) != 0 {
		t.Fatalf("counts %v", f.counts)
	}
	seen := []uint64{0b111} // 1, 4, 7 received; 4 had failed
	if got := f.received(1, seen); got != 2 {
		t.Fatalf("received %d, want 2", got)
	}
	if msgsFor(0, 3, 10) != 4 || msgsFor(1, 3, 10) != 3 || msgsFor(2, 3, 10) != 3 || msgsFor(5, 8, 3) != 0 {
		t.Fatal("msgsFor")
	}
}

func FuzzParseFrame(f *testing.F) {
	f.Add([]byte{0x81, 2, 'h', 'i'})
	f.Add([]byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0, 1, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := parseFrame(b)
		if err == nil && n > 0 && (n > len(b) || len(fr.payload) > maxFrame) {
			t.Fatalf("n %d of %d", n, len(b))
		}
	})
}

func FuzzParseBenchEvent(f *testing.F) {
	f.Add(serverFrame("bench-3", `{"t":1,"i":2,"p":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if ev, ok := parseBenchEvent(b); ok && (ev.channel < 0 || ev.seq < 0 || ev.sent < 0) {
			t.Fatalf("%+v", ev)
		}
	})
}

// BenchmarkReceive is the receive hot path for one delivery: frame header,
// event name, bench fields.
func BenchmarkReceive(b *testing.B) {
	p := &publisher{cfg: &Config{Channels: 16, Payload: 100}}
	var data string
	_ = json.Unmarshal([]byte(`"`+string(p.appendData(nil, 35, 1790000000123456789))+`"`), &data)
	msg := serverFrame("bench-3", data)
	fr := append([]byte{0x81, 126, byte(len(msg) >> 8), byte(len(msg))}, msg...)
	b.ReportAllocs()
	b.SetBytes(int64(len(fr)))
	for b.Loop() {
		f, n, err := parseFrame(fr)
		if err != nil || n == 0 || bytes.HasPrefix(eventName(f.payload), prefPusher) {
			b.Fatal("bad frame")
		}
		if _, ok := parseBenchEvent(f.payload); !ok {
			b.Fatal("bad event")
		}
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	v := int64(12345)
	for b.Loop() {
		h.Record(v)
		v = v*7 + 13&0xffffffff
	}
}
