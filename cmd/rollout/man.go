package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// manCommand prints the man page, made from the commands' own definitions
// (the packages ship it as rollout.1).
func manCommand() *cli.Command {
	return &cli.Command{
		Name:  "man",
		Usage: "print the man page (roff), made from these commands' own help",
		Description: `Examples:
   rollout man | man -l -
   rollout man > /usr/local/share/man/man1/rollout.1`,
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			page, err := c.App.ToManWithSection(1)
			if err != nil {
				return fmt.Errorf("render the man page: %w", err)
			}
			_, err = fmt.Fprint(c.App.Writer, page)
			return err
		},
	}
}
