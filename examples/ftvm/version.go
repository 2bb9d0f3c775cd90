package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/ftkvm/ftkvm/replay/logio"
)

// version says which ftvm this is: the module version (or "devel" for a
// build from a checkout), the commit it was built from, and the log
// format it writes and reads.
func version() string {
	v, rev := "devel", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if m := bi.Main.Version; m != "" && m != "(devel)" {
			v = m
		}
		rev = vcsRevision(bi.Settings)
	}
	if rev != "" {
		rev = " " + rev
	}
	return fmt.Sprintf("ftvm %s%s, log format %d, %s %s/%s", v, rev, logio.FormatVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// vcsRevision renders the build's VCS settings: "commit 1a2b3c4d5e6f
// (2026-12-08T01:00:00Z, modified)", or "" without them.
func vcsRevision(settings []debug.BuildSetting) string {
	var rev, when string
	modified := false
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return ""
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	out := "commit " + rev
	switch {
	case when != "" && modified:
		out += " (" + when + ", modified)"
	case when != "":
		out += " (" + when + ")"
	case modified:
		out += " (modified)"
	}
	return out
}
