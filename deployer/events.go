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
	StepUpload    StepName = "upload"  // ship the release to the host and prepare it
	StepMigrate   StepName = "migrate" // run release.migrate once, on one host
	StepSwitch    StepName = "switch"  // point an instance's link at a release
	StepRevert    StepName = "revert"  // put switched instances back on their release
	StepRelease   StepName = "release" // record the outcome, move current, clean up
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
	// StatusProgress events report how far a long step got (an upload).
	StatusProgress StepStatus = "progress"
	StatusFail     StepStatus = "fail"
)

// Event is one step's progress. Port is 0 for a step of the whole host (or
// of the controller, when Host is empty too).
type Event struct {
	Time     time.Time     `json:"time"`
	Host     string        `json:"host,omitempty"`
	Port     int           `json:"port,omitempty"`
	Worker   string        `json:"worker,omitempty"` // a worker's unit (workers:)
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
	// HostPaused: part of its instances are on the release; the deploy
	// paused after its canary (rollout promote continues it).
	HostPaused Outcome = "paused"
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
	// Skipped are instances that already ran the release (a resumed
	// deploy) and were left as they were.
	Skipped []int `json:"skipped,omitempty"`
	// Ports are the instances a drain took out, or an undrain put back.
	Ports []int `json:"ports,omitempty"`
	// Workers are the workers' units (workers:) restarted and stable.
	Workers []string `json:"workers_restarted,omitempty"`
}

// Report is what happened in one deploy or scale.
type Report struct {
	Op      string `json:"op"` // deploy, scale or rollback
	Version string `json:"version,omitempty"`
	// Release is the release deployed or rolled back to (release: set).
	Release string `json:"release,omitempty"`
	// Reverted says where a failed release's instances went back to, or
	// how their revert failed (release.on_failure: revert).
	Reverted string        `json:"reverted,omitempty"`
	Hosts    []HostReport  `json:"hosts"`
	Duration time.Duration `json:"duration_ns"`
	// Probe is what the availability probe saw on each host (probe: on).
	Probe []ProbeResult `json:"probe,omitempty"`
	// Paused says how a deploy paused after its canary, and what next.
	Paused string `json:"paused,omitempty"`
	// Bakes are what each bake between batches saw (strategy.bake).
	Bakes []BakeResult `json:"bakes,omitempty"`
}
