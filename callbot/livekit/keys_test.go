package livekit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/livekit/framecrypt"
	"github.com/matrix-recorder/recorder/callbot/matrixrtc"
	"github.com/matrix-recorder/recorder/internal/e2ee"
)

type keysMatrix struct{ Matrix }

func (keysMatrix) VirtualUserID(n int) id.UserID {
	return id.UserID(fmt.Sprintf("@recorder_rtc%d:example.org", n))
}

func keyEvent(room id.RoomID, device id.DeviceID, index int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"keys":{"index":%d,"key":"AZ76h5zF8IGPX9Bw4VFeiQ=="},"member":{"claimed_device_id":%q,"id":"x"},`+
		`"room_id":%q,"session":{"application":"m.call","call_id":"","scope":"m.room"}}`, index, device, room))
}

// Media keys are taken only Olm-encrypted, from the device they are for,
// for the room the receiving virtual user records (or is joining).
func TestAcceptKey(t *testing.T) {
	const room, other = id.RoomID("!call:example.org"), id.RoomID("!other:example.org")
	rec := id.UserID("@recorder_rtc1:example.org")
	m := &Manager{mx: keysMatrix{}, calls: map[id.RoomID]*Call{}, joining: map[id.RoomID]id.UserID{room: rec},
		keys: map[id.RoomID]map[deviceKey]*framecrypt.Keys{}}
	olm := func(sender id.UserID, dev id.DeviceID, content json.RawMessage) e2ee.Received {
		return e2ee.Received{Type: matrixrtc.KeysType, Content: content, Sender: sender, SenderDevice: dev, Encrypted: true}
	}
	alice := id.UserID("@alice:example.org")

	_, changed, _, err := m.acceptKey(rec, olm(alice, "ALICE", keyEvent(room, "ALICE", 0)))
	require.NoError(t, err)
	require.True(t, changed)
	_, changed, _, err = m.acceptKey(rec, olm(alice, "ALICE", keyEvent(room, "ALICE", 0)))
	require.NoError(t, err)
	require.False(t, changed, "the same key again changes nothing")
	keys, _ := m.keyring(room, deviceKey{alice, "ALICE"}, false)
	require.Equal(t, 1, keys.Count())

	for name, r := range map[string]e2ee.Received{
		"plaintext":           {Type: matrixrtc.KeysType, Content: keyEvent(room, "ALICE", 1), Sender: alice},
		"for another device":  olm(alice, "ALICE", keyEvent(room, "BOB", 1)),
		"for another room":    olm(alice, "ALICE", keyEvent(other, "ALICE", 1)),
		"to another recorder": olm(alice, "ALICE", keyEvent(room, "ALICE", 1)),
		"from a recorder":     olm("@recorder_rtc2:example.org", "REC2", keyEvent(room, "REC2", 1)),
		"malformed":           olm(alice, "ALICE", json.RawMessage(`{"keys":{}}`)),
	} {
		to := rec
		if name == "to another recorder" {
			to = "@recorder_rtc3:example.org"
		}
		_, _, _, err := m.acceptKey(to, r)
		require.Error(t, err, name)
		require.True(t, errors.Is(err, ErrKeyRejected) || errors.Is(err, matrixrtc.ErrBadKeys), "%s: %v", name, err)
	}
	require.Equal(t, 1, keys.Count(), "no rejected key was kept")

	// The handler takes keys from a batch of to-device events and ignores
	// other types.
	m.toDeviceHandler(rec)(context.Background(), []e2ee.Received{
		{Type: matrixrtc.KeysType, Content: keyEvent(room, "ALICE", 2), Sender: alice}, // plaintext
		olm(alice, "ALICE", keyEvent(room, "ALICE", 3)),
	})
	require.Equal(t, 2, keys.Count())
	m.dropKeys(room)
	keys, _ = m.keyring(room, deviceKey{alice, "ALICE"}, false)
	require.Nil(t, keys, "a room's keys go when its call ends")
}

type seqSink struct{ seqs []uint16 }

func (s *seqSink) WriteRTP(pkt *rtp.Packet, _ time.Time) error {
	s.seqs = append(s.seqs, pkt.SequenceNumber)
	return nil
}
func (s *seqSink) SenderReport(uint64, uint32, time.Time) {}
func (s *seqSink) Close()                                 {}

// An encrypted track's packets from before its key are held, bounded (the
// oldest go), and written in order when the key comes.
func TestHeldPackets(t *testing.T) {
	var h heldPackets
	t0 := time.Now()
	for i := range maxHeldPackets + 100 {
		raw, err := (&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: uint16(i)}, Payload: []byte{1, 2, 3}}).Marshal()
		require.NoError(t, err)
		h.add(raw, t0.Add(time.Duration(i)*time.Millisecond))
	}
	require.Len(t, h.pkts, maxHeldPackets)
	sink := &seqSink{}
	var pkt rtp.Packet
	require.NoError(t, h.flush(sink, &pkt, func(any) {}))
	require.Len(t, sink.seqs, maxHeldPackets)
	require.Equal(t, uint16(100), sink.seqs[0], "the oldest were dropped")
	for i := 1; i < len(sink.seqs); i++ {
		require.Equal(t, sink.seqs[i-1]+1, sink.seqs[i])
	}
	require.Empty(t, h.pkts)
	// Old packets go by age too.
	h.add([]byte{0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}, t0)
	h.add([]byte{0x80, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0}, t0.Add(maxHeldAge+time.Second))
	require.Len(t, h.pkts, 1)
}

func TestNewerIndex(t *testing.T) {
	keys := framecrypt.NewKeys()
	_, err := keys.Set(5, make([]byte, 16))
	require.NoError(t, err)
	require.True(t, newerIndex(keys, 6), "the next rotation")
	require.True(t, newerIndex(keys, 7))
	require.False(t, newerIndex(keys, 4), "a key from before the recorder's")
	require.False(t, newerIndex(keys, 5))
	_, err = keys.Set(255, make([]byte, 16))
	require.NoError(t, err)
	require.True(t, newerIndex(keys, 0), "rotation wraps at 256")
	require.False(t, newerIndex(keys, 200))
}
