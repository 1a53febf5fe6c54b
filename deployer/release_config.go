package deployer

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// ReleaseConfig is the release: section: rollout ships the code as
// releases under Root and switches each instance to its release just
// before restarting it. Without the section (Config.Release nil) rollout
// restarts instances onto whatever code the host already has.
type ReleaseConfig struct {
	// Root holds releases/ID, shared/, instances/PORT, current and
	// .rollout/releases.jsonl; default /srv/APP.
	Root string
	// Shared are paths relative to a release that outlive releases: each
	// is a symlink to Root/shared/PATH in every release.
	Shared []string
	// Keep is how many successful releases each host keeps (at least 1).
	Keep int
	// Prepare runs in a new release's directory as the service user
	// (setup.user), before anything restarts; empty: nothing.
	Prepare        string
	PrepareTimeout time.Duration
	// OnFailure is "revert" (switch every instance already switched back
	// to the release it ran before) or "halt" (stop, as without releases).
	OnFailure string
	// Migrate runs once per release, on MigrateHost (default: the first
	// host), in the new release's directory as the service user with the
	// app's env (setup.env_file and the release's secrets), after every
	// host has the release and before any instance restarts; empty:
	// nothing.
	Migrate        string
	MigrateHost    string
	MigrateTimeout time.Duration
	// Artifact is the local directory or .tar.gz a deploy ships when
	// --artifact is not given (relative: to the config file's directory);
	// in a file with apps:, each app's.
	Artifact string
}

// The release.on_failure policies.
const (
	OnFailureRevert = "revert"
	OnFailureHalt   = "halt"
)

// Bounds of the release: section.
const (
	maxKeep           = 100
	maxPrepareTimeout = 2 * time.Hour
)

// defaultRelease is a release: section holding every default but Root,
// which derives from the app (see releaseDefaults).
func defaultRelease() *ReleaseConfig {
	return &ReleaseConfig{Keep: 5, PrepareTimeout: 10 * time.Minute, MigrateTimeout: 10 * time.Minute, OnFailure: OnFailureRevert}
}

// defaultReleaseRoot is release.root when the file does not give it.
func defaultReleaseRoot(app string) string { return "/srv/" + app }

// releaseSection is the release: section; without one c.Release stays nil.
// Its root is filled by releaseDefaults, once the app is known.
func releaseSection(c *Config) field {
	r := defaultRelease()
	fields := []field{
		str("root", &r.Root),
		strs("shared", &r.Shared),
		integer("keep", &r.Keep),
		str("prepare", &r.Prepare),
		duration("prepare_timeout", &r.PrepareTimeout),
		str("migrate", &r.Migrate),
		str("migrate_host", &r.MigrateHost),
		duration("migrate_timeout", &r.MigrateTimeout),
		str("on_failure", &r.OnFailure),
		str("artifact", &r.Artifact),
	}
	return one("release", func(p *parser, key string) {
		if p.fields(key, fields) {
			c.Release = r
		}
	})
}

// releaseDefaults fills what the release: section leaves out and derives
// from other keys: the root, from the app.
func (c *Config) releaseDefaults() {
	if c.Release != nil && c.Release.Root == "" {
		c.Release.Root = defaultReleaseRoot(c.App)
	}
}

// sharedRE is a path relative to a release: names of letters, digits and
// . _ - separated by single slashes.
var sharedRE = regexp.MustCompile(`^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$`)

// releaseProblems checks the release: section, if any.
func (c *Config) releaseProblems(cs *checks) {
	r := c.Release
	if r == nil {
		return
	}
	// The default root, from the app, is checked only with a valid app (a
	// bad app is reported as app).
	if r.Root != defaultReleaseRoot(c.App) || match(appRE, c.App, "") == nil {
		cs.add("release.root", validReleaseRoot(r.Root))
	}
	checkShared(cs, r.Shared)
	if r.Keep < 1 || r.Keep > maxKeep {
		cs.add("release.keep", fmt.Errorf("must be 1..%d (the successful releases each host keeps), got %d", maxKeep, r.Keep))
	}
	if r.Prepare != "" {
		cs.add("release.prepare", validCommand(r.Prepare))
	}
	cs.add("release.prepare_timeout", within(r.PrepareTimeout, time.Second, maxPrepareTimeout))
	if r.Migrate != "" {
		cs.add("release.migrate", validCommand(r.Migrate))
	}
	if r.MigrateHost != "" && !slices.Contains(c.Hosts, r.MigrateHost) {
		cs.add("release.migrate_host", fmt.Errorf("must be one of hosts (%s), got %s", strings.Join(c.Hosts, ", "), quoteValue(r.MigrateHost)), "hosts")
	}
	cs.add("release.migrate_timeout", within(r.MigrateTimeout, time.Second, maxPrepareTimeout))
	if r.OnFailure != OnFailureRevert && r.OnFailure != OnFailureHalt {
		cs.add("release.on_failure", fmt.Errorf("must be %s or %s, got %s", OnFailureRevert, OnFailureHalt, quoteValue(r.OnFailure)))
	}
}

// migrateHost is the host release.migrate runs on: migrate_host, or the
// first host.
func (c *Config) migrateHost() string {
	if c.Release != nil && c.Release.MigrateHost != "" {
		return c.Release.MigrateHost
	}
	if len(c.Hosts) > 0 {
		return c.Hosts[0]
	}
	return ""
}

// validReleaseRoot checks release.root: an absolute path, clean (so that
// Root+"/releases" is a path as it is), not "/".
func validReleaseRoot(root string) error {
	if root != "" && strings.Trim(root, "/") == "" {
		return fmt.Errorf(`must not be "/" (rollout manages the directories inside it), got %s`, quoteValue(root))
	}
	if err := validPath(root, false); err != nil {
		return err
	}
	if path.Clean(root) != root {
		return fmt.Errorf(`must be a clean path (no "//", "." segments or trailing "/"), like %s, got %s`, quoteValue(path.Clean(root)), quoteValue(root))
	}
	return nil
}

// checkShared checks release.shared: paths relative to a release, none
// listed twice or inside another (each is one symlink to Root/shared).
func checkShared(cs *checks, shared []string) {
	seen := map[string]int{}  // the valid entries' indexes, by path
	holds := map[string]int{} // by directory: the first valid entry inside it
	for i, s := range shared {
		err := validShared(s)
		if err == nil {
			err = sharedOverlap(s, shared, seen, holds)
		}
		if err != nil {
			cs.add(fmt.Sprintf("release.shared[%d]", i), err)
			continue
		}
		seen[s] = i
		for k := range len(s) {
			if s[k] != '/' {
				continue
			}
			if _, ok := holds[s[:k]]; !ok {
				holds[s[:k]] = i
			}
		}
	}
}

// validShared checks one entry of release.shared on its own.
func validShared(s string) error {
	switch {
	case s == "":
		return errors.New("must be a path relative to the release, got nothing")
	case strings.HasPrefix(s, "/"):
		return fmt.Errorf(`must be a path relative to the release (like "uploads"), not an absolute one, got %s`, quoteValue(s))
	case !sharedRE.MatchString(s):
		return fmt.Errorf(`may only contain letters, digits and . _ - separated by single "/", got %s`, quoteValue(s))
	case slices.Contains(strings.Split(s, "/"), ".") || slices.Contains(strings.Split(s, "/"), ".."):
		return fmt.Errorf(`must not contain "." or ".." segments, got %s`, quoteValue(s))
	}
	return nil
}

// sharedOverlap checks the valid entry s of release.shared against the
// valid ones before it: seen and holds, as checkShared keeps them.
func sharedOverlap(s string, shared []string, seen, holds map[string]int) error {
	if j, ok := seen[s]; ok {
		return fmt.Errorf("%s is listed twice (also release.shared[%d])", quoteValue(s), j)
	}
	if j, ok := holds[s]; ok {
		return fmt.Errorf("%s holds release.shared[%d] (%s); list one or the other", quoteValue(s), j, quoteValue(shared[j]))
	}
	for k := range len(s) {
		if s[k] != '/' {
			continue
		}
		if j, ok := seen[s[:k]]; ok {
			return fmt.Errorf("%s is inside release.shared[%d] (%s); list one or the other", quoteValue(s), j, quoteValue(shared[j]))
		}
	}
	return nil
}

// releaseIDRE is a release's id: its UTC time, then its sanitized version.
var releaseIDRE = regexp.MustCompile(`^[0-9]{14}-[A-Za-z0-9._-]{1,64}$`)

// releaseUnsafeRE is a run of characters not allowed in a release id.
var releaseUnsafeRE = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// maxReleaseVersion is the bytes of the version in a release id.
const maxReleaseVersion = 64

// ReleaseID is the id of the release of version made at t: t in UTC as
// YYYYMMDDhhmmss, "-", then version with each run of other characters than
// letters, digits and . _ - replaced by one "-", without leading or
// trailing "-" or ".", at most 64 bytes; "release" if nothing is left.
// The id is one path segment and sorts by time.
func ReleaseID(t time.Time, version string) string {
	v := releaseUnsafeRE.ReplaceAllString(version, "-")
	v = strings.Trim(v, "-.")
	if len(v) > maxReleaseVersion {
		v = strings.TrimRight(v[:maxReleaseVersion], "-.") // ASCII only: any cut is on a character
	}
	if v == "" {
		v = "release"
	}
	return t.UTC().Format("20060102150405") + "-" + v
}

// ValidReleaseID checks a release id given by the user (e.g. --to), as
// ReleaseID makes them.
func ValidReleaseID(id string) error {
	if !releaseIDRE.MatchString(id) {
		return fmt.Errorf(`%s is not a release id: want its UTC time as 14 digits (YYYYMMDDhhmmss), "-", then 1..64 letters, digits, ".", "_" or "-", like "20240501120000-v1.2.3"`, quoteValue(id))
	}
	return nil
}
