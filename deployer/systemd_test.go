package deployer

import (
	"reflect"
	"testing"
	"time"
)

func TestParseUnitStates(t *testing.T) {
	out := "Id=my-app@3000.service\nLoadState=loaded\nActiveState=active\nSubState=running\nMainPID=110\nExecMainStartTimestampMonotonic=7285937278\nNRestarts=0\n\n" +
		"Id=my-app@3001.service\nLoadState=loaded\nActiveState=activating\nSubState=auto-restart\nMainPID=0\nExecMainStartTimestampMonotonic=0\nNRestarts=2\n"
	got, err := parseUnitStates(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]unitState{
		"my-app@3000": {ID: "my-app@3000.service", Load: "loaded", Active: "active", Sub: "running", MainPID: 110, StartedAt: 7285937278},
		"my-app@3001": {ID: "my-app@3001.service", Load: "loaded", Active: "activating", Sub: "auto-restart", Restarts: 2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if !got["my-app@3000"].running() || got["my-app@3001"].running() {
		t.Error("running() wrong")
	}
	if _, err := parseUnitStates("garbage"); err == nil {
		t.Error("want error for garbage")
	}
}

func TestUnitLogFiles(t *testing.T) {
	cat := `# /etc/systemd/system/my-app@.service
[Unit]
StandardOutput=append:/not/service/section.log
[Service]
StandardOutput=append:/var/log/my-app/stdout-%i.log
StandardError=append:/var/log/my-app/stderr-%i.log

# /etc/systemd/system/my-app@.service.d/override.conf
[Service]
StandardError=file:/var/log/%p/%N.err
`
	got := unitLogFiles(cat, "my-app@3001")
	want := []string{"/var/log/my-app/my-app@3001.err", "/var/log/my-app/stdout-3001.log"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := unitLogFiles("[Service]\nStandardOutput=journal\n", "a@1"); len(got) != 0 {
		t.Errorf("journal unit: got %v, want none", got)
	}
}

func TestParseSystemdSpan(t *testing.T) {
	for in, want := range map[string]time.Duration{"1min": time.Minute, "10s": 10 * time.Second, "1min 30s": 90 * time.Second,
		"500ms": 500 * time.Millisecond, "1h 2min": time.Hour + 2*time.Minute, "infinity": 0, "": 0} {
		if got := parseSystemdSpan(in); got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
}

func TestStartLimitInState(t *testing.T) {
	// systemd 252: the refused automatic restart leaves Result=exit-code.
	states, _ := parseUnitStates("Id=my-app@3001.service\nActiveState=failed\nSubState=failed\nNRestarts=3\nResult=exit-code\nStartLimitBurst=3\nStartLimitIntervalUSec=1min\n\nId=my-app@3002.service\nActiveState=failed\nSubState=failed\nNRestarts=0\nResult=exit-code\nStartLimitBurst=3\n")
	if states["my-app@3001"].hitStartLimit() == "" || states["my-app@3002"].hitStartLimit() != "" {
		t.Errorf("start limit: %+v", states)
	}
	states, err := parseUnitStates("Id=my-app@3000.service\nActiveState=failed\nSubState=failed\nMainPID=0\nNRestarts=3\nResult=start-limit-hit\nStartLimitBurst=3\nStartLimitIntervalUSec=1min\n")
	if err != nil {
		t.Fatal(err)
	}
	u := states["my-app@3000"]
	if got := u.String(); got != "failed/failed, restarted 3 times by systemd, hit the start limit (StartLimitBurst=3 in 1m0s): systemd will not start it again until reset" {
		t.Errorf("%q", got)
	}
}
