package callbot

import (
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"

	"github.com/matrix-recorder/recorder/callbot/signaling"
)

// PeerState is where one peer call is in its lifecycle.
type PeerState string

// Peer call states (js-sdk's CallState, reduced to what the bot needs).
const (
	PeerInviteSent PeerState = "invite_sent" // we placed the call, no answer yet
	PeerConnecting PeerState = "connecting"  // descriptions exchanged, ICE running
	PeerConnected  PeerState = "connected"
	PeerEnded      PeerState = "ended"
)

// peer is one peer call with one remote device. Only the call loop touches it.
type peer struct {
	info      PeerInfo
	key       signaling.DeviceKey
	outgoing  bool
	state     PeerState
	partyID   signaling.PartyID // the opponent's, once known
	pc        *webrtc.PeerConnection
	createdAt time.Time
	// inviteExpires is when an unanswered outgoing invite times out.
	inviteExpires time.Time
	// inviteOlm is how the bot's invite went (outgoing calls); heard is
	// set once the device signals anything after it. An invite that times
	// out unheard makes the next attempt use the other kind.
	inviteOlm   bool
	heard       bool
	connectedAt time.Time

	localCands  signaling.CandidateQueue
	candFlushAt time.Time // zero: nothing scheduled
	// remoteCands wait for the remote description.
	remoteCands   []webrtc.ICECandidateInit
	remoteDescSet bool
	remoteMeta    signaling.StreamMetadata

	tracks map[string]*RemoteTrack // by track id
	// pcState is the last connection state, for the metrics; Unknown once
	// the connection is closed.
	pcState webrtc.PeerConnectionState
}

func (p *peer) requestKeyframe(ssrc webrtc.SSRC, counted func()) func() {
	pc := p.pc
	return func() {
		if pc.ConnectionState() == webrtc.PeerConnectionStateClosed {
			return
		}
		counted()
		_ = pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(ssrc)}})
	}
}

// purposeOf is the announced purpose of a stream; m.usermedia until told.
func (p *peer) purposeOf(streamID string) signaling.Purpose {
	if info, ok := p.remoteMeta[streamID]; ok && info.Purpose.Known() {
		return info.Purpose
	}
	return signaling.PurposeUserMedia
}

// PeerStatus is a snapshot of one peer call for status reports.
type PeerStatus struct {
	PeerInfo
	State       PeerState `json:"state"`
	Outgoing    bool      `json:"outgoing"`
	ConnectedAt time.Time `json:"connected_at,omitzero"`
	Tracks      []string  `json:"tracks"` // "purpose/kind/codec"
	// Encrypted: the participant's media is end-to-end encrypted (MatrixRTC
	// in an encrypted room); KeysHeld is how many of its media keys the
	// recorder holds.
	Encrypted bool `json:"encrypted,omitempty"`
	KeysHeld  int  `json:"keys_held,omitempty"`
	// Note says why a participant is not (yet) recorded, if it is not.
	Note string `json:"note,omitempty"`
}

func (p *peer) status() PeerStatus {
	st := PeerStatus{PeerInfo: p.info, State: p.state, Outgoing: p.outgoing, ConnectedAt: p.connectedAt}
	for _, t := range p.tracks {
		st.Tracks = append(st.Tracks, string(t.Purpose)+"/"+t.Kind.String()+"/"+t.Codec.MimeType)
	}
	return st
}
