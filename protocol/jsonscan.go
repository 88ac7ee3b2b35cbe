package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// This file is a minimal scanner over the top level of a JSON object. It
// lets the decoders match keys exactly (encoding/json matches struct fields
// case-insensitively) and take raw value spans without allocating. Every
// entry point validates its input with json.Valid first; the skip functions
// still check bounds so malformed input can never make them panic.

var (
	errNotJSON   = errors.New("protocol: invalid JSON")
	errNotObject = errors.New("protocol: JSON value is not an object")
	errNotArray  = errors.New("protocol: JSON value is not an array")
	errNotString = errors.New("protocol: JSON value is not a string")
)

// eachField calls fn for every member of the JSON object b, in order (so for
// a repeated key the last call wins, as with encoding/json). key is the
// decoded key and aliases b unless it contained escapes; val is the raw
// value with surrounding whitespace trimmed and aliases b. Neither may be
// retained after fn returns without copying. b must be exactly one JSON
// object, optionally surrounded by whitespace.
func eachField(b []byte, fn func(key, val []byte) error) error {
	if !json.Valid(b) {
		return errNotJSON
	}
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errNotObject
	}
	i = skipWS(b, i+1)
	for i < len(b) && b[i] == '"' {
		ke := skipString(b, i)
		key := rawKey(b[i:ke])
		i = skipWS(b, ke) + 1 // ':'
		vs := skipWS(b, i)
		ve := skipValue(b, vs)
		if vs > len(b) || ve > len(b) || vs > ve {
			return errNotJSON
		}
		if err := fn(key, b[vs:ve]); err != nil {
			return err
		}
		i = skipWS(b, ve)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
		}
	}
	return nil
}

// eachElement calls fn for every element of the JSON array b, in order, with
// its index. val aliases b. b must be exactly one JSON array.
func eachElement(b []byte, fn func(i int, val []byte) error) error {
	if !json.Valid(b) {
		return errNotJSON
	}
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return errNotArray
	}
	i = skipWS(b, i+1)
	for n := 0; i < len(b) && b[i] != ']'; n++ {
		ve := skipValue(b, i)
		if ve > len(b) || i > ve {
			return errNotJSON
		}
		if err := fn(n, b[i:ve]); err != nil {
			return err
		}
		i = skipWS(b, ve)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
		}
	}
	return nil
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just past the string literal starting at
// b[i] == '"', or len(b) if it is unterminated.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index just past the JSON value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
		i++
	}
	return i
}

// rawKey returns the decoded key of the string literal lit (quotes
// included), aliasing lit when no decoding is needed.
func rawKey(lit []byte) []byte {
	if len(lit) >= 2 && bytes.IndexByte(lit, '\\') < 0 && utf8.Valid(lit) {
		return lit[1 : len(lit)-1]
	}
	var s string
	if json.Unmarshal(lit, &s) != nil {
		return nil
	}
	return []byte(s)
}

// isNull reports whether the raw value v is the literal null.
func isNull(v []byte) bool { return string(v) == "null" }

// decodeString decodes the raw JSON value v, which must be a string
// literal taken from input that passed json.Valid. Invalid UTF-8 is replaced by U+FFFD, as encoding/json does.
func decodeString(v []byte) (string, error) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", errNotString
	}
	if bytes.IndexByte(v, '\\') < 0 && utf8.Valid(v) {
		return string(v[1 : len(v)-1]), nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", err
	}
	return s, nil
}

// decodeOptString decodes v as a string; an absent (nil) or null value gives "".
func decodeOptString(v []byte) (string, error) {
	if v == nil || isNull(v) {
		return "", nil
	}
	return decodeString(v)
}

// unwrapObject returns the object text carried by data: data itself when it
// is a JSON object, or the content of data when it is a JSON string holding
// an object (docs/protocol.md §1.2: clients send either form). The result is
// checked for being an object by the eachField call that consumes it.
func unwrapObject(data []byte) ([]byte, error) {
	if !json.Valid(data) {
		return nil, errNotJSON
	}
	i := skipWS(data, 0)
	if i < len(data) && data[i] == '"' {
		s, err := decodeString(bytes.TrimSpace(data))
		if err != nil {
			return nil, err
		}
		return []byte(s), nil
	}
	return data, nil
}
