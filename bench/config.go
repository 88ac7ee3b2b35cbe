package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"strings"
	"time"
)

// Scenarios.
const (
	Connect  = "connect"  // open N sockets: connects/s, failures, time to established
	Idle     = "idle"     // hold N subscribed sockets: server memory per connection, drops
	Fanout   = "fanout"   // publish M events over REST to N subscribers: deliveries/s, loss, latency
	Storm    = "storm"    // drop N sockets at once and reconnect them: time until all are back
	Presence = "presence" // presence members join (and a node dies): time until member_added / member_removed reach every node
	Failover = "failover" // kill a cluster node while publishing: lost and duplicated events, time until every client resumed

	// PublishBound is fanout sized so that publishing is the bound: many
	// small channels, several concurrent publishers, as fast as they go.
	// It reports events_per_s (accepted, answered 200) and deliveries_per_s.
	PublishBound = "publish"
)

// Defaults of the publish scenario (PublishBound): 1,000 channels of 10
// subscribers, 8 concurrent REST publishers, 20,000 events.
const (
	PublishDefaultConns      = 10000
	PublishDefaultChannels   = 1000
	PublishDefaultPublishers = 8
	PublishDefaultMessages   = 20000
)

// fanout reports whether the scenario publishes events to subscribers and
// counts their deliveries: fanout and publish (which is fanout with other
// defaults).
func (c *Config) fanout() bool { return c.Scenario == Fanout || c.Scenario == PublishBound }

// Limits of this machine's design (see doc.go).
const (
	MaxPerWorker = 15000 // sockets per worker process (the fd hard limit is 20,000)
	MaxPerSource = 25000 // sockets per source address (ephemeral ports)
	MaxURLs      = 256   // targets (--url entries) per run

	// MaxPresenceConns bounds the presence scenario's subscribers: it holds
	// a client.Conn, a reader goroutine each, per socket in the parent.
	MaxPresenceConns = 1000
)

// ErrNotAvailable is returned for scenarios that need features Herald does
// not have yet.
var ErrNotAvailable = errors.New("bench: scenario not available yet")

// Config describes one run. Zero values mean the defaults documented on each
// field; DefaultConfig fills them in.
type Config struct {
	Scenario    string
	URL         string // ws://host:port[/prefix] of the server; several (a cluster's nodes) separated by commas: conn i goes to URL i % len
	RESTURL     string // http://host:port of the REST API; default: from the first URL. fanout and publish: several separated by commas (a cluster's nodes), publisher i posts to URL i % len
	AppID       string
	Key         string
	Secret      string
	AllowRemote bool // allow a target that is not loopback

	Conns    int           // sockets (required)
	Channels int           // channels; conn i subscribes to bench-(i % Channels). -1: scenario default (connect 0, others 1)
	Messages int           // fanout: events to publish (default 100)
	Rate     float64       // connect: dials/s; fanout: publishes/s; 0: as fast as possible
	Hold     time.Duration // idle: how long to hold (default 30s)

	Payload    int           // fanout: bytes of event data (default 100)
	Publishers int           // fanout: concurrent REST requests (default 4)
	Batch      int           // fanout: events per request via batch_events, 1-10 (default 1: /events)
	Drain      time.Duration // fanout: wait for deliveries after the last publish (default 10s)

	// Fanout over NATS (natspub.go).
	Publish      string // fanout: PublishREST (default), PublishNATSRequest or PublishNATSPublish
	NATSURL      string // NATS URL of Herald's client port (default DefaultNATSURL)
	NATSUser     string // NATS user (default: AppID)
	NATSPassword string // NATS password (default: Secret)
	NATSWindow   int    // nats-publish: events sent ahead of those seen stored (default DefaultNATSWindow; -1: no pacing)

	Workers       int           // worker processes (default ceil(Conns/MaxPerWorker))
	Pollers       int           // epoll goroutines per worker (default: cores)
	Inflight      int           // connection attempts in flight, all workers (default 256; -1 unlimited)
	StormInflight int           // storm: attempts in flight per poller (default 0: unlimited, all at once)
	Retries       int           // storm: redials per socket (default 3)
	DialTimeout   time.Duration // per attempt, TCP connect to subscribed (default 10s)
	SourceBase    string        // first source address on loopback (default 127.0.0.2; "none": do not bind)
	PerSource     int           // sockets per source address (default and max MaxPerSource)
	Timeout       time.Duration // hard limit of the whole run (default 5m)

	ServerPID  int           // server process to measure (RSS, CPU); 0: none
	ServerPIDs []int         // more server processes (a cluster's other nodes), measured and summed with ServerPID
	Joins      int           // presence: members that join (and leave) one at a time, each timed (default 20)
	KillPID    int           // presence: SIGKILL this process (a node holding a member) after the joins and time member_removed; 0: no kill. failover: the node to kill (required; not the first URL's)
	KillAfter  time.Duration // failover: SIGKILL KillPID this long into publishing (default 2s)
	Converge   time.Duration // presence: how long to wait for each change to reach every subscriber (default 30s); failover: for every client to resume and have every acknowledged event after publishing (default 30s)
	Plot       string        // write a PNG (latency CDF, rate over time) here

	Command  string    // the command line, echoed in the report
	Progress io.Writer // progress lines, once a second; nil: none
	Table    io.Writer // the human summary; nil: none

	// DropEvery makes every worker poller discard every DropEvery-th bench
	// event it parses, as if it were lost. For tests of the loss accounting.
	DropEvery int
}

// DefaultConfig returns c with every zero field set to its default.
func DefaultConfig(c Config) Config {
	if c.Scenario == PublishBound {
		if c.Conns == 0 {
			c.Conns = PublishDefaultConns
		}
		if c.Channels <= 0 {
			c.Channels = PublishDefaultChannels
		}
		if c.Publishers == 0 {
			c.Publishers = PublishDefaultPublishers
		}
		if c.Messages == 0 {
			c.Messages = PublishDefaultMessages
		}
	}
	if c.Channels < 0 {
		c.Channels = 1
		if c.Scenario == Connect {
			c.Channels = 0
		}
	}
	if c.Scenario == Fanout && c.Channels == 0 {
		c.Channels = 1
	}
	if c.Scenario == Fanout && c.Messages == 0 {
		c.Messages = 100
	}
	if c.Scenario == Failover {
		if c.Messages == 0 {
			c.Messages = 100
		}
		if c.Channels == 0 {
			c.Channels = 1
		}
		if c.KillAfter == 0 {
			c.KillAfter = 2 * time.Second
		}
		if c.Converge == 0 {
			c.Converge = 30 * time.Second
		}
	}
	if !c.fanout() && c.Scenario != Failover {
		c.Messages = 0
	}
	if c.Scenario == Presence {
		c.Channels = 1 // the presence channel
		if c.Conns == 0 {
			c.Conns = len(c.urls())
		}
		if c.Joins == 0 {
			c.Joins = 20
		}
		if c.Converge == 0 {
			c.Converge = 30 * time.Second
		}
	}
	if c.Hold == 0 {
		c.Hold = 30 * time.Second
	}
	if c.Payload == 0 {
		c.Payload = 100
	}
	if c.Publishers == 0 {
		c.Publishers = 4
	}
	if c.Batch == 0 {
		c.Batch = 1
	}
	if c.Drain == 0 {
		c.Drain = 10 * time.Second
	}
	if c.Workers == 0 {
		c.Workers = max(1, (c.Conns+MaxPerWorker-1)/MaxPerWorker)
	}
	if c.Pollers == 0 {
		c.Pollers = runtime.NumCPU()
	}
	if c.Inflight == 0 {
		c.Inflight = 256
	}
	if c.Retries == 0 {
		c.Retries = 3
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.SourceBase == "" {
		c.SourceBase = "127.0.0.2"
	}
	if c.PerSource == 0 {
		c.PerSource = MaxPerSource
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Minute
	}
	if urls := c.urls(); c.RESTURL == "" && len(urls) > 0 {
		if u, err := url.Parse(urls[0]); err == nil {
			c.RESTURL = "http://" + u.Host
			if u.Scheme == "wss" {
				c.RESTURL = "https://" + u.Host
			}
		}
	}
	c.natsDefaults()
	return c
}

// validate checks a defaulted config.
func (c *Config) validate() error {
	switch c.Scenario {
	case Connect, Idle, Fanout, PublishBound, Storm, Presence, Failover:
	default:
		return fmt.Errorf("bench: unknown scenario %q (connect, idle, fanout, publish, storm, presence, failover)", c.Scenario)
	}
	urls := c.urls()
	if len(urls) == 0 {
		return errors.New("bench: --url: want ws://host:port")
	}
	if len(urls) > MaxURLs {
		return fmt.Errorf("bench: --url: %d URLs, at most %d", len(urls), MaxURLs)
	}
	var hosts []string
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return fmt.Errorf("bench: --url %q: want ws://host:port", raw)
		}
		if u.Scheme != "ws" {
			return fmt.Errorf("bench: --url %q: only ws:// is supported (TLS sockets cannot be polled)", raw)
		}
		hosts = append(hosts, u.Hostname())
	}
	rests := c.restURLs()
	if len(rests) == 0 || len(rests) > MaxURLs {
		return fmt.Errorf("bench: --rest-url %q: want http://host:port (at most %d, comma-separated)", c.RESTURL, MaxURLs)
	}
	if len(rests) > 1 && !c.fanout() {
		return fmt.Errorf("bench: --rest-url: several URLs are for the fanout and publish scenarios")
	}
	for _, raw := range rests {
		ru, err := url.Parse(raw)
		if err != nil || ru.Host == "" || (ru.Scheme != "http" && ru.Scheme != "https") {
			return fmt.Errorf("bench: --rest-url %q: want http://host:port", raw)
		}
		hosts = append(hosts, ru.Hostname())
	}
	if !c.AllowRemote {
		for _, h := range hosts {
			if !isLoopback(h) {
				return fmt.Errorf("bench: %q is not a loopback address; pass --allow-remote to load a remote server", h)
			}
		}
	}
	for _, pid := range c.ServerPIDs {
		if pid <= 0 {
			return fmt.Errorf("bench: --server-pid %d: want a process id", pid)
		}
	}
	if c.Scenario == Presence {
		switch {
		case c.Secret == "":
			return errors.New("bench: --secret is required for presence (it signs the subscriptions)")
		case c.Conns < 1 || c.Conns > MaxPresenceConns:
			return fmt.Errorf("bench: presence: --conns %d: want 1..%d subscribers", c.Conns, MaxPresenceConns)
		case c.Joins < 1 || c.Converge <= 0 || c.KillPID < 0:
			return errors.New("bench: presence: --joins and --converge-timeout must be positive")
		case c.Timeout <= 0 || c.DialTimeout <= 0:
			return errors.New("bench: --timeout and --dial-timeout must be positive")
		}
		return nil
	}
	if c.Scenario == Failover {
		switch {
		case c.AppID == "" || c.Key == "" || c.Secret == "":
			return errors.New("bench: failover: --app-id, --key and --secret are required")
		case len(urls) < 2:
			return errors.New("bench: failover: --url must list at least two nodes (the first is not killed)")
		case c.KillPID <= 0:
			return errors.New("bench: failover: --kill-pid is required (a node other than the first URL's)")
		case c.Conns < 1 || c.Conns > MaxFailoverConns:
			return fmt.Errorf("bench: failover: --conns %d: want 1..%d subscribers", c.Conns, MaxFailoverConns)
		case c.Channels < 1 || c.Messages < 1 || c.Rate < 0 || c.Publishers < 1:
			return errors.New("bench: failover: --channels, --messages and --publishers must be at least 1, --rate not negative")
		case int64(c.Conns)*int64(c.Messages)/int64(c.Channels) > 100e6:
			return errors.New("bench: failover: conns × messages / channels too large (over 100M tracked deliveries)")
		case c.KillAfter < 0 || c.Converge <= 0 || c.Timeout <= 0 || c.DialTimeout <= 0:
			return errors.New("bench: failover: --kill-after, --converge-timeout, --timeout and --dial-timeout must be positive")
		}
		return nil
	}
	if c.KillPID != 0 {
		return errors.New("bench: --kill-pid is for the presence and failover scenarios")
	}
	switch {
	case c.AppID == "" || c.Key == "":
		return errors.New("bench: --app-id and --key are required")
	case c.fanout() && c.Secret == "":
		return errors.New("bench: --secret is required for " + c.Scenario)
	case c.Conns < 1:
		return errors.New("bench: --conns must be at least 1")
	case c.Workers < 1 || c.Workers > c.Conns:
		return fmt.Errorf("bench: --workers %d: want 1..conns", c.Workers)
	case (c.Conns+c.Workers-1)/c.Workers > MaxPerWorker:
		return fmt.Errorf("bench: %d conns over %d workers is more than %d per worker (open-files limit)", c.Conns, c.Workers, MaxPerWorker)
	case c.PerSource < 1 || c.PerSource > MaxPerSource:
		return fmt.Errorf("bench: --per-source must be 1..%d", MaxPerSource)
	case c.Channels < 0 || (c.fanout() && c.Channels < 1):
		return errors.New("bench: --channels must be at least 1 for " + c.Scenario)
	case c.Messages < 0 || c.Rate < 0 || c.Pollers < 1 || c.Publishers < 1:
		return errors.New("bench: --messages, --rate, --pollers and --publishers must be positive")
	case c.Batch < 1 || c.Batch > 10:
		return errors.New("bench: --batch must be 1..10 (Pusher's batch_events limit)")
	case c.Payload < 0 || c.Payload > 10<<10:
		return errors.New("bench: --payload must be 0..10240 bytes")
	case c.Timeout <= 0 || c.Hold < 0 || c.DialTimeout <= 0:
		return errors.New("bench: --timeout, --hold and --dial-timeout must be positive")
	}
	if err := c.validateNATS(); err != nil {
		return err
	}
	// Receivers keep one bit per expected delivery.
	if c.Messages > 0 && int64(c.Conns)/int64(c.Workers)*int64(c.Messages)/int64(c.Channels) > 8<<30 {
		return errors.New("bench: conns × messages / channels too large (over 1 GiB of delivery bitmaps per worker)")
	}
	return nil
}

// isLoopback reports whether host names the loopback interface.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sourcesFor returns the source addresses worker w binds: count sockets at
// most PerSource per address, numbered on from SourceBase after the next
// addresses already given to earlier workers.
func (c *Config) sourcesFor(next *int, count int) ([]string, error) {
	if strings.EqualFold(c.SourceBase, "none") {
		return nil, nil
	}
	for _, u := range c.urls() {
		host, _ := hostPort(u)
		if ip := net.ParseIP(host); ip == nil || ip.To4() == nil || !ip.IsLoopback() {
			return nil, nil // only loopback targets get extra source addresses
		}
	}
	base := net.ParseIP(c.SourceBase).To4()
	if base == nil || !base.IsLoopback() {
		return nil, fmt.Errorf("bench: --source-base %q: want an IPv4 loopback address", c.SourceBase)
	}
	n := (count + c.PerSource - 1) / c.PerSource
	var out []string
	for range n {
		v := uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
		v += uint32(*next)
		*next++
		if v >= 1<<24 {
			return nil, errors.New("bench: ran out of loopback source addresses")
		}
		out = append(out, net.IPv4(127, byte(v>>16), byte(v>>8), byte(v)).String())
	}
	return out, nil
}

// urls splits URL at commas: the targets, in order.
func (c *Config) urls() []string {
	var out []string
	for u := range strings.SplitSeq(c.URL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// restURLs splits RESTURL at commas: the REST targets, in order, without
// trailing slashes.
func (c *Config) restURLs() []string {
	var out []string
	for u := range strings.SplitSeq(c.RESTURL, ",") {
		if u = strings.TrimRight(strings.TrimSpace(u), "/"); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// dests are the targets the sockets connect to, one per URL, in order.
func (c *Config) dests() []dest {
	var out []dest
	for _, raw := range c.urls() {
		host, port := hostPort(raw)
		u := mustURL(raw)
		path := strings.TrimRight(u.EscapedPath(), "/")
		path += "/app/" + c.Key + "?protocol=7&client=herald-bench&version=1.0.0&flash=false"
		out = append(out, dest{Addr: joinHostPort(host, port), Host: u.Host, Path: path})
	}
	return out
}

// serverPIDs are the server processes to measure: ServerPID, then
// ServerPIDs.
func (c *Config) serverPIDs() []int {
	var out []int
	if c.ServerPID > 0 {
		out = append(out, c.ServerPID)
	}
	return append(out, c.ServerPIDs...)
}

// hostPort splits a ws:// URL into host and port (default 80).
func hostPort(raw string) (host, port string) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", ""
	}
	port = u.Port()
	if port == "" {
		port = "80"
	}
	return u.Hostname(), port
}
