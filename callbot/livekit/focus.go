package livekit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// SFUGetPath is the authorization service's endpoint for compatibility-mode
// (room state) memberships. /get_token is for matrix_2_0 memberships: its
// hashed identities match no key of this mode.
const SFUGetPath = "/sfu/get"

// SFURequest is the body of POST /sfu/get (element-hq/lk-jwt-service).
type SFURequest struct {
	Room        id.RoomID                `json:"room"`
	OpenIDToken *mautrix.RespOpenIDToken `json:"openid_token"`
	DeviceID    id.DeviceID              `json:"device_id"`
}

// SFUResponse is what the authorization service answers.
type SFUResponse struct {
	URL string `json:"url"`
	JWT string `json:"jwt"`
}

// allowed reports whether a URL's host is on the allow-list (an empty list
// allows any host a call names).
func (m *Manager) allowed(rawURL string) bool {
	if len(m.cfg.AllowedHosts) == 0 {
		return true
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return false
	}
	return slices.ContainsFunc(m.cfg.AllowedHosts, func(h string) bool {
		return strings.EqualFold(h, u.Host) || strings.EqualFold(h, u.Hostname())
	})
}

// sfuToken gets the SFU's URL and a token for the recorder's device from
// the authorization service at serviceURL.
func (m *Manager) sfuToken(ctx context.Context, dev Device, roomID id.RoomID, serviceURL string) (SFUResponse, error) {
	if !m.allowed(serviceURL) {
		return SFUResponse{}, fmt.Errorf("%w: %s", ErrHostNotAllowed, serviceURL)
	}
	tok, err := dev.OpenIDToken(ctx)
	if err != nil {
		return SFUResponse{}, fmt.Errorf("%w: failed to get an OpenID token: %w", ErrFocus, err)
	}
	body, err := json.Marshal(SFURequest{Room: roomID, OpenIDToken: tok, DeviceID: dev.DeviceID()})
	if err != nil {
		return SFUResponse{}, fmt.Errorf("failed to encode the SFU request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, serviceURL+SFUGetPath, bytes.NewReader(body))
	if err != nil {
		return SFUResponse{}, fmt.Errorf("%w: %w", ErrFocus, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := m.http.Do(req)
	if err != nil {
		return SFUResponse{}, fmt.Errorf("%w: authorization service: %w", ErrFocus, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return SFUResponse{}, fmt.Errorf("%w: authorization service: %w", ErrFocus, err)
	}
	if resp.StatusCode != http.StatusOK {
		return SFUResponse{}, fmt.Errorf("%w: authorization service answered %d: %.200s", ErrFocus, resp.StatusCode, data)
	}
	var out SFUResponse
	if err = json.Unmarshal(data, &out); err != nil || out.URL == "" || out.JWT == "" {
		return SFUResponse{}, fmt.Errorf("%w: authorization service answered no url and jwt: %.200s", ErrFocus, data)
	}
	u, err := url.Parse(out.URL)
	if err != nil || (u.Scheme != "wss" && u.Scheme != "ws" && u.Scheme != "https" && u.Scheme != "http") {
		return SFUResponse{}, fmt.Errorf("%w: unusable SFU url %q", ErrFocus, out.URL)
	}
	if !m.allowed(out.URL) {
		return SFUResponse{}, fmt.Errorf("%w: SFU %s", ErrHostNotAllowed, out.URL)
	}
	return out, nil
}
