package deployer

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
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
	var text, js bytes.Buffer
	if err := p.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	golden(t, "plan.txt", text.Bytes())
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
