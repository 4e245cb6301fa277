//go:build integration

package app_test

import (
	"math"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/testutil/mediacheck"
	"github.com/matrix-recorder/recorder/internal/testutil/observer"
	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
	"github.com/matrix-recorder/recorder/internal/testutil/stack"
	"github.com/matrix-recorder/recorder/storage"
)

// Bounds the lossy-network recording is held to.
const (
	// lossyAVSync: every flash in the camera file is this close to its
	// beep, after taking off the offset the sender put between them.
	lossyAVSync = 40 * time.Millisecond
	// lossyWallSlack: a file lasts as long as its participant was
	// recorded (first packet to the stop), within this.
	lossyWallSlack = 250 * time.Millisecond
)

// gauge reads an unlabelled counter or gauge from the recorder's metrics.
func gauge(t *testing.T, s *stack.Stack, name string) float64 {
	t.Helper()
	mfs, err := s.App.Metrics.Registry.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
		}
	}
	return 0
}

// TestLossyNetworkRecording: two participants, one with camera and
// microphone, one with microphone only, send over a bad network: RTP
// packets lost (video repaired by NACK where it can be, audio not), one
// packet late, sent twice, and every packet delayed by a random jitter so
// that packets overtake each other. The files a user gets are judged:
// they decode cleanly, audio is continuous, each file lasts as long as its
// participant was recorded, the camera's flashes stay within lossyAVSync of
// their beeps, no packet is written twice (times strictly increase, no more
// frames than were sent), at least 90 % of the camera frames sent are in
// the file, and key frame requests stay few.
func TestLossyNetworkRecording(t *testing.T) {
	for _, tc := range []struct {
		name string
		net  simpeer.Browser
	}{
		// names end up in paths (Dendrite's database URIs): no '%'
		{"loss3_reorder3_dup3_jitter30ms", simpeer.Browser{Loss: 0.03, Reorder: 0.03, Duplicate: 0.03, Jitter: 30 * time.Millisecond}},
		{"loss5_reorder1_dup1_jitter100ms", simpeer.Browser{Loss: 0.05, Reorder: 0.01, Duplicate: 0.01, Jitter: 100 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) { testLossyNetwork(t, tc.net) })
	}
}

func testLossyNetwork(t *testing.T, net simpeer.Browser) {
	obs := observer.New()
	s := stack.Start(t, stack.Options{Observer: obs})
	ctx := s.Ctx()
	bob := s.HS.RegisterUserDevice(ctx, t, "bob", "BOBDEV")
	carol := s.HS.RegisterUserDevice(ctx, t, "carol", "CAROLDEV")
	roomID := s.CallRoom(t, bob, carol.UserID)
	seed := time.Now().UnixNano()
	t.Logf("network seed %d", seed)
	lossy := func(seed int64) func(*simpeer.Config) {
		return func(c *simpeer.Config) {
			c.Browser = net
			c.Browser.Seed = seed
		}
	}
	pb := s.Sim(t, roomID, bob, stack.SimOptions{Video: true, CreateCall: true, Tweak: lossy(seed)})
	pc := s.Sim(t, roomID, carol, stack.SimOptions{Tweak: lossy(seed + 1)})

	require.Contains(t, s.WaitReply(t, bob, roomID, s.Command(t, bob, roomID, "!rec start")), "Joining")
	waitConnected(t, s, roomID, pb, pc)
	require.Eventually(t, func() bool {
		return obs.HasMedia(bob.UserID, webrtc.RTPCodecTypeVideo, signaling.PurposeUserMedia, 10) &&
			obs.HasMedia(carol.UserID, webrtc.RTPCodecTypeAudio, signaling.PurposeUserMedia, 10)
	}, stack.Deadline, 50*time.Millisecond)
	waitMedia(t, obs, bob.UserID, 2*time.Second)
	before := pb.Snapshot()
	waitMedia(t, obs, bob.UserID, 7*time.Second)
	snap := pb.Snapshot()
	stopAt := time.Now()
	require.Contains(t, s.WaitReply(t, bob, roomID, s.Command(t, bob, roomID, "!rec stop")), "Left the call")
	stoppedBy := time.Now()
	require.Eventually(t, func() bool { return len(obs.Ended()) == 1 }, stack.Deadline, 50*time.Millisecond)

	wire := snap.Wire
	t.Logf("bob's wire: %d packets, %d dropped, %d late, %d duplicated, %d delayed; carol's: %+v",
		wire.Packets, wire.Dropped, wire.Reordered, wire.Duplicated, wire.Delayed, pc.Snapshot().Wire)
	require.NotZero(t, wire.Dropped, "the network must lose packets")
	require.NotZero(t, wire.Duplicated, "the network must duplicate packets")
	require.NotZero(t, wire.Reordered, "the network must reorder packets")

	rec := onlyRecording(t, s, roomID)
	require.Equal(t, storage.StateFinished, rec.State, rec.Error)
	files, err := s.App.DB.File.GetAll(ctx, rec.ID)
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, f := range files {
		path := storedPath(s, rec, f.Name)
		dur := mediacheck.Duration(t, path)
		t.Logf("file %s: %s %v, %v (ffprobe %.3f s), started %s", f.Name, f.Kind, f.Codecs, f.Duration, dur, f.StartedAt.Format("15:04:05.000"))
		mediacheck.Check(t, path, f.Duration.Seconds(), 0.1)

		// As long as the participant was recorded: from its first packet
		// to the stop.
		first := obs.FirstPacket(f.UserID)
		end := f.StartedAt.Add(f.Duration)
		t.Logf("%s: starts %v after the first packet, ends %v after the stop command (reply after %v)", f.Name,
			f.StartedAt.Sub(first), end.Sub(stopAt), stoppedBy.Sub(stopAt))
		require.WithinDuration(t, first, f.StartedAt, lossyWallSlack, "%s starts when its media came", f.Name)
		require.True(t, end.After(stopAt.Add(-lossyWallSlack)) && end.Before(stoppedBy.Add(lossyWallSlack)),
			"%s ends at %s, the recording stopped between %s and %s", f.Name, end.Format("15:04:05.000"),
			stopAt.Format("15:04:05.000"), stoppedBy.Format("15:04:05.000"))

		// Continuous audio: lost packets are filled, duplicates dropped;
		// ffmpeg decodes as much as the file says it lasts (ffprobe's
		// container duration of an Ogg counts the 80 ms pre-skip too).
		pcm := mediacheck.DecodeAudio(t, path)
		decoded := float64(len(pcm)) / mediacheck.AudioRate
		t.Logf("%s: %.3f s of audio decoded", f.Name, decoded)
		require.InDelta(t, f.Duration.Seconds(), decoded, 0.1, "%s: audio must be continuous over the file", f.Name)
		audio := mediacheck.PacketTimes(t, path, "a:0")
		mediacheck.RequireStrictlyIncreasing(t, audio, f.Name+" audio")

		switch f.UserID {
		case carol.UserID:
			require.Equal(t, "ogg", f.Kind)
			seen["carol"] = true
		case bob.UserID:
			require.Equal(t, "webm", f.Kind)
			seen["bob"] = true
			video := mediacheck.PacketTimes(t, path, "v:0")
			mediacheck.RequireStrictlyIncreasing(t, video, f.Name+" video")
			frames := mediacheck.VideoFrames(t, path)
			sent := snap.FramesSent["video"] - before.FramesSent["video"]
			plis := snap.KeyframeRequests["video"]
			t.Logf("camera: %d frames sent in all, %d in the window counted, %d in the file; %d key frame requests",
				snap.FramesSent["video"], sent, frames, plis)
			require.LessOrEqual(t, uint64(frames), snap.FramesSent["video"], "more frames in the file than were sent")
			require.GreaterOrEqual(t, float64(frames), 0.9*float64(sent), "frames written")
			require.LessOrEqual(t, plis, uint64(f.Duration/time.Second)+3, "no storm of key frame requests")

			offset := snap.MediaStart["video"].Sub(snap.MediaStart["audio"]).Seconds()
			beeps, flashes := mediacheck.BeepOnsets(t, path), mediacheck.FlashOnsets(t, path)
			t.Logf("sender offset (flash - beep) %.1f ms; beeps %v; flashes %v", offset*1000, beeps, flashes)
			require.GreaterOrEqual(t, len(flashes), 6, "flashes %v", flashes)
			worst := 0.0
			for _, fl := range flashes {
				b := mediacheck.Nearest(beeps, fl-offset)
				skew := fl - b - offset
				worst = max(worst, math.Abs(skew))
				require.InDelta(t, 0, skew, lossyAVSync.Seconds(), "flash at %.3f s, nearest beep at %.3f s", fl, b)
			}
			t.Logf("A/V: worst skew %.1f ms over %d flashes", worst*1000, len(flashes))
		}
	}
	require.True(t, seen["bob"] && seen["carol"], "files of both participants: %v", seen)
	t.Logf("recorder: %.0f packets lost (given up by the jitter buffers)", gauge(t, s, "recorder_packets_lost_total"))
}
