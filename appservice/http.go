package appservice

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/rs/zerolog"
	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"
)

// maxTransactionSize bounds a transaction body; Synapse sends at most 100
// PDUs and 100 EDUs, far below this.
const maxTransactionSize = 16 << 20

// Handler is the HTTP handler for the homeserver-facing routes: mautrix's
// router behind our transaction guard.
func (s *Service) Handler() http.Handler {
	return exhttp.ApplyMiddleware(s.AS.Router, s.guardTransactions)
}

// guardTransactions checks the hs_token per spec (401 missing, 403 wrong):
// in the Authorization header, or as ?access_token= only with
// appservice.query_token_auth (Dendrite 0.13.8 and Synapse send the header);
// rejects malformed bodies with 400 and makes transactions idempotent across
// restarts by recording processed IDs in the database. mautrix's own cache
// only lives in memory.
func (s *Service) guardTransactions(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/_matrix/app/") || strings.HasPrefix(r.URL.Path, "/_matrix/mau/") {
			next.ServeHTTP(w, r)
			return
		}
		log := zerolog.Ctx(s.bgCtx).With().Str("path", r.URL.Path).Logger()
		auth := r.Header.Get("Authorization")
		if !strings.HasPrefix(auth, "Bearer ") && s.cfg.Appservice.QueryTokenAuth {
			if legacy := r.URL.Query().Get("access_token"); legacy != "" {
				auth = "Bearer " + legacy
			}
		}
		if !strings.HasPrefix(auth, "Bearer ") {
			log.Warn().Bool("token_in_query", r.URL.Query().Has("access_token")).
				Msg("Rejected homeserver request without token in the Authorization header (see appservice.query_token_auth)")
			mautrix.RespError{ErrCode: "M_UNAUTHORIZED", Err: "Missing hs_token", StatusCode: http.StatusUnauthorized}.Write(w)
			return
		}
		if subtle.ConstantTimeCompare([]byte(auth[len("Bearer "):]), []byte(s.AS.Registration.ServerToken)) != 1 {
			log.Warn().Msg("Rejected homeserver request with wrong token")
			mautrix.MForbidden.WithMessage("Invalid hs_token").Write(w)
			return
		}
		r.Header.Set("Authorization", auth)
		if r.Method != http.MethodPut || !strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/transactions/") {
			next.ServeHTTP(w, r)
			return
		}
		txnID := strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
		log = log.With().Str("transaction_id", txnID).Logger()
		if txnID == "" || strings.Contains(txnID, "/") {
			mautrix.MInvalidParam.WithMessage("Missing or invalid transaction ID").Write(w)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxTransactionSize+1))
		if err != nil || len(body) > maxTransactionSize {
			log.Warn().Err(err).Int("size", len(body)).Msg("Rejected unreadable or oversized transaction")
			mautrix.MTooLarge.WithMessage("Transaction body unreadable or too large").Write(w)
			return
		}
		var probe struct {
			Events []json.RawMessage `json:"events"`
		}
		if err = json.Unmarshal(body, &probe); err != nil {
			log.Warn().Err(err).Msg("Rejected malformed transaction")
			mautrix.MNotJSON.WithMessage("Malformed transaction body: " + err.Error()).Write(w)
			return
		}
		ctx := r.Context()
		if done, err := s.txns.IsProcessed(ctx, txnID); err != nil {
			log.Err(err).Msg("Failed to check transaction ID")
			mautrix.MUnknown.WithMessage("Database error").Write(w)
			return
		} else if done {
			log.Debug().Msg("Acknowledging already processed transaction")
			exhttp.WriteEmptyJSONResponse(w, http.StatusOK)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		if sw.status == http.StatusOK {
			if err = s.txns.MarkProcessed(ctx, txnID); err != nil {
				log.Err(err).Msg("Failed to record processed transaction")
			}
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (sr *statusWriter) WriteHeader(status int) {
	sr.status = status
	sr.ResponseWriter.WriteHeader(status)
}
