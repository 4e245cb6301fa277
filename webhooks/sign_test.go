package webhooks

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSignVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"e1"}`)
	h := http.Header{}
	h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	h.Set(HeaderSignature, Sign("secret-0123456789", now.Unix(), body))
	// The signature is HMAC-SHA256 of "timestamp.body", hex, with a version prefix.
	require.Equal(t, "v1=", h.Get(HeaderSignature)[:3])
	require.Len(t, h.Get(HeaderSignature), 3+64)
	require.NoError(t, Verify("secret-0123456789", h, body, now.Add(time.Minute), DefaultTolerance))
	require.ErrorIs(t, Verify("other-secret-0123", h, body, now, DefaultTolerance), ErrBadSignature)
	require.ErrorIs(t, Verify("secret-0123456789", h, []byte(`{"id":"e2"}`), now, DefaultTolerance), ErrBadSignature)
	require.ErrorIs(t, Verify("secret-0123456789", h, body, now.Add(10*time.Minute), DefaultTolerance), ErrStale)
	// A replayed body with a new timestamp but the old signature fails.
	h2 := h.Clone()
	h2.Set(HeaderTimestamp, strconv.FormatInt(now.Unix()+1, 10))
	require.ErrorIs(t, Verify("secret-0123456789", h2, body, now, DefaultTolerance), ErrBadSignature)
	// During a rotation several signatures may be sent.
	h.Set(HeaderSignature, Sign("old-secret-012345", now.Unix(), body)+" "+h.Get(HeaderSignature))
	require.NoError(t, Verify("secret-0123456789", h, body, now, DefaultTolerance))
	require.ErrorIs(t, Verify("secret-0123456789", http.Header{}, body, now, DefaultTolerance), ErrNoSignature)
}

func TestDefaultBackoff(t *testing.T) {
	require.GreaterOrEqual(t, DefaultBackoff(0), time.Second)
	require.LessOrEqual(t, DefaultBackoff(0), 1200*time.Millisecond)
	require.GreaterOrEqual(t, DefaultBackoff(5), 32*time.Second)
	require.LessOrEqual(t, DefaultBackoff(100), 72*time.Minute)
	require.GreaterOrEqual(t, DefaultBackoff(100), time.Hour)
}
