package callbot

import (
	"time"

	"github.com/pion/webrtc/v4"
	"maunium.net/go/mautrix/event"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/e2ee"
)

// Messages posted into a call's loop: one type per thing that happened, as
// matrix-org/waterfall's pkg/peer/messages.go does. Room events, to-device
// events and pion callbacks only post these; the loop acts on them.
type (
	// stateMsg is a room state event of the call's room.
	stateMsg struct{ evt *event.Event }
	// signalMsg is a to-device call event for the call's virtual user.
	signalMsg struct {
		rcv e2ee.Received
		at  time.Time
	}
	// leaveMsg asks the call to end.
	leaveMsg struct{ reason StopReason }
	// statusMsg asks for a snapshot.
	statusMsg struct{ reply chan CallStatus }

	// localCandidateMsg: pion gathered a local ICE candidate.
	localCandidateMsg struct {
		p    *peer
		cand signaling.Candidate
	}
	// gatheringDoneMsg: pion finished gathering local candidates.
	gatheringDoneMsg struct{ p *peer }
	// connStateMsg: the peer connection changed state.
	connStateMsg struct {
		p     *peer
		state webrtc.PeerConnectionState
	}
	// trackMsg: a remote track arrived.
	trackMsg struct {
		p     *peer
		track trackArrival
	}
)
