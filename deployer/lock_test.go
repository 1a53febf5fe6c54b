package deployer

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseLockState(t *testing.T) {
	info := `{"op":"deploy","version":"v2","user":"alice","from":"laptop","pid":42,"since":"2026-11-25T09:00:00Z","token":"ab"}`
	tests := []struct {
		name, out      string
		acquired, held bool
		stale          bool
		holder         string
		age            time.Duration
	}{
		{name: "acquired", out: "acquired\n", acquired: true},
		{name: "free", out: "free\n"},
		{name: "fresh", out: "held 5\n" + info + "\n", held: true, holder: "alice@laptop (deploy v2, pid 42", age: 5 * time.Second},
		{name: "stale", out: "held 61\n" + info + "\n", held: true, stale: true, holder: "alice@laptop", age: 61 * time.Second},
		{name: "held, info not yet written", out: "held 0\n", held: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, ok, err := parseLockState(tt.out, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.acquired || st.Held != tt.held || st.Stale != tt.stale || st.Age != tt.age {
				t.Errorf("got acquired=%v %+v", ok, st)
			}
			if tt.holder != "" && (st.Holder == nil || !strings.Contains(st.Holder.String(), tt.holder)) {
				t.Errorf("holder %v, want %q", st.Holder, tt.holder)
			}
			if st.Held {
				err := &LockedError{State: st}
				if !errors.Is(err, ErrLocked) || strings.Contains(err.Error(), "--break-stale-lock") != tt.stale {
					t.Errorf("error %q", err)
				}
			}
		})
	}
	if _, _, err := parseLockState("sudo: a password is required\n", time.Minute); err == nil {
		t.Error("unexpected output was accepted")
	}
}
