package callbot

import (
	"context"
	"encoding/json"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/internal/mailbox"
)

// outgoing is one to-device message waiting to be sent.
type outgoing struct {
	evtType event.Type
	user    id.UserID
	device  id.DeviceID
	content json.RawMessage
	// olm: Olm-encrypt if the device's keys can be had; else plaintext.
	olm bool
	// flushed, when set, is closed once everything queued before it was sent.
	flushed chan struct{}
}

// toDeviceSender is what the sender needs of the device's crypto layer.
type toDeviceSender interface {
	SendToDevice(ctx context.Context, evtType event.Type, msgs map[id.UserID]map[id.DeviceID]json.RawMessage, encrypt bool) error
}

// sendLoop sends a call's to-device messages in order, off the call loop.
// Consecutive messages of one type to different devices go out in one
// sendToDevice request (hangups on leave, metadata changes).
func sendLoop(ctx context.Context, dev toDeviceSender, queue *mailbox.Box[outgoing]) {
	log := zerolog.Ctx(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-queue.Notify():
		}
		items := queue.Take()
		for len(items) > 0 {
			first := items[0]
			if first.flushed != nil {
				close(first.flushed)
				items = items[1:]
				continue
			}
			batch := map[id.UserID]map[id.DeviceID]json.RawMessage{first.user: {first.device: first.content}}
			n := 1
			for ; n < len(items); n++ {
				next := items[n]
				if next.flushed != nil || next.evtType != first.evtType || next.olm != first.olm || batch[next.user][next.device] != nil {
					break
				}
				if batch[next.user] == nil {
					batch[next.user] = map[id.DeviceID]json.RawMessage{}
				}
				batch[next.user][next.device] = next.content
			}
			items = items[n:]
			sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			if err := dev.SendToDevice(sendCtx, first.evtType, batch, first.olm); err != nil {
				log.Err(err).Str("event_type", first.evtType.Type).Int("messages", n).Msg("Failed to send to-device messages")
			}
			cancel()
		}
	}
}
