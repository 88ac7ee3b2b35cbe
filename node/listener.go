package node

import (
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// patientListener keeps accepting when the process runs out of file
// descriptors (or the kernel out of socket memory): fasthttp treats every
// accept error but a timeout as fatal and stops serving, which would take the
// node down with every connected client at exactly the moment it is fullest.
// Instead Accept waits, with a growing pause, until a descriptor frees up;
// the connections already open are untouched.
//
// The client port's accept4 now runs on the gateway's pollers, which pause
// the same way themselves (gateway/accept.go pauseAccept); this wraps the
// listener they hand fasthttp its connections through, and stays for any
// listener whose Accept can fail so.
type patientListener struct {
	net.Listener
	log      *slog.Logger
	exhausts atomic.Uint64
	lastLog  atomic.Int64 // unix nanos of the last warning
}

func (l *patientListener) Accept() (net.Conn, error) {
	pause := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err == nil || !resourceExhausted(err) {
			return c, err
		}
		l.exhausts.Add(1)
		if now, last := time.Now().UnixNano(), l.lastLog.Load(); now-last > int64(10*time.Second) && l.lastLog.CompareAndSwap(last, now) {
			l.log.Warn("accept paused: out of descriptors or socket memory (warned at most every 10 s)",
				"err", err, "times", l.exhausts.Load())
		}
		time.Sleep(pause)
		pause = min(2*pause, time.Second)
	}
}

func resourceExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}
