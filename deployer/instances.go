package deployer

import (
	"fmt"
	"slices"
)

// maxPort is the highest TCP port.
const maxPort = 65535

// MaxInstances bounds the instances of one host: a typo of 6000 for 6
// would otherwise enable thousands of units (and plan them all).
const MaxInstances = 1024

// tooManyInstances says why n instances per host are refused, nil when
// they are not.
func tooManyInstances(n int) error {
	if n > MaxInstances {
		return fmt.Errorf("must be at most %d instances per host (one per CPU core is usual), got %d", MaxInstances, n)
	}
	return nil
}

// Instances are the ports of a host's instances: an explicit list (ports:),
// or base_port with a count (instances: N) or one per CPU core (instances: auto).
type Instances struct {
	List  []int // ports: [...]; nil with Base
	Base  int   // base_port; 0 with List
	Count int   // instances: N
	Auto  bool  // instances: auto
}

// Resolve returns the ports of a host with the given number of CPU cores
// (used only with Auto; at least 1), in order, never past 65535. A list is
// returned as given (a copy): Validate reports its bad ports.
func (in Instances) Resolve(cores int) []int {
	if in.List != nil || in.Base == 0 {
		return slices.Clone(in.List)
	}
	n := in.Count
	if in.Auto {
		n = max(cores, 1)
	}
	var ports []int
	for port := in.Base; port < in.Base+n && port <= maxPort; port++ {
		ports = append(ports, port)
	}
	return ports
}
