package jsclient

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

// Track sources as livekit-client names them (Track.Source).
const (
	SourceCamera      = "camera"
	SourceMicrophone  = "microphone"
	SourceScreenShare = "screen_share"
)

// E2EEState is what a page in E2EE mode saw of the media keys and of the
// encrypted media.
type E2EEState struct {
	// Identity is the page's own LiveKit identity (@user:server:DEVICE).
	Identity string `json:"identity"`
	// MemberID is the page's member id: a random UUID, as Element Call's,
	// sent as member.id in its keys.
	MemberID string `json:"memberId"`
	// Enabled is livekit-client's Room.isE2EEEnabled (our own frames are
	// encrypted).
	Enabled bool `json:"enabled"`
	// Keys are the keys the MatrixRTC session handed to the key provider, by
	// LiveKit identity, the page's own included (its own key is handed over
	// when it starts using it: at once for the first, a second after sending
	// for a rotated one).
	Keys map[string]KeyRing `json:"keys"`
	// KeysReceived are the io.element.call.encryption_keys to-device events
	// that arrived (Olm-decrypted), oldest first (the last 200).
	KeysReceived []KeyEvent `json:"keysReceived"`
	// KeysSent are the page's key sends, oldest first (the last 200).
	KeysSent []KeySend `json:"keysSent"`
	// Errors are livekit-client's RoomEvent.EncryptionError events.
	Errors []EncryptionError `json:"errors"`
	// Status is RoomEvent.ParticipantEncryptionStatusChanged's last word per
	// LiveKit identity.
	Status map[string]bool `json:"status"`
	// Members are the session's memberships the page saw, by LiveKit
	// identity, its own included.
	Members map[string]Member `json:"members"`
}

// Member is when the page saw a membership of the session come and go.
type Member struct {
	JoinedAtMs int64 `json:"joinedAt"` // page Date.now() when it appeared
	LeftAtMs   int64 `json:"leftAt"`   // 0 while it is there
	// CreatedTs is the membership's created_ts (or origin_server_ts).
	CreatedTs int64 `json:"createdTs"`
}

// KeyRing is what one participant's media keys looked like in the page.
type KeyRing struct {
	// Count is how many keys arrived (repeats included).
	Count int `json:"count"`
	// Indexes are the distinct key indexes, in order of arrival.
	Indexes []int `json:"indexes"`
	// LastIndex is the index of the latest key.
	LastIndex int `json:"lastIndex"`
	// FirstAtMs and LastAtMs are the page's Date.now() at the first and the
	// latest key.
	FirstAtMs int64 `json:"firstAt"`
	LastAtMs  int64 `json:"lastAt"`
	// Raw are the keys themselves by index (the latest of each index):
	// padded base64 of the 16 bytes, as on the wire, for checking a
	// decryption against them.
	Raw map[int]string `json:"raw"`
}

// HasIndex reports whether the ring holds a key with the index.
func (r *KeyRing) HasIndex(index int) bool {
	if r == nil {
		return false
	}
	for _, i := range r.Indexes {
		if i == index {
			return true
		}
	}
	return false
}

// KeyEvent is one received io.element.call.encryption_keys event.
type KeyEvent struct {
	Sender   id.UserID   `json:"sender"`
	DeviceID id.DeviceID `json:"deviceId"` // member.claimed_device_id
	MemberID string      `json:"memberId"` // member.id
	Index    int         `json:"index"`
	AtMs     int64       `json:"at"`
}

// KeySend is one key the page sent (encryptAndSendToDevice), to the devices
// in To ("@user:server:DEVICE"; the page's own device is skipped when sending).
type KeySend struct {
	Index int      `json:"index"`
	To    []string `json:"to"`
	AtMs  int64    `json:"at"`
}

// EncryptionError is one livekit-client RoomEvent.EncryptionError.
type EncryptionError struct {
	// Identity is the participant it is about ("" when livekit-client
	// named none).
	Identity string `json:"identity"`
	Message  string `json:"message"`
	AtMs     int64  `json:"at"`
}

// RemoteParticipant is one remote LiveKit participant as the page sees it.
type RemoteParticipant struct {
	Identity string `json:"identity"`
	// Encrypted is livekit-client's Participant.isEncrypted: all its tracks
	// are published encrypted.
	Encrypted bool          `json:"encrypted"`
	Tracks    []RemoteTrack `json:"tracks"`
}

// RemoteTrack is one remote track publication and its inbound-rtp counters
// (summed over its streams).
type RemoteTrack struct {
	SID        string `json:"sid"`
	Source     string `json:"source"`
	Kind       string `json:"kind"` // "audio" or "video"
	Subscribed bool   `json:"subscribed"`
	Muted      bool   `json:"muted"`
	Encrypted  bool   `json:"encrypted"`

	PacketsReceived int64 `json:"packetsReceived"`
	BytesReceived   int64 `json:"bytesReceived"`
	// Video.
	FramesReceived   int64 `json:"framesReceived"`
	FramesDecoded    int64 `json:"framesDecoded"`
	FramesDropped    int64 `json:"framesDropped"`
	KeyFramesDecoded int64 `json:"keyFramesDecoded"`
	FrameWidth       int   `json:"frameWidth"`
	FrameHeight      int   `json:"frameHeight"`
	// Audio: samples played out, those of them concealed (not decoded from a
	// frame), and the energy of what was played.
	TotalSamplesReceived int64   `json:"totalSamplesReceived"`
	ConcealedSamples     int64   `json:"concealedSamples"`
	TotalAudioEnergy     float64 `json:"totalAudioEnergy"`
	AudioLevel           float64 `json:"audioLevel"`
}

// DecodedSamples are the audio samples played out that came from decoded
// frames (not concealment).
func (t *RemoteTrack) DecodedSamples() int64 {
	return t.TotalSamplesReceived - t.ConcealedSamples
}

// Identity is the LiveKit identity of a member in compatibility mode:
// @user:server:DEVICE (what /sfu/get grants and what the keys are set for).
func Identity(userID id.UserID, deviceID id.DeviceID) string {
	return string(userID) + ":" + string(deviceID)
}

// Identity is the client's LiveKit identity.
func (c *Client) Identity() string { return Identity(c.opts.UserID, c.opts.DeviceID) }

// Remote returns the remote participant with the LiveKit identity, or nil.
func (s *RTCState) Remote(identity string) *RemoteParticipant {
	for i := range s.Remotes {
		if s.Remotes[i].Identity == identity {
			return &s.Remotes[i]
		}
	}
	return nil
}

// Track returns the participant's track from the source, or nil.
func (p *RemoteParticipant) Track(source string) *RemoteTrack {
	if p == nil {
		return nil
	}
	for i := range p.Tracks {
		if p.Tracks[i].Source == source {
			return &p.Tracks[i]
		}
	}
	return nil
}

// FramesDecoded sums the video frames decoded from the participant's tracks.
func (p *RemoteParticipant) FramesDecoded() int64 {
	var n int64
	if p != nil {
		for _, t := range p.Tracks {
			n += t.FramesDecoded
		}
	}
	return n
}

// DecodedSamples sums the decoded audio samples of the participant's tracks.
func (p *RemoteParticipant) DecodedSamples() int64 {
	var n int64
	if p != nil {
		for _, t := range p.Tracks {
			n += t.DecodedSamples()
		}
	}
	return n
}

// AudioEnergy sums the energy of the participant's audio played out.
func (p *RemoteParticipant) AudioEnergy() float64 {
	var e float64
	if p != nil {
		for _, t := range p.Tracks {
			e += t.TotalAudioEnergy
		}
	}
	return e
}

// Key returns the key ring of the LiveKit identity, or nil when no key of it
// arrived.
func (s *RTCState) Key(identity string) *KeyRing {
	if s.E2EE == nil {
		return nil
	}
	r, ok := s.E2EE.Keys[identity]
	if !ok {
		return nil
	}
	return &r
}

// OwnKeyIndex is the index of the page's own key in use, -1 before it has one.
func (s *RTCState) OwnKeyIndex() int {
	if s.E2EE == nil {
		return -1
	}
	if r := s.Key(s.E2EE.Identity); r != nil {
		return r.LastIndex
	}
	return -1
}

// KeySentTo returns the index of the last key the page sent to the device
// with the LiveKit identity (@user:server:DEVICE), and whether it sent one.
func (s *RTCState) KeySentTo(identity string) (int, bool) {
	if s.E2EE == nil {
		return 0, false
	}
	for i := len(s.E2EE.KeysSent) - 1; i >= 0; i-- {
		for _, to := range s.E2EE.KeysSent[i].To {
			if to == identity {
				return s.E2EE.KeysSent[i].Index, true
			}
		}
	}
	return 0, false
}

// KeysFrom returns the io.element.call.encryption_keys events that came from
// the device, oldest first.
func (s *RTCState) KeysFrom(userID id.UserID, deviceID id.DeviceID) []KeyEvent {
	var keys []KeyEvent
	if s.E2EE != nil {
		for _, k := range s.E2EE.KeysReceived {
			if k.Sender == userID && k.DeviceID == deviceID {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// ErrorsAbout returns the encryption errors about the identity and those
// naming no participant.
func (s *RTCState) ErrorsAbout(identity string) []EncryptionError {
	var errs []EncryptionError
	if s.E2EE != nil {
		for _, e := range s.E2EE.Errors {
			if e.Identity == identity || e.Identity == "" {
				errs = append(errs, e)
			}
		}
	}
	return errs
}

// ErrorsAfterKey returns the encryption errors about the identity (and those
// naming no participant) that happened later than grace after its first key
// arrived: frames that come before their key fail (LiveKit may deliver a
// track up to about 0.6 s before the key), the ones after must not. Without
// a key of the identity it returns all of them.
func (s *RTCState) ErrorsAfterKey(identity string, grace time.Duration) []EncryptionError {
	errs := s.ErrorsAbout(identity)
	r := s.Key(identity)
	if r == nil {
		return errs
	}
	var late []EncryptionError
	for _, e := range errs {
		if e.AtMs > r.FirstAtMs+grace.Milliseconds() {
			late = append(late, e)
		}
	}
	return late
}

// WaitRTC polls the MatrixRTC page's state until cond accepts it and returns
// that state, or fails the test after timeout with the last state seen.
func (c *Client) WaitRTC(t testing.TB, timeout time.Duration, what string, cond func(*RTCState) bool) *RTCState {
	t.Helper()
	return waitState(t, c, timeout, what, c.RTCState, cond, RTCSummary)
}

// WaitKey waits until a key of the LiveKit identity (a remote member's or
// the page's own) satisfies cond, and returns the state.
func (c *Client) WaitKey(t testing.TB, timeout time.Duration, identity string, cond func(*KeyRing) bool) *RTCState {
	t.Helper()
	return c.WaitRTC(t, timeout, "a key of "+identity, func(st *RTCState) bool {
		r := st.Key(identity)
		return r != nil && cond(r)
	})
}

// WaitOwnKeyRotation waits until the page uses a key index other than from
// (its own key rotated) and returns the new index.
func (c *Client) WaitOwnKeyRotation(t testing.TB, timeout time.Duration, from int) int {
	t.Helper()
	st := c.WaitRTC(t, timeout, fmt.Sprintf("the page's own key to rotate from index %d", from), func(st *RTCState) bool {
		i := st.OwnKeyIndex()
		return i >= 0 && i != from
	})
	return st.OwnKeyIndex()
}

// OwnKeySettled reports whether the page uses the key it sent last (a
// rotated key is used a second after it is sent; the first at once), and
// returns that index (-1 before the page has a key).
func (s *RTCState) OwnKeySettled() (int, bool) {
	own := s.OwnKeyIndex()
	if own < 0 {
		return own, false
	}
	if n := len(s.E2EE.KeysSent); n > 0 && s.E2EE.KeysSent[n-1].Index != own {
		return own, false
	}
	return own, true
}

// WaitOwnKeySettled waits until the page uses the key it sent last and
// returns its index: read the index before a rotation with it, so a rotation
// still under way (a join when the key was 10 s old) is not mistaken for
// the next one.
func (c *Client) WaitOwnKeySettled(t testing.TB, timeout time.Duration) int {
	t.Helper()
	st := c.WaitRTC(t, timeout, "the page to use the key it sent last", func(st *RTCState) bool {
		_, ok := st.OwnKeySettled()
		return ok
	})
	i, _ := st.OwnKeySettled()
	return i
}

// WaitKeySentTo waits until the page has sent a key to the device with the
// LiveKit identity (for instance the recorder's) and returns its index.
func (c *Client) WaitKeySentTo(t testing.TB, timeout time.Duration, identity string) int {
	t.Helper()
	st := c.WaitRTC(t, timeout, "a key sent to "+identity, func(st *RTCState) bool {
		_, ok := st.KeySentTo(identity)
		return ok
	})
	i, _ := st.KeySentTo(identity)
	return i
}

// Decoding is how much of a remote participant's media a page decoded
// while WaitDecoding watched.
type Decoding struct {
	Frames  int64   // video frames decoded
	Samples int64   // audio samples decoded (not concealed)
	Energy  float64 // energy of the audio played
}

// WaitDecoding waits until the page decodes more of the remote participant's
// media than when it was called: at least frames more video frames (0: no
// video expected) and samples more decoded audio samples with some audio
// energy (0: no audio expected). It returns the growth and the last state.
func (c *Client) WaitDecoding(t testing.TB, timeout time.Duration, identity string, frames, samples int64) (Decoding, *RTCState) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	first, err := c.RTCState(ctx)
	if err != nil {
		t.Fatalf("jsclient %s: %v", c.name, err)
	}
	base := first.Remote(identity)
	what := fmt.Sprintf("%d more video frames and %d more audio samples decoded from %s", frames, samples, identity)
	var got Decoding
	st := c.WaitRTC(t, timeout, what, func(st *RTCState) bool {
		p := st.Remote(identity)
		if p == nil {
			return false
		}
		got = Decoding{
			Frames:  p.FramesDecoded() - base.FramesDecoded(),
			Samples: p.DecodedSamples() - base.DecodedSamples(),
			Energy:  p.AudioEnergy() - base.AudioEnergy(),
		}
		return got.Frames >= frames && got.Samples >= samples && (samples == 0 || got.Energy > 0)
	})
	return got, st
}

// RTCSummary renders a MatrixRTC page's state for failure messages.
func RTCSummary(st *RTCState) string {
	if st == nil {
		return "(no state)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "joined=%t startError=%q times=%v\n", st.Joined, st.StartError, st.Times)
	if st.LiveKit != nil {
		fmt.Fprintf(&b, "  livekit state=%s identity=%s remotes=%v\n", st.LiveKit.State, st.LiveKit.Identity, st.LiveKit.Remotes)
	}
	if e := st.E2EE; e != nil {
		fmt.Fprintf(&b, "  e2ee identity=%s enabled=%t own key index=%d status=%v\n", e.Identity, e.Enabled, st.OwnKeyIndex(), e.Status)
		for who, r := range e.Keys {
			fmt.Fprintf(&b, "  keys of %s: count=%d indexes=%v last=%d\n", who, r.Count, r.Indexes, r.LastIndex)
		}
		for who, m := range e.Members {
			fmt.Fprintf(&b, "  member %s joined at %d left at %d (created_ts %d)\n", who, m.JoinedAtMs, m.LeftAtMs, m.CreatedTs)
		}
		for _, k := range e.KeysSent {
			fmt.Fprintf(&b, "  sent index %d to %v at %d\n", k.Index, k.To, k.AtMs)
		}
		for _, k := range e.KeysReceived {
			fmt.Fprintf(&b, "  received index %d from %s/%s at %d\n", k.Index, k.Sender, k.DeviceID, k.AtMs)
		}
		for _, er := range e.Errors {
			fmt.Fprintf(&b, "  encryption error about %q at %d: %s\n", er.Identity, er.AtMs, er.Message)
		}
	}
	for _, p := range st.Remotes {
		fmt.Fprintf(&b, "  remote %s encrypted=%t\n", p.Identity, p.Encrypted)
		for _, t := range p.Tracks {
			fmt.Fprintf(&b, "    %s %s sub=%t muted=%t enc=%t packets=%d frames=%d/%d decoded (%d key) %dx%d samples=%d concealed=%d energy=%.4f\n",
				t.Source, t.Kind, t.Subscribed, t.Muted, t.Encrypted, t.PacketsReceived, t.FramesDecoded, t.FramesReceived,
				t.KeyFramesDecoded, t.FrameWidth, t.FrameHeight, t.TotalSamplesReceived, t.ConcealedSamples, t.TotalAudioEnergy)
		}
	}
	return b.String()
}
