package bench

import "math/bits"

// The parent and its workers talk in JSON lines over the worker's stdin and
// stdout. The parent sends a "config" command first; the worker dials at
// once, reports "progress" every second and "ready" when every socket it
// owns is established (and subscribed) or has failed. The parent then drives
// the scenario ("storm", "finish"); after "finish" the worker waits for the
// deliveries it still expects (or the drain deadline), closes its sockets,
// sends one "result" and exits. A worker exits by itself when its stdin
// closes, when the parent dies (Pdeathsig) or at its hard deadline.

// WorkerEnv is the environment variable that makes a re-executed binary run
// as a bench worker (see RunWorker).
const WorkerEnv = "HERALD_BENCH_WORKER"

// bucketNs is the width of the time buckets of the over-time series.
const bucketNs = int64(100e6)

// workerConfig is everything a worker needs; the parent fills it in.
type workerConfig struct {
	Worker        int      `json:"worker"`
	Scenario      string   `json:"scenario"`
	Targets       []dest   `json:"targets"` // conn First+k goes to Targets[(First+k) % len]
	First         int      `json:"first"`
	Count         int      `json:"count"`
	Channels      int      `json:"channels"` // 0: no subscription
	Messages      int      `json:"messages"`
	Sources       []string `json:"sources,omitempty"`
	PerSource     int      `json:"per_source"`
	Pollers       int      `json:"pollers"`
	Inflight      int      `json:"inflight"`       // per worker; 0 = unlimited
	StormInflight int      `json:"storm_inflight"` // per poller; 0 = unlimited
	Rate          float64  `json:"rate"`           // dials/s for this worker; 0 = no pacing
	DialTimeoutNs int64    `json:"dial_timeout_ns"`
	Retries       int      `json:"retries"`
	DropEvery     int      `json:"drop_every,omitempty"`
	Epoch         int64    `json:"epoch"`    // unix ns of bucket 0
	Buckets       int      `json:"buckets"`  // length of the over-time series
	Deadline      int64    `json:"deadline"` // unix ns; the worker exits after it
}

// dest is one server a worker connects to (one --url).
type dest struct {
	Addr string `json:"addr"` // host:port to connect to
	Host string `json:"host"` // Host header
	Path string `json:"path"` // /app/KEY?protocol=7...
}

// command is a parent → worker line.
type command struct {
	Cmd      string        `json:"cmd"` // "config", "storm", "finish"
	Config   *workerConfig `json:"config,omitempty"`
	At       int64         `json:"at,omitempty"`       // storm: start, unix ns
	Deadline int64         `json:"deadline,omitempty"` // finish: stop waiting for deliveries
	Failed   []int64       `json:"failed,omitempty"`   // finish: sequence numbers whose publish failed
}

// progress is a worker's running totals.
type progress struct {
	Established int64   `json:"established"`
	Failed      int64   `json:"failed"`
	Ready       int64   `json:"ready"`
	EverReady   int64   `json:"ever_ready"`
	Drops       int64   `json:"drops"`
	Unique      int64   `json:"unique"`
	StormBack   int64   `json:"storm_back"`
	CPUS        float64 `json:"cpu_s"` // the worker's user+system CPU so far
}

// report is a worker → parent line.
type report struct {
	Type     string        `json:"type"` // "progress", "ready", "storm_done", "result", "error"
	Worker   int           `json:"worker"`
	Progress progress      `json:"progress"`
	Result   *workerResult `json:"result,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// workerResult is what a worker measured.
type workerResult struct {
	Attempted   int              `json:"attempted"`
	Established int64            `json:"established"`
	Failed      int64            `json:"failed"`
	EverReady   int64            `json:"ever_ready"`
	Drops       int64            `json:"drops"`
	Failures    map[string]int64 `json:"failures"`
	StormFails  map[string]int64 `json:"storm_failures"`
	DropReasons map[string]int64 `json:"drop_reasons"`
	ConnHist    wireHist         `json:"conn_hist"`
	LatHist     wireHist         `json:"lat_hist"`
	StormHist   wireHist         `json:"storm_hist"`
	Received    int64            `json:"received"`
	Unique      int64            `json:"unique"`
	Dups        int64            `json:"dups"`
	Unexpected  int64            `json:"unexpected"`
	TestDropped int64            `json:"test_dropped"`
	Expected    int64            `json:"expected"`
	Lost        int64            `json:"lost"`
	FirstDial   int64            `json:"first_dial"`
	LastReady   int64            `json:"last_ready"`
	FirstRecv   int64            `json:"first_recv"`
	LastRecv    int64            `json:"last_recv"`
	StormTarget int64            `json:"storm_target"`
	StormBack   int64            `json:"storm_back"`
	StormFailed int64            `json:"storm_failed"`
	Delivered   []int64          `json:"delivered"`
	Connected   []int64          `json:"connected"`
	CPUUser     float64          `json:"cpu_user_s"`
	CPUSys      float64          `json:"cpu_sys_s"`
	MaxRSSKiB   int64            `json:"max_rss_kib"`
}

// msgsFor is how many of messages sequence numbers go to channel ch when
// message i goes to channel i % channels.
func msgsFor(ch, channels, messages int) int {
	if channels <= 0 || ch >= messages {
		return 0
	}
	return (messages - ch + channels - 1) / channels
}

// failedSet holds the sequence numbers whose publish failed, per channel, as
// bitmaps in the layout of conn.seen (bit j = message ch + j*channels).
// Read-only once built; safe for concurrent readers.
type failedSet struct {
	bits   map[int][]uint64
	counts map[int]int
}

func newFailedSet(seqs []int64, channels, messages int) *failedSet {
	f := &failedSet{bits: map[int][]uint64{}, counts: map[int]int{}}
	if channels <= 0 {
		return f
	}
	for _, s := range seqs {
		if s < 0 || s >= int64(messages) {
			continue
		}
		ch, j := int(s%int64(channels)), s/int64(channels)
		b := f.bits[ch]
		if b == nil {
			b = make([]uint64, (msgsFor(ch, channels, messages)+63)/64)
			f.bits[ch] = b
		}
		if b[j>>6]&(1<<(j&63)) == 0 {
			b[j>>6] |= 1 << (j & 63)
			f.counts[ch]++
		}
	}
	return f
}

func (f *failedSet) count(ch int) int { return f.counts[ch] }

// received counts the bits of seen that are not failed publishes.
func (f *failedSet) received(ch int, seen []uint64) int {
	fb := f.bits[ch]
	n := 0
	for i, w := range seen {
		if i < len(fb) {
			w &^= fb[i]
		}
		n += bits.OnesCount64(w)
	}
	return n
}
