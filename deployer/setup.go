package deployer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pmezard/go-difflib/difflib"
)

// SetupResult is what setup did, or would do, on one host.
type SetupResult struct {
	Host    string   `json:"host"`
	Changes []string `json:"changes"`
	Diff    string   `json:"diff,omitempty"` // with DryRun
	// Ports are the host's instances (instances: auto resolved).
	Ports []int `json:"ports,omitempty"`
}

// setupWant is what setup looks at on a host (scripts/setup-inspect.sh).
type setupWant struct {
	User, AppDir, ReleaseRoot string
	// Timer is the watch's timer ("" without a watch: section), and
	// WatchFiles the files an earlier setup's watch left.
	Timer string
	// LogTimer is the timer that rotates the instances' output files ("":
	// no rotation).
	LogTimer   string
	WatchFiles []string
	Dirs       []managedDir
	Files      []ManagedFile
	Units      []string
}

// setupFound is what setup found there.
type setupFound struct {
	UserExists bool
	Groups     []string
	Dirs       map[string]string // path -> "OWNER:GROUP MODE"; missing ones absent
	Files      map[string]foundFile
	Enabled    []string // systemctl is-enabled of each unit, in order
	// Watch: with a timer its is-enabled, is-active and "curl"/"no-curl";
	// without, "installed" or "none".
	Watch []string
	// LogRotate: with a LogTimer, its is-enabled, is-active and
	// "logrotate"/"no-logrotate".
	LogRotate []string
	// Code: "current" (the release layout is in place), "code" (the app
	// directory holds the seed's code) or "empty".
	Code string
}

// foundFile is a file setup found: its "OWNER:GROUP MODE" and content.
type foundFile struct {
	Meta    string
	Content []byte
}

// setupAction is one change of scripts/setup-apply.sh: a verb and its
// values.
type setupAction []string

// hostSetup is what setup does on a host, over SSH in sshRemote; a test
// gives a fake.
type hostSetup interface {
	Cores(ctx context.Context) (int, error)
	// SetupInspect reads what w names, changing nothing.
	SetupInspect(ctx context.Context, w setupWant) (setupFound, error)
	// SetupApply makes the changes in order, the files' content from
	// stdin one after the other; an Nginx config that fails its test is
	// errNginxTest, with the previous files back.
	SetupApply(ctx context.Context, actions []setupAction, stdin []byte) error
	// WorkerStates reads units (and patterns of them) as systemd has them.
	WorkerStates(ctx context.Context, units []string) (map[string]unitState, error)
}

// errNginxTest: a change failed nginx -t; the previous files are back.
var errNginxTest = errors.New("nginx config test failed; restored the previous files")

// Setup prepares a host: the service user, the directories, the unit, the
// Nginx upstream and site, the env file; then enables the instances (and
// starts them when the app directory holds a release). Only what differs
// is changed; a second run changes nothing. With dryRun nothing changes
// and the result holds a unified diff of every file that would.
//
// A host in the seed's layout (release: set) gets its code moved into a
// first release named after now, which the caller gives every host of the
// fleet, so that the first release has one ID everywhere (a rollback goes
// only to a release that is on every host).
func Setup(ctx context.Context, cfg *Config, host string, conn Conn, dryRun bool, now time.Time) (*SetupResult, error) {
	cfg = cfg.asRoot()
	return setupHost(ctx, cfg, host, newSSHRemote(cfg, conn), dryRun, now)
}

// asRoot is the config for setup's own commands, which run as root even
// with sudo: helper: setup installs the helper.
func (c *Config) asRoot() *Config {
	if !c.UsesHelper() || c.rootSetup {
		return c
	}
	root := *c
	root.rootSetup = true
	return &root
}

// dirs creates the directories of want, or sets their owner and mode,
// where found (path -> "owner mode") differs.
func (p *setupPlan) dirs(want []managedDir, found map[string]string) {
	for _, d := range want {
		have, ok := found[d.path]
		if have == d.owner+" "+d.mode {
			continue
		}
		if !ok {
			p.change("create %s (%s %s)", d.path, d.owner, d.mode)
		} else {
			p.change("%s: %s -> %s %s", d.path, have, d.owner, d.mode)
		}
		owner, group, _ := strings.Cut(d.owner, ":")
		p.do("dir", d.path, owner, group, d.mode)
	}
}

func setupHost(ctx context.Context, cfg *Config, host string, r hostSetup, dryRun bool, now time.Time) (*SetupResult, error) {
	if !strings.HasSuffix(cfg.unitFile(), "@.service") {
		return nil, errors.New(`setup writes a template unit: unit must end with "@{port}"`)
	}
	if w := cfg.Watch; w != nil {
		if err := checkWebhook(w.webhook, cfg.Notify.URLEnv); err != nil {
			return nil, err
		}
	}
	cfg, err := resolveHost(ctx, cfg, host, r)
	if err != nil {
		return nil, err
	}
	want := cfg.setupWant(cfg.Ports())
	found, err := r.SetupInspect(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	p := &setupPlan{res: &SetupResult{Host: host, Ports: cfg.Ports()}, dryRun: dryRun}
	if err := p.host(cfg, want, found, now); err != nil {
		return nil, err
	}
	if len(cfg.Workers) > 0 {
		st, err := r.WorkerStates(ctx, workerPatterns(cfg))
		if err != nil {
			return nil, fmt.Errorf("inspect the workers' units: %w", err)
		}
		p.extraWorkers(cfg, st)
	}
	return p.apply(ctx, r)
}

// extraWorkers stops and disables the instances of a worker's template
// beyond its count (a count lowered) that run or would start at boot:
// each would go on with the code it has while the others move on. systemd
// gives each its stop_timeout to finish the job in hand.
func (p *setupPlan) extraWorkers(cfg *Config, st map[string]unitState) {
	extra := beyondCount(cfg, st, func(s unitState) bool {
		return s.upOrStarting() || s.FileState == "enabled" || s.FileState == "enabled-runtime"
	})
	if len(extra) == 0 {
		return
	}
	p.change("stop and disable %s (beyond the workers' count; each gets its stop_timeout to finish the job in hand)", strings.Join(extra, " "))
	p.do(append([]string{"disable-now", strconv.Itoa(len(extra))}, extra...)...)
}

// setupWant is what setup inspects on an app host for these ports.
func (c *Config) setupWant(ports []int) setupWant {
	s := c.setupDefaults()
	w := setupWant{User: s.User, AppDir: s.AppDir, Dirs: setupDirs(c)}
	for _, f := range Render(c, ports) {
		if !f.Doc { // render shows it; the user writes it
			w.Files = append(w.Files, f)
		}
	}
	if c.Release != nil {
		w.ReleaseRoot = strings.TrimRight(c.Release.Root, "/")
	}
	if c.logRotates() {
		w.LogTimer = c.logRotateUnit() + ".timer"
	}
	if c.Watch != nil {
		w.Timer = c.statusUnit() + ".timer"
	} else {
		w.WatchFiles = []string{c.watchDropIn(), c.watchScript()}
	}
	for _, p := range ports {
		w.Units = append(w.Units, c.UnitName(p))
	}
	for _, wk := range c.setupWorkers() {
		w.Units = append(w.Units, wk.Instances()...)
	}
	return w
}

// setupPlan is what setup changes on one host: the result it reports, the
// actions of setup-apply.sh and the files' content they read.
type setupPlan struct {
	res     *SetupResult
	dryRun  bool
	actions []setupAction
	stdin   []byte
	diff    strings.Builder
	// nginx: an Nginx file is written (then nginx -t and a reload);
	// units: a unit file changed (then daemon-reload).
	nginx, units bool
}

func (p *setupPlan) change(format string, args ...any) {
	p.res.Changes = append(p.res.Changes, fmt.Sprintf(format, args...))
}

func (p *setupPlan) do(a ...string) { p.actions = append(p.actions, a) }

// host decides an app host's changes from what was found.
func (p *setupPlan) host(cfg *Config, want setupWant, found setupFound, now time.Time) error {
	s := cfg.setupDefaults()
	if cfg.Watch != nil && contains(found.Watch, "no-curl") {
		return errors.New("watch: the host has no curl, which its alerts post with (apt install curl)")
	}
	if contains(found.LogRotate, "no-logrotate") {
		return errors.New("setup.log_rotate_keep: the host has no /usr/sbin/logrotate, which rotates the instances' output files (apt install logrotate, or log_rotate_keep: 0 to rotate them yourself)")
	}
	// The user.
	if !found.UserExists {
		p.change("create system user %s", s.User)
		p.do("user", s.User)
	}
	if !found.UserExists || !contains(found.Groups, s.Group) {
		p.change("add %s to group %s", s.User, s.Group)
		p.do("join", s.User, s.Group)
	}
	p.dirs(want.Dirs, found.Dirs)
	// A host in the seed's layout: its code becomes the first release,
	// before the unit runs instances from their links.
	if cfg.Release != nil && found.Code == "code" {
		id := ReleaseID(now, "initial")
		p.change("move the code in %s into release %s under %s (every instance's link and current name it; running instances are not restarted)",
			s.AppDir, id, cfg.Release.Root)
		e := ReleaseEntry{ID: id, Version: "initial", User: NewLockInfo("setup", "").User, Time: time.Now().UTC(), Outcome: ReleaseOK}
		p.do(migrateAction(want.ReleaseRoot, s.AppDir, s.Group, e, cfg.links())...)
	}
	// The files.
	for _, f := range want.Files {
		nginx := strings.HasPrefix(f.Path, "/etc/nginx/") || f.Path == cfg.Nginx.UpstreamFile || f.Path == s.SiteFile
		if err := p.file(f, found.Files, nginx); err != nil {
			return err
		}
	}
	if cfg.Watch == nil && len(found.Watch) == 1 && found.Watch[0] == "installed" {
		p.change("remove the watch an earlier setup installed (no watch: section): %s.timer, the drop-in, the alert unit, the script and the webhook file", cfg.statusUnit())
		p.do(cfg.unwatchAction()...)
		p.units = true
	}
	if p.units {
		p.do("daemon-reload")
	}
	p.nginxCheck(cfg.Nginx)
	// The instances: enabled; started when the code is in place.
	var toEnable []string
	for i, u := range want.Units {
		if i >= len(found.Enabled) || found.Enabled[i] != "enabled" {
			toEnable = append(toEnable, u)
		}
	}
	if len(toEnable) > 0 {
		where := s.AppDir + " holds the code"
		if cfg.Release != nil {
			where = "a release is in place"
			if found.Code == "current" {
				// A worker's new instances run from links of their own:
				// made where current points, unless there.
				if links := cfg.WorkerUnits(); len(links) > 0 {
					p.do(append([]string{"links", want.ReleaseRoot, strconv.Itoa(len(links))}, links...)...)
				}
			}
		}
		p.change("enable %s (started if %s)", strings.Join(toEnable, " "), where)
		p.do(append([]string{"enable", strconv.Itoa(len(toEnable))}, toEnable...)...)
		if found.Code != "empty" {
			p.do(append([]string{"start", strconv.Itoa(len(toEnable))}, toEnable...)...)
		}
	}
	if cfg.logRotates() && strings.Join(found.LogRotate, "\n") != "enabled\nactive\nlogrotate" {
		p.change("enable and start %s.timer (rotates %s's output files past %s, every %s)", cfg.logRotateUnit(), s.LogDir, s.LogRotateSize, logRotateEvery)
		p.do("enable-now", cfg.logRotateUnit()+".timer")
	}
	if w := cfg.Watch; w != nil && strings.Join(found.Watch, "\n") != "enabled\nactive\ncurl" {
		p.change("enable and start %s.timer (status.json and alerts every %s)", cfg.statusUnit(), w.Interval)
		p.do("enable-now", cfg.statusUnit()+".timer")
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// migrateAction moves a host in the seed's layout to the release layout:
// the app directory's code is copied into a first release, e.ID, that
// every instance's link and current name, logged as e. Running instances
// are not touched: they run the same code from the new place at their
// next restart. It runs before the unit file changes.
func migrateAction(root, appDir, group string, e ReleaseEntry, links []string) setupAction {
	line, _ := json.Marshal(e)
	a := setupAction{"migrate", appDir, root, group, e.ID, string(line), strconv.Itoa(len(links))}
	return append(a, links...)
}

// links are the names of the links under release.root/instances: each
// instance's port and each worker's unit.
func (c *Config) links() []string {
	var out []string
	for _, p := range c.Ports() {
		out = append(out, strconv.Itoa(p))
	}
	return append(out, c.WorkerUnits()...)
}

// file writes f unless found shows it as it should be (or it is kept and
// exists); nginx: it is an Nginx file.
func (p *setupPlan) file(f ManagedFile, found map[string]foundFile, nginx bool) error {
	have, exists := found[f.Path]
	if exists && f.Keep {
		return nil
	}
	meta := f.Owner + " " + f.Mode
	if exists && string(have.Content) == f.Content && have.Meta == meta {
		return nil
	}
	switch {
	case !exists:
		p.change("write %s", f.Path)
	case string(have.Content) != f.Content:
		p.change("update %s", f.Path)
	default:
		p.change("%s: %s -> %s", f.Path, have.Meta, meta)
	}
	host := p.res.Host
	if p.dryRun && f.Secret {
		fmt.Fprintf(&p.diff, "--- %s:%s\n+++ %s:%s (rollout setup)\n(a secret: it changes, the content is not shown)\n", host, f.Path, host, f.Path)
	} else if p.dryRun {
		d, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{A: difflib.SplitLines(string(have.Content)), B: difflib.SplitLines(f.Content),
			FromFile: host + ":" + f.Path, ToFile: host + ":" + f.Path + " (rollout setup)", Context: 3})
		p.diff.WriteString(d)
	}
	owner, group, _ := strings.Cut(f.Owner, ":")
	flag := "0"
	switch {
	case nginx:
		flag, p.nginx = "1", true
	case f.check != "":
		flag = f.check
	}
	if strings.HasPrefix(f.Path, "/etc/systemd/system/") {
		p.units = true
	}
	p.do("file", f.Path, owner, group, f.Mode, strconv.Itoa(len(f.Content)), flag)
	p.stdin = append(p.stdin, f.Content...)
	return nil
}

// nginxCheck tests the Nginx config when an Nginx file was written
// (putting the previous files back if it fails) and reloads Nginx.
func (p *setupPlan) nginxCheck(n NginxConfig) {
	if p.nginx {
		p.do("nginx", n.TestCommand, n.PIDFile, n.ReloadCommand)
	}
}

// apply makes the changes, unless it is a dry run or there are none.
func (p *setupPlan) apply(ctx context.Context, r hostSetup) (*SetupResult, error) {
	p.res.Diff = p.diff.String()
	if p.dryRun || len(p.res.Changes) == 0 {
		return p.res, nil
	}
	if err := r.SetupApply(ctx, p.actions, p.stdin); err != nil {
		return p.res, fmt.Errorf("apply: %w", err)
	}
	return p.res, nil
}

// SetupReport is what setup did, or would do, on every host: Hosts in
// Config.Hosts' order (nil where a host failed before it could say), then
// the load balancers (lb:). Errs are the failures, one per host or
// balancer that failed.
type SetupReport struct {
	Hosts     []*SetupResult
	Balancers []*SetupResult
	Errs      []error
}

// Err is nil when every host was set up, else how many failed.
func (r *SetupReport) Err() error {
	if len(r.Errs) == 0 {
		return nil
	}
	for _, e := range r.Errs {
		var u *UnreachableError
		if !errors.As(e, &u) {
			return fmt.Errorf("setup failed on %d host(s)", len(r.Errs))
		}
	}
	return &UnreachableError{Host: "setup", Err: fmt.Errorf("%d host(s) could not be reached: nothing was set up there", len(r.Errs))}
}

// Setup prepares every host at once (see Setup), each under its deploy
// lock and with a line in its history; then, once every app host is set
// up and its instances known, the load balancers (lb:, driver nginx).
// With dryRun it changes nothing, takes no lock and writes no history.
// The first release of a host moved to releases is named after one
// instant for the whole fleet.
func (d *Deployer) Setup(ctx context.Context, dryRun bool) *SetupReport {
	cfg := d.Config.asRoot()
	now := time.Now()
	holder := d.Holder
	if holder.Token == "" {
		holder = NewLockInfo("setup", "")
	}
	rep := &SetupReport{Hosts: make([]*SetupResult, len(cfg.Hosts))}
	errs := EachHost(ctx, cfg, d.Connect, func(ctx context.Context, i int, host string, conn Conn) (err error) {
		if !dryRun {
			t0 := time.Now()
			lock, err := AcquireLock(ctx, cfg, host, conn, holder, d.BreakStaleLock)
			if err != nil {
				return err
			}
			if msg := lock.TakeOverMessage(); msg != "" {
				d.emit(Event{Host: host, Step: StepLock, Status: StatusWarn, Message: msg})
			}
			defer func() {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
				defer cancel()
				e := HistoryEntry{Time: time.Now().UTC(), User: holder.User, From: holder.From, RunURL: holder.RunURL,
					Op: "setup", Outcome: HostOK, Duration: time.Since(t0)}
				if err != nil {
					e.Outcome, e.Error = HostFailed, err.Error()
				}
				err = errors.Join(err, AppendHistory(cctx, cfg, conn, e), lock.Release(cctx))
			}()
		}
		rep.Hosts[i], err = Setup(ctx, cfg, host, conn, dryRun, now)
		return err
	})
	rep.Errs = nonNil(errs)
	d.setupBalancers(ctx, rep, dryRun)
	return rep
}

func nonNil(errs []error) []error {
	var out []error
	for _, e := range errs {
		if e != nil {
			out = append(out, e)
		}
	}
	return out
}
