package app

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNotReadyWhileStopping: /readyz fails its "running" check as soon as
// the shutdown starts, before the calls are left.
func TestNotReadyWhileStopping(t *testing.T) {
	app := &App{}
	var running func(context.Context) error
	for _, c := range app.readyChecks() {
		if c.Name == "running" {
			running = c.Check
		}
	}
	require.NotNil(t, running)
	require.NoError(t, running(context.Background()))
	app.stopping.Store(true)
	require.ErrorIs(t, running(context.Background()), errShuttingDown)
}
