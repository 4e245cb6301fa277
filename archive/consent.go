package archive

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/recording"
)

// Consent says whose streams may be written (recording.require_consent).
// Without one (Options.Consent nil) everyone's are.
type Consent interface {
	Consented(ctx context.Context, roomID id.RoomID, userID id.UserID) bool
}

// excludedTrack stands in for the writer of a participant who has not
// consented: it drops the packets until Consented is called for them, then
// opens the stream's writer (asking for a key frame) and feeds it from then
// on. It runs on the track's reader goroutine like any TrackSink.
type excludedTrack struct {
	r       *Recorder
	track   *callbot.RemoteTrack
	log     zerolog.Logger
	allowed atomic.Bool
	sink    callbot.TrackSink
	closed  bool
}

// exclude registers t as excluded and returns its stand-in sink.
func (c *callRec) exclude(t *callbot.RemoteTrack, log zerolog.Logger) *excludedTrack {
	et := &excludedTrack{r: c.r, track: t, log: log}
	c.lock.Lock()
	defer c.lock.Unlock()
	if c.excluded == nil {
		c.excluded = map[id.UserID][]*excludedTrack{}
	}
	if _, seen := c.excluded[t.Peer.UserID]; !seen {
		c.manifest.Excluded = append(c.manifest.Excluded, manifestExcluded(t.Peer.UserID, t.Started))
	}
	c.excluded[t.Peer.UserID] = append(c.excluded[t.Peer.UserID], et)
	return et
}

// Consented starts writing userID's streams in roomID's recording from now
// on (they were excluded for lack of consent).
func (r *Recorder) Consented(ctx context.Context, roomID id.RoomID, userID id.UserID) {
	c := r.call(roomID)
	if c == nil {
		return
	}
	c.lock.Lock()
	defer c.lock.Unlock()
	tracks, ok := c.excluded[userID]
	if !ok {
		return
	}
	delete(c.excluded, userID)
	now := time.Now()
	for i := range c.manifest.Excluded {
		if c.manifest.Excluded[i].UserID == string(userID) && c.manifest.Excluded[i].Until.IsZero() {
			c.manifest.Excluded[i].Until = now
		}
	}
	for _, et := range tracks {
		et.allowed.Store(true)
	}
	zerolog.Ctx(ctx).Info().Stringer("user_id", userID).Int("tracks", len(tracks)).Msg("Participant consented, recording their streams")
}

func (et *excludedTrack) WriteRTP(pkt *rtp.Packet, arrival time.Time) error {
	if !et.allowed.Load() || et.closed {
		return nil
	}
	if et.sink == nil {
		et.sink = et.r.TrackStarted(et.log.WithContext(context.Background()), et.track)
		if et.sink == nil {
			et.closed = true // the recording ended or the writer failed
			return nil
		}
		if et.track.RequestKeyframe != nil {
			et.track.RequestKeyframe()
		}
	}
	return et.sink.WriteRTP(pkt, arrival)
}

func (et *excludedTrack) SenderReport(ntpTime uint64, rtpTime uint32, arrival time.Time) {
	if et.sink != nil {
		et.sink.SenderReport(ntpTime, rtpTime, arrival)
	}
}

func (et *excludedTrack) Close() {
	et.closed = true
	if et.sink != nil {
		et.sink.Close()
	}
}

func manifestExcluded(userID id.UserID, from time.Time) recording.ManifestExcluded {
	return recording.ManifestExcluded{UserID: string(userID), From: from}
}
