package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// Completion scripts for urfave/cli's hidden --generate-bash-completion
// flag (App.EnableBashCompletion): the shell asks rollout itself for the
// commands and flags that fit the words typed so far.
const bashCompletion = `# rollout bash completion: source <(rollout completion bash)
_rollout_complete() {
  local cur="${COMP_WORDS[COMP_CWORD]}"
  local words=("${COMP_WORDS[@]:0:COMP_CWORD}")
  local opts
  if [[ "$cur" == -* ]]; then
    opts=$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -o bashdefault -o default -F _rollout_complete rollout
`

const zshCompletion = `#compdef rollout
# rollout zsh completion: source <(rollout completion zsh)
_rollout() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} $cur --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ -n "${opts[1]}" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _rollout rollout
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: `Examples:
   source <(rollout completion bash)                      # in ~/.bashrc
   rollout completion zsh > "${fpath[1]}/_rollout"
   rollout completion fish > ~/.config/fish/completions/rollout.fish`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError{fmt.Errorf("completion: want one shell (bash, zsh or fish), got %d arguments", c.NArg())}
			}
			switch sh := c.Args().First(); sh {
			case "bash":
				fmt.Fprint(c.App.Writer, bashCompletion)
			case "zsh":
				fmt.Fprint(c.App.Writer, zshCompletion)
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return fmt.Errorf("completion fish: %w", err)
				}
				fmt.Fprint(c.App.Writer, s)
			default:
				return usageError{fmt.Errorf("completion: unknown shell %q (want bash, zsh or fish)", sh)}
			}
			return nil
		},
		OnUsageError: onUsageError,
	}
}
