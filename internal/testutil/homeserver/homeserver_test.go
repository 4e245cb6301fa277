//go:build integration

package homeserver_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
)

const registrationYAML = `id: recorder-test
url: http://127.0.0.1:9
as_token: as-token-for-homeserver-test
hs_token: hs-token-for-homeserver-test
sender_localpart: rec_bot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@rec_.*:localhost"
`

// syncUntil long-polls /sync as cli until match accepts a to-device event or the
// deadline passes, and returns the matching event.
func syncUntil(ctx context.Context, t *testing.T, cli *mautrix.Client, deadline time.Duration, match func(*event.Event) bool) *event.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	since := ""
	for {
		resp, err := cli.SyncRequest(ctx, 1000, since, "", false, event.PresenceOffline)
		if err != nil {
			require.NoError(t, ctx.Err(), "no matching to-device event for %s within %s", cli.UserID, deadline)
			require.NoError(t, err)
		}
		for _, evt := range resp.ToDevice.Events {
			if match(evt) {
				return evt
			}
		}
		since = resp.NextBatch
	}
}

func TestHomeserver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	regPath := filepath.Join(t.TempDir(), "registration.yaml")
	require.NoError(t, os.WriteFile(regPath, []byte(registrationYAML), 0o600))

	start := time.Now()
	hs := homeserver.Start(t, homeserver.Options{RegistrationFiles: []string{regPath}})
	t.Logf("Dendrite ready in %s at %s", time.Since(start), hs.URL)
	require.Equal(t, "localhost", hs.Domain)
	require.NotEmpty(t, hs.SharedSecret)

	alice := hs.RegisterUser(ctx, t, "alice")
	bob := hs.RegisterUser(ctx, t, "bob")
	require.Equal(t, hs.UserID("alice"), alice.UserID)
	require.Equal(t, id.DeviceID("ALICEDEV"), alice.DeviceID)
	require.Equal(t, id.DeviceID("BOBDEV"), bob.DeviceID)
	require.NotEmpty(t, bob.AccessToken)

	t.Run("AppserviceNamespaceIsExclusive", func(t *testing.T) {
		// Only works if Dendrite loaded the registration file.
		_, err := hs.NewClient(t).RegisterDummy(ctx, &mautrix.ReqRegister[any]{
			Username: "rec_intruder",
			Password: homeserver.Password("rec_intruder"),
		})
		require.ErrorIs(t, err, mautrix.MExclusive)
	})

	roomID := hs.CreateRoom(ctx, t, alice, homeserver.RoomOptions{
		Name:                "call room",
		Invite:              []id.UserID{bob.UserID},
		CallPowerLevelsZero: true,
	})
	_, err := bob.JoinRoomByID(ctx, roomID)
	require.NoError(t, err)

	t.Run("CallPowerLevelsZero", func(t *testing.T) {
		var pl event.PowerLevelsEventContent
		require.NoError(t, alice.StateEvent(ctx, roomID, event.StatePowerLevels, "", &pl))
		for _, evtType := range []string{"org.matrix.msc3401.call", "org.matrix.msc3401.call.member", "m.call", "m.call.member"} {
			require.Contains(t, pl.Events, evtType)
			require.Zero(t, pl.Events[evtType], evtType)
		}
		require.Equal(t, 100, pl.Events[event.StatePowerLevels.Type], "the override must not drop the default event levels")

		// bob has power level 0 and may now publish his own call membership.
		memberType := event.Type{Type: "org.matrix.msc3401.call.member", Class: event.StateEventType}
		_, err := bob.SendStateEvent(ctx, roomID, memberType, bob.UserID.String(), map[string]any{"memberships": []any{}})
		require.NoError(t, err)
	})

	t.Run("ToDevice", func(t *testing.T) {
		invite := event.Type{Type: "m.call.invite", Class: event.ToDeviceEventType}
		_, err := alice.SendToDevice(ctx, invite, &mautrix.ReqSendToDevice{
			Messages: map[id.UserID]map[id.DeviceID]*event.Content{
				bob.UserID: {bob.DeviceID: {Raw: map[string]any{"call_id": "c1", "version": "1"}}},
			},
		})
		require.NoError(t, err)

		evt := syncUntil(ctx, t, bob, 10*time.Second, func(evt *event.Event) bool {
			return evt.Type.Type == invite.Type && evt.Sender == alice.UserID
		})
		require.Equal(t, "c1", evt.Content.Raw["call_id"])
	})

	t.Run("Restart", func(t *testing.T) {
		start := time.Now()
		hs.Restart(t)
		t.Logf("Dendrite restarted in %s", time.Since(start))
		whoami, err := bob.Whoami(ctx)
		require.NoError(t, err, "access tokens survive a restart")
		require.Equal(t, bob.UserID, whoami.UserID)
		require.Equal(t, bob.DeviceID, whoami.DeviceID)

		again := hs.RegisterUser(ctx, t, "bob")
		require.Equal(t, bob.DeviceID, again.DeviceID, "RegisterUser is idempotent and reuses the device")
	})
}

func TestTwoServersInParallel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := homeserver.Start(t, homeserver.Options{})
	b := homeserver.Start(t, homeserver.Options{})
	require.NotEqual(t, a.URL, b.URL)
	require.NotEqual(t, a.Dir, b.Dir)
	a.RegisterUser(ctx, t, "carol")
	// Separate state: the same name is still free on the second server.
	_, err := b.NewClient(t).RegisterDummy(ctx, &mautrix.ReqRegister[any]{
		Username:     "carol",
		Password:     homeserver.Password("carol"),
		InhibitLogin: true,
	})
	require.NoError(t, err)
}
