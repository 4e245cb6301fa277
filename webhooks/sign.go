// Package webhooks tells operators' systems about recordings: events are
// written to an outbox table first and POSTed, signed, by a background
// sender that retries with backoff until the receiver answers 2xx, also
// across restarts. Delivery is at least once; the Webhook-Id header is the
// idempotency id receivers deduplicate by.
package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Headers of every delivery.
const (
	HeaderID        = "Webhook-Id"        // idempotency id, the same on every retry
	HeaderEvent     = "Webhook-Event"     // event type, e.g. recording.finished
	HeaderTimestamp = "Webhook-Timestamp" // Unix seconds of this attempt
	HeaderSignature = "Webhook-Signature" // "v1=" + hex HMAC-SHA256(secret, timestamp + "." + body)
)

// DefaultTolerance is how old a delivery's timestamp may be for Verify.
const DefaultTolerance = 5 * time.Minute

// Errors of Verify.
var (
	ErrNoSignature  = errors.New("webhook signature missing")
	ErrBadSignature = errors.New("webhook signature does not match")
	ErrStale        = errors.New("webhook timestamp outside the tolerance")
)

// Sign is the signature header value of body sent at ts with secret.
func Sign(secret string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(ts, 10)))
	mac.Write([]byte("."))
	mac.Write(body)
	return "v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a delivery's signature and that its timestamp is within
// tolerance of now (against replays), as a receiver should.
func Verify(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	sig, tsText := h.Get(HeaderSignature), h.Get(HeaderTimestamp)
	if sig == "" || tsText == "" {
		return ErrNoSignature
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return ErrNoSignature
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	want := Sign(secret, ts, body)
	for _, s := range strings.Split(sig, " ") { // several during a secret rotation
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return ErrBadSignature
}
