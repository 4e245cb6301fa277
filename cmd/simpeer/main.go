// Command simpeer joins a legacy MSC3401 full-mesh group call as a simulated
// participant (internal/testutil/simpeer) and sends the test media until Ctrl-C or
// -duration. ICE is restricted to 127.0.0.1, so it only talks to peers on
// the same machine.
//
//	simpeer -homeserver http://127.0.0.1:8008 -user alice -password secret \
//	    -room '!abc:localhost' -create -encrypt -video
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream" // sqlite3-fk-wal driver
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
)

// Exit codes.
const (
	exitUsage = 2
	exitLogin = 10
	exitDB    = 11
	exitCall  = 12
)

type options struct {
	homeserver, user, password, token, device string
	room, conf                                string
	create, encrypt, video, screenshare       bool
	dbPath, pickleKey, mediaDir, logLevel     string
	duration                                  time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.homeserver, "homeserver", "", "homeserver base URL (required)")
	flag.StringVar(&o.user, "user", "", "user localpart or MXID (required)")
	flag.StringVar(&o.password, "password", "", "password (log in with -device)")
	flag.StringVar(&o.token, "token", "", "access token instead of -password (needs -device)")
	flag.StringVar(&o.device, "device", "SIMPEER", "device ID")
	flag.StringVar(&o.room, "room", "", "room ID or alias to join (required)")
	flag.StringVar(&o.conf, "conf", "", "conf_id of the call (default: the room's current call)")
	flag.BoolVar(&o.create, "create", false, "create the call event if there is no call")
	flag.BoolVar(&o.encrypt, "encrypt", false, "Olm-encrypt signalling (keys in -db)")
	flag.StringVar(&o.dbPath, "db", "", "SQLite file for the Olm account (default simpeer-<localpart>-<device>.db)")
	flag.StringVar(&o.pickleKey, "pickle-key", "simpeer", "pickle key for the Olm account")
	flag.BoolVar(&o.video, "video", true, "send VP8 video as well as Opus audio")
	flag.BoolVar(&o.screenshare, "screenshare", false, "start a screen share after joining")
	flag.StringVar(&o.mediaDir, "media", "testdata/media", "directory with the test media")
	flag.DurationVar(&o.duration, "duration", 0, "leave after this long (0: until Ctrl-C)")
	flag.StringVar(&o.logLevel, "log-level", "info", "log level")
	flag.Parse()
	os.Exit(run(o))
}

func run(o options) int {
	level, err := zerolog.ParseLevel(o.logLevel)
	if err != nil {
		level = zerolog.InfoLevel
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}).Level(level).With().Timestamp().Logger()
	if o.homeserver == "" || o.user == "" || o.room == "" || (o.password == "" && o.token == "") {
		flag.Usage()
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(log.WithContext(context.Background()), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cli, err := login(ctx, o)
	if err != nil {
		log.Err(err).Msg("Login failed")
		return exitLogin
	}
	if _, err := cli.JoinRoom(ctx, o.room, nil); err != nil {
		log.Err(err).Str("room", o.room).Msg("Failed to join the room")
		return exitLogin
	}
	roomID, err := resolveRoom(ctx, cli, o.room)
	if err != nil {
		log.Err(err).Msg("Failed to resolve the room")
		return exitLogin
	}

	cfg := simpeer.Config{
		Client: cli, RoomID: roomID, ConfID: signaling.ConfID(o.conf), CreateCall: o.create,
		Video: o.video, MediaDir: o.mediaDir, Encrypt: o.encrypt, PickleKey: []byte(o.pickleKey),
	}
	if o.encrypt {
		path := o.dbPath
		if path == "" {
			path = fmt.Sprintf("simpeer-%s-%s.db", cli.UserID.Localpart(), cli.DeviceID)
		}
		db, err := dbutil.NewWithDialect("file:"+path+"?_txlock=immediate", "sqlite3-fk-wal")
		if err != nil {
			log.Err(err).Str("path", path).Msg("Failed to open the crypto database")
			return exitDB
		}
		defer db.Close()
		cfg.CryptoDB = db
	}
	p, err := simpeer.New(ctx, cfg)
	if err != nil {
		log.Err(err).Msg("Failed to set up the participant")
		return exitCall
	}
	p.Start(ctx)
	code := 0
	if err := p.Join(ctx); err != nil {
		log.Err(err).Msg("Failed to join the call")
		code = exitCall
	} else if o.screenshare {
		if err := p.ShareScreen(ctx, true); err != nil {
			log.Err(err).Msg("Failed to start the screen share")
		}
	}
	if code == 0 {
		wait := ctx.Done()
		if o.duration > 0 {
			timer := time.NewTimer(o.duration)
			defer timer.Stop()
			select {
			case <-wait:
			case <-timer.C:
			}
		} else {
			<-wait
		}
		s := p.Snapshot()
		for _, c := range s.Calls {
			log.Info().Str("call_id", string(c.CallID)).Stringer("remote", c.Remote).Str("state", c.State).
				Str("end_reason", string(c.EndReason)).Uint64("audio_packets", c.Packets(webrtc.RTPCodecTypeAudio)).Uint64("video_packets", c.Packets(webrtc.RTPCodecTypeVideo)).
				Msg("Call summary")
		}
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := p.Stop(stopCtx); err != nil {
		log.Err(err).Msg("Failed to leave cleanly")
	}
	return code
}

func login(ctx context.Context, o options) (*mautrix.Client, error) {
	userID := id.UserID(o.user)
	if !strings.HasPrefix(o.user, "@") {
		userID = ""
	}
	if o.token != "" {
		if userID == "" {
			return nil, errors.New("-token needs -user as a full MXID")
		}
		cli, err := mautrix.NewClient(o.homeserver, userID, o.token)
		if err != nil {
			return nil, err
		}
		cli.DeviceID = id.DeviceID(o.device)
		resp, err := cli.Whoami(ctx)
		if err != nil {
			return nil, fmt.Errorf("whoami failed: %w", err)
		}
		if resp.DeviceID != "" {
			cli.DeviceID = resp.DeviceID
		}
		return cli, nil
	}
	cli, err := mautrix.NewClient(o.homeserver, "", "")
	if err != nil {
		return nil, err
	}
	localpart := o.user
	if userID != "" {
		localpart = userID.Localpart()
	}
	_, err = cli.Login(ctx, &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password:         o.password,
		DeviceID:         id.DeviceID(o.device),
		StoreCredentials: true,
	})
	return cli, err
}

func resolveRoom(ctx context.Context, cli *mautrix.Client, room string) (id.RoomID, error) {
	if strings.HasPrefix(room, "!") {
		return id.RoomID(room), nil
	}
	resp, err := cli.ResolveAlias(ctx, id.RoomAlias(room))
	if err != nil {
		return "", err
	}
	return resp.RoomID, nil
}
