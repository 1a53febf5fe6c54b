package deployer

import (
	"errors"
	"fmt"
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

// StepError is a failure of one step on one host (Port 0: the host itself).
type StepError struct {
	Host string
	Port int
	Step StepName
	Err  error
	// Output is what the app and systemd said since the restart, when the
	// failure is the app's.
	Output string
	// LeftOut is true when the instance was left out of Nginx.
	LeftOut bool
}

func (e *StepError) Error() string {
	where := e.Host
	if e.Port != 0 {
		where = fmt.Sprintf("%s:%d", e.Host, e.Port)
	}
	msg := fmt.Sprintf("%s %s: %v", e.Step, where, e.Err)
	if where == "" {
		msg = fmt.Sprintf("%s: %v", e.Step, e.Err)
	}
	if e.LeftOut {
		msg += " (instance left out of nginx)"
	}
	return msg
}

func (e *StepError) Unwrap() error { return e.Err }
