package deployer

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/rollout-dev/rollout/sshexec"
)

// HistoryEntry is one line of a host's deploy history
// (state_dir/APP/history.jsonl): who did what, when, and how it ended.
type HistoryEntry struct {
	Host      string        `json:"host,omitempty"` // set when read back
	Time      time.Time     `json:"time"`
	User      string        `json:"user"`
	From      string        `json:"from"`
	RunURL    string        `json:"run_url,omitempty"`
	Op        string        `json:"op"`
	Version   string        `json:"version,omitempty"`
	Outcome   string        `json:"outcome"`
	Duration  time.Duration `json:"duration_ns"`
	Restarted []int         `json:"restarted,omitempty"`
	LeftOut   []int         `json:"left_out,omitempty"`
	Error     string        `json:"error,omitempty"`
}

func historyFile(cfg *Config) string {
	return strings.TrimRight(cfg.StateDir, "/") + "/" + cfg.App + "/history.jsonl"
}

// AppendHistory appends one entry to the host's history.
func AppendHistory(ctx context.Context, cfg *Config, conn Conn, e HistoryEntry) error {
	e.Host = ""
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	f := sshexec.Quote(historyFile(cfg))
	cmd := newCommands(cfg).priv("mkdir -p -- \"$(dirname -- " + f + ")\" && cat >>" + f)
	if _, err := conn.Run(ctx, cmd, strings.NewReader(string(b)+"\n")); err != nil {
		return explainRemote(fmt.Errorf("append to the history %s: %w", historyFile(cfg), err), cfg)
	}
	return nil
}

// ReadHistory returns the host's last n entries, oldest first. Lines that
// do not parse are skipped.
func ReadHistory(ctx context.Context, cfg *Config, host string, conn Conn, n int) ([]HistoryEntry, error) {
	f := sshexec.Quote(historyFile(cfg))
	cmd := newCommands(cfg).priv(fmt.Sprintf("[ ! -e %s ] || tail -n %d -- %s", f, n, f))
	res, err := conn.Run(ctx, cmd, nil)
	if err != nil {
		return nil, explainRemote(fmt.Errorf("read the history %s: %w", historyFile(cfg), err), cfg)
	}
	var out []HistoryEntry
	for _, line := range strings.Split(string(res.Stdout), "\n") {
		var e HistoryEntry
		if strings.TrimSpace(line) == "" || json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		e.Host = host
		out = append(out, e)
	}
	return out, nil
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
