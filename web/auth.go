package web

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// authenticator checks bearer tokens. Tokens are compared as SHA-256
// digests with subtle.ConstantTimeCompare against every configured token,
// so neither the position of the first wrong byte nor the token's length
// nor which token matched shows in the timing.
type authenticator struct {
	digests [][sha256.Size]byte
}

func newAuthenticator(tokens []string) *authenticator {
	a := &authenticator{}
	for _, t := range tokens {
		if t != "" {
			a.digests = append(a.digests, sha256.Sum256([]byte(t)))
		}
	}
	return a
}

func (a *authenticator) valid(token string) bool {
	got := sha256.Sum256([]byte(token))
	ok := 0
	for i := range a.digests {
		ok |= subtle.ConstantTimeCompare(got[:], a.digests[i][:])
	}
	return ok == 1
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func (a *authenticator) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r)
		switch {
		case !ok:
			w.Header().Set("WWW-Authenticate", `Bearer realm="recorder"`)
			writeError(w, http.StatusUnauthorized, CodeMissingToken, "Missing access token: send Authorization: Bearer <token>")
		case !a.valid(token):
			w.Header().Set("WWW-Authenticate", `Bearer realm="recorder", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, CodeUnknownToken, "Unknown access token")
		default:
			next.ServeHTTP(w, r)
		}
	})
}
