package protocol

import (
	"crypto/rand"
	"encoding/binary"
	"strconv"
	"sync/atomic"
)

// SocketID identifies one connection: "<Node>.<Seq>" in decimal, matching
// ^\d+\.\d+$ as every official SDK requires. Generated ids have Node > 0.
type SocketID struct {
	Node uint64
	Seq  uint64
}

// maxSocketIDLen is the longest canonical socket id: two 20-digit uint64s and a dot.
const maxSocketIDLen = 41

// String returns the canonical form "<Node>.<Seq>" (no leading zeros).
func (s SocketID) String() string {
	var buf [maxSocketIDLen]byte
	return string(s.AppendTo(buf[:0]))
}

// AppendTo appends the canonical form of s to b. It does not allocate when b
// has room for 41 more bytes.
func (s SocketID) AppendTo(b []byte) []byte {
	b = strconv.AppendUint(b, s.Node, 10)
	b = append(b, '.')
	return strconv.AppendUint(b, s.Seq, 10)
}

// IsZero reports whether s is the zero SocketID (never generated).
func (s SocketID) IsZero() bool { return s == SocketID{} }

// ParseSocketID parses s, which must match ^\d+\.\d+$ exactly (ASCII digits,
// no sign, no spaces) with each part fitting a uint64. Leading zeros are
// accepted, as the SDKs accept them; String then returns the canonical form
// without them. Errors are *Error with Code 0. It does not allocate on success.
func ParseSocketID(s string) (SocketID, error) {
	dot := -1
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' && dot < 0 {
			dot = i
			continue
		}
		if c < '0' || c > '9' {
			return SocketID{}, invalidSocketID(s)
		}
	}
	if dot <= 0 || dot == len(s)-1 {
		return SocketID{}, invalidSocketID(s)
	}
	node, err1 := strconv.ParseUint(s[:dot], 10, 64)
	seq, err2 := strconv.ParseUint(s[dot+1:], 10, 64)
	if err1 != nil || err2 != nil {
		return SocketID{}, invalidSocketID(s)
	}
	return SocketID{Node: node, Seq: seq}, nil
}

func invalidSocketID(s string) error {
	return &Error{Message: "Invalid socket id '" + s + "'"}
}

// ValidSocketID reports whether ParseSocketID accepts s.
func ValidSocketID(s string) bool {
	_, err := ParseSocketID(s)
	return err == nil
}

// SocketIDs generates socket ids that are unique per generator: Node is
// fixed and Seq increments atomically from a random start below 2^40. Give
// every gateway node its own Node value to keep ids unique across the
// cluster. A SocketIDs is safe for concurrent use; create it with
// NewSocketIDs.
type SocketIDs struct {
	node uint64
	seq  atomic.Uint64
}

// NewSocketIDs returns a generator for node. node 0 picks a random node in
// [1, 2^31) from crypto/rand.
func NewSocketIDs(node uint64) *SocketIDs {
	if node == 0 {
		node = randomUint64()%(1<<31-1) + 1
	}
	g := &SocketIDs{node: node}
	g.seq.Store(randomUint64() % (1 << 40))
	return g
}

// Node is the first part of every id of this generator.
func (g *SocketIDs) Node() uint64 { return g.node }

// Next returns a new id. It never returns the same id twice for one
// generator (Seq would have to wrap past 2^64) and does not allocate.
func (g *SocketIDs) Next() SocketID {
	return SocketID{Node: g.node, Seq: g.seq.Add(1)}
}

// randomUint64 reads 8 bytes from crypto/rand, which never fails on the
// supported platforms (Go 1.24+ crashes the program instead of returning an error).
func randomUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}
