package protocol

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// Fuzz targets for every parser. Each checks a property besides "no panic".
// Run one with: go test ./protocol/ -run=^$ -fuzz=FuzzDecodeMessage -fuzztime=5s

// wsFrames are docs/protocol.md's example client frames (vectors A and E of
// §9.6 among them) and a few malformed ones, used as seeds.
var wsFrames = []string{
	`{"event":"pusher:ping","data":{}}`,
	`{"event":"pusher:pong","data":{}}`,
	`{"event":"pusher:ping","data":"{}"}`,
	`{"event":"pusher:subscribe","data":{"auth":"","channel":"my-channel"}}`,
	`{"event":"pusher:subscribe","data":{"channel":"presence-chat","auth":"278d425bdf160c739803:2b6cfa1ae3c73d46e10671bf81b683ef252297ee62a03c09955d0f6719f3bfda","channel_data":"{\"user_id\":\"42\",\"user_info\":{\"name\":\"Alice\"}}"}}`,
	`{"event":"pusher:signin","data":{"auth":"278d425bdf160c739803:3a73068960e68d0b303676e9ac1216ad2f426dcad01ef300c31c4021289e9b0a","user_data":"{\"id\":\"42\",\"user_info\":{\"name\":\"Alice\"},\"watchlist\":[\"7\",\"8\"]}"}}`,
	`{"event":"pusher:unsubscribe","data":{"channel":"my-channel"}}`,
	`{"event":"client-typing","channel":"private-chat.1","data":{"user":"bob"}}`,
	`{"event":"client-\u00e9","channel":null,"data":"str"}`,
	`{"Event":"x"}`,
	`[1,2]`,
	`{"event":"x"}garbage`,
}

func FuzzDecodeMessage(f *testing.F) {
	for _, s := range wsFrames {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		// Differential check against encoding/json (exact keys, last wins).
		var ref map[string]json.RawMessage
		refErr := json.Unmarshal(b, &ref)
		refOK := refErr == nil && ref != nil
		var ev, ch string
		if refOK {
			refOK = json.Unmarshal(ref["event"], &ev) == nil && ev != "" && ref["event"][0] == '"'
		}
		if refOK && ref["channel"] != nil && string(ref["channel"]) != "null" {
			refOK = ref["channel"][0] == '"' && json.Unmarshal(ref["channel"], &ch) == nil
		}
		if refOK != (err == nil) {
			t.Fatalf("DecodeMessage(%q) err = %v, encoding/json says ok=%v", b, err, refOK)
		}
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || pe.Message != "Invalid message format" {
				t.Fatalf("error %#v is not the Invalid message format *Error", err)
			}
			return
		}
		if m.Event != ev || m.Channel != ch {
			t.Fatalf("DecodeMessage = %q/%q, encoding/json %q/%q", m.Event, m.Channel, ev, ch)
		}
		// Re-encoding the message and decoding it again gives the same fields.
		out := AppendEventRaw(nil, m.Event, m.Channel, m.Data, "")
		if !json.Valid(out) {
			t.Fatalf("AppendEventRaw output is not JSON: %s", out)
		}
		m2, err := DecodeMessage(out)
		if err != nil || m2.Event != m.Event || m2.Channel != m.Channel || string(m2.Data) != string(m.Data) {
			t.Fatalf("round trip %+v -> %s -> %+v, %v", m, out, m2, err)
		}
	})
}

func FuzzDecodeSubscribe(f *testing.F) {
	f.Add([]byte(`{"channel":"presence-chat","auth":"k:s","channel_data":"{\"user_id\":\"42\"}"}`))
	f.Add([]byte(`"{\"channel\":\"my-channel\",\"auth\":\"\"}"`))
	f.Add([]byte(`{"auth":null,"channel":"my-channel"}`))
	f.Add([]byte(`{"channel":1}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeSubscribe(b)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != 0 {
				t.Fatalf("error %#v is not an *Error with code 0", err)
			}
			return
		}
		if d.Channel == "" {
			t.Fatal("accepted an empty channel")
		}
		// Both wire forms of the decoded data decode to the same value.
		obj := []byte(`{"channel":`)
		obj = AppendJSONString(obj, d.Channel)
		obj = append(obj, `,"auth":`...)
		obj = AppendJSONString(obj, d.Auth)
		obj = append(obj, `,"channel_data":`...)
		obj = AppendJSONString(obj, d.ChannelData)
		obj = append(obj, '}')
		for _, form := range [][]byte{obj, AppendJSONStringBytes(nil, obj)} {
			d2, err := DecodeSubscribe(form)
			if err != nil || d2 != d {
				t.Fatalf("round trip %+v -> %s -> %+v, %v", d, form, d2, err)
			}
		}
		_ = ValidateChannelName(d.Channel, 0)
		_ = VerifyChannelAuth(vKey, vSecret, vSocket, d.Channel, d.ChannelData, d.Auth)
		_, _ = ParseChannelData(d.ChannelData)
	})
}

func FuzzDecodeSignin(f *testing.F) {
	f.Add([]byte(`{"auth":"278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba","user_data":"{\"id\":\"12345\"}"}`))
	f.Add([]byte(`"{\"auth\":\"k:s\",\"user_data\":\"{\\\"id\\\":\\\"1\\\"}\"}"`))
	f.Add([]byte(`{"auth":"k:s","user_data":"{\"id\":42,\"watchlist\":[\"7\"]}"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeSignin(b)
		if err != nil {
			return
		}
		if d.Auth == "" || d.UserData == "" {
			t.Fatalf("accepted empty fields: %+v", d)
		}
		obj := []byte(`{"auth":`)
		obj = AppendJSONString(obj, d.Auth)
		obj = append(obj, `,"user_data":`...)
		obj = AppendJSONString(obj, d.UserData)
		obj = append(obj, '}')
		if d2, err := DecodeSignin(obj); err != nil || d2 != d {
			t.Fatalf("round trip %+v -> %s -> %+v, %v", d, obj, d2, err)
		}
		_ = VerifyUserAuth(vKey, vSecret, vSocket, d.UserData, d.Auth)
		if u, err := ParseUserData(d.UserData); err == nil && u.ID == "" {
			t.Fatal("ParseUserData accepted an empty id")
		}
	})
}

// checkTrigger checks the invariants of a decoded trigger and that its
// delivery frame round-trips through encoding/json.
func checkTrigger(t *testing.T, tr Trigger, lim Limits) {
	t.Helper()
	if tr.Name == "" || strings.HasPrefix(tr.Name, "pusher:") || strings.HasPrefix(tr.Name, "pusher_internal:") {
		t.Fatalf("bad name %q accepted", tr.Name)
	}
	if len(tr.Data) > lim.MaxDataBytes || len(tr.Channels) == 0 || len(tr.Channels) > lim.MaxChannels {
		t.Fatalf("limits not enforced: %d bytes, %d channels", len(tr.Data), len(tr.Channels))
	}
	if tr.SocketID != "" && !ValidSocketID(tr.SocketID) {
		t.Fatalf("bad socket id %q accepted", tr.SocketID)
	}
	for i, ch := range tr.Channels {
		if ValidateChannelName(ch, lim.MaxChannelName) != nil || slices.Contains(tr.Channels[:i], ch) {
			t.Fatalf("bad or duplicate channel %q accepted", ch)
		}
		frame := AppendEvent(nil, tr.Name, ch, tr.Data, "")
		var got struct{ Event, Channel, Data string }
		if err := json.Unmarshal(frame, &got); err != nil {
			t.Fatalf("AppendEvent output %s: %v", frame, err)
		}
		if got.Event != tr.Name || got.Channel != ch || got.Data != tr.Data {
			t.Fatalf("AppendEvent round trip = %+v, want %q %q %q", got, tr.Name, ch, tr.Data)
		}
	}
}

func FuzzDecodeTrigger(f *testing.F) {
	f.Add([]byte(body94))
	f.Add([]byte(bodyM))
	f.Add([]byte(`{"name":"e","channel":"c","data":"d","socket_id":"1.2","info":"user_count,subscription_count"}`))
	f.Add([]byte(`{"name":"e","channels":["a","private-encrypted-b"],"data":"d"}`))
	f.Add([]byte(`{"name":"e\u0000\ud800","channels":["a"],"data":"\u00e9\ud83d\ude00"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		lim := Limits{MaxDataBytes: 64, MaxChannels: 3, MaxBatch: 2, MaxEventName: 16, MaxChannelName: 24}
		tr, err := DecodeTrigger(b, lim)
		if err != nil {
			var he *HTTPError
			if !errors.As(err, &he) || (he.Status != 400 && he.Status != 413) || !json.Valid(he.Body()) {
				t.Fatalf("error %#v is not a 400/413 *HTTPError", err)
			}
			return
		}
		checkTrigger(t, tr, lim)
	})
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(bodyK))
	f.Add([]byte(`{"batch":[]}`))
	f.Add([]byte(`{"batch":[{"name":"e","channels":["a"],"data":"d"}]}`))
	f.Add([]byte(batchJSON(3)))
	f.Fuzz(func(t *testing.T, b []byte) {
		lim := Limits{MaxDataBytes: 64, MaxChannels: 3, MaxBatch: 2, MaxEventName: 16, MaxChannelName: 24}
		trs, err := DecodeBatch(b, lim)
		if err != nil {
			var he *HTTPError
			if !errors.As(err, &he) || (he.Status != 400 && he.Status != 413) || trs != nil {
				t.Fatalf("error %#v (result %v) is not a bare 400/413 *HTTPError", err, trs)
			}
			return
		}
		if len(trs) == 0 || len(trs) > lim.MaxBatch {
			t.Fatalf("batch of %d accepted", len(trs))
		}
		for _, tr := range trs {
			if len(tr.Channels) != 1 {
				t.Fatalf("batch item with %d channels", len(tr.Channels))
			}
			checkTrigger(t, tr, lim)
		}
	})
}

func FuzzCanonicalQuery(f *testing.F) {
	for _, v := range restVectors {
		f.Add(v.query + "&auth_signature=" + v.sig)
	}
	f.Add("auth_key=foo&Name=Something%20else")
	f.Add("info=user_count%2Csubscription_count&a=b+c&channels[]=x&channels[]=y")
	f.Add("a=%zz&&=&%")
	f.Fuzz(func(t *testing.T, raw string) {
		q1, err1 := CanonicalQuery(raw, false)
		q2, err2 := CanonicalQuery(raw, false)
		if q1 != q2 || (err1 == nil) != (err2 == nil) {
			t.Fatalf("not deterministic: %q/%v vs %q/%v", q1, err1, q2, err2)
		}
		p1, perr := CanonicalQuery(raw, true)
		if (perr == nil) != (err1 == nil) {
			t.Fatalf("plusAsSpace changes validity: %v vs %v", err1, perr)
		}
		if !strings.Contains(raw, "+") && p1 != q1 {
			t.Fatalf("plusAsSpace changed a query without '+': %q vs %q", q1, p1)
		}
		if err1 != nil && q1 != "" {
			t.Fatalf("error %v with output %q", err1, q1)
		}
		if !strings.Contains(raw, "%") && !strings.Contains(strings.ToLower(raw), "auth_signature") {
			if want, ok := naiveCanonical(raw); ok && q1 != want {
				t.Fatalf("CanonicalQuery(%q) = %q, want %q", raw, q1, want)
			}
		}
	})
}

// naiveCanonical is a simple model of CanonicalQuery for queries without
// escapes or auth_signature; ok is false when keys repeat (after
// lower-casing), which the model does not handle.
func naiveCanonical(raw string) (string, bool) {
	var pairs []queryParam
	seen := map[string]bool{}
	for seg := range strings.SplitSeq(raw, "&") {
		if seg == "" {
			continue
		}
		k, v, _ := strings.Cut(seg, "=")
		k = asciiLower(k)
		if seen[k] {
			return "", false
		}
		seen[k] = true
		pairs = append(pairs, queryParam{key: k, value: v})
	}
	slices.SortFunc(pairs, func(a, b queryParam) int { return strings.Compare(a.key, b.key) })
	out := make([]string, len(pairs))
	for i, p := range pairs {
		out[i] = p.key + "=" + p.value
	}
	return strings.Join(out, "&"), true
}

func FuzzVerifyREST(f *testing.F) {
	for _, v := range restVectors {
		f.Add(v.method, v.path, v.query+"&auth_signature="+v.sig, []byte(v.body), "x y,z")
	}
	f.Add("GET", "/apps/3/channels/%zz", "auth_key=278d425bdf160c739803&auth_timestamp=99999999999999999&auth_version=1.0", []byte(nil), "")
	f.Add("GET", "/apps/3/channels", "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&x=%", []byte("{}"), "+%2B")
	f.Fuzz(func(t *testing.T, method, path, rawQuery string, body []byte, value string) {
		now := time.Unix(vTime, 0)
		err := VerifyREST(RESTRequest{Method: method, Path: path, RawQuery: rawQuery, Body: body}, vKey, vSecret, now)
		if err != nil {
			var he *HTTPError
			if !errors.As(err, &he) || (he.Status != 400 && he.Status != 401) {
				t.Fatalf("error %#v is not a 400/401 *HTTPError", err)
			}
		}
		// Whatever SignREST signs, VerifyREST accepts.
		params := map[string]string{"info": value, "filter_by_prefix": value + "+"}
		q := SignREST(method, path, params, body, vKey, vSecret, now)
		r := RESTRequest{Method: method, Path: path, RawQuery: q, Body: body}
		if err := VerifyREST(r, vKey, vSecret, now); err != nil {
			t.Fatalf("VerifyREST rejected SignREST's query %q: %v", q, err)
		}
		if err := VerifyREST(r, vKey, vSecret, now.Add(MaxTimestampSkew+time.Second)); err == nil {
			t.Fatal("VerifyREST accepted an expired timestamp")
		}
	})
}

func FuzzParseSocketID(f *testing.F) {
	for _, s := range []string{"1234.1234", "218656.9503498", "0.0", "01.2", "1.2.3", "abc.1", "-1.2", "18446744073709551616.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseSocketID(s)
		if (err == nil) != ValidSocketID(s) {
			t.Fatal("ValidSocketID disagrees with ParseSocketID")
		}
		if err != nil {
			return
		}
		canon := id.String()
		if string(id.AppendTo(nil)) != canon {
			t.Fatal("AppendTo disagrees with String")
		}
		if back, err := ParseSocketID(canon); err != nil || back != id {
			t.Fatalf("ParseSocketID(%q) = %v, %v; want %v", canon, back, err, id)
		}
		node, seq, _ := strings.Cut(s, ".")
		if (len(node) == 1 || node[0] != '0') && (len(seq) == 1 || seq[0] != '0') && canon != s {
			t.Fatalf("ParseSocketID(%q).String() = %q", s, canon)
		}
	})
}

func FuzzValidateChannelName(f *testing.F) {
	for _, s := range []string{"my-channel", "private-App.Models.User.1", "presence-cache-room", "#server-to-user-42",
		"#server-to-user-", "#foo", "a b", "", "private-encrypted-cache-x", strings.Repeat("a", 201)} {
		f.Add(s, 0)
	}
	f.Fuzz(func(t *testing.T, name string, maxLen int) {
		err := ValidateChannelName(name, maxLen)
		kind, cache := Classify(name)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != 0 || !strings.Contains(pe.Message, "'"+name+"'") {
				t.Fatalf("error %#v does not name the channel", err)
			}
			return
		}
		limit := maxLen
		if limit <= 0 {
			limit = DefaultMaxChannelNameLength
		}
		if name == "" || len(name) > limit {
			t.Fatalf("accepted %q (limit %d)", name, limit)
		}
		id, isS2U := ServerToUserID(name)
		for i := 0; i < len(name); i++ {
			if !nameChars[name[i]] && !(isS2U && i < len(ServerToUserPrefix)) {
				t.Fatalf("accepted %q with byte %q", name, name[i])
			}
		}
		if isS2U != (kind == ServerToUser) || (isS2U && (cache || ServerToUserChannel(id) != name)) {
			t.Fatalf("Classify(%q) = %v, %v", name, kind, cache)
		}
		if frame := AppendSubscriptionSucceeded(nil, name, "{}"); !json.Valid(frame) {
			t.Fatalf("invalid frame %s", frame)
		}
	})
}
