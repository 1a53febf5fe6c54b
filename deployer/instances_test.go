package deployer

import (
	"reflect"
	"testing"
)

func TestInstancesResolve(t *testing.T) {
	tests := []struct {
		name  string
		in    Instances
		cores int
		want  []int
	}{
		{"list, as given", Instances{List: []int{3002, 3000, 70000}}, 8, []int{3002, 3000, 70000}},
		{"empty list", Instances{List: []int{}}, 1, []int{}},
		{"nothing", Instances{}, 4, nil},
		{"count", Instances{Base: 3000, Count: 3}, 8, []int{3000, 3001, 3002}},
		{"count ignores cores", Instances{Base: 3000, Count: 2}, 0, []int{3000, 3001}},
		{"auto, 1 core", Instances{Base: 3000, Auto: true}, 1, []int{3000}},
		{"auto, 4 cores", Instances{Base: 3000, Auto: true}, 4, []int{3000, 3001, 3002, 3003}},
		{"auto, no cores counts as 1", Instances{Base: 4000, Auto: true}, 0, []int{4000}},
		{"count clipped at 65535", Instances{Base: 65534, Count: 5}, 1, []int{65534, 65535}},
		{"auto clipped at 65535", Instances{Base: 65533, Auto: true}, 4, []int{65533, 65534, 65535}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.Resolve(tt.cores); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
	t.Run("a list is a copy", func(t *testing.T) {
		in := Instances{List: []int{3000, 3001}}
		in.Resolve(1)[0] = 1
		if got := in.Resolve(1); !reflect.DeepEqual(got, []int{3000, 3001}) {
			t.Errorf("got %v", got)
		}
	})
}

func TestConfigInstances(t *testing.T) {
	auto := &Config{Instances: Instances{Base: 3000, Auto: true}}
	tests := []struct {
		name      string
		got, want any
	}{
		{"auto: no ports yet", auto.Ports(), []int(nil)},
		{"auto: base port", auto.BasePort(), 3000},
		{"auto for 2 cores", auto.ForCores(2).Instances, Instances{Base: 3000, Count: 2}},
		{"auto for 2 cores: ports", auto.ForCores(2).Ports(), []int{3000, 3001}},
		{"auto for 2 cores: min_serving", auto.ForCores(2).MinServing(), 1},
		{"auto untouched by ForCores", auto.InstancesAuto(), true},
		{"count: ForCores is the config itself", (&Config{Instances: Instances{Base: 3000, Count: 2}}).ForCores(8).Ports(), []int{3000, 3001}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %#v, want %#v", tt.got, tt.want)
			}
		})
	}
	t.Run("SetInstances", func(t *testing.T) {
		c := &Config{Instances: Instances{Base: 65530, Count: 2}}
		if err := c.SetInstances(0); err != nil || !c.InstancesAuto() || c.Ports() != nil {
			t.Errorf("auto: %v, auto %v, ports %v", err, c.InstancesAuto(), c.Ports())
		}
		if err := c.SetInstances(6); err != nil || !reflect.DeepEqual(c.Instances, Instances{Base: 65530, Count: 6}) {
			t.Errorf("6: %v, %+v", err, c.Instances)
		}
		want := "instances must be 1..6 from base_port 65530, got 7"
		if err := c.SetInstances(7); err == nil || err.Error() != want {
			t.Errorf("7: got %v, want %s", err, want)
		}
		c.SetPorts([]int{80})
		want = "instances need base_port in the config (it lists its ports)"
		if err := c.SetInstances(2); err == nil || err.Error() != want {
			t.Errorf("after SetPorts: got %v, want %s", err, want)
		}
	})
}
