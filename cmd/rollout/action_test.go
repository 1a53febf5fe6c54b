package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/rollout-dev/rollout/internal/testenv"
)

type actionStep struct {
	Name             string            `yaml:"name"`
	Uses             string            `yaml:"uses"`
	Run              string            `yaml:"run"`
	Shell            string            `yaml:"shell"`
	WorkingDirectory string            `yaml:"working-directory"`
	With             map[string]string `yaml:"with"`
	Env              map[string]string `yaml:"env"`
}

type action struct {
	Name   string `yaml:"name"`
	Inputs map[string]struct {
		Required bool   `yaml:"required"`
		Default  string `yaml:"default"`
	} `yaml:"inputs"`
	Runs struct {
		Using string       `yaml:"using"`
		Steps []actionStep `yaml:"steps"`
	} `yaml:"runs"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestActionYAML(t *testing.T) {
	var a action
	readYAML(t, "../../action.yml", &a)
	if a.Runs.Using != "composite" {
		t.Errorf("runs.using = %q", a.Runs.Using)
	}
	for name, required := range map[string]bool{"config": false, "version": true, "hosts": false, "artifact": false, "args": false} {
		in, ok := a.Inputs[name]
		if !ok || in.Required != required {
			t.Errorf("input %s: present %v, required %v, want required %v", name, ok, in.Required, required)
		}
	}
	if a.Inputs["config"].Default != "rollout.yaml" {
		t.Errorf("config default %q", a.Inputs["config"].Default)
	}
	steps := a.Runs.Steps
	if len(steps) != 3 {
		t.Fatalf("%d steps, want setup-go, install, deploy", len(steps))
	}
	if !strings.HasPrefix(steps[0].Uses, "actions/setup-go@") || steps[0].With["go-version-file"] != "${{ github.action_path }}/go.mod" {
		t.Errorf("step 1: %+v", steps[0])
	}
	if !strings.Contains(steps[1].Run, "go install ") || !strings.HasSuffix(strings.TrimSpace(steps[1].Run), "./cmd/rollout") || steps[1].WorkingDirectory != "${{ github.action_path }}" {
		t.Errorf("step 2: %+v", steps[1])
	}
	if !strings.Contains(steps[2].Run, "rollout deploy") || steps[2].Env["ROLLOUT_VERSION"] != "${{ inputs.version }}" || steps[2].Env["ROLLOUT_CONFIG"] != "${{ inputs.config }}" {
		t.Errorf("step 3: %+v", steps[2])
	}
	for _, s := range steps {
		if s.Run != "" && s.Shell != "bash" {
			t.Errorf("step %q: shell %q", s.Name, s.Shell)
		}
		// Expressions in a script are pasted in before the shell runs:
		// inputs must come in through env.
		if strings.Contains(s.Run, "${{") {
			t.Errorf("step %q interpolates an expression into its script:\n%s", s.Name, s.Run)
		}
	}
}

// The deploy step's script, run by bash with a stand-in rollout on PATH:
// the inputs arrive as flags and ROLLOUT_* variables, and a hostile input
// stays data.
func TestActionDeployScript(t *testing.T) {
	bash := testenv.NeedCommand(t, "bash")
	var a action
	readYAML(t, "../../action.yml", &a)
	script := a.Runs.Steps[2].Run
	bin := t.TempDir()
	fake := "#!/bin/sh\nprintf '%s\\n' \"$@\" \"config=$ROLLOUT_CONFIG\" \"version=$ROLLOUT_VERSION\" \"hosts=${ROLLOUT_HOSTS-unset}\" \"artifact=${ROLLOUT_ARTIFACT-unset}\"\n"
	if err := os.WriteFile(filepath.Join(bin, "rollout"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(env ...string) string {
		cmd := exec.Command(bash, "-c", script)
		cmd.Env = append([]string{"PATH=" + bin + ":/usr/bin:/bin"}, env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return string(out)
	}
	got := run("ROLLOUT_CONFIG=deploy/rollout.yaml", "ROLLOUT_VERSION=abc123", "INPUT_HOSTS=web1,web2", "INPUT_ARTIFACT=build dir/", "INPUT_ARGS=--parallel 2  --min-serving 1")
	want := "deploy\n--parallel\n2\n--min-serving\n1\nconfig=deploy/rollout.yaml\nversion=abc123\nhosts=web1,web2\nartifact=build dir/\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	got = run("ROLLOUT_CONFIG=rollout.yaml", "ROLLOUT_VERSION=$(touch /tmp/pwned);*", "INPUT_HOSTS=", "INPUT_ARTIFACT=", "INPUT_ARGS=")
	want = "deploy\nconfig=rollout.yaml\nversion=$(touch /tmp/pwned);*\nhosts=unset\nartifact=unset\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestExampleWorkflow(t *testing.T) {
	var wf struct {
		On   map[string]any `yaml:"on"`
		Jobs map[string]struct {
			Concurrency struct {
				Group            string `yaml:"group"`
				CancelInProgress *bool  `yaml:"cancel-in-progress"`
			} `yaml:"concurrency"`
			Steps []actionStep `yaml:"steps"`
		} `yaml:"jobs"`
	}
	readYAML(t, "../../examples/github-actions/deploy.yml", &wf)
	job, ok := wf.Jobs["deploy"]
	if !ok {
		t.Fatal("no deploy job")
	}
	if job.Concurrency.Group != "deploy-production" || job.Concurrency.CancelInProgress == nil || *job.Concurrency.CancelInProgress {
		t.Errorf("concurrency %+v, want group deploy-production, cancel-in-progress false", job.Concurrency)
	}
	if _, ok := wf.On["push"]; !ok {
		t.Errorf("on: %v", wf.On)
	}
	var uses *actionStep
	for i, s := range job.Steps {
		if strings.HasPrefix(s.Uses, "rollout-dev/rollout@") {
			uses = &job.Steps[i]
		}
	}
	if uses == nil {
		t.Fatal("no step uses rollout-dev/rollout")
	}
	var a action
	readYAML(t, "../../action.yml", &a)
	for k := range uses.With {
		if _, ok := a.Inputs[k]; !ok {
			t.Errorf("with: %s is not an input of action.yml", k)
		}
	}
	if uses.With["version"] != "${{ github.sha }}" ||
		!strings.HasPrefix(uses.Env["ROLLOUT_SSH_KEY"], "${{ secrets.") || !strings.HasPrefix(uses.Env["ROLLOUT_KNOWN_HOSTS"], "${{ secrets.") {
		t.Errorf("rollout step: %+v", uses)
	}
}

// TestActionLint checks action.yml's steps with actionlint (and the
// shellcheck it runs on every script): a composite action's steps are
// workflow steps, so they are checked as a reusable workflow whose inputs
// are the action's. make lint runs it with ROLLOUT_REQUIRE_ACTIONLINT=1.
func TestActionLint(t *testing.T) {
	bin := testenv.NeedCommand(t, "actionlint") // make tools builds it into build/tools
	var a struct {
		Inputs map[string]map[string]any `yaml:"inputs"`
		Runs   struct {
			Steps []map[string]any `yaml:"steps"`
		} `yaml:"runs"`
	}
	readYAML(t, "../../action.yml", &a)
	inputs := map[string]any{}
	for name, in := range a.Inputs {
		in["type"] = "string"
		inputs[name] = in
	}
	wf := map[string]any{
		"name": "action.yml as a workflow",
		"on":   map[string]any{"workflow_call": map[string]any{"inputs": inputs}},
		"jobs": map[string]any{"action": map[string]any{"runs-on": "ubuntu-latest", "steps": a.Runs.Steps}},
	}
	b, err := yaml.Marshal(wf)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), ".github", "workflows")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "action.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-shellcheck", "shellcheck", path).CombinedOutput(); err != nil {
		t.Fatalf("actionlint on action.yml's steps: %v\n%s\n%s", err, out, b)
	}
}
