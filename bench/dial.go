package bench

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// target is where a worker's sockets go and what they send on the way in.
// It is read-only after newTarget and shared by the pollers; the
// unix.Sockaddr values the syscalls need are built per call, because the
// syscalls write into them.
type target struct {
	family  int      // unix.AF_INET or unix.AF_INET6
	ip      [16]byte // server address (first 4 bytes for IPv4)
	port    int
	sources [][4]byte // IPv4 source addresses to bind, in order; nil = let the kernel pick
	request []byte    // the HTTP upgrade request, the same for every socket
	accept  []byte    // the Sec-WebSocket-Accept value the server must answer
}

func (t *target) sockaddr() unix.Sockaddr {
	if t.family == unix.AF_INET {
		sa := &unix.SockaddrInet4{Port: t.port}
		copy(sa.Addr[:], t.ip[:4])
		return sa
	}
	return &unix.SockaddrInet6{Port: t.port, Addr: t.ip}
}

// newTarget resolves addr ("host:port"), builds the upgrade request for path
// and parses the source addresses.
func newTarget(addr, host, path string, sources []string) (*target, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, err
	}
	t := &target{port: ta.Port, family: unix.AF_INET6}
	if ip4 := ta.IP.To4(); ip4 != nil {
		copy(t.ip[:], ip4)
		t.family = unix.AF_INET
	} else {
		copy(t.ip[:], ta.IP.To16())
	}
	for _, s := range sources {
		ip := net.ParseIP(s).To4()
		if ip == nil || t.family != unix.AF_INET {
			return nil, errors.New("bench: source address " + s + " is not IPv4 or the target is not IPv4")
		}
		t.sources = append(t.sources, [4]byte(ip))
	}
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	key := base64.StdEncoding.EncodeToString(nonce[:])
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	t.accept = []byte(base64.StdEncoding.EncodeToString(sum[:]))
	t.request = []byte("GET " + path + " HTTP/1.1\r\nHost: " + host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
		"\r\nSec-WebSocket-Version: 13\r\nUser-Agent: herald-bench\r\n\r\n")
	return t, nil
}

// openSocket creates a non-blocking TCP socket bound to source src (an
// index into t.sources; -1 for none) and starts connecting it. The connect
// normally completes later (EINPROGRESS); the caller waits for EPOLLOUT.
// Safe for concurrent use.
func (t *target) openSocket(src int) (int, error) {
	fd, err := unix.Socket(t.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if src >= 0 {
		// Choose the port at connect time, per 4-tuple, not at bind time.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: t.sources[src]}); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := unix.Connect(fd, t.sockaddr()); err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// closeSocket closes fd with an RST (SO_LINGER 0), so the client side keeps
// no TIME_WAIT entry and the next run can reuse the ports.
func closeSocket(fd int) {
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(fd)
}

// socketError returns the pending error of a connecting socket.
func socketError(fd int) error {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if v != 0 {
		return unix.Errno(v)
	}
	return nil
}

// errReason names an error for the failure tables: the errno in lower case
// ("econnrefused"), else the error text.
func errReason(err error) string {
	var e unix.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return strings.ToLower(n)
		}
	}
	return err.Error()
}

// upgradeResult is the outcome of looking at the bytes of an HTTP upgrade
// response.
type upgradeResult int

const (
	upgradeMore upgradeResult = iota // the header is not complete yet
	upgradeOK                        // 101 with the right accept value
	upgradeBad                       // anything else; see the reason
)

// maxUpgradeResponse bounds the response header a socket may buffer.
const maxUpgradeResponse = 16 << 10

// parseUpgrade checks the server's answer to the upgrade request in b. On
// upgradeOK, n is the length of the header (frames may follow it).
func (t *target) parseUpgrade(b []byte) (res upgradeResult, n int, reason string) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if len(b) > maxUpgradeResponse {
			return upgradeBad, 0, "bad_handshake"
		}
		return upgradeMore, 0, ""
	}
	head := b[:end]
	line := head
	if i := bytes.IndexByte(head, '\r'); i >= 0 {
		line = head[:i]
	}
	fields := bytes.Fields(line)
	if len(fields) < 2 || !bytes.HasPrefix(fields[0], []byte("HTTP/1.")) {
		return upgradeBad, 0, "bad_handshake"
	}
	if code, _ := strconv.Atoi(string(fields[1])); code != 101 {
		return upgradeBad, 0, "http_" + string(fields[1])
	}
	if !bytes.Contains(head, t.accept) {
		return upgradeBad, 0, "bad_accept"
	}
	return upgradeOK, end + 4, ""
}
