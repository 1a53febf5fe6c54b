package deployer

import (
	"context"
	"fmt"
	"io"
	"time"
)

// migrate runs release.migrate once for release id, on its host, after
// every host has the release in place and before any instance restarts.
// Its output goes to Stdout as it comes, each line prefixed with the host.
// A release whose marker says it ran (a resumed deploy) is not migrated
// again; a failure, a timeout or a lost connection stops the deploy with
// nothing restarted.
func (d *Deployer) migrate(ctx context.Context, id string, sessions []*session) error {
	rel := d.Config.Release
	if rel == nil || rel.Migrate == "" {
		return nil
	}
	host := d.Config.migrateHost()
	var s *session
	for _, x := range sessions {
		if x.host == host {
			s = x
		}
	}
	if s == nil {
		return &StepError{Host: host, Step: StepMigrate, Err: fmt.Errorf("release.migrate_host %s is not among the hosts of this run (--hosts): the migration did not run", host)}
	}
	t0 := time.Now()
	d.emit(Event{Host: host, Step: StepMigrate, Status: StatusStart, Message: "release " + id + ": " + rel.Migrate})
	out := d.Stdout
	if out == nil {
		out = io.Discard
	}
	lines := NewLineWriter(out).Prefixed(host + " migrate | ")
	already, err := s.r.Migrate(ctx, id, lines)
	lines.Flush() // a last line without its newline
	if err != nil {
		err = fmt.Errorf("%w; nothing restarted: once it is fixed, deploy again (the release is on every host, the migration runs again since it did not finish)", err)
		d.emit(Event{Host: host, Step: StepMigrate, Status: StatusFail, Duration: time.Since(t0), Message: err.Error()})
		return &StepError{Host: host, Step: StepMigrate, Err: err, Took: time.Since(s.t0)}
	}
	if already {
		d.emit(Event{Host: host, Step: StepMigrate, Status: StatusSkip, Duration: time.Since(t0), Message: "release " + id + " was migrated by an earlier run: not run again"})
		return nil
	}
	d.emit(Event{Host: host, Step: StepMigrate, Status: StatusOK, Duration: time.Since(t0), Message: "release " + id + " migrated"})
	return nil
}
