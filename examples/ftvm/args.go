package main

import (
	"errors"
	"flag"
	"fmt"
)

// parseArgs parses a command's flags and returns its positional
// arguments. Every command takes flags and arguments in any order
// (`ftvm inspect f.log --events 2` and `ftvm inspect --events 2 f.log`
// alike); '--' ends the flags, so that a file named like a flag can be
// given. -h returns flag.ErrHelp after the flags' help is printed.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, flag.ErrHelp
			}
			return nil, usageError{err}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag.Parse stops at the first non-flag, or just after a "--".
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// parseFlags parses a command that takes no positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", pos)}
	}
	return nil
}

// oneArg parses a command that takes exactly one positional argument,
// named what in its error.
func oneArg(fs *flag.FlagSet, args []string, what string) (string, error) {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", usageError{fmt.Errorf("want one %s, got %d arguments %q", what, len(pos), pos)}
	}
	return pos[0], nil
}
