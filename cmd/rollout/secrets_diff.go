package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/rollout-dev/rollout/deployer"
	"github.com/rollout-dev/rollout/internal/secrets"
)

// hostSecretsDiff is one host's difference from the file.
type hostSecretsDiff struct {
	Host    string          `json:"host"`
	Release string          `json:"release,omitempty"`
	State   string          `json:"state"` // same, differs, none, unknown
	Change  *secrets.Change `json:"change,omitempty"`
	Error   string          `json:"error,omitempty"`
}

func secretsDiff(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageError{fmt.Errorf("diff takes no arguments, got %q", c.Args().First())}
	}
	f, err := loadSecretsFile(c, false)
	if err != nil {
		return err
	}
	local := f.env
	cfg := f.cfg
	out := make([]hostSecretsDiff, len(cfg.Hosts))
	connect, err := connector(cfg)
	if err != nil {
		return err
	}
	errs := deployer.EachHost(c.Context, cfg, connect, func(ctx context.Context, i int, host string, conn deployer.Conn) error {
		cur, sealed, err := deployer.HostSecrets(ctx, cfg, conn)
		if err != nil {
			return err
		}
		out[i] = hostSecretsDiff{Host: host, Release: cur}
		var remote secrets.Env
		if sealed != nil {
			plain, err := secrets.Open(sealed, f.ids, f.from)
			if err == nil {
				remote, err = secrets.Parse(plain)
			}
			if err != nil {
				return fmt.Errorf("release %s's secrets: %w", cur, err)
			}
		}
		ch := secrets.Diff(remote, local)
		out[i].Change = &ch
		switch {
		case sealed == nil:
			out[i].State = "none"
		case ch.Empty():
			out[i].State = "same"
		default:
			out[i].State = "differs"
		}
		return nil
	})
	differ := false
	for i, err := range errs {
		if err != nil {
			out[i] = hostSecretsDiff{Host: cfg.Hosts[i], State: "unknown", Error: err.Error()}
		}
		differ = differ || out[i].State == "differs" || out[i].State == "none"
	}
	if c.String("output") == "json" {
		writeJSONLine(c.App.Writer, map[string]any{"file": f.path, "hosts": out})
	} else {
		for _, h := range out {
			switch h.State {
			case "unknown":
				fmt.Fprintf(c.App.Writer, "%s  unknown: %s\n", h.Host, h.Error)
			case "none":
				fmt.Fprintf(c.App.Writer, "%s  release %q has no secrets; the file would add %s\n", h.Host, h.Release, strings.Join(h.Change.Added, ", "))
			case "same":
				fmt.Fprintf(c.App.Writer, "%s  release %s runs the file's secrets\n", h.Host, h.Release)
			default:
				fmt.Fprintf(c.App.Writer, "%s  release %s -> file: %s\n", h.Host, h.Release, strings.Join(h.Change.Strings(), " "))
			}
		}
	}
	if err := hostErrors(errs); err != nil {
		return err
	}
	if differ {
		return errors.New("some host runs other secrets than the file: deploy to ship them")
	}
	return nil
}
