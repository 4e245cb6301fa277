package app

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/appservice"
	"github.com/matrix-recorder/recorder/archive"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/mixdown"
	"github.com/matrix-recorder/recorder/storage"
	"github.com/matrix-recorder/recorder/web"
	"github.com/matrix-recorder/recorder/webhooks"
)

// outputs is what happens around a recording besides recording it: webhook
// events when it starts and ends, the mixdown when it has ended, and the
// mixdown.finished event after that. It is the archive's Events.
type outputs struct {
	db        *storage.DB
	hooks     *webhooks.Sender
	mix       *mixdown.Queue
	autoMix   bool
	publicURL string
}

var _ archive.Events = (*outputs)(nil)

func (o *outputs) publish(ctx context.Context, typ webhooks.EventType, discriminator string, rec *storage.Recording, mix *storage.Mixdown) {
	if !o.hooks.Enabled() {
		return
	}
	// The event outlives a request or a shutdown that ends the recording.
	ctx = context.WithoutCancel(ctx)
	log := zerolog.Ctx(ctx)
	files, err := o.db.File.GetAll(ctx, rec.ID)
	if err != nil {
		log.Err(err).Msg("Failed to load recording files for a webhook event")
	}
	eventID := string(rec.ID) + "." + string(typ) + discriminator
	ev := webhooks.NewEvent(typ, eventID, rec, files, mix, o.publicURL, time.Now())
	if err = o.hooks.Publish(ctx, ev); err != nil {
		log.Err(err).Str("event", string(typ)).Msg("Failed to queue webhook event")
	}
}

func (o *outputs) RecordingStarted(ctx context.Context, rec *storage.Recording) {
	o.publish(ctx, webhooks.RecordingStarted, "", rec, nil)
}

func (o *outputs) RecordingEnded(ctx context.Context, rec *storage.Recording) {
	typ := webhooks.RecordingFinished
	if rec.State == storage.StateFailed {
		typ = webhooks.RecordingFailed
	}
	o.publish(ctx, typ, "", rec, nil)
	if o.autoMix && rec.State != storage.StateFailed {
		if _, err := o.mix.Enqueue(context.WithoutCancel(ctx), rec.ID); err != nil {
			zerolog.Ctx(ctx).Err(err).Msg("Failed to queue mixdown")
		}
	}
}

// recovered ends, for webhooks and mixdowns, the recordings a crash
// interrupted and Recover has now repaired (their end never reached the
// archive's Events).
func (o *outputs) recovered(ctx context.Context, interrupted []*storage.Recording) {
	for _, old := range interrupted {
		rec, err := o.db.Recording.Get(ctx, old.ID)
		if err != nil {
			zerolog.Ctx(ctx).Err(err).Str("recording_id", string(old.ID)).Msg("Failed to load repaired recording")
			continue
		}
		if rec != nil && rec.State != storage.StateRecording {
			o.RecordingEnded(ctx, rec)
		}
	}
}

// mixdownDone is the queue's Done: mixdown.finished with the outcome.
func (o *outputs) mixdownDone(ctx context.Context, m *storage.Mixdown) {
	rec, err := o.db.Recording.Get(ctx, m.RecordingID)
	if err != nil || rec == nil {
		return // deleted meanwhile
	}
	o.publish(ctx, webhooks.MixdownFinished, "."+strconv.FormatInt(m.EndedAt.UnixMilli(), 10), rec, m)
}

func newOutputs(cfg *config.Config, db *storage.DB, store *storage.LocalStore, reg prometheus.Registerer, backoff func(int) time.Duration) (*outputs, error) {
	eps := make([]webhooks.Endpoint, 0, len(cfg.Webhooks))
	for _, wh := range cfg.Webhooks {
		eps = append(eps, webhooks.Endpoint{URL: wh.URL, Secret: wh.Secret})
	}
	o := &outputs{db: db, autoMix: cfg.Mixdown.Enabled, publicURL: cfg.API.PublicURL}
	var err error
	if o.hooks, err = webhooks.New(webhooks.Options{Outbox: db.Outbox, Endpoints: eps, Backoff: backoff, Registerer: reg}); err != nil {
		return nil, err
	}
	o.mix, err = mixdown.NewQueue(mixdown.Options{Store: mixStore{db}, Files: store, Concurrency: cfg.Mixdown.Concurrency,
		WorkDir: filepath.Join(cfg.Recordings.Path, ".mixdown"), Done: o.mixdownDone, Registerer: reg})
	if err != nil {
		return nil, err
	}
	return o, nil
}

// mixStore adapts the database to mixdown.Store.
type mixStore struct{ db *storage.DB }

func (ms mixStore) GetRecording(ctx context.Context, recID storage.RecordingID) (*storage.Recording, error) {
	return ms.db.Recording.Get(ctx, recID)
}

func (ms mixStore) Files(ctx context.Context, recID storage.RecordingID) ([]*storage.RecordingFile, error) {
	return ms.db.File.GetAll(ctx, recID)
}

func (ms mixStore) PutMixdown(ctx context.Context, m *storage.Mixdown) error {
	return ms.db.Mixdown.Put(ctx, m)
}

func (ms mixStore) SetProgress(ctx context.Context, recID storage.RecordingID, p float64) error {
	return ms.db.Mixdown.SetProgress(ctx, recID, p)
}

func (ms mixStore) UnfinishedMixdowns(ctx context.Context) ([]*storage.Mixdown, error) {
	return ms.db.Mixdown.Unfinished(ctx)
}

func (ms mixStore) ReplaceMixdownFiles(ctx context.Context, recID storage.RecordingID, files []*storage.RecordingFile) error {
	return ms.db.ReplaceMixdownFiles(ctx, recID, files)
}

// retentionStore adapts the database to retention.Store.
type retentionStore struct{ db *storage.DB }

func (rs retentionStore) StartedBefore(ctx context.Context, t time.Time, limit int) ([]*storage.Recording, error) {
	return rs.db.Recording.StartedBefore(ctx, t, limit)
}

func (rs retentionStore) DeleteRecording(ctx context.Context, recID storage.RecordingID) error {
	return rs.db.Recording.Delete(ctx, recID)
}

// profiles looks names up through the bot: the state store first, the
// homeserver when it has nothing (archive.Profiles).
type profiles struct {
	svc  *appservice.Service
	wait time.Duration
}

var _ archive.Profiles = profiles{}

func (p profiles) RoomName(ctx context.Context, roomID id.RoomID) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.wait)
	defer cancel()
	var content event.RoomNameEventContent
	if err := p.svc.Bot.StateEvent(ctx, roomID, event.StateRoomName, "", &content); err != nil {
		zerolog.Ctx(ctx).Debug().Err(err).Msg("No room name")
		return ""
	}
	return content.Name
}

func (p profiles) Member(ctx context.Context, roomID id.RoomID, userID id.UserID) (string, string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.wait)
	defer cancel()
	m := p.svc.Bot.Member(ctx, roomID, userID)
	if m == nil {
		return "", ""
	}
	return m.Displayname, string(m.AvatarURL)
}

// webMixdowns adapts the queue to web.Mixdowns.
type webMixdowns struct {
	db    *storage.DB
	queue *mixdown.Queue
}

func (wm webMixdowns) GetMixdown(ctx context.Context, recID storage.RecordingID) (*storage.Mixdown, error) {
	return wm.db.Mixdown.Get(ctx, recID)
}

func (wm webMixdowns) EnqueueMixdown(ctx context.Context, recID storage.RecordingID) (*storage.Mixdown, error) {
	m, err := wm.queue.Enqueue(ctx, recID)
	if errors.Is(err, mixdown.ErrQueueFull) {
		return m, fmt.Errorf("%w: %w", web.ErrMixdownQueueFull, err)
	}
	return m, err
}

// pageLink links a recording on the page under api.public_url (nil
// without one): the bot's stop notice carries it.
func pageLink(publicURL string) func(string) string {
	if publicURL == "" {
		return nil
	}
	return func(recID string) string {
		if recID == "" {
			return ""
		}
		return strings.TrimRight(publicURL, "/") + "/#rec=" + url.QueryEscape(recID)
	}
}
