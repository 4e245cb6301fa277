// Command demo drives `make demo`: on a homeserver where the recorder runs,
// three simulated participants hold a group call (one audio only, one muting
// for a few seconds, one adding a screen share); a room member asks the bot
// to record it, stops after -seconds, and the recorded files are listed
// through the operator API with their ffprobe durations. With -livekit, a
// MatrixRTC call (Element Call's kind: LiveKit SFU) is recorded the same way
// afterwards.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	protolog "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
)

type options struct {
	hsURL, bot, apiURL, apiToken, mediaDir, storeDir string
	livekitURL, livekitHTTP                          string
	seconds                                          int
}

func main() {
	var o options
	flag.StringVar(&o.hsURL, "hs", "", "homeserver URL")
	flag.StringVar(&o.bot, "bot", "", "bot user ID")
	flag.StringVar(&o.apiURL, "api", "", "operator API base URL")
	flag.StringVar(&o.apiToken, "token", "", "operator API token")
	flag.StringVar(&o.mediaDir, "media", "testdata/media", "test media directory")
	flag.StringVar(&o.storeDir, "recordings", "", "recordings directory (to run ffprobe on the files)")
	flag.IntVar(&o.seconds, "seconds", 20, "how long to record")
	flag.StringVar(&o.livekitURL, "livekit", "", "LiveKit server WebSocket URL: also record a MatrixRTC call on it")
	flag.StringVar(&o.livekitHTTP, "livekit-http", "", "LiveKit server HTTP URL (its API)")
	flag.Parse()
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05"}).Level(zerolog.ErrorLevel).With().Timestamp().Logger()
	ctx, cancel := context.WithTimeout(log.WithContext(context.Background()), 2*time.Duration(o.seconds)*time.Second+5*time.Minute)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if o.livekitURL != "" {
		lksdk.SetLogger(protolog.GetDiscardLogger()) // the participants' SDK and pion chatter
		if err := runMatrixRTC(ctx, o); err != nil {
			fmt.Fprintln(os.Stderr, "demo (MatrixRTC):", err)
			os.Exit(1)
		}
	}
}

func register(ctx context.Context, hsURL, user string) (*mautrix.Client, error) {
	cli, err := mautrix.NewClient(hsURL, "", "")
	if err != nil {
		return nil, err
	}
	password := user + "-demo-password"
	_, err = cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: user, Password: password, InhibitLogin: true})
	if err != nil && !errors.Is(err, mautrix.MUserInUse) {
		return nil, fmt.Errorf("register %s: %w", user, err)
	}
	_, err = cli.Login(ctx, &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Password: password, StoreCredentials: true, DeviceID: id.DeviceID(strings.ToUpper(user) + "DEV"),
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
	})
	if err != nil {
		return nil, fmt.Errorf("log in %s: %w", user, err)
	}
	return cli, nil
}

func run(ctx context.Context, o options) error {
	bot := id.UserID(o.bot)
	var clis []*mautrix.Client
	for _, user := range []string{"alice", "bob", "carol"} {
		cli, err := register(ctx, o.hsURL, user)
		if err != nil {
			return err
		}
		clis = append(clis, cli)
	}
	alice, bob, carol := clis[0], clis[1], clis[2]
	events := map[string]int{}
	for _, t := range []string{"org.matrix.msc3401.call", "org.matrix.msc3401.call.member", "m.call", "m.call.member"} {
		events[t] = 0
	}
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Name: "Recorder demo call", Preset: "private_chat", Invite: []id.UserID{bot, bob.UserID, carol.UserID},
		PowerLevelOverride: &event.PowerLevelsEventContent{Events: events},
	})
	if err != nil {
		return fmt.Errorf("create room: %w", err)
	}
	fmt.Printf("Room %s: %s, %s and %s, with %s invited\n", room.RoomID, alice.UserID, bob.UserID, carol.UserID, bot)
	seen := map[id.EventID]bool{}
	if err = waitBot(ctx, alice, room.RoomID, bot, seen, "help"); err != nil {
		return err
	}

	var sims []*simpeer.Participant
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		for _, p := range sims {
			_ = p.Stop(stopCtx)
		}
	}()
	for i, cli := range clis {
		if i > 0 {
			if _, err = cli.JoinRoomByID(ctx, room.RoomID); err != nil {
				return fmt.Errorf("%s joins: %w", cli.UserID, err)
			}
		}
		p, err := simpeer.New(ctx, simpeer.Config{Client: cli, RoomID: room.RoomID, CreateCall: i == 0, Video: i > 0, MediaDir: o.mediaDir})
		if err != nil {
			return fmt.Errorf("participant %s: %w", cli.UserID, err)
		}
		p.Start(ctx)
		sims = append(sims, p)
		if err = p.Join(ctx); err != nil {
			return fmt.Errorf("%s joins the call: %w", cli.UserID, err)
		}
	}
	fmt.Println("alice (audio only), bob and carol (camera) are in the call")

	if _, err = alice.SendText(ctx, room.RoomID, "!rec start"); err != nil {
		return err
	}
	fmt.Printf("%s: !rec start\n", alice.UserID)
	if err = waitBot(ctx, alice, room.RoomID, bot, seen, "Joining"); err != nil {
		return err
	}
	start := time.Now()
	at := func(d time.Duration) <-chan time.Time { return time.After(time.Until(start.Add(d))) }
	total := time.Duration(o.seconds) * time.Second
	<-at(total / 4)
	fmt.Println("bob mutes his microphone; carol shares her screen")
	_ = sims[1].SetMuted(ctx, true, false)
	_ = sims[2].ShareScreen(ctx, true)
	<-at(total/4 + 4*time.Second)
	fmt.Println("bob unmutes")
	_ = sims[1].SetMuted(ctx, false, false)
	<-at(total * 3 / 4)
	fmt.Println("carol stops sharing")
	_ = sims[2].ShareScreen(ctx, false)
	<-at(total)
	if _, err = alice.SendText(ctx, room.RoomID, "!rec stop"); err != nil {
		return err
	}
	fmt.Printf("%s: !rec stop (after %s)\n", alice.UserID, time.Since(start).Round(time.Second))
	if err = waitBot(ctx, alice, room.RoomID, bot, seen, "Left the call"); err != nil {
		return err
	}
	return listRecording(ctx, o, room.RoomID)
}

type apiRecording struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Tracks []struct {
		UserID     string `json:"user_id"`
		Purpose    string `json:"purpose"`
		Kind       string `json:"kind"`
		Codec      string `json:"codec"`
		File       string `json:"file"`
		Bytes      int64  `json:"bytes"`
		DurationMS int64  `json:"duration_ms"`
	} `json:"tracks"`
}

// listRecording waits for the recording to be finished and prints its files.
func listRecording(ctx context.Context, o options, roomID id.RoomID) error {
	var recording apiRecording
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.apiURL+"/api/v1/recordings?room_id="+url.QueryEscape(string(roomID)), nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+o.apiToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("list recordings: %w", err)
		}
		var list struct {
			Recordings []apiRecording `json:"recordings"`
		}
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("list recordings: %w", err)
		}
		if len(list.Recordings) > 0 && list.Recordings[0].State != "recording" {
			recording = list.Recordings[0]
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the recording did not finish: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	fmt.Printf("\nRecording %s (%s):\n", recording.ID, recording.State)
	for _, tr := range recording.Tracks {
		probe := "?"
		if o.storeDir != "" {
			out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
				filepath.Join(o.storeDir, recording.ID, tr.File)).Output()
			if err == nil {
				probe = strings.TrimSpace(string(out)) + " s"
			}
		}
		fmt.Printf("  %-18s %-14s %-5s %-22s %8d bytes  ffprobe %s\n    %s\n", tr.UserID, tr.Purpose, tr.Kind, tr.Codec, tr.Bytes, probe, tr.File)
	}
	printMixdown(ctx, o, recording.ID)
	fmt.Printf("\nAPI:      %s/api/v1/recordings/%s  (Authorization: Bearer %s)\n", o.apiURL, recording.ID, o.apiToken)
	fmt.Printf("Web page: %s/  (token %s)\n", o.apiURL, o.apiToken)
	return nil
}

// waitBot polls the room until the bot says something containing want,
// printing every new bot message.
func waitBot(ctx context.Context, cli *mautrix.Client, roomID id.RoomID, bot id.UserID, seen map[id.EventID]bool, want string) error {
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for {
		resp, err := cli.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err == nil {
			for i := len(resp.Chunk) - 1; i >= 0; i-- {
				evt := resp.Chunk[i]
				if evt.Sender != bot || evt.Type != event.EventMessage || seen[evt.ID] {
					continue
				}
				seen[evt.ID] = true
				_ = evt.Content.ParseRaw(evt.Type)
				body := evt.Content.AsMessage().Body
				fmt.Printf("%s: %s\n", bot, strings.ReplaceAll(body, "\n", "\n    "))
				if strings.Contains(body, want) {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the bot did not answer in time (%w)", ctx.Err())
		case <-ticker.C:
		}
	}
}

// printMixdown waits for the recording's mixdown (if mixdowns are on) and
// prints its files.
func printMixdown(ctx context.Context, o options, recID string) {
	deadline := time.Now().Add(90 * time.Second)
	appeared := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var rec struct {
			Mixdown *struct {
				State    string  `json:"state"`
				Progress float64 `json:"progress"`
				Error    string  `json:"error"`
				Files    []struct {
					File  string `json:"file"`
					Codec string `json:"codec"`
					Bytes int64  `json:"bytes"`
				} `json:"files"`
			} `json:"mixdown"`
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.apiURL+"/api/v1/recordings/"+url.PathEscape(recID), nil)
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+o.apiToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		err = json.NewDecoder(resp.Body).Decode(&rec)
		resp.Body.Close()
		if err != nil {
			return
		}
		m := rec.Mixdown
		switch {
		case m == nil && time.Now().After(appeared):
			return // mixdowns are off
		case m != nil && m.State == "failed":
			fmt.Printf("\nMixdown failed: %s\n", m.Error)
			return
		case m != nil && m.State == "finished":
			fmt.Printf("\nMixdown (the whole call in one file):\n")
			for _, f := range m.Files {
				probe := "?"
				if o.storeDir != "" {
					out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
						filepath.Join(o.storeDir, recID, f.File)).Output()
					if err == nil {
						probe = strings.TrimSpace(string(out)) + " s"
					}
				}
				fmt.Printf("  %-14s %-22s %8d bytes  ffprobe %s\n", f.File, f.Codec, f.Bytes, probe)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
	fmt.Println("\nMixdown: not finished yet; see the page.")
}
