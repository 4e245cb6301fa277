package livekit

import (
	"context"
	"sync"
	"sync/atomic"

	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// Subscriber is a bare LiveKit receiver: it joins a call's SFU room as a
// participant's device does (OpenID token, /sfu/get), subscribes to every
// track with server-sdk-go and reads and discards its packets. The load
// tool measures the recorder against it.
type Subscriber struct {
	room    *lksdk.Room
	packets atomic.Uint64
	wg      sync.WaitGroup
	lock    sync.Mutex
	senders map[string]bool // identities whose media arrived
}

// Subscribe joins the call's LiveKit room as cli's device and starts
// reading every track published in it.
func Subscribe(ctx context.Context, cli *mautrix.Client, roomID id.RoomID, serviceURL string) (*Subscriber, error) {
	s := &Subscriber{senders: map[string]bool{}}
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		identity := rp.Identity()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			buf := make([]byte, 1500)
			for first := true; ; first = false {
				if _, _, err := track.Read(buf); err != nil {
					return
				}
				s.packets.Add(1)
				if first {
					s.lock.Lock()
					s.senders[identity] = true
					s.lock.Unlock()
				}
			}
		}()
	}
	room, err := joinSFU(ctx, cli, roomID, serviceURL, cb, true)
	if err != nil {
		return nil, err
	}
	s.room = room
	return s, nil
}

// Packets is how many RTP packets arrived so far.
func (s *Subscriber) Packets() uint64 { return s.packets.Load() }

// Senders is how many participants' media arrived so far.
func (s *Subscriber) Senders() int {
	s.lock.Lock()
	defer s.lock.Unlock()
	return len(s.senders)
}

// Close leaves the room and waits for the track readers.
func (s *Subscriber) Close() {
	s.room.Disconnect()
	s.wg.Wait()
}
