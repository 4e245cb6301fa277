package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
	lktest "github.com/matrix-recorder/recorder/internal/testutil/livekit"
	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
)

// baselineEnv names the spec file of a baseline child process: the load
// tool (or its test binary) re-executes itself with it set.
const baselineEnv = "LOADTEST_BASELINE_SPEC"

// baselineSpec tells the child which calls to join, as whom.
type baselineSpec struct {
	Homeserver string         `json:"homeserver"`
	MediaDir   string         `json:"media_dir"`
	Calls      []baselineCall `json:"calls"`
	// ServiceURL is the MatrixRTC authorization service: the calls are
	// MatrixRTC calls, received by a bare server-sdk-go subscriber.
	ServiceURL string `json:"service_url,omitempty"`
}

type baselineCall struct {
	RoomID    id.RoomID `json:"room_id"`
	Localpart string    `json:"localpart"` // registered and joined by the parent
}

// baselineMark is the child's answer to "mark": what it received so far.
type baselineMark struct {
	Packets   uint64 `json:"packets"`
	Connected int    `json:"connected"` // remote devices with a live connection
	Senders   int    `json:"senders"`   // remote devices whose media arrives
}

// baselineMain is the baseline joiner process: one receive-only simpeer per
// call (pion with its default interceptors, reading and discarding every
// packet), or for MatrixRTC calls one server-sdk-go subscriber per call
// (lktest.Subscriber). It prints READY once in every call, answers each "mark" line on
// stdin with a baselineMark JSON line, and leaves when stdin closes.
func baselineMain(specPath string, stdin io.Reader, stdout io.Writer) int {
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}).Level(zerolog.InfoLevel).
		With().Timestamp().Str("component", "baseline").Logger()
	ctx, stop := signal.NotifyContext(log.WithContext(context.Background()), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runBaseline(ctx, specPath, stdin, stdout); err != nil {
		log.Err(err).Msg("Baseline joiner failed")
		return 1
	}
	return 0
}

func runBaseline(ctx context.Context, specPath string, stdin io.Reader, stdout io.Writer) error {
	data, err := os.ReadFile(specPath)
	if err != nil {
		return fmt.Errorf("failed to read the spec: %w", err)
	}
	var spec baselineSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		return fmt.Errorf("failed to parse the spec: %w", err)
	}
	var peers []*simpeer.Participant
	var subs []*lktest.Subscriber
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		for _, p := range peers {
			_ = p.Stop(stopCtx)
		}
		for _, s := range subs {
			s.Close()
		}
	}()
	for _, c := range spec.Calls {
		cli, err := mautrix.NewClient(spec.Homeserver, "", "")
		if err != nil {
			return fmt.Errorf("failed to create a client: %w", err)
		}
		if _, err := cli.Login(ctx, &mautrix.ReqLogin{
			Type:             mautrix.AuthTypePassword,
			Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: c.Localpart},
			Password:         homeserver.Password(c.Localpart),
			DeviceID:         "BASELINE",
			StoreCredentials: true,
		}); err != nil {
			return fmt.Errorf("failed to log in %s: %w", c.Localpart, err)
		}
		if spec.ServiceURL != "" {
			sub, err := lktest.Subscribe(ctx, cli, c.RoomID, spec.ServiceURL)
			if err != nil {
				return fmt.Errorf("%s failed to join the SFU: %w", c.Localpart, err)
			}
			subs = append(subs, sub)
			continue
		}
		p, err := simpeer.New(ctx, simpeer.Config{
			Client: cli, RoomID: c.RoomID, MediaDir: spec.MediaDir, ReceiveOnly: true, SyncTimeout: 30 * time.Second,
		})
		if err != nil {
			return fmt.Errorf("failed to set up %s: %w", c.Localpart, err)
		}
		p.Start(ctx)
		peers = append(peers, p)
		if err := p.Join(ctx); err != nil {
			return fmt.Errorf("%s failed to join: %w", c.Localpart, err)
		}
	}
	if _, err := fmt.Fprintln(stdout, "READY"); err != nil {
		return fmt.Errorf("failed to write: %w", err)
	}
	sc := bufio.NewScanner(stdin)
	enc := json.NewEncoder(stdout)
	for sc.Scan() {
		if sc.Text() != "mark" {
			continue
		}
		var m baselineMark
		for _, s := range subs {
			m.Packets += s.Packets()
			m.Senders += s.Senders()
			m.Connected += s.Senders()
		}
		for _, p := range peers {
			for _, c := range p.Snapshot().Calls {
				if c.Ended() {
					continue
				}
				if c.State == simpeer.StateConnected {
					m.Connected++
				}
				n := c.Packets(webrtc.RTPCodecTypeAudio) + c.Packets(webrtc.RTPCodecTypeVideo)
				if n > 0 {
					m.Senders++
				}
				m.Packets += n
			}
		}
		if err := enc.Encode(m); err != nil {
			return fmt.Errorf("failed to write: %w", err)
		}
	}
	return nil // stdin closed: leave
}
