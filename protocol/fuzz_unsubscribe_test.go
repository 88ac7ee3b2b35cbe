package protocol

import (
	"errors"
	"testing"
)

func FuzzDecodeUnsubscribe(f *testing.F) {
	f.Add([]byte(`{"channel":"my-channel"}`))
	f.Add([]byte(`"{\"channel\":\"my-channel\"}"`))
	f.Add([]byte(`{"channel":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := DecodeUnsubscribe(b)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %#v is not an *Error", err)
			}
			return
		}
		obj := AppendJSONString([]byte(`{"channel":`), name)
		obj = append(obj, '}')
		if again, err := DecodeUnsubscribe(obj); err != nil || again != name {
			t.Fatalf("round trip %q -> %s -> %q, %v", name, obj, again, err)
		}
	})
}
