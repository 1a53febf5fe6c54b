package deployer

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
)

var (
	// ErrStopped: the host stopped before its next instance because
	// another host failed or the deploy was interrupted.
	ErrStopped = errors.New("stopped before the next instance")
	// ErrCapacity: draining the instance would leave too few serving.
	ErrCapacity = errors.New("not enough instances serving")
	// ErrExited: the restarted process exited or systemd gave up on it.
	ErrExited = errors.New("instance exited after restart")
	// ErrRestarted: systemd restarted the new process while it had to
	// stay healthy.
	ErrRestarted = errors.New("instance was restarted by systemd")
)

// UnreachableError is a host that could not be connected to: nothing was
// read or changed on it.
type UnreachableError struct {
	Host string
	Err  error
}

func (e *UnreachableError) Error() string { return e.Host + ": " + e.Err.Error() }
func (e *UnreachableError) Unwrap() error { return e.Err }

// StepError is a failure of one step on one host (Port 0: the host itself).
type StepError struct {
	Host string
	Port int
	// Worker is the worker's unit (workers:) when the step was a worker's.
	Worker string
	Step   StepName
	Err    error
	// Output is what the app and systemd said since the restart, when the
	// failure is the app's.
	Output string
	// LeftOut is true when the instance was left out of Nginx.
	LeftOut bool
	// Took is how long the host had been at it when the step failed (0:
	// not measured; the progress line has the step's own time).
	Took time.Duration
}

func (e *StepError) Error() string {
	where := Where(e.Host, e.Port, e.Worker)
	msg := fmt.Sprintf("%s %s: %v", e.Step, where, e.Err)
	if where == "" {
		msg = fmt.Sprintf("%s: %v", e.Step, e.Err)
	}
	if e.LeftOut {
		msg += " (instance left out of service)"
	}
	if e.Took > 0 {
		msg += fmt.Sprintf(" (after %s)", e.Took.Round(max(time.Microsecond, e.Took/1000)))
	}
	return msg
}

func (e *StepError) Unwrap() error { return e.Err }

// Where names a place of a run: a host, one of its instances (HOST:PORT)
// or one of its workers (HOST/UNIT).
func Where(host string, port int, worker string) string {
	switch {
	case port != 0:
		return fmt.Sprintf("%s:%d", host, port)
	case worker != "":
		return host + "/" + worker
	}
	return host
}

// appendErr aggregates failures as multierror.Append does, written one
// per line with nothing around them.
func appendErr(errs error, more ...error) *multierror.Error {
	merr := multierror.Append(errs, more...)
	merr.ErrorFormat = errorLines
	return merr
}

// errorLines is one failure per line.
func errorLines(errs []error) string {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// noteEarlyFailures puts the failures of the checks before any change
// (connect, preflight, lock) into the report's rows: each failed host's
// error and the time it took; the others say why they did not start.
func noteEarlyFailures(rep *Report, err error) {
	var merr *multierror.Error
	errs := []error{err}
	if errors.As(err, &merr) {
		errs = merr.WrappedErrors()
	}
	failed := map[string]*StepError{}
	for _, e := range errs {
		var se *StepError
		if errors.As(e, &se) && se.Host != "" {
			failed[se.Host] = se
		}
	}
	for i := range rep.Hosts {
		r := &rep.Hosts[i]
		if r.Outcome != HostNotStarted || r.Error != "" {
			continue
		}
		if se, ok := failed[r.Host]; ok {
			r.Error, r.Duration = fmt.Sprintf("%s: %v", se.Step, se.Err), se.Took
			continue
		}
		r.Error = "nothing changed: the checks before any change failed"
	}
}
