package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rollout-dev/rollout/e2e/testbed"
)

// BenchmarkPrivilege deploys a release to one host of 4 instances under
// 400 req/s three times each with full sudo, with sudo: helper, and with
// the helper and secrets: (one more SSH call per host: the release's
// env), in turns, and prints each way's median time and its failed
// requests and resends.
func BenchmarkPrivilege(b *testing.B) {
	h := fleet.Hosts[0]
	hosts := []*testbed.Host{h}
	for b.Loop() {
		base := releaseConfig(b, hosts, "")
		data, err := os.ReadFile(base)
		if err != nil {
			b.Fatal(err)
		}
		conf := strings.Replace(string(data), "min_healthy: 1s", "min_healthy: 0s", 1)
		dir := b.TempDir()
		key := filepath.Join(dir, "age.key")
		pub, code := rollout(b, "secrets", "keygen", "--out", key)
		if code != 0 {
			b.Fatalf("keygen exited %d:\n%s", code, pub)
		}
		ways := []struct{ name, cfg string }{
			{"full sudo", conf},
			{"helper", conf + "sudo: helper\n"},
			{"helper+secrets", conf + fmt.Sprintf("sudo: helper\nsecrets:\n  file: %s\n  recipients: [%s]\n  identity: %s\n",
				filepath.Join(dir, "env.age"), strings.TrimSpace(strings.SplitN(pub, "\n", 2)[0]), key)},
		}
		for i := range ways {
			path := filepath.Join(dir, fmt.Sprintf("way%d.yaml", i))
			if err := os.WriteFile(path, []byte(ways[i].cfg), 0o600); err != nil {
				b.Fatal(err)
			}
			ways[i].cfg = path
		}
		secretsCfg := ways[2].cfg
		for _, kv := range [][2]string{{"API_KEY", "bench-key"}, {"DATABASE_URL", "postgres://bench"}} {
			cmd := exec.Command(rolloutBin, "secrets", "set", "-c", secretsCfg, kv[0])
			cmd.Stdin = strings.NewReader(kv[1])
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("secrets set: %v\n%s", err, out)
			}
		}
		moveToReleases(b, secretsCfg, hosts) // the helper, and units that read the release's env

		seconds := make([][]float64, len(ways))
		failed, resends := make([]int, len(ways)), make([]int, len(ways))
		n := 2
		for round := 0; round < 3; round++ {
			for i, w := range ways {
				v := fmt.Sprintf("v%d", n)
				n++
				r := timedLoad(b, h, func() {
					if out, code := rollout(b, "deploy", "-c", w.cfg, "--version", v, "--artifact", artifactDir(b, testbed.GoodRelease(v))); code != 0 {
						b.Fatalf("%s: deploy %s exited %d:\n%s", w.name, v, code, out)
					}
				})
				seconds[i] = append(seconds[i], r.seconds)
				failed[i] += r.res.Failed
				resends[i] += resent(r.res)
			}
		}
		var parts []string
		for i, w := range ways {
			s := slices.Clone(seconds[i])
			slices.Sort(s)
			parts = append(parts, fmt.Sprintf("%s median_seconds=%.1f (%.1f %.1f %.1f) failed=%d resent=%d",
				strings.ReplaceAll(w.name, " ", "_"), s[1], seconds[i][0], seconds[i][1], seconds[i][2], failed[i], resends[i]))
		}
		b.ReportMetric(float64(failed[1]+failed[2]), "helper_failed")
		fmt.Printf("bench: privilege, one host of 4 instances, 400 req/s, three deploys each: %s\n", strings.Join(parts, "; "))
	}
}
