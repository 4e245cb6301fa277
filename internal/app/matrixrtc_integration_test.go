//go:build integration

package app_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	lkp "github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/livekit"
	"github.com/matrix-recorder/recorder/callbot/matrixrtc"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
	lktest "github.com/matrix-recorder/recorder/internal/testutil/livekit"
	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"
	"github.com/matrix-recorder/recorder/internal/testutil/observer"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
	"github.com/matrix-recorder/recorder/recording"
	"github.com/matrix-recorder/recorder/storage"
	"github.com/matrix-recorder/recorder/web"
)

// rtcSetup is a stack with a LiveKit SFU and an authorization service.
type rtcSetup struct {
	s    *stack.Stack
	obs  *observer.Observer
	lk   *lktest.Server
	auth *lktest.AuthService
	// parts are the latest participant of each user.
	parts map[id.UserID]*lktest.Participant
}

func (r *rtcSetup) participant(cli *mautrix.Client) *lktest.Participant { return r.parts[cli.UserID] }

func (r *rtcSetup) participantSID(cli *mautrix.Client) string { return r.parts[cli.UserID].SID() }

func startRTC(t *testing.T, opts ...stack.Options) *rtcSetup {
	t.Helper()
	obs := observer.New()
	o := stack.Options{}
	if len(opts) > 0 {
		o = opts[0]
	}
	o.Observer, o.Federation, o.API = obs, true, true
	s := stack.Start(t, o)
	lk := lktest.Start(t)
	auth := lktest.StartAuthService(t, lk, map[string]string{homeserver.Domain: s.HS.URL})
	return &rtcSetup{s: s, obs: obs, lk: lk, auth: auth, parts: map[id.UserID]*lktest.Participant{}}
}

func (r *rtcSetup) join(t *testing.T, cli *mautrix.Client, roomID id.RoomID, camera bool) *lktest.Participant {
	t.Helper()
	ctx := r.s.Ctx()
	_, err := cli.JoinRoomByID(ctx, roomID)
	require.NoError(t, err)
	p, err := lktest.Join(ctx, lktest.ParticipantOptions{Client: cli, RoomID: roomID, ServiceURL: r.auth.URL,
		MediaDir: stack.MediaDir(), Camera: camera})
	require.NoError(t, err)
	t.Cleanup(p.Disconnect)
	r.parts[cli.UserID] = p
	return p
}

// recorderMembership is the recorder's membership content in the room
// state, nil when it has none (or it was removed).
func recorderMembership(t *testing.T, cli *mautrix.Client, roomID id.RoomID, recorder id.UserID) map[string]any {
	t.Helper()
	state, err := cli.State(context.Background(), roomID)
	require.NoError(t, err)
	for key, evt := range state[matrixrtc.StateType] {
		if strings.HasPrefix(key, "_"+string(recorder)+"_") && evt.Sender == recorder {
			var content map[string]any
			require.NoError(t, json.Unmarshal(evt.Content.VeryRaw, &content))
			if len(content) == 0 {
				return nil
			}
			return content
		}
	}
	return nil
}

// trackOf is the observed track of a LiveKit participant session (SID) and kind.
func trackOf(obs *observer.Observer, user id.UserID, sid string, kind webrtc.RTPCodecType, purpose signaling.Purpose) *observer.Track {
	for _, tr := range obs.Tracks(user) {
		if string(tr.Info.Peer.SessionID) == sid && tr.Info.Kind == kind && tr.Info.Purpose == purpose {
			return &tr
		}
	}
	return nil
}

// streamStart is when the first packet of any track of a participant
// session's stream (camera and microphone, or screen share) arrived: the
// file starts there.
func streamStart(obs *observer.Observer, user id.UserID, sid string, purpose signaling.Purpose) time.Time {
	var first time.Time
	for _, tr := range obs.Tracks(user) {
		if string(tr.Info.Peer.SessionID) == sid && tr.Info.Purpose == purpose && !tr.FirstRTP.IsZero() &&
			(first.IsZero() || tr.FirstRTP.Before(first)) {
			first = tr.FirstRTP
		}
	}
	return first
}

// TestMatrixRTCRecord records a MatrixRTC call on a real LiveKit SFU:
// alice (camera + microphone) and bob (audio only) are in the call, the
// recorder joins on `!rec start` with its own membership; carol joins late,
// bob mutes, alice shares her screen, carol leaves and rejoins; a LiveKit
// participant without a membership is not recorded. After `!rec stop` the
// recorder's membership is gone and every stream is in a file that the
// media tools accept, as long as it was recorded, with audible audio.
func TestMatrixRTCRecord(t *testing.T) {
	r := startRTC(t)
	s, obs := r.s, r.obs
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	bob := s.HS.RegisterUser(ctx, t, "bob")
	carol := s.HS.RegisterUser(ctx, t, "carol")
	dave := s.HS.RegisterUser(ctx, t, "dave")
	roomID := s.CallRoom(t, alice, bob.UserID, carol.UserID, dave.UserID)
	pa := r.join(t, alice, roomID, true)
	r.join(t, bob, roomID, false)

	// dave is in the LiveKit room without a membership.
	_, err := dave.JoinRoomByID(ctx, roomID)
	require.NoError(t, err)
	pd, err := lktest.Join(ctx, lktest.ParticipantOptions{Client: dave, RoomID: roomID, ServiceURL: r.auth.URL,
		MediaDir: stack.MediaDir(), NoMembership: true})
	require.NoError(t, err)
	t.Cleanup(pd.Disconnect)

	startAt := time.Now()
	reply := s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start"))
	require.Contains(t, reply, "Joining the call")
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 30) &&
			obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 30) &&
			obs.HasMedia(bob.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 30)
	}, stack.Deadline, 50*time.Millisecond, "no media from alice and bob")
	first := obs.FirstPacket("")
	t.Logf("join time (!rec start → first packet): %s", first.Sub(startAt).Round(time.Millisecond))

	// The recorder is a call member, and says which kind of call it is in.
	st, err := s.App.RTC.Status(ctx, roomID)
	require.NoError(t, err)
	require.Equal(t, livekit.Kind, st.Kind)
	own := recorderMembership(t, alice, roomID, st.UserID)
	require.NotNil(t, own, "the recorder's membership is in the room state")
	require.Equal(t, "m.call", own["application"])
	require.Equal(t, string(st.DeviceID), own["device_id"])
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec status")), "MatrixRTC")

	// carol joins late.
	pc := r.join(t, carol, roomID, true)
	carolSID1 := pc.SID()
	require.Eventually(t, func() bool {
		return obs.HasMedia(carol.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 30)
	}, stack.Deadline, 50*time.Millisecond, "no media from the late joiner")

	// bob mutes for about 2 s; alice shares her screen meanwhile.
	require.NoError(t, r.participant(bob).SetMuted(lkp.TrackSource_MICROPHONE, true))
	require.NoError(t, pa.Publish(lkp.TrackSource_SCREEN_SHARE))
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeScreenshare, 30)
	}, stack.Deadline, 50*time.Millisecond, "no screen share")
	require.Eventually(t, func() bool {
		for _, c := range obs.Changes(bob.UserID) {
			if c.AudioMuted {
				return true
			}
		}
		return false
	}, stack.Deadline, 50*time.Millisecond, "bob's mute was not seen")
	waitMedia(t, obs, alice.UserID, 2*time.Second)
	require.NoError(t, r.participant(bob).SetMuted(lkp.TrackSource_MICROPHONE, false))
	require.NoError(t, pa.Unpublish(lkp.TrackSource_SCREEN_SHARE))
	screenEnd := time.Now()

	// carol leaves and rejoins.
	require.NoError(t, pc.Leave(ctx))
	carolLeft := time.Now()
	waitMedia(t, obs, alice.UserID, time.Second)
	pc2 := r.join(t, carol, roomID, true)
	require.NotEqual(t, carolSID1, pc2.SID())
	require.Eventually(t, func() bool {
		return trackOf(obs, carol.UserID, pc2.SID(), webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia) != nil &&
			trackOf(obs, carol.UserID, pc2.SID(), webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia).Packets > 60
	}, stack.Deadline, 50*time.Millisecond, "no media from carol after rejoining")
	waitMedia(t, obs, alice.UserID, time.Second)

	stopAt := time.Now()
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec stop")), "Left the call")
	require.Eventually(t, func() bool { return len(obs.Ended()) == 1 }, stack.Deadline, 50*time.Millisecond)
	require.Eventually(t, func() bool { return recorderMembership(t, alice, roomID, st.UserID) == nil },
		stack.Deadline, 50*time.Millisecond, "the recorder's membership is removed on leave")
	require.Empty(t, obs.Tracks(dave.UserID), "a LiveKit participant without membership is not recorded")

	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	ended := map[string]time.Time{carolSID1 + "/" + string(signaling.PurposeUserMedia): carolLeft,
		pa.SID() + "/" + string(signaling.PurposeScreenshare): screenEnd}
	kinds := map[string]string{}
	for _, f := range files {
		path := storedPath(s, rec, f.Name)
		kind := webrtc.RTPCodecTypeAudio
		if f.Kind == "webm" {
			kind = webrtc.RTPCodecTypeVideo
		}
		tr := trackOf(obs, f.UserID, f.SessionID, kind, signaling.Purpose(f.Purpose))
		require.NotNil(t, tr, "observed track for %s", f.Name)
		end, ok := ended[f.SessionID+"/"+f.Purpose]
		if !ok {
			end = stopAt
		}
		want := end.Sub(streamStart(obs, f.UserID, f.SessionID, signaling.Purpose(f.Purpose))).Seconds()
		got := mediacheck.Duration(t, path)
		t.Logf("%s %s: %s %v %.2fs (recorded %.2fs), %d bytes, mutes %v", f.UserID, f.Purpose, f.Name, f.Codecs, got, want, f.Bytes, f.MuteIntervals)
		mediacheck.Check(t, path, want, 1)
		kinds[string(f.UserID)+"/"+f.Purpose+"/"+f.SessionID] = f.Kind
		if f.Purpose == string(signaling.PurposeUserMedia) {
			pcm := mediacheck.DecodeAudio(t, path)
			decoded := float64(len(pcm)) / mediacheck.AudioRate
			require.Greater(t, mediacheck.Peak(pcm, 0, decoded), 1000, "audio of %s must be audible", f.Name)
		}
		if f.UserID == bob.UserID {
			require.NotEmpty(t, f.MuteIntervals, "bob's mute is in his file's mute intervals")
		}
	}
	require.Equal(t, "ogg", kinds[string(bob.UserID)+"/m.usermedia/"+r.participantSID(bob)], "audio only → Ogg: %v", kinds)
	require.Equal(t, "webm", kinds[string(alice.UserID)+"/m.usermedia/"+pa.SID()], "camera + microphone → WebM: %v", kinds)
	require.Equal(t, "webm", kinds[string(alice.UserID)+"/m.screenshare/"+pa.SID()], "screen share → its own file: %v", kinds)
	require.Equal(t, "webm", kinds[string(carol.UserID)+"/m.usermedia/"+carolSID1], "carol's first session: %v", kinds)
	require.Equal(t, "webm", kinds[string(carol.UserID)+"/m.usermedia/"+pc2.SID()], "carol after rejoining: %v", kinds)
	require.Len(t, files, 5)

	data, err := os.ReadFile(storedPath(s, rec, recording.ManifestFileName))
	require.NoError(t, err)
	var manifest recording.Manifest
	require.NoError(t, json.Unmarshal(data, &manifest))
	require.Len(t, manifest.Tracks, len(files))
}

func (r *rtcSetup) api(t *testing.T, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(r.s.Ctx(), method, r.s.APIURL()+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+stack.APIToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, data
}

// TestMatrixRTCEncryptedRoom: in an encrypted room members encrypt their
// media end to end and send their keys Olm-encrypted to every member's
// device. The recorder joins as a member, and until alice's key comes the
// API lists her as encrypted without a key and writes nothing of hers; a
// recorder re-sends its membership while her key is missing; a
// key sent in plaintext (anyone could) is ignored; with the Olm key her
// frames are decrypted into a file that decodes; she rotates her key
// mid-call and the file goes on without a gap or an undecryptable frame.
func TestMatrixRTCEncryptedRoom(t *testing.T) {
	r := startRTC(t)
	s, obs := r.s, r.obs
	ctx := s.Ctx()
	aliceCrypto := newCryptoUser(t, s, "alice")
	alice := aliceCrypto.cli
	bot := s.App.AS.BotUserID()
	roomID := s.HS.CreateRoom(ctx, t, alice, homeserver.RoomOptions{Name: "E2EE call", Invite: []id.UserID{bot},
		CallPowerLevelsZero: true, Encrypted: true})
	require.Eventually(t, func() bool { return s.App.AS.IsInRoom(ctx, roomID, bot) }, stack.Deadline, 50*time.Millisecond)
	key0, key1, forged := randomBytes(t, 16), randomBytes(t, 16), randomBytes(t, 16)
	pa, err := lktest.Join(ctx, lktest.ParticipantOptions{Client: alice, RoomID: roomID, ServiceURL: r.auth.URL,
		MediaDir: stack.MediaDir(), Camera: true, MediaKey: key0})
	require.NoError(t, err)
	t.Cleanup(pa.Disconnect)

	status, body := r.api(t, http.MethodPost, "/api/v1/calls", fmt.Sprintf(`{"room_id":%q}`, roomID))
	require.Equal(t, http.StatusAccepted, status, string(body))
	st, err := s.App.RTC.Status(ctx, roomID)
	require.NoError(t, err)
	aliceInAPI := func() web.Participant {
		status, body := r.api(t, http.MethodGet, "/api/v1/calls", "")
		require.Equal(t, http.StatusOK, status, string(body))
		var list web.CallList
		require.NoError(t, json.Unmarshal(body, &list))
		for _, c := range list.Calls {
			for _, p := range c.Participants {
				if p.UserID == alice.UserID {
					return p
				}
			}
		}
		return web.Participant{}
	}
	require.Eventually(t, func() bool { p := aliceInAPI(); return p.Encrypted && p.KeysHeld == 0 && p.Note != "" },
		stack.Deadline, 50*time.Millisecond, "alice is listed as encrypted without a key")
	require.False(t, obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 1),
		"nothing of alice's is written before her key")
	// No key for a while (say the sender did not know the recorder's device
	// yet): the recorder re-sends its membership, as a new join, which
	// makes js-sdk send its key again.
	first := recorderMemberships(t, alice, roomID, st.UserID)
	require.Len(t, first, 1)
	require.Eventually(t, func() bool {
		again := recorderMemberships(t, alice, roomID, st.UserID)
		for key, evtID := range again {
			if first[key] != "" && first[key] != evtID {
				return true
			}
		}
		return false
	}, 20*time.Second, 200*time.Millisecond, "the recorder does not re-send its membership while a key is missing")

	// The key, as Element Call sends it: Olm-encrypted to the recorder's device.
	sendKey := func(index int, key []byte, olm bool) {
		t.Helper()
		content := map[string]any{
			"keys":    map[string]any{"index": index, "key": base64.StdEncoding.EncodeToString(key)},
			"member":  map[string]any{"claimed_device_id": alice.DeviceID, "id": "728dc7d3-c119-417b-8d3b-a44f4825349c"},
			"room_id": roomID, "sent_ts": time.Now().UnixMilli(),
			"session": map[string]any{"application": "m.call", "call_id": "", "scope": "m.room"},
		}
		if !olm {
			_, err := alice.SendToDevice(ctx, matrixrtc.KeysType, &mautrix.ReqSendToDevice{
				Messages: map[id.UserID]map[id.DeviceID]*event.Content{st.UserID: {st.DeviceID: {Raw: content}}}})
			require.NoError(t, err)
			return
		}
		mach := aliceCrypto.helper.Machine()
		dev, err := mach.GetOrFetchDevice(ctx, st.UserID, st.DeviceID)
		require.NoError(t, err)
		require.NoError(t, mach.SendEncryptedToDevice(ctx, dev, matrixrtc.KeysType, event.Content{Raw: content}))
	}
	sendKey(0, key0, true)
	require.Eventually(t, func() bool { p := aliceInAPI(); return p.KeysHeld == 1 && p.Note == "" },
		stack.Deadline, 50*time.Millisecond, "alice's key is held")
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 60) &&
			obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 60)
	}, stack.Deadline, 50*time.Millisecond, "alice's media is written once her key is there")

	// A plaintext "key" for a new index is ignored; the Olm key of her
	// rotation is taken (to-device events arrive in order: once the
	// rotation is held, the forgery was seen).
	sendKey(5, forged, false)
	sendKey(1, key1, true)
	require.Eventually(t, func() bool { return aliceInAPI().KeysHeld >= 2 }, stack.Deadline, 50*time.Millisecond)
	require.Equal(t, 2, aliceInAPI().KeysHeld, "the plaintext key was not accepted")
	require.NoError(t, pa.SetMediaKey(1, key1))
	waitMedia(t, obs, alice.UserID, 2*time.Second)

	stopAt := time.Now()
	status, body = r.api(t, http.MethodDelete, "/api/v1/calls/"+url.PathEscape(string(roomID)), "")
	require.Equal(t, http.StatusNoContent, status, string(body))
	require.Eventually(t, func() bool { return len(obs.Ended()) == 1 }, stack.Deadline, 50*time.Millisecond)
	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	// One WebM; or, when the held start's video had no key frame left
	// (the key came after the hold's bound), an Ogg of the held audio
	// first and the WebM from the first key frame on.
	require.NotEmpty(t, files)
	require.LessOrEqual(t, len(files), 2)
	want := stopAt.Sub(streamStart(obs, alice.UserID, pa.SID(), signaling.PurposeUserMedia)).Seconds()
	total, frames := 0.0, 0
	for _, f := range files {
		path := storedPath(s, rec, f.Name)
		got := mediacheck.Duration(t, path)
		mediacheck.Check(t, path, got, 0.01)
		pcm := mediacheck.DecodeAudio(t, path)
		decoded := float64(len(pcm)) / mediacheck.AudioRate
		t.Logf("%s: %.2f s, %.2f s of audio", f.Name, got, decoded)
		require.Greater(t, mediacheck.Peak(pcm, 0, decoded), 1000, "decrypted audio is audible")
		if f.Kind == "webm" {
			frames += mediacheck.VideoFrames(t, path)
			require.Equal(t, files[len(files)-1].Name, f.Name, "the WebM is the last file")
		}
		total += got
	}
	t.Logf("%d video frames in %.2f s of files (%.2f s recorded)", frames, total, want)
	// From the first packet written on, plus what was held before her key
	// came (up to 5 s, written with its arrival times).
	require.GreaterOrEqual(t, total, want-1.5, "alice's files last as long as she was recorded")
	require.LessOrEqual(t, total, want+5+1.5, "alice's files last as long as she was recorded, with the held start")
	require.Greater(t, float64(frames), (want-5)*15, "decrypted video has its frames")
	require.Zero(t, promtest.ToFloat64(s.App.Metrics.FramesUndecryptable), "every frame decrypted, across the rotation")
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// TestMatrixRTCReconnectAndAPI: started through the API (which says the
// kind of call) with LiveKit tokens that expire after 3 s, the recorder
// keeps its SFU connection past the expiry; thrown out of the SFU, it
// comes back with a fresh token; the recording goes on and ends finished
// with good files.
func TestMatrixRTCReconnectAndAPI(t *testing.T) {
	r := startRTC(t)
	s, obs := r.s, r.obs
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	roomID := s.CallRoom(t, alice)
	r.join(t, alice, roomID, true)
	// The recorder's LiveKit token expires during the call: the SFU
	// connection outlives it, and the reconnect gets a fresh one.
	const ttl = 3 * time.Second
	r.auth.SetTokenTTL(ttl)

	granted := time.Now()
	status, body := r.api(t, http.MethodPost, "/api/v1/calls", fmt.Sprintf(`{"room_id":%q}`, roomID))
	require.Equal(t, http.StatusAccepted, status, string(body))
	status, body = r.api(t, http.MethodGet, "/api/v1/calls", "")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, string(body), `"kind":"matrixrtc"`)
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 30)
	}, stack.Deadline, 50*time.Millisecond)

	// Past the token's expiry (and the JWT's one-second leeway), media
	// still arrives on the connection it opened.
	waitMedia(t, obs, alice.UserID, time.Until(granted.Add(ttl+2*time.Second)))
	require.True(t, time.Now().After(granted.Add(ttl+time.Second)), "the recorder's token has expired")

	st, err := s.App.RTC.Status(ctx, roomID)
	require.NoError(t, err)
	rooms := lksdk.NewRoomServiceClient(r.lk.HTTPURL, lktest.APIKey, lktest.APISecret)
	_, err = rooms.RemoveParticipant(ctx, &lkp.RoomParticipantIdentity{Room: lktest.RoomName(roomID),
		Identity: string(st.UserID) + ":" + string(st.DeviceID)})
	require.NoError(t, err)
	before := len(obs.Tracks(alice.UserID))
	require.Eventually(t, func() bool {
		tracks := obs.Tracks(alice.UserID)
		return len(tracks) >= before+2 && tracks[len(tracks)-1].Packets > 30
	}, stack.Deadline, 50*time.Millisecond, "the recorder did not come back after being removed from the SFU")
	require.GreaterOrEqual(t, len(r.auth.Grants()), 3, "a fresh token for the reconnect")

	status, body = r.api(t, http.MethodDelete, "/api/v1/calls/"+url.PathEscape(string(roomID)), "")
	require.Equal(t, http.StatusNoContent, status, string(body))
	require.Eventually(t, func() bool { return len(obs.Ended()) == 1 }, stack.Deadline, 50*time.Millisecond)
	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	require.Len(t, files, 2, "one file before and one after the reconnect")
	for _, f := range files {
		path := storedPath(s, rec, f.Name)
		t.Logf("%s: %.2fs %v", f.Name, mediacheck.Duration(t, path), f.Codecs)
		mediacheck.Check(t, path, f.Duration.Seconds(), 0.5)
	}
}

// TestMatrixRTCTwoSFUs: members publish on different SFUs (multi_sfu, each
// member's own focus): the recorder connects to each, also to one a member
// names after the recorder joined, and records everyone.
func TestMatrixRTCTwoSFUs(t *testing.T) {
	r := startRTC(t)
	s, obs := r.s, r.obs
	ctx := s.Ctx()
	lk2 := lktest.Start(t)
	auth2 := lktest.StartAuthService(t, lk2, map[string]string{homeserver.Domain: s.HS.URL})
	alice := s.HS.RegisterUser(ctx, t, "alice")
	bob := s.HS.RegisterUser(ctx, t, "bob")
	roomID := s.CallRoom(t, alice, bob.UserID)
	r.join(t, alice, roomID, true)

	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining the call")
	_, err := bob.JoinRoomByID(ctx, roomID)
	require.NoError(t, err)
	pb, err := lktest.Join(ctx, lktest.ParticipantOptions{Client: bob, RoomID: roomID, ServiceURL: auth2.URL,
		MediaDir: stack.MediaDir(), Camera: true})
	require.NoError(t, err)
	t.Cleanup(pb.Disconnect)
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 60) &&
			obs.HasMedia(bob.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 60)
	}, stack.Deadline, 50*time.Millisecond, "not recording both SFUs")
	st, err := s.App.RTC.Status(ctx, roomID)
	require.NoError(t, err)
	identity := string(st.UserID) + ":" + string(st.DeviceID)
	var onSecond bool
	for _, g := range auth2.Grants() {
		onSecond = onSecond || g.Identity == identity
	}
	require.True(t, onSecond, "the recorder got a token from the second focus")
	require.Len(t, st.Peers, 2)

	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec stop")), "Left the call")
	require.Eventually(t, func() bool { return len(obs.Ended()) == 1 }, stack.Deadline, 50*time.Millisecond)
	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	users := map[id.UserID]bool{}
	for _, f := range files {
		users[f.UserID] = true
		mediacheck.Check(t, storedPath(s, rec, f.Name), mediacheck.Duration(t, storedPath(s, rec, f.Name)), 0.01)
	}
	require.True(t, users[alice.UserID] && users[bob.UserID], "files of both: %v", users)
}

// TestMatrixRTCMembershipRenewed: the recorder re-sends its membership
// before it expires (with created_ts of its first join, as js-sdk does), so
// other clients keep seeing it as a participant; when the last member's
// client crashes (membership left behind, gone from the SFU), it stops
// recording and leaves too.
func TestMatrixRTCMembershipRenewed(t *testing.T) {
	r := startRTC(t, stack.Options{MembershipExpiry: 4 * time.Second})
	s := r.s
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	roomID := s.CallRoom(t, alice)
	r.join(t, alice, roomID, false)
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec start")), "Joining the call")
	st, err := s.App.RTC.Status(ctx, roomID)
	require.NoError(t, err)
	first := recorderMembership(t, alice, roomID, st.UserID)
	require.NotNil(t, first)
	require.EqualValues(t, 4000, first["expires"])
	require.NotContains(t, first, "created_ts", "no created_ts on the first join")
	var renewed map[string]any
	require.Eventually(t, func() bool {
		renewed = recorderMembership(t, alice, roomID, st.UserID)
		return renewed != nil && renewed["created_ts"] != nil
	}, 6*time.Second, 100*time.Millisecond, "membership not renewed before it expired")
	created := time.UnixMilli(int64(renewed["created_ts"].(float64)))
	require.WithinDuration(t, time.Now(), created, 5*time.Second)
	// Each renewal extends expires from the first join: the membership
	// lives on (created_ts + expires moves forward).
	require.Eventually(t, func() bool {
		again := recorderMembership(t, alice, roomID, st.UserID)
		return again != nil && again["expires"].(float64) >= renewed["expires"].(float64)+2000 &&
			again["created_ts"] == renewed["created_ts"]
	}, 8*time.Second, 100*time.Millisecond, "a later renewal does not extend the membership")

	// alice's client crashes: her membership stays (no delayed events on
	// Dendrite) but she is gone from the SFU; nobody is left, so the
	// recorder stops and leaves too.
	r.participant(alice).Disconnect()
	require.Eventually(t, func() bool { return len(r.obs.Ended()) == 1 }, 30*time.Second, 100*time.Millisecond,
		"the recorder did not leave the empty call")
	s.WaitNotice(t, alice, roomID, "Everyone left the call")
	require.Nil(t, recorderMembership(t, alice, roomID, st.UserID))
	require.Equal(t, storage.StateFinished, onlyRecording(t, s, roomID).State)
}

// TestMatrixRTCAutoRecord: with auto-record on, a MatrixRTC session that
// starts in the room is recorded without a command, like a mesh call.
func TestMatrixRTCAutoRecord(t *testing.T) {
	r := startRTC(t, stack.Options{StopCheckInterval: 100 * time.Millisecond, Configure: func(c *config.Config) {
		c.Recording.EmptyTimeout = time.Second
	}})
	s, obs := r.s, r.obs
	ctx := s.Ctx()
	alice := s.HS.RegisterUser(ctx, t, "alice")
	roomID := s.CallRoom(t, alice)
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec auto on")), "every call that starts")
	r.join(t, alice, roomID, true)
	require.Eventually(t, func() bool {
		return obs.HasMedia(alice.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 30)
	}, stack.Deadline, 50*time.Millisecond, "the MatrixRTC call was not recorded automatically")
	require.Contains(t, s.WaitReply(t, alice, roomID, s.Command(t, alice, roomID, "!rec status")), "MatrixRTC")
	// With a participant on the SFU the recorder is not alone: it records
	// on past the empty timeout.
	waitMedia(t, obs, alice.UserID, 3*time.Second)
	require.Empty(t, obs.Ended(), "stopped although a participant is in the call")
}
