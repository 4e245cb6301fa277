package signaling

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Member event timing (§1.2, §7).
const (
	// MemberValidity is how far ahead the bot sets expires_ts: short-ish so
	// a crashed bot disappears soon (js-sdk and hydrogen use one hour).
	MemberValidity = 30 * time.Minute
	// MemberRenewAfter is when to re-send the own entry (¾ of the validity,
	// like js-sdk's 45 of 60 minutes).
	MemberRenewAfter = MemberValidity * 3 / 4
)

// Feed is one entry of a member device's feeds.
type Feed struct {
	Purpose Purpose
	Extra   map[string]json.RawMessage
}

// MarshalJSON writes purpose plus Extra.
func (f Feed) MarshalJSON() ([]byte, error) {
	out := withExtra(f.Extra, 1)
	out["purpose"] = f.Purpose
	return encode(out)
}

// MemberDevice is one entry of m.calls[].m.devices[].
type MemberDevice struct {
	DeviceID  id.DeviceID
	SessionID SessionID
	// ExpiresTS is expires_ts in ms since the epoch; 0 when absent or not a
	// safe integer (such an entry is expired for every reader).
	ExpiresTS int64
	// Feeds is nil when feeds is absent or not an array (js-sdk then drops
	// the device).
	Feeds []Feed
	// ActiveFoci is m.foci.active as sent. The bot never sets it: hydrogen
	// refuses to join calls where any member has a non-empty one.
	ActiveFoci json.RawMessage
	Extra      map[string]json.RawMessage

	err error
}

// NewMemberDevice builds the bot's own entry: no foci, feeds listing the
// given purposes (m.usermedia when none are given).
func NewMemberDevice(deviceID id.DeviceID, sessionID SessionID, expiresAt time.Time, purposes ...Purpose) MemberDevice {
	if len(purposes) == 0 {
		purposes = []Purpose{PurposeUserMedia}
	}
	feeds := make([]Feed, len(purposes))
	for i, p := range purposes {
		feeds[i] = Feed{Purpose: p}
	}
	return MemberDevice{DeviceID: deviceID, SessionID: sessionID, ExpiresTS: expiresAt.UnixMilli(), Feeds: feeds}
}

// Err says why readers would not count this entry regardless of time
// (device_id/session_id not strings, feeds not an array, ...); nil if it is
// well-formed.
func (d *MemberDevice) Err() error { return d.err }

// ExpiresAt is ExpiresTS as a time (zero time when absent).
func (d *MemberDevice) ExpiresAt() time.Time {
	if d.ExpiresTS == 0 {
		return time.Time{}
	}
	return time.UnixMilli(d.ExpiresTS)
}

// Expired applies the expiry rule both clients use: expires_ts must be a
// number greater than now (hydrogen: a safe integer; absent = expired).
func (d *MemberDevice) Expired(now time.Time) bool {
	return d.ExpiresTS <= now.UnixMilli()
}

// Active reports whether js-sdk would count this device as a participant
// (well-formed and not expired). Room membership is the caller's check.
func (d *MemberDevice) Active(now time.Time) bool {
	return d.err == nil && !d.Expired(now)
}

// UsesFoci reports a non-empty m.foci.active.
func (d *MemberDevice) UsesFoci() bool {
	if isNull(d.ActiveFoci) {
		return false
	}
	var list []json.RawMessage
	if json.Unmarshal(d.ActiveFoci, &list) == nil {
		return len(list) > 0
	}
	return truthy(d.ActiveFoci)
}

// MarshalJSON writes the entry; feeds is always an array.
func (d MemberDevice) MarshalJSON() ([]byte, error) {
	out := withExtra(d.Extra, 5)
	out["device_id"] = d.DeviceID
	out["session_id"] = d.SessionID
	out["expires_ts"] = d.ExpiresTS
	feeds := d.Feeds
	if feeds == nil {
		feeds = []Feed{}
	}
	out["feeds"] = feeds
	if !isNull(d.ActiveFoci) {
		out["m.foci.active"] = d.ActiveFoci
	}
	return encode(out)
}

func parseMemberDevice(raw json.RawMessage) MemberDevice {
	var d MemberDevice
	o, err := decodeObject(raw)
	if err != nil {
		d.err = invalid("m.devices[]", "expected an object")
		return d
	}
	fail := func(err error) {
		if d.err == nil {
			d.err = err
		}
	}
	if v, ok := o.take("device_id"); !ok {
		fail(missing("device_id"))
	} else if json.Unmarshal(v, (*string)(&d.DeviceID)) != nil {
		fail(invalid("device_id", "expected a string"))
	}
	if v, ok := o.take("session_id"); !ok {
		fail(missing("session_id"))
	} else if json.Unmarshal(v, (*string)(&d.SessionID)) != nil {
		fail(invalid("session_id", "expected a string"))
	}
	if v, ok := o.take("expires_ts"); ok {
		if n, valid := parseSafeInt(v); valid {
			d.ExpiresTS = n
		} // else: not a safe integer, the entry counts as expired
	}
	if v, ok := o.take("feeds"); !ok {
		fail(missing("feeds"))
	} else {
		var list []json.RawMessage
		if json.Unmarshal(v, &list) != nil {
			fail(invalid("feeds", "expected an array"))
		} else {
			d.Feeds = make([]Feed, 0, len(list))
			for _, fr := range list {
				fo, err := decodeObject(fr)
				if err != nil {
					continue
				}
				var f Feed
				if s, err := fo.str("purpose", "feeds[].purpose"); err == nil {
					f.Purpose = Purpose(s)
				}
				f.Extra = fo.extra()
				d.Feeds = append(d.Feeds, f)
			}
		}
	}
	if v, ok := o.take("m.foci.active"); ok {
		d.ActiveFoci = v
	}
	d.Extra = o.extra()
	return d
}

// MemberCall is one entry of m.calls.
type MemberCall struct {
	// ConfID is m.call_id.
	ConfID  ConfID
	Devices []MemberDevice
	// Extra keeps e.g. m.foci.
	Extra map[string]json.RawMessage
}

// MemberContent is the content of org.matrix.msc3401.call.member (§1.2):
// one event per user, state key = the user's MXID.
type MemberContent struct {
	// Calls is nil when m.calls is absent or not an array.
	Calls []MemberCall
	Extra map[string]json.RawMessage
}

// ParseMember parses a member event content leniently, the way js-sdk reads
// it: malformed entries are kept with their problem in MemberDevice.Err. It
// fails only when the content is not a JSON object.
func ParseMember(raw json.RawMessage) (MemberContent, error) {
	var mc MemberContent
	o, err := decodeObject(raw)
	if err != nil {
		return mc, err
	}
	if v, ok := o.take("m.calls"); ok {
		var calls []json.RawMessage
		if json.Unmarshal(v, &calls) != nil {
			o["m.calls"] = v
		} else {
			mc.Calls = make([]MemberCall, 0, len(calls))
			for _, cr := range calls {
				co, err := decodeObject(cr)
				if err != nil {
					continue
				}
				var call MemberCall
				if s, err := co.str("m.call_id", "m.call_id"); err == nil {
					call.ConfID = ConfID(s)
				}
				if dv, ok := co.take("m.devices"); ok {
					var devices []json.RawMessage
					if json.Unmarshal(dv, &devices) == nil {
						for _, dr := range devices {
							call.Devices = append(call.Devices, parseMemberDevice(dr))
						}
					} else {
						co["m.devices"] = dv
					}
				}
				call.Extra = co.extra()
				mc.Calls = append(mc.Calls, call)
			}
		}
	}
	mc.Extra = o.extra()
	return mc, nil
}

// Call returns the first m.calls entry for confID (what js-sdk's find does).
func (mc *MemberContent) Call(confID ConfID) (*MemberCall, bool) {
	for i := range mc.Calls {
		if mc.Calls[i].ConfID == confID {
			return &mc.Calls[i], true
		}
	}
	return nil, false
}

// SetMemberDevice returns existing member content with dev added to (or
// replacing the same device id in) the m.calls entry for confID. Everything
// else is kept byte-for-byte: other calls, other devices, unknown fields at
// every level. Like js-sdk and hydrogen, device entries of that call which
// are expired at now (or have no usable expires_ts) are dropped. existing
// may be nil or not an object (then a fresh content is built).
func SetMemberDevice(existing json.RawMessage, confID ConfID, dev MemberDevice, now time.Time) (json.RawMessage, error) {
	return updateMember(existing, confID, dev.DeviceID, &dev, now)
}

// RemoveMemberDevice returns existing member content without deviceID in
// the m.calls entry for confID (dropping the entry if it has no devices
// left, as js-sdk does); everything else is kept as in SetMemberDevice.
func RemoveMemberDevice(existing json.RawMessage, confID ConfID, deviceID id.DeviceID, now time.Time) (json.RawMessage, error) {
	return updateMember(existing, confID, deviceID, nil, now)
}

func updateMember(existing json.RawMessage, confID ConfID, deviceID id.DeviceID, dev *MemberDevice, now time.Time) (json.RawMessage, error) {
	top := object{}
	if !isNull(existing) {
		if o, err := decodeObject(existing); err == nil {
			top = o
		}
	}
	var calls []json.RawMessage
	if v, ok := top["m.calls"]; ok {
		if json.Unmarshal(v, &calls) != nil {
			calls = nil // not an array: readers ignore it, so do we
		}
	}
	var devRaw json.RawMessage
	if dev != nil {
		var err error
		if devRaw, err = dev.MarshalJSON(); err != nil {
			return nil, err
		}
	}
	newCalls := make([]json.RawMessage, 0, len(calls)+1)
	found := false
	for _, cr := range calls {
		co, err := decodeObject(cr)
		if err != nil || found {
			newCalls = append(newCalls, cr)
			continue
		}
		if s, err := co.str("m.call_id", "m.call_id"); err != nil || ConfID(s) != confID {
			newCalls = append(newCalls, cr)
			continue
		}
		found = true
		var devices []json.RawMessage
		if v, ok := co["m.devices"]; ok {
			if json.Unmarshal(v, &devices) != nil {
				devices = nil
			}
		}
		kept := make([]json.RawMessage, 0, len(devices)+1)
		for _, dr := range devices {
			d := parseMemberDevice(dr)
			if d.DeviceID == deviceID || d.Expired(now) {
				continue
			}
			kept = append(kept, dr)
		}
		if devRaw != nil {
			kept = append(kept, devRaw)
		}
		if len(kept) == 0 {
			continue
		}
		enc, err := encode(withExtra(co, 0).with("m.call_id", confID).with("m.devices", kept))
		if err != nil {
			return nil, err
		}
		newCalls = append(newCalls, enc)
	}
	if !found && devRaw != nil {
		enc, err := encode(map[string]any{"m.call_id": confID, "m.devices": []json.RawMessage{devRaw}})
		if err != nil {
			return nil, err
		}
		newCalls = append(newCalls, enc)
	}
	return encode(withExtra(top, 0).with("m.calls", newCalls))
}

// Participant is one active device in a group call.
type Participant struct {
	UserID    id.UserID
	DeviceID  id.DeviceID
	SessionID SessionID
	ExpiresAt time.Time
	Feeds     []Feed
	// UsesFoci: the device publishes m.foci.active (hydrogen then refuses to
	// join the call).
	UsesFoci bool
}

// Key returns the participant's (user, device).
func (p Participant) Key() DeviceKey { return DeviceKey{UserID: p.UserID, DeviceID: p.DeviceID} }

// Screenshare reports whether the feeds announce a screen share.
func (p Participant) Screenshare() bool {
	return slices.ContainsFunc(p.Feeds, func(f Feed) bool { return f.Purpose == PurposeScreenshare })
}

// MaxDevicesPerUser bounds the devices of one user that take part in a
// call: people join from a phone and a laptop, not from a thousand devices.
const MaxDevicesPerUser = 8

// Members returns the active participant devices of confID as js-sdk
// computes them (GroupCall.updateParticipants): for every member state event
// (state key = MXID), the first m.calls entry for confID, and in it every
// device with string device_id and session_id, an array feeds and
// expires_ts > now. Duplicate (user, device) entries keep the first. The
// result is sorted by user then device and includes the bot's own device if
// it is listed. The caller must still drop users whose room membership is
// not "join".
//
// At most MaxDevicesPerUser devices are taken from one user's event (the
// first ones listed): each device costs the recorder a peer connection.
func Members(memberEvents []*event.Event, confID ConfID, now time.Time) []Participant {
	seen := make(map[DeviceKey]struct{})
	var out []Participant
	// Unstable type first so it wins over a stable duplicate.
	ordered := slices.Clone(memberEvents)
	slices.SortStableFunc(ordered, func(a, b *event.Event) int {
		au, bu := a != nil && a.Type.Type == StateCallMember.Type, b != nil && b.Type.Type == StateCallMember.Type
		switch {
		case au == bu:
			return 0
		case au:
			return -1
		default:
			return 1
		}
	})
	for _, evt := range ordered {
		if evt == nil || !IsCallMemberType(evt.Type.Type) || evt.StateKey == nil || !strings.HasPrefix(*evt.StateKey, "@") {
			continue
		}
		mc, err := ParseMember(contentJSON(evt))
		if err != nil {
			continue
		}
		call, ok := mc.Call(confID)
		if !ok {
			continue
		}
		userID := id.UserID(*evt.StateKey)
		perUser := 0
		for i := range call.Devices {
			d := &call.Devices[i]
			if !d.Active(now) {
				continue
			}
			key := DeviceKey{UserID: userID, DeviceID: d.DeviceID}
			if _, dup := seen[key]; dup {
				continue
			}
			if perUser >= MaxDevicesPerUser {
				break // one member event cannot make the recorder call thousands of devices
			}
			perUser++
			seen[key] = struct{}{}
			out = append(out, Participant{
				UserID:    userID,
				DeviceID:  d.DeviceID,
				SessionID: d.SessionID,
				ExpiresAt: d.ExpiresAt(),
				Feeds:     d.Feeds,
				UsesFoci:  d.UsesFoci(),
			})
		}
	}
	slices.SortFunc(out, func(a, b Participant) int {
		if c := strings.Compare(string(a.UserID), string(b.UserID)); c != 0 {
			return c
		}
		return strings.Compare(string(a.DeviceID), string(b.DeviceID))
	})
	return out
}

// EarliestExpiry is when the participant set must be re-evaluated next
// (js-sdk schedules a timer at the earliest expires_ts).
func EarliestExpiry(ps []Participant) (time.Time, bool) {
	var earliest time.Time
	for _, p := range ps {
		if earliest.IsZero() || p.ExpiresAt.Before(earliest) {
			earliest = p.ExpiresAt
		}
	}
	return earliest, !earliest.IsZero()
}
