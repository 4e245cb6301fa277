package app_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/testutil"
)

// TestDependenciesPointOneWay keeps the import rules of ARCHITECTURE.md:
// each package may depend on this project's packages further down the data
// path only.
func TestDependenciesPointOneWay(t *testing.T) {
	const mod = "github.com/matrix-recorder/recorder/"
	forbidden := map[string][]string{
		"recording":  {"storage", "archive", "callbot", "appservice", "web", "commands", "internal/app"},
		"storage":    {"recording", "archive", "callbot", "appservice", "web", "commands", "internal/app"},
		"callbot":    {"appservice", "archive", "recording", "storage", "web", "commands", "internal/app"},
		"archive":    {"appservice", "web", "commands", "internal/app"},
		"appservice": {"callbot", "archive", "recording", "web", "commands", "internal/app"},
		"web":        {"appservice", "callbot", "archive", "commands", "internal/app"},
		"mixdown":    {"appservice", "callbot", "archive", "web", "commands", "internal/app"},
		"webhooks":   {"appservice", "callbot", "archive", "recording", "web", "commands", "internal/app"},
		"retention":  {"appservice", "callbot", "archive", "recording", "web", "commands", "internal/app"},
		"rooms":      {"appservice", "archive", "recording", "web", "commands", "internal/app"},
	}
	root := testutil.ModuleRoot(t)
	for pkg, bad := range forbidden {
		cmd := exec.Command("go", "list", "-deps", "-tags", "goolm", "./"+pkg+"/...") //nolint:gosec // fixed arguments
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		for _, dep := range strings.Fields(string(out)) {
			rel, ok := strings.CutPrefix(dep, mod)
			if !ok {
				continue
			}
			for _, b := range bad {
				require.False(t, rel == b || strings.HasPrefix(rel, b+"/") && !strings.HasPrefix(rel, "storage/naming"),
					"%s depends on %s", pkg, rel)
			}
		}
	}
}
