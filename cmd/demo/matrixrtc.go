package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	lkp "github.com/livekit/protocol/livekit"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	lktest "github.com/matrix-recorder/recorder/internal/testutil/livekit"
)

// runMatrixRTC holds a MatrixRTC call on the LiveKit server (as Element Call
// does: memberships in room state, a focus, tokens from an authorization
// service, media on the SFU) with three simulated participants, and has it
// recorded like the mesh call. The authorization service runs in this
// process (a stand-in for element-hq/lk-jwt-service).
func runMatrixRTC(ctx context.Context, o options) error {
	auth := lktest.NewAuthService(o.livekitHTTP, o.livekitURL, map[string]string{"localhost": o.hsURL})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("authorization service: %w", err)
	}
	auth.URL = "http://" + ln.Addr().String()
	srv := &http.Server{Handler: auth.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	bot := id.UserID(o.bot)
	var clis []*mautrix.Client
	for _, user := range []string{"dave", "erin", "frank"} {
		cli, err := register(ctx, o.hsURL, user)
		if err != nil {
			return err
		}
		clis = append(clis, cli)
	}
	dave, erin, frank := clis[0], clis[1], clis[2]
	room, err := dave.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Name: "Recorder demo MatrixRTC call", Preset: "private_chat", Invite: []id.UserID{bot, erin.UserID, frank.UserID},
		PowerLevelOverride: &event.PowerLevelsEventContent{Events: map[string]int{"org.matrix.msc3401.call.member": 0}},
	})
	if err != nil {
		return fmt.Errorf("create room: %w", err)
	}
	fmt.Printf("\nMatrixRTC room %s: %s, %s and %s on the LiveKit SFU %s (focus %s)\n", room.RoomID, dave.UserID, erin.UserID,
		frank.UserID, o.livekitURL, auth.URL)
	seen := map[id.EventID]bool{}
	if err = waitBot(ctx, dave, room.RoomID, bot, seen, "help"); err != nil {
		return err
	}
	var parts []*lktest.Participant
	defer func() {
		for _, p := range parts {
			p.Disconnect()
		}
	}()
	for i, cli := range clis {
		if i > 0 {
			if _, err = cli.JoinRoomByID(ctx, room.RoomID); err != nil {
				return fmt.Errorf("%s joins: %w", cli.UserID, err)
			}
		}
		p, err := lktest.Join(ctx, lktest.ParticipantOptions{Client: cli, RoomID: room.RoomID, ServiceURL: auth.URL,
			MediaDir: o.mediaDir, Camera: i != 1})
		if err != nil {
			return fmt.Errorf("%s joins the MatrixRTC call: %w", cli.UserID, err)
		}
		parts = append(parts, p)
	}
	fmt.Println("dave and frank (camera), erin (audio only) are in the MatrixRTC call")
	if _, err = dave.SendText(ctx, room.RoomID, "!rec start"); err != nil {
		return err
	}
	fmt.Printf("%s: !rec start\n", dave.UserID)
	if err = waitBot(ctx, dave, room.RoomID, bot, seen, "Joining"); err != nil {
		return err
	}
	start := time.Now()
	at := func(d time.Duration) <-chan time.Time { return time.After(time.Until(start.Add(d))) }
	total := time.Duration(o.seconds) * time.Second
	<-at(total / 4)
	fmt.Println("erin mutes her microphone; frank shares his screen")
	_ = parts[1].SetMuted(lkp.TrackSource_MICROPHONE, true)
	_ = parts[2].Publish(lkp.TrackSource_SCREEN_SHARE)
	<-at(total/4 + 4*time.Second)
	fmt.Println("erin unmutes")
	_ = parts[1].SetMuted(lkp.TrackSource_MICROPHONE, false)
	<-at(total * 3 / 4)
	fmt.Println("frank stops sharing")
	_ = parts[2].Unpublish(lkp.TrackSource_SCREEN_SHARE)
	<-at(total)
	if _, err = dave.SendText(ctx, room.RoomID, "!rec stop"); err != nil {
		return err
	}
	fmt.Printf("%s: !rec stop (after %s)\n", dave.UserID, time.Since(start).Round(time.Second))
	if err = waitBot(ctx, dave, room.RoomID, bot, seen, "Left the call"); err != nil {
		return err
	}
	return listRecording(ctx, o, room.RoomID)
}
