package callbot

import (
	"context"
	"encoding/json"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
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

// sendLoop sends a call's to-device messages, off the call loop: in order
// for each device, and everything queued before a flush marker before the
// marker is closed. What queued up while a request was in flight goes out
// in as few sendToDevice requests as that allows (batches): the answers and
// candidates of a call's peers, interleaved as the call loop made them, are
// one request each, not one per device, which counts when many peers join
// at once and the homeserver is the slow part.
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
			n := 0
			for n < len(items) && items[n].flushed == nil {
				n++
			}
			for _, b := range batches(items[:n]) {
				sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				if err := dev.SendToDevice(sendCtx, b.evtType, b.msgs, b.olm); err != nil {
					log.Err(err).Str("event_type", b.evtType.Type).Int("messages", b.n).Msg("Failed to send to-device messages")
				}
				cancel()
			}
			if n < len(items) {
				close(items[n].flushed)
				n++
			}
			items = items[n:]
		}
	}
}

// batch is one sendToDevice request.
type batch struct {
	evtType event.Type
	olm     bool
	msgs    map[id.UserID]map[id.DeviceID]json.RawMessage
	n       int
}

// batches groups messages into requests, sent in the order returned: a
// message joins the first request of its type (and encryption) after the
// one holding its device's previous message, so each device gets its
// messages in the order they were queued.
func batches(items []outgoing) []*batch {
	var out []*batch
	last := map[signaling.DeviceKey]int{} // the request holding a device's latest message
	for _, it := range items {
		k := signaling.DeviceKey{UserID: it.user, DeviceID: it.device}
		j := 0
		if i, ok := last[k]; ok {
			j = i + 1
		}
		for ; j < len(out); j++ {
			if out[j].evtType == it.evtType && out[j].olm == it.olm {
				break
			}
		}
		if j == len(out) {
			out = append(out, &batch{evtType: it.evtType, olm: it.olm, msgs: map[id.UserID]map[id.DeviceID]json.RawMessage{}})
		}
		b := out[j]
		if b.msgs[it.user] == nil {
			b.msgs[it.user] = map[id.DeviceID]json.RawMessage{}
		}
		b.msgs[it.user][it.device] = it.content
		b.n++
		last[k] = j
	}
	return out
}
