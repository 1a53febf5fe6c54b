package deployer

import (
	"context"
	"sort"
	"time"
)

// HistoryEntry is one line of a host's deploy history
// (state_dir/APP/history.jsonl): who did what, when, and how it ended.
type HistoryEntry struct {
	Host      string        `json:"host,omitempty"` // set when read back
	App       string        `json:"app,omitempty"`  // set when read back from a config with apps:
	Time      time.Time     `json:"time"`
	User      string        `json:"user"`
	From      string        `json:"from"`
	RunURL    string        `json:"run_url,omitempty"`
	Op        string        `json:"op"`
	Version   string        `json:"version,omitempty"`
	Release   string        `json:"release,omitempty"`
	Outcome   Outcome       `json:"outcome"`
	Duration  time.Duration `json:"duration_ns"`
	Restarted []int         `json:"restarted,omitempty"`
	Workers   []string      `json:"workers_restarted,omitempty"`
	LeftOut   []int         `json:"left_out,omitempty"`
	Error     string        `json:"error,omitempty"`
	// Secrets are the names the deploy's secrets added (+), removed (-)
	// and changed (~); never values.
	Secrets []string `json:"secrets_changed,omitempty"`
	// Command is what rollout exec ran, quoted as a shell would read it.
	Command string `json:"command,omitempty"`
	// Ports are the instances a drain took out, or an undrain put back.
	Ports []int `json:"ports,omitempty"`
}

// AppendHistory appends one entry to the host's history.
func AppendHistory(ctx context.Context, cfg *Config, conn Conn, e HistoryEntry) error {
	return newSSHRemote(cfg, conn).AppendHistory(ctx, e)
}

// ReadHistory returns the host's last n entries, oldest first. Lines that
// do not parse are skipped.
func ReadHistory(ctx context.Context, cfg *Config, host string, conn Conn, n int) ([]HistoryEntry, error) {
	entries, err := newSSHRemote(cfg, conn).ReadHistory(ctx, n)
	for i := range entries {
		entries[i].Host = host
	}
	return entries, err
}

// MergeHistory merges hosts' entries by time, oldest first, keeping the
// last n.
func MergeHistory(hosts [][]HistoryEntry, n int) []HistoryEntry {
	var all []HistoryEntry
	for _, h := range hosts {
		all = append(all, h...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}
