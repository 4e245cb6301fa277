package signaling

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
)

// maxSafeInt is JavaScript's Number.MAX_SAFE_INTEGER.
const maxSafeInt = 1<<53 - 1

// object is a decoded JSON object whose known keys are taken out one by one;
// what is left over is kept as Extra.
type object map[string]json.RawMessage

func decodeObject(raw []byte) (object, error) {
	var o object
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidContent, err)
	}
	if o == nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrInvalidContent)
	}
	return o, nil
}

func isNull(v json.RawMessage) bool {
	v = bytes.TrimSpace(v)
	return len(v) == 0 || bytes.Equal(v, []byte("null"))
}

// take removes key and returns its value; JSON null counts as absent.
func (o object) take(key string) (json.RawMessage, bool) {
	v, ok := o[key]
	if !ok {
		return nil, false
	}
	delete(o, key)
	if isNull(v) {
		return nil, false
	}
	return v, true
}

// extra returns what is left, or nil.
func (o object) extra() map[string]json.RawMessage {
	if len(o) == 0 {
		return nil
	}
	return o
}

// str takes an optional string field; path names it in errors.
func (o object) str(key, path string) (string, error) {
	v, ok := o.take(key)
	if !ok {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", invalid(path, "expected a string")
	}
	return s, nil
}

func (o object) boolean(key, path string) (bool, error) {
	v, ok := o.take(key)
	if !ok {
		return false, nil
	}
	var b bool
	if err := json.Unmarshal(v, &b); err != nil {
		return false, invalid(path, "expected a boolean")
	}
	return b, nil
}

// parseSafeInt accepts a JSON number that is an integer within JavaScript's
// safe range (what hydrogen requires for expires_ts; js-sdk sends integers).
func parseSafeInt(v json.RawMessage) (int64, bool) {
	var f float64
	if err := json.Unmarshal(v, &f); err != nil {
		return 0, false
	}
	if f != math.Trunc(f) || math.Abs(f) > maxSafeInt {
		return 0, false
	}
	return int64(f), true
}

// intField takes an optional integer field; ok is false when absent.
func (o object) intField(key, path string, minValue int64) (n int64, ok bool, err error) {
	v, present := o.take(key)
	if !present {
		return 0, false, nil
	}
	n, valid := parseSafeInt(v)
	if !valid {
		return 0, false, invalid(path, "expected an integer")
	}
	if n < minValue {
		return 0, false, invalid(path, fmt.Sprintf("must be >= %d", minValue))
	}
	return n, true, nil
}

// truthy applies JavaScript truthiness to a JSON value (m.terminated).
func truthy(v json.RawMessage) bool {
	v = bytes.TrimSpace(v)
	if isNull(v) {
		return false
	}
	switch v[0] {
	case 'f':
		return false
	case '"':
		var s string
		return json.Unmarshal(v, &s) == nil && s != ""
	case '{', '[', 't':
		return true
	default:
		var f float64
		if json.Unmarshal(v, &f) != nil {
			return true
		}
		return f != 0
	}
}

// encode marshals without HTML escaping (SDP and ids stay readable).
func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// outMap is a JSON object being written.
type outMap map[string]any

func (m outMap) with(key string, v any) outMap {
	m[key] = v
	return m
}

// withExtra starts an output map from a copy of extra.
func withExtra(extra map[string]json.RawMessage, size int) outMap {
	out := make(outMap, len(extra)+size)
	for k, v := range extra {
		out[k] = v
	}
	return out
}
