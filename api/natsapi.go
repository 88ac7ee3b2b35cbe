package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"herald/app"
	"herald/bus"
	"herald/debugtap"
	"herald/protocol"
)

// The NATS API: backends publish the body of POST /apps/{id}/events to
// herald.<id>.api.events (or a batch_events body to
// herald.<id>.api.batch_events) and, when the message has a reply subject,
// get back exactly the JSON the REST API would answer. There is no request
// signature: the NATS credentials (bus.ClientPermissions) authenticate.
//
// Subscription callbacks only queue messages; a bounded pool of workers
// publishes them through the code path REST uses (Server.Events and
// Server.BatchEvents). With a Publisher that is a Submitter (bus.Bus) the
// path is pipelined (group commit, bus/commit.go): a worker validates and
// submits a message's events, hands the submission to the committers and
// takes the next message; the committers wait for the acks, in turn, and
// answer. So the publishes in flight are bounded by QueueLen (the
// committers' queue), not by the number of workers, and an answer still
// means stored. When the committers' queue is full the workers wait, the
// message queue fills, and requests get 503 as before. Messages are
// handled concurrently, so two fire-and-forget publishes may be stored in
// either order (as two concurrent REST calls may): a publisher that needs
// order waits for each answer or uses batch_events.

// Defaults of NATSAPIConfig.
const (
	DefaultNATSAPIQueueLen = 4096
)

// NATSAPIConfig sets up the NATS API.
type NATSAPIConfig struct {
	Bus      *bus.Bus             // required: subscribes to herald.*.api.* and sends the replies
	Server   *Server              // required: Events and BatchEvents do the work
	Apps     *app.Registry        // required: the app of a subject's <id> token
	Workers  int                  // publishing goroutines, and as many committers (pipelined); 0 = 4*GOMAXPROCS
	QueueLen int                  // messages waiting for a worker; 0 = 4096. Past it requests get 503, fire-and-forget messages are dropped. Pipelined, as many submissions may wait for their acks
	Registry *prometheus.Registry // metrics; nil: none
	Logger   *slog.Logger         // nil: slog.Default()
}

// NATSAPIStats are the NATS API's counters.
type NATSAPIStats struct {
	Handled uint64 // messages answered or published by a worker (any outcome)
	Busy    uint64 // requests answered 503 because the queue was full or the API stopping
	Dropped uint64 // fire-and-forget messages dropped for the same reasons
	Queued  int    // messages waiting for a worker now (at most QueueLen)
}

// NATSAPI serves the API subjects. Its methods are safe for concurrent use.
type NATSAPI struct {
	cfg  NATSAPIConfig
	log  *slog.Logger
	sub  *bus.APISubscription
	jobs chan *bus.APIRequest
	wg   sync.WaitGroup // the workers

	// Pipelined (Server's Publisher is a Submitter): submissions waiting
	// for their acks, and the committers that wait and answer. nil acks:
	// each worker publishes and answers itself.
	acks       chan natsJob
	committers sync.WaitGroup

	// mu orders queueing against Stop: callbacks hold it shared while they
	// send to jobs; Stop holds it exclusively to set stopped and close jobs.
	mu      sync.RWMutex
	stopped bool

	stopOnce sync.Once
	stopErr  error

	handled atomic.Uint64
	busy    atomic.Uint64
	dropped atomic.Uint64
	reqs    *prometheus.CounterVec
}

// busyBody and stoppingBody are the answers when no worker can take a request.
var (
	busyBody     = (&protocol.HTTPError{Status: 503, Message: "Server busy"}).Body()
	stoppingBody = (&protocol.HTTPError{Status: 503, Message: "Server stopping"}).Body()
)

// StartNATSAPI starts the workers and subscribes to both API subjects in the
// queue group bus.APIQueue. When it returns, the server has registered the
// subscriptions.
func StartNATSAPI(cfg NATSAPIConfig) (*NATSAPI, error) {
	if cfg.Bus == nil || cfg.Server == nil || cfg.Apps == nil {
		return nil, errors.New("api: nats api: Bus, Server and Apps are required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4 * runtime.GOMAXPROCS(0)
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultNATSAPIQueueLen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &NATSAPI{cfg: cfg, log: cfg.Logger, jobs: make(chan *bus.APIRequest, cfg.QueueLen)}
	a.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_nats_api_requests_total",
		Help: "NATS API messages by endpoint and the HTTP status of their answer (also counted for fire-and-forget messages).",
	}, []string{"endpoint", "status"})
	if cfg.Registry != nil {
		if err := a.register(cfg.Registry); err != nil {
			return nil, err
		}
	}
	if _, ok := cfg.Server.cfg.Publisher.(Submitter); ok {
		a.acks = make(chan natsJob, cfg.QueueLen)
		for range cfg.Workers {
			a.committers.Add(1)
			go a.committer()
		}
	}
	for range cfg.Workers {
		a.wg.Add(1)
		go a.worker()
	}
	sub, err := cfg.Bus.SubscribeAPI(a.enqueue)
	if err != nil {
		a.Stop(context.Background())
		return nil, fmt.Errorf("api: nats api: %w", err)
	}
	a.sub = sub
	return a, nil
}

func (a *NATSAPI) register(reg *prometheus.Registry) error {
	cs := []prometheus.Collector{
		a.reqs,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "herald_nats_api_busy_total",
			Help: "NATS API requests answered 503 because the worker queue was full.",
		}, func() float64 { return float64(a.busy.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "herald_nats_api_dropped_total",
			Help: "Fire-and-forget NATS API messages dropped because the worker queue was full.",
		}, func() float64 { return float64(a.dropped.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_nats_api_queued",
			Help: "NATS API messages waiting for a worker (bounded by the queue length).",
		}, func() float64 { return float64(len(a.jobs)) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("api: nats api: metrics: %w", err)
		}
	}
	return nil
}

// enqueue runs on nats.go's delivery goroutine of a subscription: it never
// blocks, so one slow publish cannot hold up the subject.
func (a *NATSAPI) enqueue(m *bus.APIRequest) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if !a.stopped {
		select {
		case a.jobs <- m:
			return
		default:
			a.refuse(m, busyBody)
			return
		}
	}
	a.refuse(m, stoppingBody)
}

// refuse answers a request 503, or counts a dropped fire-and-forget message.
func (a *NATSAPI) refuse(m *bus.APIRequest, body []byte) {
	ep := m.Endpoint
	if !m.WantsReply() {
		a.dropped.Add(1)
		a.reqs.WithLabelValues(ep, "503").Inc()
		return
	}
	a.busy.Add(1)
	a.reqs.WithLabelValues(ep, "503").Inc()
	a.reply(m, body)
}

// natsJob is a message whose events were submitted (sub), or that was
// answered without publishing (body and status).
type natsJob struct {
	m        *bus.APIRequest
	endpoint string
	sub      *submission
	body     []byte
	status   int
}

func (a *NATSAPI) worker() {
	defer a.wg.Done()
	for m := range a.jobs {
		j := a.start(m)
		if a.acks == nil || j.sub == nil {
			body, status := j.result()
			a.finish(m, body, status, j.endpoint)
			continue
		}
		a.acks <- j // waits while the committers are QueueLen behind
	}
}

// committer waits for submissions' acks, in the order they were queued,
// and answers them.
func (a *NATSAPI) committer() {
	defer a.committers.Done()
	for j := range a.acks {
		body, status := j.result()
		a.finish(j.m, body, status, j.endpoint)
	}
}

// result is the job's answer, the body and HTTP status REST would answer:
// for a submission, once the stream acknowledged its events.
func (j natsJob) result() ([]byte, int) {
	if j.sub == nil {
		return j.body, j.status
	}
	body, err := j.sub.wait()
	if err != nil {
		return errorAnswer(err)
	}
	return body, 200
}

// finish counts one handled message and answers it when it asked for an
// answer.
func (a *NATSAPI) finish(m *bus.APIRequest, body []byte, status int, endpoint string) {
	a.handled.Add(1)
	a.reqs.WithLabelValues(endpoint, strconv.Itoa(status)).Inc()
	if m.WantsReply() {
		a.reply(m, body)
	} else if status != 200 {
		a.log.Debug("nats api: fire-and-forget message failed", "subject", m.Subject, "status", status, "answer", string(body))
	}
}

// start looks the request up and submits its events; a request refused on
// the way (unknown subject or app, disabled app, invalid body) comes back
// with its answer instead.
func (a *NATSAPI) start(m *bus.APIRequest) natsJob {
	id, endpoint := m.App, m.Endpoint
	if !m.Valid {
		return natsJob{m: m, endpoint: "unknown", body: notFound("Unknown endpoint " + m.Subject), status: 404}
	}
	app, ok := a.cfg.Apps.ByID(id)
	if !ok {
		return natsJob{m: m, endpoint: endpoint, body: notFound("Unknown app " + strconv.Quote(id)), status: 404}
	}
	var sub *submission
	switch endpoint {
	case bus.APIEvents:
		sub = a.cfg.Server.submitEvents(app, m.Data, debugtap.KindNATSPublish)
	case bus.APIBatchEvents:
		sub = a.cfg.Server.submitBatchEvents(app, m.Data, debugtap.KindNATSPublish)
	default:
		return natsJob{m: m, endpoint: "unknown", body: notFound("Unknown endpoint " + m.Subject), status: 404}
	}
	if sub.err != nil {
		body, status := errorAnswer(sub.err)
		return natsJob{m: m, endpoint: endpoint, body: body, status: status}
	}
	return natsJob{m: m, endpoint: endpoint, sub: sub}
}

// errorAnswer is the body and status REST answers err with.
func errorAnswer(err error) ([]byte, int) {
	var he *protocol.HTTPError
	if !errors.As(err, &he) {
		he = &protocol.HTTPError{Status: 500, Message: err.Error()}
	}
	return he.Body(), he.Status
}

func notFound(msg string) []byte { return (&protocol.HTTPError{Status: 404, Message: msg}).Body() }

// reply answers m.
func (a *NATSAPI) reply(m *bus.APIRequest, body []byte) {
	if err := m.Respond(body); err != nil {
		a.log.Debug("nats api: reply failed", "subject", m.Subject, "err", err)
	}
}

// Stop drains the subscriptions (messages the server already sent are still
// queued or refused), then lets the workers finish every queued message and
// the committers answer every submission, and waits for them. If ctx ends first it unsubscribes at once; queued messages
// are still handled. Calling it again returns the first call's result.
func (a *NATSAPI) Stop(ctx context.Context) error {
	a.stopOnce.Do(func() { a.stopErr = a.stop(ctx) })
	return a.stopErr
}

func (a *NATSAPI) stop(ctx context.Context) error {
	var err error
	if a.sub != nil {
		err = a.sub.Drain(ctx)
	}
	// A callback still running after its subscription closed sees stopped
	// and refuses its message instead of sending on the closed channel.
	a.mu.Lock()
	a.stopped = true
	close(a.jobs)
	a.mu.Unlock()
	a.wg.Wait()
	if a.acks != nil { // the workers are done: no more submissions
		close(a.acks)
		a.committers.Wait()
	}
	return err
}

// Stats returns the counters.
func (a *NATSAPI) Stats() NATSAPIStats {
	return NATSAPIStats{
		Handled: a.handled.Load(),
		Busy:    a.busy.Load(),
		Dropped: a.dropped.Load(),
		Queued:  len(a.jobs),
	}
}
