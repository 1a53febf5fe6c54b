package testbed

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/rollout-dev/rollout/healthcheck"
)

//go:embed provision.sh
var provisionScript []byte

// Release is one version of examples/app: its files with an app.json of
// these settings (see examples/app/server.js).
type Release struct {
	Version     string   `json:"version"`
	BootDelayMs int      `json:"bootDelayMs"`
	WorkMs      int      `json:"workMs"`
	RequiredEnv []string `json:"requiredEnv"`
	Healthy     bool     `json:"healthy"`
	// FailPercent of real requests answer 500 (health checks pass).
	FailPercent int `json:"failPercent,omitempty"`
	// EnvHashes serves /envhash?name=NAME: the SHA-256 of the variable.
	EnvHashes bool `json:"envHashes,omitempty"`
	// EnvExample, if not empty, is the release's .env.example.
	EnvExample string `json:"-"`
	// WorkerCrash: its worker (worker.js) exits at once.
	WorkerCrash bool `json:"workerCrash,omitempty"`
}

// GoodRelease is a release that starts and becomes healthy.
func GoodRelease(version string) Release {
	return Release{Version: version, BootDelayMs: 300, WorkMs: 5, RequiredEnv: []string{"DATABASE_URL"}, Healthy: true}
}

var versionRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// AppDir is examples/app in this repository.
func AppDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "examples", "app")
}

// files are the release's files by name: examples/app with r's app.json.
func (r Release) files() (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, name := range []string{"server.js", "worker.js", "package.json"} {
		data, err := os.ReadFile(filepath.Join(AppDir(), name))
		if err != nil {
			return nil, fmt.Errorf("release %s: %w", r.Version, err)
		}
		files[name] = data
	}
	settings, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	files["app.json"] = append(settings, '\n')
	if r.EnvExample != "" {
		files[".env.example"] = []byte(r.EnvExample)
	}
	return files, nil
}

// archive builds the release as a tar of its files.
func (r Release) archive() ([]byte, error) {
	files, err := r.files()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o640, Size: int64(len(files[name])), ModTime: time.Unix(1700000000, 0)}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(files[name]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteDir writes the release's files into dir, as a build would: a
// directory artifact.
func (r Release) WriteDir(dir string) error {
	files, err := r.files()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// WriteTarGz writes the release as a gzipped tarball at path: a tarball
// artifact.
func (r Release) WriteTarGz(path string) error {
	data, err := r.archive()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// StageRelease copies r to /srv/releases/VERSION on h, owned and locked
// down as the seed locks the app directory (root:www-data, files 0640,
// directories 2750). It does not make it live: my-app-activate does.
func (tb *Testbed) StageRelease(ctx context.Context, h *Host, r Release) error {
	if !versionRE.MatchString(r.Version) {
		return fmt.Errorf("testbed: bad release version %q", r.Version)
	}
	data, err := r.archive()
	if err != nil {
		return err
	}
	script := `set -e; d=/srv/releases/` + r.Version + `
rm -rf "$d.tmp"; mkdir -p "$d.tmp"; tar -xf - -C "$d.tmp" --no-same-owner
chown -R root:www-data "$d.tmp"
find "$d.tmp" -type f -exec chmod 0640 {} +
find "$d.tmp" -type d -exec chmod 2750 {} +
rm -rf "$d"; mv "$d.tmp" "$d"`
	_, err = tb.RunInput(ctx, h, "sudo -n sh -c '"+script+"'", bytes.NewReader(data))
	return err
}

// Provision sets h up as the seed's team sets up a server: it stages and
// activates release v1 and runs count instances from basePort, each enabled
// and behind the host's Nginx upstream "my_app".
func (tb *Testbed) Provision(ctx context.Context, h *Host, basePort, count int) error {
	if err := tb.StageRelease(ctx, h, GoodRelease("v1")); err != nil {
		return err
	}
	cmd := "sudo -n bash -s -- " + strconv.Itoa(basePort) + " " + strconv.Itoa(count)
	if _, err := tb.RunInput(ctx, h, cmd, bytes.NewReader(provisionScript)); err != nil {
		return fmt.Errorf("testbed: provision %s: %w", h.Name, err)
	}
	return tb.waitServing(ctx, h, basePort, count)
}

// waitServing waits until every instance answers /healthz, asking each on
// its own port through SSH, never through Nginx: a request Nginx sends to
// an instance still booting marks it failed for fail_timeout, which would
// poison whatever is measured next.
func (tb *Testbed) waitServing(ctx context.Context, h *Host, basePort, count int) error {
	c, err := tb.Dial(ctx, h, "deploy")
	if err != nil {
		return err
	}
	defer c.Close()
	check := healthcheck.HTTP{Dial: c.DialContext, Path: "/healthz", Status: 200, AttemptTimeout: 2 * time.Second}
	for port := basePort; port < basePort+count; port++ {
		if err := check.Wait(ctx, port, 60*time.Second, 50*time.Millisecond, nil); err != nil {
			return fmt.Errorf("testbed: %s instance %d not serving after provisioning: %w", h.Name, port, err)
		}
	}
	return nil
}
