package jsclient

import (
	"encoding/json"

	"maunium.net/go/mautrix/id"
)

// Group call states as matrix-js-sdk names them (GroupCallState).
const (
	GroupCallLocalFeedUninitialized = "local_call_feed_uninitialized"
	GroupCallInitializingLocalFeed  = "initializing_local_call_feed"
	GroupCallLocalFeedInitialized   = "local_call_feed_initialized"
	GroupCallEntered                = "entered"
	GroupCallEnded                  = "ended"
)

// Group call types (GroupCallType).
const (
	GroupCallVideo = "m.video"
	GroupCallVoice = "m.voice"
)

// Peer call states as matrix-js-sdk names them (CallState), and the
// RTCPeerConnection connection state that means media can flow.
const (
	CallRinging    = "ringing"
	CallConnecting = "connecting"
	CallConnected  = "connected"
	CallEnded      = "ended"

	PeerConnectionConnected = "connected"
)

// Feed purposes (SDPStreamMetadataPurpose).
const (
	PurposeUserMedia   = "m.usermedia"
	PurposeScreenshare = "m.screenshare"
)

// State is a snapshot of what the js-sdk client sees, taken in the page.
type State struct {
	Started    bool   `json:"started"`
	StartError string `json:"startError"`
	// SyncState is the js-sdk sync state (PREPARED, SYNCING, ERROR, ...).
	SyncState string      `json:"syncState"`
	UserID    id.UserID   `json:"userId"`
	DeviceID  id.DeviceID `json:"deviceId"`
	// SessionID is the client's session_id, as published in its member event.
	SessionID string `json:"sessionId"`

	GroupCallID    string `json:"groupCallId"`
	GroupCallState string `json:"groupCallState"`
	GroupCallType  string `json:"groupCallType"`
	// EnteredAfterMs is how long groupCall.enter() took (-1 before it returned).
	EnteredAfterMs int64 `json:"enteredAfterMs"`

	MicMuted      bool `json:"micMuted"`
	VideoMuted    bool `json:"videoMuted"`
	Screensharing bool `json:"screensharing"`

	// TurnServer is the outcome of js-sdk's GET /voip/turnServer ("unknown" until
	// it reports one).
	TurnServer string `json:"turnServer"`

	// Participants are the devices GroupCall.participants lists (own one included).
	Participants []Participant `json:"participants"`
	// Feeds are the group call's user-media and screen-share feeds, local and remote.
	Feeds []Feed `json:"feeds"`
	// Calls are the peer calls, one per remote device.
	Calls []PeerCall `json:"calls"`

	// DroppedRemoteCandidates counts trickled remote candidates the page dropped
	// because they were not loopback; DroppedRemoteSDPCandidates the same for
	// a=candidate lines in remote SDP.
	DroppedRemoteCandidates    int `json:"droppedRemoteCandidates"`
	DroppedRemoteSDPCandidates int `json:"droppedRemoteSdpCandidates"`

	// ToDeviceSent and ToDeviceReceived are the last to-device events (bounded),
	// without SDP and candidate payloads.
	ToDeviceSent     []ToDeviceEvent `json:"toDeviceSent"`
	ToDeviceReceived []ToDeviceEvent `json:"toDeviceReceived"`
}

// Participant is one device in the group call's participant map.
type Participant struct {
	UserID        id.UserID   `json:"userId"`
	DeviceID      id.DeviceID `json:"deviceId"`
	SessionID     string      `json:"sessionId"`
	Screensharing bool        `json:"screensharing"`
}

// Feed is one CallFeed (a MediaStream with a purpose and mute flags).
type Feed struct {
	UserID      id.UserID   `json:"userId"`
	DeviceID    id.DeviceID `json:"deviceId"`
	Purpose     string      `json:"purpose"`
	Local       bool        `json:"local"`
	AudioMuted  bool        `json:"audioMuted"`
	VideoMuted  bool        `json:"videoMuted"`
	StreamID    string      `json:"streamId"`
	AudioTracks int         `json:"audioTracks"`
	VideoTracks int         `json:"videoTracks"`
	// VideoTrackIDs are the MediaStreamTrack ids of the feed's video tracks.
	VideoTrackIDs []string `json:"videoTrackIds"`
}

// PeerCall is one MatrixCall of the group call and its RTCPeerConnection.
type PeerCall struct {
	// UserID and DeviceID are the remote device the call is with.
	UserID   id.UserID   `json:"userId"`
	DeviceID id.DeviceID `json:"deviceId"`
	CallID   string      `json:"callId"`
	// Direction is "outbound" (this client sent the invite) or "inbound".
	Direction         string `json:"direction"`
	State             string `json:"state"`
	HangupReason      string `json:"hangupReason"`
	OpponentSessionID string `json:"opponentSessionId"`

	ConnectionState    string `json:"connectionState"`
	ICEConnectionState string `json:"iceConnectionState"`
	SignalingState     string `json:"signalingState"`
	// ConnectedAfterMs is the time from the start of this client's enter() to
	// the call's first "connected" state (-1 if not yet).
	ConnectedAfterMs int64 `json:"connectedAfterMs"`

	RemoteFeeds []Feed `json:"remoteFeeds"`
	// Inbound and Outbound sum the inbound-rtp / outbound-rtp stats by kind
	// ("audio", "video").
	Inbound  map[string]RTPStats `json:"inbound"`
	Outbound map[string]RTPStats `json:"outbound"`
	// OutboundStreams are the outbound-rtp stats one by one.
	OutboundStreams []OutboundStream `json:"outboundStreams"`
	CandidatePair   *CandidatePair   `json:"candidatePair"`
}

// OutboundStream is one RTCOutboundRtpStreamStats of a peer connection.
type OutboundStream struct {
	Kind                 string `json:"kind"`
	SSRC                 uint32 `json:"ssrc"`
	Mid                  string `json:"mid"`
	TrackID              string `json:"trackId"`
	PacketsSent          int64  `json:"packetsSent"`
	BytesSent            int64  `json:"bytesSent"`
	RetransmittedPackets int64  `json:"retransmittedPackets"`
	FramesSent           int64  `json:"framesSent"`
	FramesEncoded        int64  `json:"framesEncoded"`
	KeyFramesEncoded     int64  `json:"keyFramesEncoded"`
	FrameWidth           int    `json:"frameWidth"`
	FrameHeight          int    `json:"frameHeight"`
	ResolutionChanges    int64  `json:"resolutionChanges"`
	NackCount            int64  `json:"nackCount"`
	PLICount             int64  `json:"pliCount"`
}

// RTPStats sums RTP stats of one kind.
type RTPStats struct {
	Packets       int64 `json:"packets"`
	Bytes         int64 `json:"bytes"`
	FramesDecoded int64 `json:"framesDecoded"`
	FramesSent    int64 `json:"framesSent"`
}

// CandidatePair is the selected ICE candidate pair ("ip:port" each).
type CandidatePair struct {
	State  string `json:"state"`
	Local  string `json:"local"`
	Remote string `json:"remote"`
}

// ToDeviceEvent summarises one m.call.* (or other) to-device event.
type ToDeviceEvent struct {
	Type string `json:"type"`
	// To/ToDevice are set on sent events, Sender on received ones.
	To       id.UserID   `json:"to,omitempty"`
	ToDevice id.DeviceID `json:"toDevice,omitempty"`
	Sender   id.UserID   `json:"sender,omitempty"`
	// AtMs is the page's Date.now() when it was sent or received.
	AtMs int64 `json:"at"`
	// Encrypted is set on received events that came Olm-encrypted (the
	// page's type is then the decrypted one, or m.room.encrypted if it
	// could not decrypt).
	Encrypted bool `json:"encrypted,omitempty"`

	CallID  string `json:"call_id,omitempty"`
	PartyID string `json:"party_id,omitempty"`
	// Version is kept raw: js-sdk sends the string "1", others a number.
	Version         json.RawMessage `json:"version,omitempty"`
	ConfID          string          `json:"conf_id,omitempty"`
	DeviceID        id.DeviceID     `json:"device_id,omitempty"`
	SenderSessionID string          `json:"sender_session_id,omitempty"`
	DestSessionID   string          `json:"dest_session_id,omitempty"`
	Seq             *int64          `json:"seq,omitempty"`
	Invitee         id.UserID       `json:"invitee,omitempty"`
	Lifetime        *int64          `json:"lifetime,omitempty"`
	Reason          string          `json:"reason,omitempty"`
	SelectedPartyID string          `json:"selected_party_id,omitempty"`
	// Keys are all top-level content keys, sorted.
	Keys []string `json:"keys"`
	// Candidates is the number of entries in a candidates array.
	Candidates int `json:"candidates,omitempty"`
}

// HasParticipant reports whether the group call lists the device as a participant.
func (s *State) HasParticipant(userID id.UserID, deviceID id.DeviceID) bool {
	for _, p := range s.Participants {
		if p.UserID == userID && p.DeviceID == deviceID {
			return true
		}
	}
	return false
}

// Call returns the peer call with the device, or nil.
func (s *State) Call(userID id.UserID, deviceID id.DeviceID) *PeerCall {
	for i := range s.Calls {
		if s.Calls[i].UserID == userID && s.Calls[i].DeviceID == deviceID {
			return &s.Calls[i]
		}
	}
	return nil
}

// RemoteFeed returns the remote feed of the device with the purpose, or nil.
func (s *State) RemoteFeed(userID id.UserID, deviceID id.DeviceID, purpose string) *Feed {
	for i := range s.Feeds {
		f := &s.Feeds[i]
		if !f.Local && f.UserID == userID && f.DeviceID == deviceID && f.Purpose == purpose {
			return f
		}
	}
	return nil
}

// Connected reports whether the peer connection is connected.
func (c *PeerCall) Connected() bool {
	return c != nil && c.ConnectionState == PeerConnectionConnected
}

// PacketsReceived returns the inbound RTP packets of kind ("audio" or "video").
func (c *PeerCall) PacketsReceived(kind string) int64 {
	if c == nil {
		return 0
	}
	return c.Inbound[kind].Packets
}

// PacketsSent returns the outbound RTP packets of kind ("audio" or "video").
func (c *PeerCall) PacketsSent(kind string) int64 {
	if c == nil {
		return 0
	}
	return c.Outbound[kind].Packets
}

// LocalFeed returns the local feed with the purpose, or nil.
func (s *State) LocalFeed(purpose string) *Feed {
	for i := range s.Feeds {
		if s.Feeds[i].Local && s.Feeds[i].Purpose == purpose {
			return &s.Feeds[i]
		}
	}
	return nil
}
