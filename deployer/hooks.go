package deployer

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// localHooks runs the deploy's local hooks in order, stopping at the first
// failure. ROLLOUT_PORTS holds every port of the connected hosts (with
// instances: auto, the union of what each host resolved to).
func (d *Deployer) localHooks(ctx context.Context, hooks []string, when, result string, sessions []*session) error {
	var ports []int
	for _, s := range sessions {
		if s.cfg != nil {
			ports = append(ports, s.cfg.Ports()...)
		}
	}
	if len(sessions) == 0 {
		ports = d.Config.Ports()
	}
	slices.Sort(ports)
	ports = slices.Compact(ports)
	env := hookEnv(d.Config, d.Version, ports, "", result)
	for _, h := range hooks {
		t0 := time.Now()
		d.emit(Event{Step: StepHook, Status: StatusStart, Message: "local " + when + ": " + h})
		cmd := exec.CommandContext(ctx, "sh", "-c", h)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = d.Stdout, d.Stderr
		if err := cmd.Run(); err != nil {
			err = fmt.Errorf("local %s hook %q: %w", when, h, err)
			d.emit(Event{Step: StepHook, Status: StatusFail, Duration: time.Since(t0), Message: err.Error()})
			return &StepError{Host: "local", Step: StepHook, Err: err}
		}
		d.emit(Event{Step: StepHook, Status: StatusOK, Duration: time.Since(t0), Message: "local " + when + ": " + h})
	}
	return nil
}

// hookEnv is the ROLLOUT_* environment of a hook; host is empty for a
// local one.
func hookEnv(cfg *Config, version string, ports []int, host, result string) []string {
	env := []string{
		"ROLLOUT_APP=" + cfg.App,
		"ROLLOUT_VERSION=" + version,
		"ROLLOUT_HOSTS=" + strings.Join(cfg.Hosts, " "),
		"ROLLOUT_PORTS=" + portWords(ports),
	}
	if host != "" {
		env = append(env, "ROLLOUT_HOST="+host)
	}
	if result != "" {
		env = append(env, "ROLLOUT_RESULT="+result)
	}
	return env
}

// hostHook runs one of the host's hooks (host_before, host_after).
func (h *hostRun) hook(ctx context.Context, when, hook string) error {
	t0 := time.Now()
	h.emit(0, StepHook, StatusStart, t0, when+": "+hook)
	out, err := h.remote.Hook(ctx, hook, hookEnv(h.cfg, h.d.Version, h.cfg.Ports(), h.host, ""))
	if err != nil {
		err = fmt.Errorf("host %s hook %q: %w", when, hook, err)
		h.emit(0, StepHook, StatusFail, t0, err.Error())
		return &StepError{Host: h.host, Step: StepHook, Err: err, Output: out}
	}
	h.emit(0, StepHook, StatusOK, t0, when+": "+hook)
	return nil
}
