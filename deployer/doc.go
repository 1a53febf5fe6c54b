// Package deployer owns rollout's logic: the config (rollout.yaml), the
// plan, and the engine that rolls a release through a fleet one instance at
// a time — capacity check, drain from Nginx, wait for in-flight requests,
// restart the systemd unit, wait for the new process and its health check,
// put it back — and the remote scripts that do it on a host.
//
// The engine works on a host only through the remote interface: every
// operation typed, implemented once over SSH (sshRemote, with the embedded
// scripts/*.sh) and faked in memory by the unit tests. It never writes to
// the terminal: progress goes to an event callback. ARCHITECTURE.md at the
// repository's root walks through one deploy.
package deployer
