// Package deployer owns rollout's logic: the config (rollout.yaml), the
// plan, and the engine that rolls a release through a fleet one instance at
// a time — capacity check, drain from Nginx, wait for in-flight requests,
// restart the systemd unit, wait for the new process and its health check,
// put it back — with the Nginx and systemd commands that does on a host.
//
// It reaches hosts only through the Conn interface (sshexec.Client in
// production) and never writes to the terminal: progress goes to an event
// callback.
package deployer
