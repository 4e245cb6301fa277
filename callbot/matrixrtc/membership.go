// Package matrixrtc reads and writes MatrixRTC call memberships (MSC4143,
// as Element Call's "compatibility" mode sends them): room state events of
// type org.matrix.msc3401.call.member, one per device, whose state key is
// `_@user:server_DEVICE_m.call` and whose content names the LiveKit focus.
//
// The same event type carries legacy full-mesh memberships (state key = the
// user id, content with m.calls); those are not memberships here.
package matrixrtc

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Application is the MatrixRTC application of a call.
const Application = "m.call"

// FocusTypeLiveKit is the only focus type there is.
const FocusTypeLiveKit = "livekit"

// DefaultExpires is how long a membership lives without being re-sent
// (Element Call: 4 h).
const DefaultExpires = 4 * time.Hour

// StateType is the membership's event type (the same as mesh calls').
var StateType = event.Type{Type: "org.matrix.msc3401.call.member", Class: event.StateEventType}

// Sentinel errors of this package.
var (
	// ErrNotMembership means the event is not a MatrixRTC m.call membership.
	ErrNotMembership = errors.New("not a MatrixRTC m.call membership")
	// ErrLeft means the membership was removed (empty content).
	ErrLeft = errors.New("membership left")
	// ErrSenderMismatch means the state key names another user than the
	// sender: anyone allowed to send the event type could have written it.
	ErrSenderMismatch = errors.New("membership sender does not match its state key")
	// ErrExpired means the membership was not renewed before it expired.
	ErrExpired = errors.New("membership expired")
	// ErrNoFocus means the membership names no usable LiveKit focus.
	ErrNoFocus = errors.New("membership names no LiveKit focus")
)

// Focus is a LiveKit focus: the authorization service that hands out SFU tokens.
type Focus struct {
	Type       string `json:"type"`
	ServiceURL string `json:"livekit_service_url,omitempty"`
	Alias      string `json:"livekit_alias,omitempty"`
}

// ActiveFocus is how the session picks its focus.
type ActiveFocus struct {
	Type           string `json:"type"`
	FocusSelection string `json:"focus_selection,omitempty"`
}

// Content is a membership's event content.
type Content struct {
	Application   string       `json:"application,omitempty"`
	CallID        string       `json:"call_id"`
	Scope         string       `json:"scope,omitempty"`
	DeviceID      id.DeviceID  `json:"device_id,omitempty"`
	MembershipID  string       `json:"membershipID,omitempty"`
	Expires       int64        `json:"expires,omitempty"` // ms after created_ts
	CreatedTS     int64        `json:"created_ts,omitempty"`
	FocusActive   *ActiveFocus `json:"focus_active,omitempty"`
	FociPreferred []Focus      `json:"foci_preferred,omitempty"`
}

// Membership is one device's valid membership in a room's m.call session.
type Membership struct {
	RoomID   id.RoomID
	UserID   id.UserID
	DeviceID id.DeviceID
	// Identity is the participant's LiveKit identity in compatibility mode:
	// membershipID, else user:device.
	Identity string
	// ServiceURL is the authorization service of its preferred focus.
	ServiceURL string
	Created    time.Time
	ExpiresAt  time.Time
	StateKey   string
	Content    Content
}

// StateKey is a device's membership state key. Room versions that fix
// MSC3757/MSC3779 drop the leading underscore; this is the form Element
// Call uses in every other room version.
func StateKey(userID id.UserID, deviceID id.DeviceID) string {
	return "_" + string(userID) + "_" + string(deviceID) + "_" + Application
}

// parseStateKey reads the device from `_@user:server_DEVICE_m.call` (or
// without the leading underscore): what follows the sender's own user id.
// A key naming another user than the sender is not trusted.
func parseStateKey(key string, sender id.UserID) (id.DeviceID, bool) {
	rest, ok := strings.CutSuffix(key, "_"+Application)
	if !ok {
		return "", false
	}
	rest = strings.TrimPrefix(rest, "_")
	dev, ok := strings.CutPrefix(rest, string(sender)+"_")
	if !ok || dev == "" {
		return "", false
	}
	return id.DeviceID(dev), true
}

// IsRTCStateKey reports whether a call member state key is a MatrixRTC
// one (as opposed to a mesh call's user id key).
func IsRTCStateKey(key string) bool {
	return strings.HasSuffix(key, "_"+Application) && (strings.HasPrefix(key, "_@") || strings.HasPrefix(key, "@"))
}

// Parse reads one membership state event. now decides expiry; events
// without created_ts count from their origin_server_ts.
func Parse(evt *event.Event, now time.Time) (Membership, error) {
	if evt.StateKey == nil || !IsRTCStateKey(*evt.StateKey) {
		return Membership{}, ErrNotMembership
	}
	raw := evt.Content.VeryRaw
	if len(raw) == 0 && evt.Content.Raw != nil {
		raw, _ = json.Marshal(evt.Content.Raw)
	}
	var c Content
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &c); err != nil {
			return Membership{}, fmt.Errorf("%w: %w", ErrNotMembership, err)
		}
	}
	if c.Application == "" && c.DeviceID == "" && len(c.FociPreferred) == 0 {
		return Membership{}, ErrLeft
	}
	if c.Application != Application {
		return Membership{}, fmt.Errorf("%w: application %q", ErrNotMembership, c.Application)
	}
	dev, ok := parseStateKey(*evt.StateKey, evt.Sender)
	if !ok {
		return Membership{}, fmt.Errorf("%w: %s sent %q", ErrSenderMismatch, evt.Sender, *evt.StateKey)
	}
	if c.DeviceID != "" && c.DeviceID != dev {
		return Membership{}, fmt.Errorf("%w: device %s in content, %s in state key", ErrSenderMismatch, c.DeviceID, dev)
	}
	created := time.UnixMilli(evt.Timestamp)
	if c.CreatedTS > 0 {
		created = time.UnixMilli(c.CreatedTS)
	}
	expires := DefaultExpires
	if c.Expires > 0 {
		expires = time.Duration(c.Expires) * time.Millisecond
	}
	m := Membership{
		RoomID: evt.RoomID, UserID: evt.Sender, DeviceID: dev, Created: created, ExpiresAt: created.Add(expires),
		StateKey: *evt.StateKey, Content: c, Identity: c.MembershipID,
	}
	if m.Identity == "" {
		m.Identity = string(evt.Sender) + ":" + string(dev)
	}
	if !now.Before(m.ExpiresAt) {
		return m, ErrExpired
	}
	for _, f := range c.FociPreferred {
		if f.Type == FocusTypeLiveKit && f.ServiceURL != "" {
			if u, err := url.Parse(f.ServiceURL); err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" {
				m.ServiceURL = strings.TrimSuffix(f.ServiceURL, "/")
				break
			}
		}
	}
	if m.ServiceURL == "" {
		return m, ErrNoFocus
	}
	return m, nil
}

// Session is a room's valid memberships, oldest first.
type Session struct {
	Members []Membership
	// Ignored maps state keys to why they are not members (expired,
	// sender mismatch, no focus); left memberships are not listed.
	Ignored map[string]error
}

// Read collects the valid m.call memberships from a room's state.
func Read(state mautrix.RoomStateMap, now time.Time) Session {
	s := Session{Ignored: map[string]error{}}
	for key, evt := range state[StateType] {
		m, err := Parse(evt, now)
		switch {
		case err == nil:
			s.Members = append(s.Members, m)
		case errors.Is(err, ErrNotMembership), errors.Is(err, ErrLeft):
		default:
			s.Ignored[key] = err
		}
	}
	sort.Slice(s.Members, func(i, j int) bool {
		if !s.Members[i].Created.Equal(s.Members[j].Created) {
			return s.Members[i].Created.Before(s.Members[j].Created)
		}
		return s.Members[i].StateKey < s.Members[j].StateKey
	})
	return s
}

// Others are the memberships of everyone but userID.
func (s Session) Others(userID id.UserID) []Membership {
	var out []Membership
	for _, m := range s.Members {
		if m.UserID != userID {
			out = append(out, m)
		}
	}
	return out
}

// ServiceURLs are the distinct authorization services the members name,
// the oldest member's first.
func (s Session) ServiceURLs() []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range s.Members {
		if !seen[m.ServiceURL] {
			seen[m.ServiceURL] = true
			out = append(out, m.ServiceURL)
		}
	}
	return out
}

// OwnContent is the membership the recorder publishes for its device,
// naming serviceURL as its focus; created is zero on the first join and
// the original join time when renewing.
func OwnContent(userID id.UserID, deviceID id.DeviceID, roomID id.RoomID, serviceURL string, expires time.Duration, created time.Time) Content {
	c := Content{
		Application: Application, CallID: "", Scope: "m.room", DeviceID: deviceID,
		MembershipID: string(userID) + ":" + string(deviceID), Expires: expires.Milliseconds(),
		FocusActive:   &ActiveFocus{Type: FocusTypeLiveKit, FocusSelection: "multi_sfu"},
		FociPreferred: []Focus{{Type: FocusTypeLiveKit, ServiceURL: serviceURL, Alias: string(roomID)}},
	}
	if !created.IsZero() {
		c.CreatedTS = created.UnixMilli()
	}
	return c
}
