package bus

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// A full disk, and recovery from it.
//
// The embedded JetStream does not recover from a full filesystem by itself
// (found in issue 18, reproduced on a small tmpfs):
//
//   - When another process fills the filesystem, the next block write of a
//     stream fails with ENOSPC. nats-server keeps that error in the stream's
//     store for good ("critical write error") and from then on stores
//     nothing and answers nothing: every publish waits for an ack that
//     never comes, also after the space is back.
//   - When Herald fills it, JetStream refuses with "insufficient resources"
//     (API error 10023) once its usage reaches its max_store, which it
//     computes once, at start, as 3/4 of the free space. Growing the
//     filesystem does not raise it.
//   - In a cluster a Raft write that runs out of space shuts JetStream down
//     on that server ("will be DISABLED").
//
// Both are cured by restarting JetStream inside the running server
// (ShutdownJetStream then EnableJetStream: what nats-server's own config
// reload does for a JetStream that turned itself off): the streams are
// loaded again from disk with a fresh store, and a dynamic max_store is
// computed again from the free space. Core NATS, the node's connection and
// its live subscriptions stay up meanwhile; only JetStream requests fail
// for the moment the restart takes.
//
// The watcher (diskLoop, embedded and leaf mode, streams on) looks once a
// DiskCheckInterval at four signals: free space on the store's filesystem
// (statfs) against a reserve, a write error the server logged (slogLogger
// calls onServerError), a 10023 refusal of a publish, and whether
// JetStream is still enabled. While any says full, Publish, PublishBatch
// and PublishAsync fail at once with ErrStoreFull instead of waiting for an
// ack, and StoreState says why (the node turns /readyz 503 and REST 507:
// docs/operations.md "Disk full"). Once free space is back above twice the
// reserve, the watcher restarts JetStream if the store is broken, disabled
// or its limit would now be higher, and clears the state when the restart
// worked. Reads of what is stored (history, cache, resume) go on while full.

// ErrStoreFull is the error of a publish refused because the node's store
// has no room: the disk is full, the store hit a write error, or
// JetStream's storage limit is reached. The errors are *StoreFullError,
// which match it with errors.Is.
var ErrStoreFull = errors.New("bus: store full")

// StoreFullError is a publish refused for a full store: Reason is one of
// the Store* reasons, Detail what was seen (it may name paths of the data
// dir: for logs, not for clients), Err the JetStream error if one came.
type StoreFullError struct {
	Reason string
	Detail string
	Err    error
}

func (e *StoreFullError) Error() string {
	return "bus: store full (" + e.Reason + "): " + e.Detail
}

// Is makes errors.Is(err, ErrStoreFull) true.
func (e *StoreFullError) Is(target error) bool { return target == ErrStoreFull }

func (e *StoreFullError) Unwrap() error { return e.Err }

// Reasons in StoreState.Reason (and in ErrStoreFull's wrapping errors).
const (
	StoreDiskFull          = "disk_full"          // free space on the data dir's filesystem below the reserve
	StoreWriteError        = "write_error"        // the store failed a write (no space left); JetStream restarts once space is back
	StoreLimit             = "store_limit"        // JetStream's storage limit (max_store) is reached
	StoreJetStreamDisabled = "jetstream_disabled" // JetStream turned itself off (a cluster's Raft write ran out of space)
)

// Defaults of the disk watcher (Config.DiskCheckInterval, Config.DiskReserve).
const (
	DefaultDiskCheckInterval = time.Second
	minDiskReserve           = 1 << 20   // the reserve is 1 % of the filesystem, at least this
	maxDiskReserve           = 256 << 20 // and at most this
	diskRestartBackoff       = 5 * time.Second

	// JetStream's API error codes for a storage limit (nats-server's
	// JSInsufficientResourcesErr and JSStorageResourcesExceededErr; nats.go
	// names neither).
	errCodeInsufficientResources jetstream.ErrorCode = 10023
	errCodeStorageExceeded       jetstream.ErrorCode = 10047
)

// StoreState is the node's store as the disk watcher last saw it.
type StoreState struct {
	Full   bool      `json:"full"`
	Reason string    `json:"reason,omitempty"` // one of the Store* reasons while Full
	Detail string    `json:"detail,omitempty"` // what was seen, for a person
	Since  time.Time `json:"since,omitzero"`   // when it became full
	// FreeBytes and TotalBytes are the store filesystem's space available
	// to the server and its size, from the last check (0 before the first,
	// and in external mode).
	FreeBytes    uint64 `json:"free_bytes"`
	TotalBytes   uint64 `json:"total_bytes"`
	ReserveBytes uint64 `json:"reserve_bytes"` // below this much free space the store counts as full
	// Refusals counts publishes refused with ErrStoreFull; Recoveries the
	// JetStream restarts the watcher made.
	Refusals   uint64 `json:"refusals"`
	Recoveries uint64 `json:"recoveries"`
}

// diskState is the watcher's state (fields of Bus.disk).
type diskState struct {
	full     atomic.Pointer[StoreState] // nil while not full; else Full, Reason, Detail, Since
	writeErr atomic.Pointer[string]     // a write error the server logged; cleared by a restart
	limitHit atomic.Bool                // a publish was refused with 10023; cleared below the limit or by a restart
	refusals atomic.Uint64
	restarts atomic.Uint64

	// restart is held for writing while JetStream restarts, and for reading
	// around the bus's own looks at the server's JetStream state (jsz):
	// nats-server's Jsz reads fields that EnableJetStream writes with no
	// lock of the server's (a data race in nats-server v2.15).
	restart sync.RWMutex

	mu          sync.Mutex    // guards the fields below
	free, total uint64        // last statfs
	reserve     uint64        // last computed reserve
	broken      chan struct{} // closed when a write error is seen; replaced after a restart
	lastRestart time.Time
}

func (d *diskState) init() { d.broken = make(chan struct{}) }

// StoreState reports the store's state for readiness, metrics and status.
func (b *Bus) StoreState() StoreState {
	var st StoreState
	if f := b.disk.full.Load(); f != nil {
		st = *f
	}
	b.disk.mu.Lock()
	st.FreeBytes, st.TotalBytes, st.ReserveBytes = b.disk.free, b.disk.total, b.disk.reserve
	b.disk.mu.Unlock()
	st.Refusals = b.disk.refusals.Load()
	st.Recoveries = b.disk.restarts.Load()
	return st
}

// refuseFull is the error for a publish while the store is full, counted;
// nil while it is not. It is the first thing every publish checks.
func (b *Bus) refuseFull() error {
	f := b.disk.full.Load()
	if f == nil {
		return nil
	}
	b.disk.refusals.Add(1)
	return &StoreFullError{Reason: f.Reason, Detail: f.Detail}
}

// brokenCh is closed when the server reports a write error: a publish
// waiting for acks then stops waiting (none will come).
func (b *Bus) brokenCh() <-chan struct{} {
	b.disk.mu.Lock()
	defer b.disk.mu.Unlock()
	return b.disk.broken
}

// publishErr turns a publish's ack error into ErrStoreFull when JetStream
// refused for lack of storage (10023 insufficient resources, 10047 storage
// resources exceeded), and notes it for the watcher; other errors pass.
func (b *Bus) publishErr(err error) error {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return err
	}
	if apiErr.ErrorCode != errCodeInsufficientResources && apiErr.ErrorCode != errCodeStorageExceeded {
		return err
	}
	if b.srv != nil {
		b.disk.limitHit.Store(true)
		b.setFull(StoreLimit, "JetStream's storage limit is reached: "+apiErr.Description)
	}
	b.disk.refusals.Add(1)
	return &StoreFullError{Reason: StoreLimit, Detail: "JetStream's storage limit is reached", Err: err}
}

// waitBroken is the error of a publish that stopped waiting for its acks
// because the store broke meanwhile.
func (b *Bus) waitBroken() error {
	b.disk.refusals.Add(1)
	msg := "the store failed a write"
	if p := b.disk.writeErr.Load(); p != nil {
		msg = *p
	}
	return &StoreFullError{Reason: StoreWriteError, Detail: msg}
}

// onServerError sees every error and warning the embedded server logs
// (slogLogger). A write that ran out of space, or any critical write error
// of a store, makes the store broken until JetStream restarts. It runs on
// the server's goroutines: only atomics and one short lock.
func (b *Bus) onServerError(msg string) {
	if !storeFailure(msg) {
		return
	}
	if b.disk.writeErr.CompareAndSwap(nil, &msg) {
		b.disk.mu.Lock()
		close(b.disk.broken)
		b.disk.mu.Unlock()
		b.setFull(StoreWriteError, msg)
	}
}

// storeFailure reports whether a server log line says a store write
// failed: nats-server's filestore, stream, consumer, meta group and Raft
// log each a "critical write error" (some capitalised) when a write fails
// for good, a store write that ran out of space says "no space left" (the
// test nats-server itself uses, isOutOfSpaceErr), and JetStream shutting
// itself down for it says "will be DISABLED".
func storeFailure(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "no space left") || strings.Contains(m, "critical write error") ||
		strings.Contains(m, "out of resources, will be disabled")
}

// setFull records the full state unless it is already full (the first
// reason stays until the state clears).
func (b *Bus) setFull(reason, detail string) {
	st := &StoreState{Full: true, Reason: reason, Detail: detail, Since: time.Now()}
	if b.disk.full.CompareAndSwap(nil, st) {
		b.log.Error("bus: store full: publishes are refused until it has room", "reason", reason, "detail", detail)
	}
}

// watchDisk reports whether this bus runs the disk watcher: an embedded
// server storing streams.
func (b *Bus) watchDisk() bool { return b.srv != nil && b.cfg.StreamEnabled }

// diskLoop checks the store every DiskCheckInterval until Close.
func (b *Bus) diskLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.DiskCheckInterval)
	defer t.Stop()
	b.checkDisk()
	for {
		select {
		case <-b.done:
			return
		case <-t.C:
			b.checkDisk()
		}
	}
}

// checkDisk is one look at the store: it sets or clears the full state and
// restarts JetStream when that is what brings it back.
func (b *Bus) checkDisk() {
	free, total, err := statfs(b.cfg.storeDir())
	if err != nil {
		b.log.Debug("bus: statfs of the store", "dir", b.cfg.storeDir(), "err", err)
		return
	}
	reserve := b.diskReserve(total)
	b.disk.mu.Lock()
	b.disk.free, b.disk.total, b.disk.reserve = free, total, reserve
	b.disk.mu.Unlock()

	enabled := b.srv.JetStreamEnabled()
	writeErr := b.disk.writeErr.Load() != nil
	roomy := free >= 2*reserve // hysteresis: full below the reserve, room again at twice it
	switch {
	case free < reserve:
		b.setFull(StoreDiskFull, fmt.Sprintf("%d bytes free on the data dir's filesystem, under the reserve of %d", free, reserve))
	case !enabled:
		b.setFull(StoreJetStreamDisabled, "JetStream is disabled")
	}
	if !roomy {
		return
	}
	limitHit := b.disk.limitHit.Load()
	growLimit := false
	if limitHit {
		limit, used := b.storeLimit()
		if used < limit-limit/50 { // the window expired old events: room below the limit again
			b.disk.limitHit.Store(false)
			limitHit = false
		} else {
			growLimit = wouldGrow(limit, used, free, reserve)
		}
	}
	if writeErr || !enabled || growLimit {
		if !b.restartJetStream() {
			return
		}
		limitHit = b.disk.limitHit.Load()
	}
	if limitHit || b.disk.writeErr.Load() != nil || !b.srv.JetStreamEnabled() {
		return
	}
	if f := b.disk.full.Swap(nil); f != nil {
		b.log.Warn("bus: store has room again: publishes are accepted", "was", f.Reason, "full_for", time.Since(f.Since).Round(time.Millisecond))
	}
}

// wouldGrow reports whether a JetStream restart would raise a dynamic
// storage limit meaningfully: nats-server sets it to 3/4 of the free space
// plus 3/4 of what the streams already hold (finalizeDynamicMaxStore).
func wouldGrow(limit, used int64, free, reserve uint64) bool {
	if limit <= 0 || used < 0 {
		return false
	}
	next := (int64(free)/4)*3 + (used/4)*3
	return next > limit+max(2*int64(reserve), limit/20)
}

// storeLimit is JetStream's storage limit and the bytes its file streams
// hold now (-1, -1 while JetStream is off).
func (b *Bus) storeLimit() (limit, used int64) {
	cfg := b.srv.JetStreamConfig()
	if cfg == nil {
		return -1, -1
	}
	jsz, err := b.jsz(&server.JSzOptions{})
	if err != nil || jsz == nil {
		return -1, -1
	}
	return cfg.MaxStore, int64(jsz.Store)
}

// restartJetStream shuts JetStream down and enables it again with the
// server's own config and a dynamic storage limit, at most once per
// diskRestartBackoff. It reports whether JetStream runs afterwards.
func (b *Bus) restartJetStream() bool {
	b.disk.mu.Lock()
	if time.Since(b.disk.lastRestart) < diskRestartBackoff {
		b.disk.mu.Unlock()
		return false
	}
	b.disk.lastRestart = time.Now()
	b.disk.mu.Unlock()

	why := "storage limit"
	if p := b.disk.writeErr.Load(); p != nil {
		why = *p
	} else if !b.srv.JetStreamEnabled() {
		why = "JetStream disabled"
	}
	b.log.Warn("bus: restarting JetStream to recover the store", "why", why)
	began := time.Now()
	if err := b.cycleJetStream(); err != nil {
		b.log.Error("bus: JetStream did not restart; retrying", "err", err, "in", diskRestartBackoff)
		return false
	}
	b.disk.restarts.Add(1)
	limit, _ := b.storeLimit()
	b.log.Warn("bus: JetStream restarted", "took", time.Since(began).Round(time.Millisecond), "max_store_bytes", limit)
	return true
}

// cycleJetStream shuts JetStream down (if it still runs), forgets what was
// seen of the old store, and enables JetStream again.
func (b *Bus) cycleJetStream() error {
	b.disk.restart.Lock()
	defer b.disk.restart.Unlock()
	if b.srv.JetStreamEnabled() {
		if err := b.srv.ShutdownJetStream(); err != nil {
			return fmt.Errorf("bus: shut JetStream down: %w", err)
		}
	}
	if err := b.waitJetStreamDown(jetStreamDownWait); err != nil {
		return err
	}
	// The state recorded before the restart is the old store's.
	b.disk.mu.Lock()
	if b.disk.writeErr.Load() != nil {
		b.disk.broken = make(chan struct{})
	}
	b.disk.writeErr.Store(nil)
	b.disk.mu.Unlock()
	b.disk.limitHit.Store(false)
	// The same store as serverOptions gives, with the limits left to the
	// server (computed again from the free space now).
	err := b.srv.EnableJetStream(&server.JetStreamConfig{
		StoreDir:   b.cfg.storeDir(),
		SyncAlways: b.cfg.SyncAlways,
		Domain:     b.jetStreamDomain(),
	})
	if err != nil {
		return fmt.Errorf("bus: enable JetStream: %w", err)
	}
	return nil
}

// jetStreamDownWait bounds waitJetStreamDown: nats-server's shutdown waits
// up to 2 s for a meta leader transfer and 10 s for its cluster routine.
const jetStreamDownWait = 15 * time.Second

// waitJetStreamDown waits until the server's JetStream is wholly shut
// down. JetStreamEnabled turns false at the start of a shutdown, and a
// server out of space shuts its JetStream down by itself in a goroutine
// (nats-server's "will be DISABLED"), so a disabled JetStream may still be
// stopping: the last steps clear the server's JetStream and then its
// clustered flag. Enabling JetStream before them gave a node whose new
// JetStream the old shutdown marked not clustered (its stream replicas
// never caught up) and file stores nobody stopped (leaked goroutines).
func (b *Bus) waitJetStreamDown(d time.Duration) error {
	deadline := time.Now().Add(d)
	for b.srv.JetStreamConfig() != nil || b.srv.JetStreamIsClustered() {
		if time.Now().After(deadline) {
			return fmt.Errorf("bus: JetStream still shutting down after %v", d)
		}
		select {
		case <-b.done:
			return errors.New("bus: closed while JetStream shut down")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// jsz is the server's Jsz, never while JetStream restarts (disk.restart).
func (b *Bus) jsz(opts *server.JSzOptions) (*server.JSInfo, error) {
	b.disk.restart.RLock()
	defer b.disk.restart.RUnlock()
	return b.srv.Jsz(opts)
}

// jetStreamDomain is the embedded JetStream's domain: the leaf's own in
// leaf mode (leaf.go), else none.
func (b *Bus) jetStreamDomain() string {
	if b.cfg.Mode == ModeLeaf {
		return b.cfg.JetStreamDomain
	}
	return ""
}

// diskReserve is Config.DiskReserve, or 1 % of the filesystem within
// [1 MiB, 256 MiB].
func (b *Bus) diskReserve(total uint64) uint64 {
	if b.cfg.DiskReserve > 0 {
		return uint64(b.cfg.DiskReserve)
	}
	return min(max(total/100, minDiskReserve), maxDiskReserve)
}

// statfs is the space available to an unprivileged writer on dir's
// filesystem and its size. JetStream sizes its limit from the same
// Bavail (nats-server's diskAvailable).
func statfs(dir string) (free, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("bus: statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}
