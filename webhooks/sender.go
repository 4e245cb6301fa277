package webhooks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/matrix-recorder/recorder/storage"
)

// Endpoint is one configured receiver.
type Endpoint struct {
	URL    string
	Secret string
}

// Outbox is what the sender needs from the database.
type Outbox interface {
	Add(ctx context.Context, items ...*storage.OutboxItem) error
	Due(ctx context.Context, now time.Time, limit int) ([]*storage.OutboxItem, error)
	NextAttempt(ctx context.Context) (time.Time, error)
	Delivered(ctx context.Context, itemID string, at time.Time) error
	Retry(ctx context.Context, itemID string, next time.Time, reason string) error
	GiveUp(ctx context.Context, itemID string, reason string) error
	Prune(ctx context.Context, before time.Time) error
}

// Tuning of deliveries.
const (
	// MaxAttempts is how often a delivery is tried before it is given up
	// (about a day with the backoff below).
	MaxAttempts = 30
	// RequestTimeout bounds one attempt.
	RequestTimeout = 10 * time.Second
	batchSize      = 20
	maxIdle        = 30 * time.Second
	keepDelivered  = 7 * 24 * time.Hour
)

// Options configure a Sender.
type Options struct {
	Outbox    Outbox
	Endpoints []Endpoint
	// Client sends the requests; nil uses one with RequestTimeout.
	Client *http.Client
	// Backoff is the pause before attempt n+1 after n failures; nil is
	// exponential from 1 s up to 1 h, with jitter.
	Backoff func(attempts int) time.Duration
	// Registerer, if set, gets recorder_webhook_attempts_total{result}.
	Registerer prometheus.Registerer
}

// Sender delivers the outbox.
type Sender struct {
	opts    Options
	secrets map[string]string
	wake    chan struct{}
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	results *prometheus.CounterVec
}

// New makes a Sender; Start runs it.
func New(opts Options) (*Sender, error) {
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: RequestTimeout}
	}
	if opts.Backoff == nil {
		opts.Backoff = DefaultBackoff
	}
	s := &Sender{opts: opts, secrets: map[string]string{}, wake: make(chan struct{}, 1),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "recorder", Name: "webhook_attempts_total",
			Help: "Webhook delivery attempts, by result (delivered, failed, given_up)."}, []string{"result"})}
	for _, ep := range opts.Endpoints {
		s.secrets[ep.URL] = ep.Secret
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(s.results); err != nil {
			return nil, fmt.Errorf("failed to register webhook metric: %w", err)
		}
	}
	return s, nil
}

// DefaultBackoff doubles from 1 s to at most an hour, plus up to 20 % jitter.
func DefaultBackoff(attempts int) time.Duration {
	d := time.Hour
	if attempts < 12 {
		d = min(time.Second<<attempts, time.Hour)
	}
	return d + time.Duration(rand.Int64N(int64(d/5)+1)) //nolint:gosec // jitter
}

// Enabled reports whether any endpoint is configured (else Publish does nothing).
func (s *Sender) Enabled() bool { return len(s.opts.Endpoints) > 0 }

// Publish stores ev for every endpoint; the sender delivers it. Storing
// the same event id again adds nothing.
func (s *Sender) Publish(ctx context.Context, ev Event) error {
	if len(s.opts.Endpoints) == 0 {
		return nil
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("failed to encode webhook event: %w", err)
	}
	now := time.Now()
	items := make([]*storage.OutboxItem, 0, len(s.opts.Endpoints))
	for _, ep := range s.opts.Endpoints {
		sum := sha256.Sum256([]byte(ep.URL))
		items = append(items, &storage.OutboxItem{ID: ev.ID + "@" + hex.EncodeToString(sum[:6]), URL: ep.URL, Event: string(ev.Type),
			Body: body, CreatedAt: now, NextAttemptAt: now})
	}
	if err = s.opts.Outbox.Add(ctx, items...); err != nil {
		return fmt.Errorf("failed to store webhook event: %w", err)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// Start runs the delivery loop until Stop.
func (s *Sender) Start(ctx context.Context) {
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	ctx = zerolog.Ctx(ctx).With().Str("component", "webhooks").Logger().WithContext(ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.loop(ctx)
	}()
}

// Stop ends the loop; undelivered events wait in the outbox.
func (s *Sender) Stop() {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
}

func (s *Sender) loop(ctx context.Context) {
	log := zerolog.Ctx(ctx)
	lastPrune := time.Time{}
	for {
		more, err := s.deliverDue(ctx)
		if err != nil && ctx.Err() == nil {
			log.Err(err).Msg("Failed to read the webhook outbox")
		}
		if time.Since(lastPrune) > time.Hour {
			lastPrune = time.Now()
			if err := s.opts.Outbox.Prune(ctx, time.Now().Add(-keepDelivered)); err != nil && ctx.Err() == nil {
				log.Warn().Err(err).Msg("Failed to prune the webhook outbox")
			}
		}
		wait := maxIdle
		if more {
			wait = 0
		} else if next, err := s.opts.Outbox.NextAttempt(ctx); err == nil && !next.IsZero() {
			wait = min(max(time.Until(next), 0), maxIdle)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-s.wake:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// deliverDue tries every due item once; more reports a full batch.
func (s *Sender) deliverDue(ctx context.Context) (more bool, err error) {
	items, err := s.opts.Outbox.Due(ctx, time.Now(), batchSize)
	if err != nil {
		return false, err
	}
	for _, it := range items {
		if ctx.Err() != nil {
			return false, nil
		}
		s.attempt(ctx, it)
	}
	return len(items) == batchSize, nil
}

func (s *Sender) attempt(ctx context.Context, it *storage.OutboxItem) {
	log := zerolog.Ctx(ctx).With().Str("delivery_id", it.ID).Str("event", it.Event).Str("url", it.URL).Logger()
	secret, ok := s.secrets[it.URL]
	if !ok {
		log.Warn().Msg("Webhook endpoint is no longer configured; giving up its delivery")
		if err := s.opts.Outbox.GiveUp(ctx, it.ID, "endpoint no longer configured"); err != nil {
			log.Err(err).Msg("Failed to update webhook outbox")
		}
		return
	}
	err := s.post(ctx, it, secret)
	if ctx.Err() != nil {
		return // shutting down: the attempt does not count
	}
	if err == nil {
		s.results.WithLabelValues("delivered").Inc()
		if err = s.opts.Outbox.Delivered(ctx, it.ID, time.Now()); err != nil {
			log.Err(err).Msg("Failed to mark webhook delivered; it will be sent again")
		} else {
			log.Debug().Int("attempt", it.Attempts+1).Msg("Webhook delivered")
		}
		return
	}
	if it.Attempts+1 >= MaxAttempts {
		s.results.WithLabelValues("given_up").Inc()
		log.Error().Err(err).Int("attempts", it.Attempts+1).Msg("Giving up a webhook delivery")
		if err := s.opts.Outbox.GiveUp(ctx, it.ID, err.Error()); err != nil {
			log.Err(err).Msg("Failed to update webhook outbox")
		}
		return
	}
	s.results.WithLabelValues("failed").Inc()
	next := time.Now().Add(s.opts.Backoff(it.Attempts))
	log.Warn().Err(err).Int("attempt", it.Attempts+1).Time("next_attempt", next).Msg("Webhook delivery failed; will retry")
	if err := s.opts.Outbox.Retry(ctx, it.ID, next, err.Error()); err != nil {
		log.Err(err).Msg("Failed to update webhook outbox")
	}
}

// errStatus is a receiver's non-2xx answer.
var errStatus = errors.New("receiver answered")

func (s *Sender) post(ctx context.Context, it *storage.OutboxItem, secret string) error {
	ts := time.Now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, it.URL, bytes.NewReader(it.Body))
	if err != nil {
		return err
	}
	var ev struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(it.Body, &ev)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "matrix-recorder-webhooks")
	req.Header.Set(HeaderID, ev.ID)
	req.Header.Set(HeaderEvent, it.Event)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(secret, ts, it.Body))
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w %d", errStatus, resp.StatusCode)
	}
	return nil
}
