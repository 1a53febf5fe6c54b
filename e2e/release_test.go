package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// releaseConfig is a config for hosts with the release: section (and
// setup: matching the seed's hosts: the app runs as nodeuser), without
// the activation hook: rollout ships the code. extra is appended under
// release:. Its health.min_healthy is testMinHealthy.
func releaseConfig(t testing.TB, hosts []*testbed.Host, release string) string {
	t.Helper()
	path := fleetConfig(t, testMinHealthy)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	for _, h := range fleet.Hosts {
		keep := false
		for _, k := range hosts {
			keep = keep || k == h
		}
		if !keep {
			cfg = strings.Replace(cfg, "  - "+h.Addr+"\n", "", 1)
		}
	}
	cfg = strings.Replace(cfg, "hooks:\n  host_before:\n    - sudo -n /usr/local/sbin/my-app-activate \"$ROLLOUT_VERSION\"\n", "", 1)
	cfg += fmt.Sprintf(`setup:
  user: nodeuser
  env_file: /etc/my-app/.env
  log_dir: /var/log/my-app
  memory_max: 256M
  server_name: %s
release:
  root: /srv/my-app
%s`, hosts[0].Addr, release)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// moveToReleases resets the hosts to the seed's layout (v1) and moves them
// to the release layout with rollout setup.
func moveToReleases(t testing.TB, cfg string, hosts []*testbed.Host) {
	t.Helper()
	resetHosts(t, hosts...)
	t.Cleanup(func() { resetHosts(t, hosts...) }) // back to the seed's layout for the next test
	out, code := rollout(t, "setup", "-c", cfg)
	if code != 0 || !strings.Contains(out, "move the code in /var/www/my-app into release ") {
		t.Fatalf("setup exited %d:\n%s", code, out)
	}
	for _, h := range hosts {
		wd, _ := fleet.Run(context.Background(), h, "systemctl show -p WorkingDirectory --value my-app@3000")
		if strings.TrimSpace(wd) != "/srv/my-app/instances/3000" {
			t.Fatalf("%s: the unit runs from %q after setup", h.Name, wd)
		}
	}
}

// artifactDir writes release r as a directory artifact.
func artifactDir(t testing.TB, r testbed.Release) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "build-"+r.Version)
	if err := r.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// artifactTarGz writes release r as a tarball artifact.
func artifactTarGz(t *testing.T, r testbed.Release) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app-"+r.Version+".tar.gz")
	if err := r.WriteTarGz(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// hostReleases is `rollout releases --output json` for one host.
type hostReleases struct {
	Host     string `json:"host"`
	Current  string `json:"current"`
	Releases []struct {
		ID        string `json:"id"`
		Version   string `json:"version"`
		Outcome   string `json:"outcome"`
		Present   bool   `json:"present"`
		Instances []int  `json:"instances"`
	} `json:"releases"`
	Mismatched []json.RawMessage `json:"mismatched"`
	Error      string            `json:"error"`
}

func releasesOf(t testing.TB, cfg string) []hostReleases {
	t.Helper()
	out, code := rollout(t, "releases", "-c", cfg, "--output", "json")
	var got struct{ Hosts []hostReleases }
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("releases exited %d:\n%s", code, out)
	}
	return got.Hosts
}

// onRelease checks that every instance of hosts serves version (asked
// directly), from the release of that version (relVersion if given) that
// its link names (its process's directory), that current names that
// release, that nothing is left out of Nginx, and that the release log
// says outcome for it. It returns the release ID.
func onRelease(t *testing.T, cfg string, hosts []*testbed.Host, version, outcome string, relVersion ...string) string {
	t.Helper()
	id := ""
	for i, hr := range releasesOf(t, cfg) {
		h := hosts[i]
		for port, v := range versionsServed(t, h) {
			if v != version {
				t.Errorf("%s:%d serves %q, want %s", h.Name, port, v, version)
			}
		}
		if len(hr.Mismatched) > 0 {
			t.Errorf("%s: instances whose link and process disagree: %s", h.Name, hr.Mismatched)
		}
		want := version
		if len(relVersion) > 0 {
			want = relVersion[0]
		}
		for _, r := range hr.Releases {
			if r.Version != want || r.ID != hr.Current {
				continue
			}
			id = r.ID
			if len(r.Instances) != instances || r.Outcome != outcome || !r.Present {
				t.Errorf("%s: release %s runs on %v, outcome %s; want every instance, %s", h.Name, r.ID, r.Instances, r.Outcome, outcome)
			}
		}
		if id == "" || hr.Current != id {
			t.Errorf("%s: current is %q, not a release of %s", h.Name, hr.Current, version)
		}
		for p := basePort; p < basePort+instances; p++ {
			cwd, _ := fleet.RunRoot(context.Background(), h, fmt.Sprintf("readlink /proc/$(systemctl show -p MainPID --value my-app@%d)/cwd", p))
			if strings.TrimSpace(cwd) != "/srv/my-app/releases/"+id {
				t.Errorf("%s:%d runs in %q, want /srv/my-app/releases/%s", h.Name, p, strings.TrimSpace(cwd), id)
			}
		}
		if up := upstreamFile(t, h); strings.Contains(up, "down") {
			t.Errorf("%s: instances left out of nginx:\n%s", h.Name, up)
		}
		nginxTestPasses(t, h)
	}
	return id
}

// outcomeOf is the outcome of the release of version on every host.
func outcomeOf(t *testing.T, cfg, version string) []string {
	t.Helper()
	var out []string
	for _, hr := range releasesOf(t, cfg) {
		o := "absent"
		for _, r := range hr.Releases {
			if r.Version == version {
				o = r.Outcome
			}
		}
		out = append(out, o)
	}
	return out
}

// The releases lifecycle on two hosts under 400 req/s: a seed host moved
// by setup, v2 from a directory, v3 from a tarball, a broken v4 reverted
// by itself, two rollbacks, and a deploy resumed after its controller was
// killed; not one failed request in any of them.
func TestReleasesLifecycle(t *testing.T) {
	hosts := fleet.Hosts
	cfg := releaseConfig(t, hosts, "  keep: 3\n")
	moveToReleases(t, cfg, hosts)
	// The seed's code is now a release; the instances move to it at their
	// next restart.
	initial := releasesOf(t, cfg)[0].Current
	if !strings.HasSuffix(initial, "-initial") {
		t.Fatalf("current is %q after setup, want the first release", initial)
	}

	deploy := func(name string, wantCode int, args ...string) string {
		t.Helper()
		return deployUnderLoad(t, hosts, cfg, name, wantCode, args...)
	}

	deploy("v2 from a directory", 0, "deploy", "--version", "v2", "--artifact", artifactDir(t, testbed.GoodRelease("v2")))
	v2 := onRelease(t, cfg, hosts, "v2", "ok")
	v3tgz := artifactTarGz(t, testbed.GoodRelease("v3"))
	deploy("v3 from a tarball", 0, "deploy", "--version", "v3", "--artifact", v3tgz)
	v3 := onRelease(t, cfg, hosts, "v3", "ok")

	// The same artifact again: nothing uploaded, nothing restarted.
	plan, code := rollout(t, "plan", "-c", cfg, "--version", "v3", "--artifact", v3tgz, "--live")
	if code != 0 || strings.Count(plan, "now: release "+v3+" is already on the host: no upload; restarts none; skips 3000, 3001, 3002, 3003") != 2 {
		t.Errorf("plan --live exited %d; want every instance of both hosts skipped:\n%s", code, plan)
	}
	out := deploy("v3 again", 0, "deploy", "--version", "v3", "--artifact", v3tgz)
	if !strings.Contains(out, "is already on the host") || strings.Count(out, "already runs release "+v3) != 2*instances {
		t.Errorf("v3 again uploaded or restarted something:\n%s", out)
	}

	// v4 cannot start on the 3rd instance of the 2nd host: every instance
	// of both hosts goes back to v3.
	crash := "sudo -n sh -c 'mkdir -p /etc/systemd/system/my-app@3002.service.d && printf \"[Service]\\nEnvironment=CRASH_VERSION=v4\\n\" > /etc/systemd/system/my-app@3002.service.d/crash.conf && systemctl daemon-reload'"
	if out, err := fleet.Run(context.Background(), hosts[1], crash); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out = deploy("broken v4", 1, "deploy", "--version", "v4", "--artifact", artifactDir(t, testbed.GoodRelease("v4")))
	if !strings.Contains(out, "reverted to "+v3) || !strings.Contains(out, "FATAL: version v4 cannot start on this instance") {
		t.Errorf("the failed deploy does not say it reverted to %s, or what the app said:\n%s", v3, out)
	}
	if got := onRelease(t, cfg, hosts, "v3", "reverted"); got != v3 {
		t.Errorf("after the revert the hosts run %s, want %s", got, v3)
	}
	if o := outcomeOf(t, cfg, "v4"); o[0] != "BAD" || o[1] != "BAD" {
		t.Errorf("v4 is %v on the hosts, want BAD", o)
	}
	if out, code := rollout(t, "status", "-c", cfg); code != 0 || strings.Count(out, " "+v3+" ") != 2*instances {
		t.Errorf("status exited %d; want every instance shown running %s", code, v3)
	}

	// Two rollbacks: v2, then the first release; never v4 (BAD).
	deploy("rollback", 0, "rollback")
	if got := onRelease(t, cfg, hosts, "v2", "reverted"); got != v2 {
		t.Errorf("rollback went to %s, want %s", got, v2)
	}
	deploy("second rollback", 0, "rollback")
	if got := onRelease(t, cfg, hosts, "v1", "reverted", "initial"); got != initial {
		t.Errorf("the second rollback went to %s, want %s", got, initial)
	}
	if o := outcomeOf(t, cfg, "v3"); o[0] != "BAD" {
		t.Errorf("v3 is %v after it was rolled back from", o)
	}
	out, code = rollout(t, "rollback", "-c", cfg)
	if code != 3 || !strings.Contains(out, "nothing to roll back to") {
		t.Errorf("a third rollback exited %d:\n%s", code, out)
	}

	// v5, its controller killed after the first host's second instance;
	// the same command again resumes it.
	v5 := artifactTarGz(t, testbed.GoodRelease("v5"))
	var rerun string
	res := underLoad(t, hosts, func() {
		killedAt(t, `"port":3001,"step":"health","status":"ok"`, "deploy", "-c", cfg, "--version", "v5", "--artifact", v5)
		// The plan, reading the hosts, shows what the rerun will skip.
		plan, code := rollout(t, "plan", "-c", cfg, "--version", "v5", "--artifact", v5, "--live")
		if code != 0 || !strings.Contains(plan, "is already on the host: no upload") || !strings.Contains(plan, "skips 3000") {
			t.Errorf("plan --live exited %d without the skips:\n%s", code, plan)
		}
		rerun, code = rollout(t, "deploy", "-c", cfg, "--version", "v5", "--artifact", v5)
		if code != 0 {
			t.Errorf("the rerun exited %d:\n%s", code, rerun)
		}
	})
	noFailedRequests(t, res)
	if !strings.Contains(rerun, "took over the deploy lock") || !strings.Contains(rerun, "is already on the host") || !strings.Contains(rerun, "already runs release ") {
		t.Errorf("the rerun did not resume (take the lock over, reuse the upload, skip what was done):\n%s", rerun)
	}
	onRelease(t, cfg, hosts, "v5", "ok")

	// keep: 3 — the older good releases are gone, BAD ones too.
	for i, hr := range releasesOf(t, cfg) {
		present := 0
		for _, r := range hr.Releases {
			if r.Present {
				present++
			}
		}
		if present > 3 {
			t.Errorf("%s keeps %d releases, keep is 3", hosts[i].Name, present)
		}
	}
	if out, _ := fleet.Run(context.Background(), hosts[1], "sudo -n rm -rf /etc/systemd/system/my-app@3002.service.d && sudo -n systemctl daemon-reload"); out != "" {
		t.Log(out)
	}
}
