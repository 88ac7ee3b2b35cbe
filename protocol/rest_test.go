package protocol

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCanonicalQuery(t *testing.T) {
	tests := []struct {
		name        string
		raw         string
		plusAsSpace bool
		want        string
		wantErr     bool
	}{
		{
			name: "docs example lower-cases keys and keeps spaces",
			raw:  "auth_key=foo&Name=Something%20else",
			want: "auth_key=foo&name=Something else",
		},
		{
			name: "drops auth_signature, keeps body_md5",
			raw:  "b=2&auth_signature=abc&a=1&body_md5=x",
			want: "a=1&b=2&body_md5=x",
		},
		{
			name: "upper-case auth_signature dropped too",
			raw:  "AUTH_SIGNATURE=abc&a=1",
			want: "a=1",
		},
		{
			name: "sorted by byte order",
			raw:  "z=1&B=2&a_b=3&a=4",
			want: "a=4&a_b=3&b=2&z=1",
		},
		{
			name: "repeated keys joined in order",
			raw:  "channels%5B%5D=b&x=1&channels[]=a",
			want: "channels[]=b,a&x=1",
		},
		{
			name: "plus literal by default",
			raw:  "q=a+b",
			want: "q=a+b",
		},
		{
			name:        "plus as space on retry",
			raw:         "q=a+b%2Bc",
			plusAsSpace: true,
			want:        "q=a b+c",
		},
		{
			name: "empty segments skipped, key without value",
			raw:  "&&a&b=&",
			want: "a=&b=",
		},
		{
			name: "empty query",
			raw:  "",
			want: "",
		},
		{
			name: "no re-escaping of decoded bytes",
			raw:  "v=%26%3D%25",
			want: "v=&=%",
		},
		{
			name:    "truncated escape",
			raw:     "a=%4",
			wantErr: true,
		},
		{
			name:    "bad hex escape",
			raw:     "a=%zz",
			wantErr: true,
		},
		{
			name:    "bad escape in key",
			raw:     "%g1=1",
			wantErr: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CanonicalQuery(tc.raw, tc.plusAsSpace)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("CanonicalQuery(%q) = %q, want %q", tc.raw, got, tc.want)
			}
		})
	}
}

// signedRequest builds a request signed with the 9.4 credentials.
func signedRequest(method, path string, params map[string]string, body string, at time.Time) RESTRequest {
	q := SignREST(method, path, params, []byte(body), vKey, vSecret, at)
	return RESTRequest{Method: method, Path: path, RawQuery: q, Body: []byte(body)}
}

func TestVerifyRESTRules(t *testing.T) {
	now := time.Unix(vTime, 0)
	v := restVectors[0] // 9.4
	good := v.query + "&auth_signature=" + v.sig
	tests := []struct {
		name    string
		req     RESTRequest
		now     time.Time
		status  int
		message string // substring of the message; "" to skip
	}{
		{
			name: "vector ok",
			req:  RESTRequest{Method: "POST", Path: v.path, RawQuery: good, Body: []byte(v.body)},
			now:  now,
		},
		{
			name: "lower-case method ok",
			req:  RESTRequest{Method: "post", Path: v.path, RawQuery: good, Body: []byte(v.body)},
			now:  now,
		},
		{
			name: "timestamp exactly 600 s old ok",
			req:  RESTRequest{Method: "POST", Path: v.path, RawQuery: good, Body: []byte(v.body)},
			now:  now.Add(600 * time.Second),
		},
		{
			name: "timestamp exactly 600 s ahead ok",
			req:  RESTRequest{Method: "POST", Path: v.path, RawQuery: good, Body: []byte(v.body)},
			now:  now.Add(-600 * time.Second),
		},
		{
			name:    "timestamp 601 s old rejected",
			req:     RESTRequest{Method: "POST", Path: v.path, RawQuery: good, Body: []byte(v.body)},
			now:     now.Add(601 * time.Second),
			status:  401,
			message: "Timestamp expired: Given timestamp (2012-11-16T17:49:39Z) not within 600s of server time (2012-11-16T17:59:40Z)",
		},
		{
			name:    "timestamp 601 s ahead rejected",
			req:     RESTRequest{Method: "POST", Path: v.path, RawQuery: good, Body: []byte(v.body)},
			now:     now.Add(-601 * time.Second),
			status:  401,
			message: "Timestamp expired",
		},
		{
			name:    "auth_key missing",
			req:     RESTRequest{Method: "GET", Path: "/apps/3/channels", RawQuery: "auth_timestamp=1353088179&auth_version=1.0"},
			now:     now,
			status:  401,
			message: "Missing auth_key",
		},
		{
			name:    "auth_key wrong",
			req:     RESTRequest{Method: "GET", Path: "/apps/3/channels", RawQuery: "auth_key=nope&auth_timestamp=1353088179&auth_version=1.0"},
			now:     now,
			status:  401,
			message: "Invalid auth_key 'nope'",
		},
		{
			name:    "auth_version wrong",
			req:     RESTRequest{Method: "GET", Path: "/apps/3/channels", RawQuery: "auth_key=" + vKey + "&auth_timestamp=1353088179&auth_version=2.0"},
			now:     now,
			status:  401,
			message: "auth_version",
		},
		{
			name:    "auth_version missing",
			req:     RESTRequest{Method: "GET", Path: "/apps/3/channels", RawQuery: "auth_key=" + vKey + "&auth_timestamp=1353088179"},
			now:     now,
			status:  401,
			message: "auth_version",
		},
		{
			name:    "timestamp missing",
			req:     RESTRequest{Method: "GET", Path: "/apps/3/channels", RawQuery: "auth_key=" + vKey + "&auth_version=1.0"},
			now:     now,
			status:  401,
			message: "Missing auth_timestamp",
		},
		{
			name:    "timestamp not an integer",
			req:     RESTRequest{Method: "GET", Path: "/apps/3/channels", RawQuery: "auth_key=" + vKey + "&auth_timestamp=1353088179.5&auth_version=1.0"},
			now:     now,
			status:  401,
			message: "Invalid auth_timestamp",
		},
		{
			name:    "timestamp signed",
			req:     RESTRequest{Method: "GET", Path: "/apps/3/channels", RawQuery: "auth_key=" + vKey + "&auth_timestamp=-1&auth_version=1.0"},
			now:     now,
			status:  401,
			message: "Invalid auth_timestamp",
		},
		{
			name:    "timestamp overflow",
			req:     RESTRequest{Method: "GET", Path: "/apps/3/channels", RawQuery: "auth_key=" + vKey + "&auth_timestamp=99999999999999999999&auth_version=1.0"},
			now:     now,
			status:  401,
			message: "Invalid auth_timestamp",
		},
		{
			name:    "body_md5 missing",
			req:     RESTRequest{Method: "POST", Path: v.path, RawQuery: vAuth + "&auth_signature=" + v.sig, Body: []byte(v.body)},
			now:     now,
			status:  401,
			message: "Missing body_md5",
		},
		{
			name:    "body_md5 wrong",
			req:     RESTRequest{Method: "POST", Path: v.path, RawQuery: good, Body: []byte(v.body + " ")},
			now:     now,
			status:  401,
			message: "Invalid body_md5",
		},
		{
			name:    "body_md5 wrong on an empty body",
			req:     RESTRequest{Method: "POST", Path: v.path, RawQuery: good},
			now:     now,
			status:  401,
			message: "Invalid body_md5",
		},
		{
			name:    "body_md5 upper-case hex rejected",
			req:     RESTRequest{Method: "POST", Path: v.path, RawQuery: strings.ToUpper(v.query[len(vAuth):]) + "&" + vAuth + "&auth_signature=" + v.sig, Body: []byte(v.body)},
			now:     now,
			status:  401,
			message: "body_md5",
		},
		{
			name:    "signature upper-case hex rejected",
			req:     RESTRequest{Method: "POST", Path: v.path, RawQuery: v.query + "&auth_signature=" + strings.ToUpper(v.sig), Body: []byte(v.body)},
			now:     now,
			status:  401,
			message: "Invalid signature",
		},
		{
			name:   "signature missing",
			req:    RESTRequest{Method: "POST", Path: v.path, RawQuery: v.query, Body: []byte(v.body)},
			now:    now,
			status: 401,
			message: `Invalid signature: you should have sent HmacSHA256Hex("POST\n/apps/3/events\n` + v.query +
				`", your_secret_key), but you sent ""`,
		},
		{
			name:   "signature wrong: Pusher's message",
			req:    RESTRequest{Method: "POST", Path: v.path, RawQuery: v.query + "&auth_signature=abc", Body: []byte(v.body)},
			now:    now,
			status: 401,
			message: `Invalid signature: you should have sent HmacSHA256Hex("POST\n/apps/3/events\n` + v.query +
				`", your_secret_key), but you sent "abc"`,
		},
		{
			name:    "other method fails",
			req:     RESTRequest{Method: "PUT", Path: v.path, RawQuery: good, Body: []byte(v.body)},
			now:     now,
			status:  401,
			message: "Invalid signature",
		},
		{
			name:    "malformed escape is 400",
			req:     RESTRequest{Method: "GET", Path: "/apps/3/channels", RawQuery: good + "&x=%zz"},
			now:     now,
			status:  400,
			message: "Invalid query string",
		},
		{
			name: "plus retried as space",
			req:  signedRequest("GET", "/apps/3/channels", map[string]string{"filter_by_prefix": "a b"}, "", now),
			now:  now,
		},
		{
			name: "literal plus sent raw (node) ok",
			req: RESTRequest{Method: "GET", Path: "/apps/3/channels",
				RawQuery: vAuth + "&x=a+b&auth_signature=" + Sign(vSecret, "GET\n/apps/3/channels\n"+vAuth+"&x=a+b")},
			now: now,
		},
		{
			name: "path retried percent-decoded",
			req: RESTRequest{Method: "GET", Path: "/apps/3/channels/presence-%66oo",
				RawQuery: vAuth + "&auth_signature=" + Sign(vSecret, "GET\n/apps/3/channels/presence-foo\n"+vAuth)},
			now: now,
		},
		{
			name: "raw path signed as sent ok",
			req: RESTRequest{Method: "GET", Path: "/apps/3/channels/presence-%66oo",
				RawQuery: vAuth + "&auth_signature=" + Sign(vSecret, "GET\n/apps/3/channels/presence-%66oo\n"+vAuth)},
			now: now,
		},
		{
			name: "plus and path retried together",
			req: RESTRequest{Method: "GET", Path: "/apps/3/channels/%23server-to-user-1",
				RawQuery: vAuth + "&x=a+b&auth_signature=" + Sign(vSecret, "GET\n/apps/3/channels/#server-to-user-1\n"+vAuth+"&x=a b")},
			now: now,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyREST(tc.req, vKey, vSecret, tc.now)
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("VerifyREST: %v", err)
				}
				return
			}
			var he *HTTPError
			if !errors.As(err, &he) {
				t.Fatalf("err = %#v, want *HTTPError", err)
			}
			if he.Status != tc.status || !strings.Contains(he.Message, tc.message) {
				t.Fatalf("got %d %q, want %d containing %q", he.Status, he.Message, tc.status, tc.message)
			}
		})
	}
}

func TestSignRESTEscaping(t *testing.T) {
	now := time.Unix(vTime, 0)
	params := map[string]string{"info": "user_count,subscription_count", "q": "a b&c=d+e/é"}
	q := SignREST("get", "/apps/3/channels", params, nil, vKey, vSecret, now)
	if !strings.Contains(q, "info=user_count,subscription_count") || !strings.Contains(q, "q=a+b%26c%3Dd%2Be%2F%C3%A9") {
		t.Fatalf("SignREST wire form = %q", q)
	}
	if strings.Contains(q, "body_md5") {
		t.Fatalf("body_md5 present without a body: %q", q)
	}
	r := RESTRequest{Method: "GET", Path: "/apps/3/channels", RawQuery: q}
	if err := VerifyREST(r, vKey, vSecret, now); err != nil {
		t.Fatalf("VerifyREST: %v", err)
	}
}

func TestHTTPErrorBody(t *testing.T) {
	e := &HTTPError{Status: 401, Message: `Invalid "sig"` + "\n<x>"}
	if got, want := string(e.Body()), `{"error":"Invalid \"sig\"\n<x>","status":401}`; got != want {
		t.Fatalf("Body = %s, want %s", got, want)
	}
	if got, want := e.Error(), "401: Invalid \"sig\"\n<x>"; got != want {
		t.Fatalf("Error = %q, want %q", got, want)
	}
}
