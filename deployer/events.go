package deployer

import "time"

// StepName names a step, as it appears in events, errors and the plan.
type StepName string

// The steps.
const (
	StepPreflight StepName = "preflight"
	StepLock      StepName = "lock"
	StepHook      StepName = "hook"
	StepScale     StepName = "scale" // add and remove instances
	StepCapacity  StepName = "capacity"
	StepDrain     StepName = "drain"
	StepWaitDrain StepName = "wait-drain"
	StepRestart   StepName = "restart"
	StepActive    StepName = "wait-active"
	StepHealth    StepName = "health"
	StepStable    StepName = "stable"
	StepUndrain   StepName = "undrain"
	StepHistory   StepName = "history"
	// StepHost events bracket one host's run (after the preflight):
	// StatusStart, then StatusOK, StatusFail, or StatusSkip when it stopped
	// before its next instance, with the host's whole time. Output groups a
	// host's lines by them.
	StepHost StepName = "host"
)

// StepStatus is how far a step got.
type StepStatus string

// The statuses of an event.
const (
	StatusStart StepStatus = "start"
	StatusOK    StepStatus = "ok"
	StatusSkip  StepStatus = "skip"
	StatusWarn  StepStatus = "warn"
	StatusFail  StepStatus = "fail"
)

// Event is one step's progress. Port is 0 for a step of the whole host (or
// of the controller, when Host is empty too).
type Event struct {
	Time     time.Time     `json:"time"`
	Host     string        `json:"host,omitempty"`
	Port     int           `json:"port,omitempty"`
	Step     StepName      `json:"step"`
	Status   StepStatus    `json:"status"`
	Duration time.Duration `json:"duration_ns,omitempty"`
	Message  string        `json:"message,omitempty"`
}

// Outcome is how a host's part of a deploy ended.
type Outcome string

// The outcomes of a host.
const (
	HostOK          Outcome = "ok"
	HostFailed      Outcome = "failed"
	HostStopped     Outcome = "stopped"
	HostInterrupted Outcome = "interrupted"
	HostNotStarted  Outcome = "not started"
)

// HostReport is what happened on one host.
type HostReport struct {
	Host      string        `json:"host"`
	Outcome   Outcome       `json:"outcome"`
	Restarted []int         `json:"restarted"`
	LeftOut   []int         `json:"left_out,omitempty"`
	Duration  time.Duration `json:"duration_ns"`
	Error     string        `json:"error,omitempty"`
	// Next is what to do to put the host right, when rollout could not.
	Next string `json:"next,omitempty"`
}

// Report is what happened in one deploy or scale.
type Report struct {
	Op       string        `json:"op"` // deploy or scale
	Version  string        `json:"version,omitempty"`
	Hosts    []HostReport  `json:"hosts"`
	Duration time.Duration `json:"duration_ns"`
}
