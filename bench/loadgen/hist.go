package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// hist is a log-linear latency histogram of durations in nanoseconds: exact
// below 128 ns, then 128 buckets per power of two (under 0.8% error). It is
// safe for concurrent use.
type hist struct {
	counts [histBuckets]atomic.Uint64
	max    atomic.Int64
}

const (
	histSub     = 128
	histBuckets = histSub + 40*histSub // up to 2^46 ns, about 19 hours
)

func histIndex(v int64) int {
	if v < histSub {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - 8 // v>>e is in [128, 256)
	i := histSub + e*histSub + int(uint64(v)>>e) - histSub
	return min(i, histBuckets-1)
}

// histValue is the middle of bucket i.
func histValue(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	e := (i - histSub) / histSub
	lo := int64(histSub+(i-histSub)%histSub) << e
	return lo + (int64(1)<<e)/2
}

func (h *hist) record(d time.Duration) {
	h.counts[histIndex(int64(d))].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// quantiles returns the values at the given quantiles (0..1) and the count.
func (h *hist) quantiles(qs ...float64) ([]time.Duration, uint64) {
	var total uint64
	counts := make([]uint64, histBuckets)
	for i := range counts {
		counts[i] = h.counts[i].Load()
		total += counts[i]
	}
	out := make([]time.Duration, len(qs))
	if total == 0 {
		return out, 0
	}
	for j, q := range qs {
		rank := uint64(q*float64(total-1)) + 1
		var seen uint64
		for i, c := range counts {
			seen += c
			if seen >= rank {
				out[j] = time.Duration(min(histValue(i), h.max.Load()))
				break
			}
		}
	}
	return out, total
}
