package deployer

import (
	"testing"
	"time"
)

func TestHostStatus(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001, 3002)
	h.upstream = "upstream my_app {\n    server 127.0.0.1:3000;\n    server 127.0.0.1:3001 down;\n}\n"
	h.units[3002].active = false
	d, _ := fakeDeployer(t, "base_port: 3000\ninstances: auto\n", h)
	h.cores = 3
	hs := hostStatus(testCtx(t), d.Config, "web1", h, nil)
	if hs.Error != "" || len(hs.Instances) != 3 {
		t.Fatalf("status %+v", hs)
	}
	want := []struct {
		inNginx, healthy, ok bool
		state                string
	}{{true, true, true, "active"}, {false, true, false, "active"}, {false, false, false, "inactive"}}
	for i, w := range want {
		is := hs.Instances[i]
		if is.InNginx != w.inNginx || is.Healthy != w.healthy || is.OK() != w.ok || is.State != w.state {
			t.Errorf("%d: %+v, want in nginx %v, healthy %v, state %s", is.Port, is, w.inNginx, w.healthy, w.state)
		}
	}
	if hs.OK() {
		t.Error("a host with instances out of service is OK")
	}
	// uptime: the host's clock (1e9 µs) minus the start (the pid, in µs).
	if got := hs.Instances[0].Uptime; got != time.Duration(1e9-100)*time.Microsecond {
		t.Errorf("uptime %s", got)
	}
	if hs.Instances[2].Health == "" {
		t.Error("no reason given for the failing health check")
	}
}

// With release: each instance says which release its process runs.
func TestHostStatusShowsReleases(t *testing.T) {
	h := newFakeRemote(t, 3000, 3001).withReleases(relV1)
	h.runs[3001] = relV2
	d, _ := fakeDeployer(t, "ports: [3000, 3001]\nrelease: {}\n", h)
	hs := hostStatus(testCtx(t), d.Config, "web1", h, nil)
	if hs.Error != "" || hs.Instances[0].Release != relV1 || hs.Instances[1].Release != relV2 {
		t.Errorf("status %+v", hs)
	}
}
