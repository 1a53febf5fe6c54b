package deployer

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output; run go test ./deployer -update and review the diff\ngot:\n%s", path, got)
	}
}

func TestPlanGolden(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(validConfig))
	if err != nil {
		t.Fatal(err)
	}
	p := BuildPlan(cfg, "v2")
	var text, short, js bytes.Buffer
	if err := p.WriteScripts(&text); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteText(&short); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	golden(t, "plan.txt", text.Bytes())
	golden(t, "plan-short.txt", short.Bytes())
	golden(t, "plan.json", js.Bytes())

	// Every instance of every host, each with its steps in order.
	var back Plan
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Hosts) != 2 || len(back.Hosts[1].Instances) != 4 {
		t.Fatalf("plan has %d hosts", len(back.Hosts))
	}
	var names []StepName
	for _, s := range back.Hosts[1].Instances[3].Steps {
		names = append(names, s.Name)
	}
	want := []StepName{StepCapacity, StepDrain, StepWaitDrain, StepRestart, StepActive, StepHealth, StepStable, StepUndrain}
	if len(names) != len(want) {
		t.Fatalf("steps %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Errorf("step %d is %s, want %s", i, names[i], want[i])
		}
	}
}

// Building a plan is deterministic.
func TestPlanDeterministic(t *testing.T) {
	cfg, _ := ParseConfig("rollout.yaml", []byte(validConfig))
	var a, b bytes.Buffer
	_ = BuildPlan(cfg, "v2").WriteJSON(&a)
	_ = BuildPlan(cfg, "v2").WriteJSON(&b)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two plans of one config differ")
	}
}

// With release: each instance is switched just before its restart, the
// host ships the release first and records it last; with what the hosts
// said (plan --live), the plan says what each will skip and remove.
func TestPlanWithReleases(t *testing.T) {
	cfg, err := ParseConfig("rollout.yaml", []byte(validConfig+"release: {prepare: npm ci, keep: 3}\n"))
	if err != nil {
		t.Fatal(err)
	}
	preview := []Preview{
		{Host: cfg.Hosts[0], Release: relV2, Upload: false, Skip: []int{3000, 3001}, Restart: []int{3002, 3003}, Remove: []string{relV1}},
		{Host: cfg.Hosts[1], Error: "dial: connection refused"},
	}
	p := BuildPlanFor(cfg, "v2", preview)
	var text bytes.Buffer
	if err := p.WriteScripts(&text); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	for _, want := range []string{
		"release " + relV2 + " (or the release already on a host with the artifact's SHA-256); on failure: revert",
		"now: release " + relV2 + " is already on the host: no upload; restarts 3002, 3003; skips 3000, 3001 (already run it, healthy, in service); cleanup would then remove " + relV1,
		"now: could not be read: dial: connection refused",
		`run release.prepare "npm ci"`,
		"rollout-release-upload",
		"switch: point /srv/my-app/instances/3003 at release " + relV2,
		"rollout-restart my-app@3003 " + unitProps + " /srv/my-app 3003 " + relV2,
		"remove the releases beyond the newest 3 good ones",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q", want)
		}
	}
	steps := p.Hosts[0].Instances[3].Steps
	if steps[3].Name != StepSwitch || steps[4].Name != StepRestart {
		t.Errorf("steps %v: the switch must come just before the restart", steps)
	}
}
