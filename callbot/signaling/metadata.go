package signaling

import (
	"encoding/json"
	"fmt"
	"maps"
)

// Purpose is a stream's purpose in stream metadata and member feeds (§5.1).
type Purpose string

const (
	PurposeUserMedia   Purpose = "m.usermedia"
	PurposeScreenshare Purpose = "m.screenshare"
)

// Known reports whether the purpose is one receivers act on; streams with
// an unknown purpose are ignored (MSC3077).
func (p Purpose) Known() bool {
	return p == PurposeUserMedia || p == PurposeScreenshare
}

// StreamInfo is one entry of the stream metadata map. Missing mute flags
// default to false. Unknown fields (e.g. mautrix's user_id/device_id/tracks)
// are kept in Extra and written back.
type StreamInfo struct {
	Purpose    Purpose
	AudioMuted bool
	VideoMuted bool
	Extra      map[string]json.RawMessage
}

// StreamMetadata maps MediaStream ids (the msid stream id) to their info.
type StreamMetadata map[string]StreamInfo

// MetadataKeys says under which content key(s) the metadata is written.
// Parse records what it received; the zero value writes both (the bot rule).
type MetadataKeys int

const (
	MetadataKeysBoth     MetadataKeys = iota // both keys, identical maps
	MetadataKeysStable                       // sdp_stream_metadata only (js-sdk >= v41)
	MetadataKeysUnstable                     // org.matrix.msc3077.sdp_stream_metadata only (hydrogen)
)

// Merge returns a copy of m with every stream in update set (replacing that
// stream's entry). Streams missing from update are kept, like the cumulative
// maps js-sdk and hydrogen keep.
func (m StreamMetadata) Merge(update StreamMetadata) StreamMetadata {
	out := make(StreamMetadata, len(m)+len(update))
	maps.Copy(out, m)
	maps.Copy(out, update)
	return out
}

// MarshalJSON writes purpose and both mute flags, plus Extra.
func (s StreamInfo) MarshalJSON() ([]byte, error) {
	out := withExtra(s.Extra, 3)
	out["purpose"] = s.Purpose
	out["audio_muted"] = s.AudioMuted
	out["video_muted"] = s.VideoMuted
	return encode(out)
}

func parseStreamInfo(raw json.RawMessage, path string) (StreamInfo, error) {
	o, err := decodeObject(raw)
	if err != nil {
		return StreamInfo{}, invalid(path, "expected an object")
	}
	var s StreamInfo
	purpose, err := o.str("purpose", path+".purpose")
	if err != nil {
		return s, err
	}
	s.Purpose = Purpose(purpose)
	if s.AudioMuted, err = o.boolean("audio_muted", path+".audio_muted"); err != nil {
		return s, err
	}
	if s.VideoMuted, err = o.boolean("video_muted", path+".video_muted"); err != nil {
		return s, err
	}
	s.Extra = o.extra()
	return s, nil
}

func parseStreamMetadata(raw json.RawMessage, key string) (StreamMetadata, error) {
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil || entries == nil {
		return nil, invalid(key, "expected an object")
	}
	md := make(StreamMetadata, len(entries))
	for streamID, v := range entries {
		info, err := parseStreamInfo(v, fmt.Sprintf("%s[%q]", key, streamID))
		if err != nil {
			return nil, err
		}
		md[streamID] = info
	}
	return md, nil
}

// takeMetadata reads the stable key first, then the unstable one (§5.1).
// A nil map means neither key was present.
func (o object) takeMetadata() (StreamMetadata, MetadataKeys, error) {
	stable, hasStable := o.take(KeyStreamMetadata)
	unstable, hasUnstable := o.take(KeyStreamMetadataUnstable)
	switch {
	case hasStable:
		md, err := parseStreamMetadata(stable, KeyStreamMetadata)
		keys := MetadataKeysStable
		if hasUnstable {
			keys = MetadataKeysBoth
		}
		return md, keys, err
	case hasUnstable:
		md, err := parseStreamMetadata(unstable, KeyStreamMetadataUnstable)
		return md, MetadataKeysUnstable, err
	default:
		return nil, MetadataKeysBoth, nil
	}
}

func putMetadata(out map[string]any, md StreamMetadata, keys MetadataKeys) {
	if md == nil {
		return
	}
	if keys != MetadataKeysUnstable {
		out[KeyStreamMetadata] = md
	}
	if keys != MetadataKeysStable {
		out[KeyStreamMetadataUnstable] = md
	}
}
