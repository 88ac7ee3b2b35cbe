package testkit

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// ErrExited is returned (wrapped) by WaitReady when the process it waits
// for exits first.
var ErrExited = errors.New("process exited before it was ready")

// WaitReady polls GET http://addr/readyz (every 50 ms, each request bounded
// to 1 s) until it answers 200, and returns nil; or until exited is closed
// (nil: never), and returns an error wrapping ErrExited; or until timeout
// has passed, and returns an error with the last answer. It may be called
// from any goroutine.
func WaitReady(addr string, timeout time.Duration, exited <-chan struct{}) error {
	return WaitReadyURL("http://"+addr+"/readyz", nil, timeout, exited)
}

// WaitReadyURL is WaitReady for a whole /readyz URL, with a transport of
// the caller's (https:// to a node with a test certificate); nil: the
// default one.
func WaitReadyURL(url string, rt http.RoundTripper, timeout time.Duration, exited <-chan struct{}) error {
	c := &http.Client{Timeout: time.Second, Transport: rt}
	defer c.CloseIdleConnections()
	err := poll(timeout, 50*time.Millisecond, exited, func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errStopped):
		return fmt.Errorf("GET %s: %w", url, ErrExited)
	default:
		return fmt.Errorf("GET %s not 200 within %v (last: %v)", url, timeout, err)
	}
}
