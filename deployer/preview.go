package deployer

import (
	"context"
	"errors"
	"time"
)

// Preview is what a deploy with releases would do on one host, read from
// the host without changing anything (`rollout plan --live`): the release
// it would roll out, whether it would upload it, which instances it would
// skip because they already run it, are healthy and are in Nginx (a
// rerun resumes), and which releases the cleanup would then remove.
type Preview struct {
	Host    string   `json:"host"`
	Release string   `json:"release,omitempty"`
	Upload  bool     `json:"upload"`
	Skip    []int    `json:"skip,omitempty"`
	Restart []int    `json:"restart,omitempty"`
	Remove  []string `json:"remove,omitempty"`
	// Paused is the release of a rollout paused after its canary on the
	// host (rollout promote continues it); "" if none.
	Paused string `json:"paused,omitempty"`
	Error  string `json:"error,omitempty"`
	err    error  // what Error says, as it was returned
}

// Err is why the host could not be read (nil if it was): an
// *UnreachableError when it could not be connected to.
func (v Preview) Err() error { return v.err }

// hostLook is one host as the preview reads it.
type hostLook struct {
	ports   []int
	rel     releaseState
	serving map[int]bool
}

// PreviewReleases reads every host at once and says what a deploy of the
// artifact with SHA-256 sum (empty: not known) and secrets of
// secretsDigest (secrets:) would do on each; force is
// --force. It changes nothing.
func PreviewReleases(ctx context.Context, cfg *Config, version, sum, secretsDigest string, force bool, connect func(context.Context, string) (Conn, error)) []Preview {
	looks := make([]hostLook, len(cfg.Hosts))
	lbs, closeLBs := LoadBalancers(ctx, cfg, connect)
	defer closeLBs()
	errs := EachHost(ctx, cfg, connect, func(ctx context.Context, i int, host string, conn Conn) error {
		r := newSSHRemote(cfg, conn)
		hc, err := resolveHost(ctx, cfg, host, r)
		if err != nil {
			return err
		}
		ports := hc.Ports()
		st, err := r.ReleaseState(ctx, ports, hc.WorkerUnits())
		if err != nil {
			return err
		}
		if err := checkLayout(hc, st); err != nil {
			return err
		}
		hs := resolvedStatus(ctx, hc, host, r, lbs, &st)
		if hs.Error != "" {
			return errors.New(hs.Error)
		}
		serving := map[int]bool{}
		for _, in := range hs.Instances {
			serving[in.Port] = in.InNginx && in.Healthy
		}
		looks[i] = hostLook{ports: ports, rel: st, serving: serving}
		return nil
	})
	id := ""
	for i, l := range looks {
		if errs[i] == nil && sum != "" {
			if have := l.rel.withSum(sum, secretsDigest); have > id {
				id = have
			}
		}
	}
	if id == "" {
		id = ReleaseID(time.Now(), version)
	}
	out := make([]Preview, len(cfg.Hosts))
	for i, l := range looks {
		out[i] = Preview{Host: cfg.Hosts[i], Release: id}
		if p, err := pausedRelease([]releaseState{l.rel}); errs[i] == nil && err == nil {
			out[i].Paused = p
		}
		if errs[i] != nil {
			out[i].Error, out[i].err = errs[i].Error(), errs[i]
			continue
		}
		out[i].Upload = !l.rel.present[id]
		links := map[int]string{}
		for _, p := range l.ports {
			links[p] = id
			if !force && l.rel.links[p] == id && l.rel.running[p] == id && l.serving[p] {
				out[i].Skip = append(out[i].Skip, p)
			} else {
				out[i].Restart = append(out[i].Restart, p)
			}
		}
		out[i].Remove = l.rel.cleanup(cfg.Release.Keep, id, links)
	}
	return out
}
