package bus

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// asyncStallWait bounds how long PublishAsync may wait when too many
// acknowledgements are outstanding; past it the publication fails.
const asyncStallWait = 50 * time.Millisecond

// PublishAsync stores a publication without waiting for the stream's
// acknowledgement: it is for callers that must not wait, such as a poller
// relaying a client event. The app's stream must already exist (every
// configured app's does after Start). It fails only when the publication is
// invalid or too many acknowledgements are outstanding; a publication the
// stream then refuses is lost, as a client event sent over a failing
// connection would be.
func (b *Bus) PublishAsync(p Publication) error {
	if err := b.check(&p); err != nil {
		return err
	}
	m := b.newMsg(&p)
	if !b.cfg.StreamEnabled {
		if err := b.nc.PublishMsg(m); err != nil {
			return fmt.Errorf("bus: publish %q: %w", m.Subject, err)
		}
		return nil
	}
	if err := b.refuseFull(); err != nil { // its ack could not come (disk.go)
		return err
	}
	if !b.homeReachable() { // region.go
		return b.homeUnreachable()
	}
	if _, err := b.js.PublishMsgAsync(m, jetstream.WithStallWait(asyncStallWait)); err != nil {
		return fmt.Errorf("bus: publish %q: %w", m.Subject, err)
	}
	return nil
}
