package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/rollout-dev/rollout/deployer"
)

// envFlag picks an environment: its file overlaid on the config's.
func envFlag() cli.Flag {
	return &cli.StringFlag{Name: "env", Aliases: []string{"e"}, EnvVars: []string{"ROLLOUT_ENV"},
		Usage: "an environment: the keys of rollout.ENV.yaml (beside the config) replace the config's (e.g. staging)"}
}

// loadProject reads the config, with the environment's file when --env
// names one (said on stderr, so nobody deploys to staging thinking it is
// production, or the other way round).
func loadProject(c *cli.Context) (*deployer.Project, error) {
	path, env := c.String("config"), c.String("env")
	pr, err := deployer.LoadProjectEnv(path, env)
	if err != nil {
		return nil, usageError{err} // it names the file, or the environment
	}
	if said := c.App.Metadata["env said"]; env != "" && said == nil {
		if c.App.Metadata == nil {
			c.App.Metadata = map[string]any{}
		}
		c.App.Metadata["env said"] = true
		fmt.Fprintf(c.App.ErrWriter, "rollout: environment %s: %s over %s\n", env, deployer.EnvFile(path, env), path)
	}
	return pr, nil
}

// configCommand prints the config as rollout reads it.
func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "print the config, with an environment's file overlaid (--env), each value followed by the file and line it came from",
		Description: `Reads the config (and with --env, rollout.ENV.yaml beside it, whose keys
replace the config's key by key: a mapping is merged, a value or a list is
replaced whole), checks it as every command does, and prints the merged
YAML, each value followed by "# FILE:LINE": where it was set. Keys not
set in either file take rollout's defaults (see docs/config.md). Connects
to nothing.

Examples:
   rollout config
   rollout config --env staging`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Value: "rollout.yaml", EnvVars: []string{"ROLLOUT_CONFIG"}, Usage: "config file"},
			envFlag(),
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if _, err := loadProject(c); err != nil {
				return err
			}
			out, err := deployer.MergedConfig(c.String("config"), c.String("env"))
			if err != nil {
				return usageError{err}
			}
			_, err = c.App.Writer.Write(out)
			return err
		},
	}
}
