package bench

import (
	"math"
	"math/bits"
)

// Histogram records non-negative durations in nanoseconds in log-linear
// buckets: 2^histSubBits sub-buckets per power of two, so a reported
// percentile is within 1/2^histSubBits (under 1%) of the true value. The max
// is exact. Record does not allocate. A Histogram is not safe for concurrent
// use; merge per-goroutine histograms with Merge.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    int64
	sum    float64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	histBuckets = (64 - histSubBits) * histSub // int64 values need indexes < 57*128
)

// histIndex maps v ≥ 0 to its bucket.
func histIndex(v int64) int {
	if v < histSub {
		return int(v)
	}
	u := uint64(v)
	shift := bits.Len64(u) - histSubBits - 1
	return (shift+1)*histSub + int(u>>uint(shift)) - histSub
}

// histUpper is the largest value that falls in bucket i.
func histUpper(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	shift := i/histSub - 1
	base := uint64(i%histSub+histSub) << uint(shift)
	return int64(base + (1 << uint(shift)) - 1)
}

// Record adds one value; negative values count as 0.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[histIndex(v)]++
	h.n++
	h.sum += float64(v)
	if v > h.max {
		h.max = v
	}
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest recorded value.
func (h *Histogram) Max() int64 { return h.max }

// Merge adds o's values to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	if o.max > h.max {
		h.max = o.max
	}
}

// Quantile returns the value at quantile q in [0,1] (the upper bound of its
// bucket, capped at the exact max); 0 when empty.
func (h *Histogram) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(histUpper(i), h.max)
		}
	}
	return h.max
}

// Mean is the average of the recorded values.
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// CDF returns (value, cumulative fraction) points, one per non-empty bucket.
func (h *Histogram) CDF() (vals []int64, frac []float64) {
	var seen uint64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		seen += c
		vals = append(vals, min(histUpper(i), h.max))
		frac = append(frac, float64(seen)/float64(h.n))
	}
	return vals, frac
}

// wireHist is the JSON form of a Histogram between worker and parent: only
// non-empty buckets travel.
type wireHist struct {
	Idx []int    `json:"idx,omitempty"`
	Cnt []uint64 `json:"cnt,omitempty"`
	N   uint64   `json:"n"`
	Max int64    `json:"max"`
	Sum float64  `json:"sum"`
}

func (h *Histogram) wire() wireHist {
	w := wireHist{N: h.n, Max: h.max, Sum: h.sum}
	for i, c := range h.counts {
		if c != 0 {
			w.Idx = append(w.Idx, i)
			w.Cnt = append(w.Cnt, c)
		}
	}
	return w
}

// mergeWire adds a wire histogram; out-of-range indexes are ignored.
func (h *Histogram) mergeWire(w wireHist) {
	for k, i := range w.Idx {
		if i >= 0 && i < histBuckets && k < len(w.Cnt) {
			h.counts[i] += w.Cnt[k]
		}
	}
	h.n += w.N
	h.sum += w.Sum
	if w.Max > h.max {
		h.max = w.Max
	}
}

// Percentiles in milliseconds, the shape of every latency in the JSON output.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func (h *Histogram) percentilesMs() Percentiles {
	ms := func(ns int64) float64 { return round3(float64(ns) / 1e6) }
	return Percentiles{
		P50:  ms(h.Quantile(0.50)),
		P90:  ms(h.Quantile(0.90)),
		P99:  ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)),
		Max:  ms(h.max),
		Mean: round3(h.Mean() / 1e6),
	}
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }
