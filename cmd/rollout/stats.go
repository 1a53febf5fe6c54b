package main

import (
	"encoding/json"
	"os"
	"runtime"
	"sync/atomic"
	"time"
)

// startStats, with ROLLOUT_STATS_FILE set (the fleet benchmark sets it),
// samples the number of goroutines every 10ms; the func it returns writes
// the peak to that file as {"peak_goroutines":N}. Unset, it does nothing.
func startStats(file string) func() {
	if file == "" {
		return func() {}
	}
	var peak atomic.Int64
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if n := int64(runtime.NumGoroutine()); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		close(done)
		b, _ := json.Marshal(map[string]int64{"peak_goroutines": peak.Load()})
		_ = os.WriteFile(file, b, 0o600)
	}
}
