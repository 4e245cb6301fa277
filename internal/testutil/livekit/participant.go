package livekit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	lkp "github.com/livekit/protocol/livekit"
	protolog "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/matrixrtc"
	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
)

// ParticipantOptions configure a simulated MatrixRTC participant.
type ParticipantOptions struct {
	// Client is the participant's Matrix device, joined to RoomID.
	Client     *mautrix.Client
	RoomID     id.RoomID
	ServiceURL string // the authorization service (AuthService.URL)
	MediaDir   string // testdata/media
	// Camera also publishes video (else audio only).
	Camera bool
	// VideoFrameBytes pads camera frames (simpeer.PadVP8): 4000 is about
	// 1 Mbit/s at 30 fps (the load tool).
	VideoFrameBytes int
	// NoMembership skips the MatrixRTC membership: a LiveKit participant
	// that is no call member (the recorder must not record it).
	NoMembership bool
	// MediaKey, when set, end-to-end encrypts every frame with this key
	// under index 0, as Element Call does in encrypted rooms (the
	// recorder gets the key only when the test sends it); SetMediaKey
	// rotates it.
	MediaKey []byte
}

// Participant is a simulated Element Call participant: it publishes its
// MatrixRTC membership as Element Call does, gets a token through /sfu/get
// and publishes the test media into the LiveKit room with server-sdk-go.
type Participant struct {
	opts ParticipantOptions
	Room *lksdk.Room

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	lock   sync.Mutex
	pubs   map[lkp.TrackSource]*published
	enc    atomic.Pointer[frameEncryptor]
}

type published struct {
	pub  *lksdk.LocalTrackPublication
	stop chan struct{}
}

// StateKey is the participant's membership state key.
func (p *Participant) StateKey() string {
	return matrixrtc.StateKey(p.opts.Client.UserID, p.opts.Client.DeviceID)
}

// Join publishes the membership, connects and publishes the microphone
// (and camera).
func Join(ctx context.Context, opts ParticipantOptions) (*Participant, error) {
	p := &Participant{opts: opts, pubs: map[lkp.TrackSource]*published{}}
	if opts.MediaKey != nil {
		if err := p.SetMediaKey(0, opts.MediaKey); err != nil {
			return nil, err
		}
	}
	cli := opts.Client
	content := matrixrtc.OwnContent(cli.UserID, cli.DeviceID, opts.RoomID, opts.ServiceURL, matrixrtc.DefaultExpires, time.Time{})
	if !opts.NoMembership {
		if _, err := cli.SendStateEvent(ctx, opts.RoomID, matrixrtc.StateType, p.StateKey(), content); err != nil {
			return nil, fmt.Errorf("failed to send membership: %w", err)
		}
	}
	if err := p.connect(ctx); err != nil {
		return nil, err
	}
	p.ctx, p.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if err := p.Publish(lkp.TrackSource_MICROPHONE); err != nil {
		return nil, err
	}
	if opts.Camera {
		if err := p.Publish(lkp.TrackSource_CAMERA); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *Participant) connect(ctx context.Context) error {
	room, err := joinSFU(ctx, p.opts.Client, p.opts.RoomID, p.opts.ServiceURL, lksdk.NewRoomCallback(), false)
	if err != nil {
		return err
	}
	p.Room = room
	return nil
}

// joinSFU joins the call's LiveKit room as the client's device does in
// Element Call: an OpenID token, /sfu/get at the authorization service,
// then the SFU with the JWT it gave.
func joinSFU(ctx context.Context, cli *mautrix.Client, roomID id.RoomID, serviceURL string, cb *lksdk.RoomCallback, subscribe bool) (*lksdk.Room, error) {
	tok, err := cli.RequestOpenIDToken(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to get an OpenID token: %w", err)
	}
	body, _ := json.Marshal(LegacySFURequest{Room: roomID, OpenIDToken: *tok, DeviceID: cli.DeviceID})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, serviceURL+"/sfu/get", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sfu/get: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("sfu/get answered %d: %s", resp.StatusCode, data)
	}
	var out struct{ URL, JWT string }
	if err = json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("sfu/get: %w", err)
	}
	room := lksdk.NewRoom(cb)
	room.SetLogger(protolog.GetDiscardLogger())
	if err = room.JoinWithContextAndToken(ctx, out.URL, out.JWT, lksdk.WithAutoSubscribe(subscribe)); err != nil {
		return nil, fmt.Errorf("failed to join the SFU: %w", err)
	}
	return room, nil
}

// Publish starts sending one source: MICROPHONE (Opus), CAMERA or
// SCREEN_SHARE (VP8), looping the test media in real time.
func (p *Participant) Publish(source lkp.TrackSource) error {
	audio := source == lkp.TrackSource_MICROPHONE
	file := simpeer.VideoFile
	capability := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
	switch source {
	case lkp.TrackSource_MICROPHONE:
		file = simpeer.AudioFile
		capability = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}
	case lkp.TrackSource_SCREEN_SHARE:
		file = simpeer.ScreenFile
	}
	frames, err := simpeer.LoadFrames(filepath.Join(p.opts.MediaDir, file), audio)
	if err != nil {
		return err
	}
	if source == lkp.TrackSource_CAMERA && p.opts.VideoFrameBytes > 0 {
		frames = simpeer.PadVP8(frames, p.opts.VideoFrameBytes)
	}
	// Like a browser, a key frame as soon as the SFU asks (PLI/FIR).
	wantKey := &atomic.Bool{}
	track, err := lksdk.NewLocalSampleTrack(capability, lksdk.WithRTCPHandler(func(pkt rtcp.Packet) {
		switch pkt.(type) {
		case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
			wantKey.Store(true)
		}
	}))
	if err != nil {
		return fmt.Errorf("failed to create track: %w", err)
	}
	popts := &lksdk.TrackPublicationOptions{Name: source.String(), Source: source}
	if p.opts.MediaKey != nil {
		popts.Encryption = lkp.Encryption_GCM
	}
	pub, err := p.Room.LocalParticipant.PublishTrack(track, popts)
	if err != nil {
		return fmt.Errorf("failed to publish %s: %w", source, err)
	}
	pb := &published{pub: pub, stop: make(chan struct{})}
	p.lock.Lock()
	p.pubs[source] = pb
	p.lock.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		send(p.ctx, pb.stop, track, frames, wantKey, func(frame []byte) []byte {
			if enc := p.enc.Load(); enc != nil {
				return enc.encrypt(frame, audio)
			}
			return frame
		})
	}()
	return nil
}

// send loops frames into the track in real time until stop or ctx; on a
// key frame request (VP8) it jumps to the file's next key frame.
func send(ctx context.Context, stop <-chan struct{}, track *lksdk.LocalTrack, frames []simpeer.Frame, wantKey *atomic.Bool,
	transform func([]byte) []byte) {
	next := time.Now()
	for i := 0; ; i = (i + 1) % len(frames) {
		if wantKey.Swap(false) {
			for j := 1; j <= len(frames); j++ {
				if k := (i + j - 1) % len(frames); isVP8Key(frames[k].Data) {
					i = k
					break
				}
			}
		}
		f := frames[i]
		_ = track.WriteSample(media.Sample{Data: transform(f.Data), Duration: f.Duration}, nil)
		next = next.Add(f.Duration)
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-time.After(time.Until(next)):
		}
	}
}

// isVP8Key reports whether a VP8 frame is a key frame (false for Opus
// frames, which are never asked for).
func isVP8Key(frame []byte) bool {
	return len(frame) >= 10 && frame[0]&1 == 0 && frame[3] == 0x9d && frame[4] == 0x01 && frame[5] == 0x2a
}

// Unpublish stops sending a source.
func (p *Participant) Unpublish(source lkp.TrackSource) error {
	p.lock.Lock()
	pb := p.pubs[source]
	delete(p.pubs, source)
	p.lock.Unlock()
	if pb == nil {
		return fmt.Errorf("%s is not published", source)
	}
	close(pb.stop)
	return p.Room.LocalParticipant.UnpublishTrack(pb.pub.SID())
}

// SetMuted mutes or unmutes a published source (a LiveKit track mute).
func (p *Participant) SetMuted(source lkp.TrackSource, muted bool) error {
	p.lock.Lock()
	pb := p.pubs[source]
	p.lock.Unlock()
	if pb == nil {
		return fmt.Errorf("%s is not published", source)
	}
	pb.pub.SetMuted(muted)
	return nil
}

// SetMediaKey makes the participant encrypt its frames from now on with
// key under index (a rotation, when it already had one).
func (p *Participant) SetMediaKey(index uint8, key []byte) error {
	enc, err := newFrameEncryptor(index, key)
	if err != nil {
		return err
	}
	p.enc.Store(enc)
	return nil
}

// SID is the participant's LiveKit participant SID (new on every join).
func (p *Participant) SID() string { return p.Room.LocalParticipant.SID() }

// Leave hangs up as Element Call does without delayed events: it leaves
// the LiveKit room and writes {} over its membership.
func (p *Participant) Leave(ctx context.Context) error {
	p.Disconnect()
	if _, err := p.opts.Client.SendStateEvent(ctx, p.opts.RoomID, matrixrtc.StateType, p.StateKey(), struct{}{}); err != nil {
		return fmt.Errorf("failed to remove membership: %w", err)
	}
	return nil
}

// Disconnect leaves the LiveKit room only (a crashed client: its membership
// stays behind) and stops every sender.
func (p *Participant) Disconnect() {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	if p.Room != nil {
		p.Room.Disconnect()
	}
}
