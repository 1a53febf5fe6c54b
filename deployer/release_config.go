package deployer

import "time"

// ReleaseConfig is the release: section: rollout ships the code as
// releases under Root and switches each instance to its release just
// before restarting it. Without the section (Config.Release nil) rollout
// restarts instances onto whatever code the host already has.
type ReleaseConfig struct {
	// Root holds releases/ID, shared/, instances/PORT, current and
	// .rollout/releases.jsonl; default /srv/APP.
	Root string
	// Shared are paths relative to a release that outlive releases: each
	// is a symlink to Root/shared/PATH in every release.
	Shared []string
	// Keep is how many successful releases each host keeps (at least 1).
	Keep int
	// Prepare runs in a new release's directory as the service user
	// (setup.user), before anything restarts; empty: nothing.
	Prepare        string
	PrepareTimeout time.Duration
	// OnFailure is "revert" (switch every instance already switched back
	// to the release it ran before) or "halt" (stop, as without releases).
	OnFailure string
}

// The release.on_failure policies.
const (
	OnFailureRevert = "revert"
	OnFailureHalt   = "halt"
)
