// Package framecrypt decrypts LiveKit end-to-end encrypted media frames, as
// Element Call (livekit-client's FrameCryptor with per-participant keys)
// encrypts them in MatrixRTC calls of encrypted rooms:
//
//	clear header | AES-128-GCM ciphertext and tag | IV (12) | IV length (12) | key index
//
// The clear header is the GCM additional data: 1 byte for Opus, 10 bytes
// for a VP8 key frame and 3 for a VP8 delta frame, none for VP9. The AES key
// is HKDF-SHA256 of the participant's raw key (salt "LKFrameEncryptionKey",
// info 128 zero bytes; server-sdk-go's DeriveKeyFromBytes). Frames are whole
// codec frames (after depacketizing), never RTP packets.
//
// A participant's Keys hold every key index it has sent (0–255); one Keys
// is shared by all its tracks' Decryptors. Setting a key is rare (the call
// loop); decrypting is per frame (each track's reader) and allocates
// nothing.
package framecrypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	lksdk "github.com/livekit/server-sdk-go/v2"
)

// KeySize is the size of a raw media key as clients send it.
const KeySize = 16

const (
	ivLength  = 12
	tagLength = 16
	// trailerLength is the IV length byte and the key index byte.
	trailerLength = 2
)

var (
	// ErrNoKey: the frame's key index has no key (yet).
	ErrNoKey = errors.New("no key for the frame's key index")
	// ErrMalformed: the frame is too short or its trailer is not LiveKit's.
	ErrMalformed = errors.New("malformed encrypted frame")
	// ErrAuth: the frame does not decrypt with its index's key (wrong key,
	// or corrupted).
	ErrAuth = errors.New("encrypted frame failed authentication")
	// ErrServerInjected: a frame the SFU injected in the clear (ends with
	// the room's SIF trailer); it is not the participant's media.
	ErrServerInjected = errors.New("server-injected frame")
	// ErrKeySize: a raw key that is not KeySize bytes.
	ErrKeySize = errors.New("media key is not 16 bytes")
)

// Codec is how much of a frame's head is left in the clear.
type Codec int

// The codecs Element Call sends.
const (
	CodecOpus Codec = iota
	CodecVP8
	CodecVP9
)

// CodecOf maps a MIME type (audio/opus, video/VP8, video/VP9) to a Codec.
func CodecOf(mimeType string) (Codec, error) {
	switch strings.ToLower(mimeType) {
	case "audio/opus":
		return CodecOpus, nil
	case "video/vp8":
		return CodecVP8, nil
	case "video/vp9":
		return CodecVP9, nil
	}
	return 0, fmt.Errorf("media E2EE of %s frames is not supported", mimeType)
}

// headerLength is the clear head of a frame: LiveKit's unencrypted bytes.
func (c Codec) headerLength(frame []byte) int {
	switch c {
	case CodecOpus:
		return 1
	case CodecVP8:
		// RFC 6386 §9.1: bit 0 of the frame tag is 0 on key frames.
		if frame[0]&1 == 0 {
			return 10
		}
		return 3
	}
	return 0
}

// DeriveKey is the AES-128 key of a raw media key.
func DeriveKey(raw []byte) ([]byte, error) {
	if len(raw) != KeySize {
		return nil, ErrKeySize
	}
	key, err := lksdk.DeriveKeyFromBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("failed to derive the frame key: %w", err)
	}
	return key, nil
}

// Keys is one participant's key ring: a key per index. Safe for concurrent
// use: Set from one goroutine, Decryptors read without locks.
type Keys struct {
	ring [256]atomic.Pointer[key]
	set  atomic.Int32 // indexes holding a key
	last atomic.Int32 // index set most recently (-1: none)
}

type key struct {
	raw  [KeySize]byte
	aead cipher.AEAD
}

// NewKeys is an empty key ring.
func NewKeys() *Keys {
	k := &Keys{}
	k.last.Store(-1)
	return k
}

// Set installs the raw key of an index; a different key for an index
// already set replaces it (the sender's index wrapped around). It reports
// whether the ring changed.
func (k *Keys) Set(index uint8, raw []byte) (bool, error) {
	if old := k.ring[index].Load(); old != nil && bytes.Equal(old.raw[:], raw) {
		return false, nil
	}
	derived, err := DeriveKey(raw)
	if err != nil {
		return false, err
	}
	block, err := aes.NewCipher(derived)
	if err != nil {
		return false, fmt.Errorf("failed to set up AES: %w", err)
	}
	aead, err := cipher.NewGCM(block) // 12-byte IV, 16-byte tag: LiveKit's
	if err != nil {
		return false, fmt.Errorf("failed to set up AES-GCM: %w", err)
	}
	nk := &key{aead: aead}
	copy(nk.raw[:], raw)
	if k.ring[index].Swap(nk) == nil {
		k.set.Add(1)
	}
	k.last.Store(int32(index))
	return true, nil
}

// Has reports whether index holds a key.
func (k *Keys) Has(index uint8) bool { return k.ring[index].Load() != nil }

// Count is how many indexes hold a key.
func (k *Keys) Count() int { return int(k.set.Load()) }

// Latest is the index set most recently, and false when none is.
func (k *Keys) Latest() (uint8, bool) {
	l := k.last.Load()
	return uint8(l), l >= 0 //nolint:gosec // 0..255 when set
}

// Decryptor decrypts one track's frames. Not safe for concurrent use (one
// per track reader); its Keys may change under it.
type Decryptor struct {
	keys  *Keys
	codec Codec
	sif   []byte
}

// NewDecryptor decrypts frames of a codec with a participant's keys. sif is
// the room's server-injected-frame trailer (JoinResponse.sif_trailer;
// empty: none).
func NewDecryptor(keys *Keys, codec Codec, sif []byte) *Decryptor {
	return &Decryptor{keys: keys, codec: codec, sif: bytes.Clone(sif)}
}

// PacketKeyIndex is the key index of the frame an RTP payload ends, when
// it ends one with LiveKit's trailer: every Opus packet (a whole frame),
// a video frame's last packet (marker set). Not for server-injected frames.
func PacketKeyIndex(payload []byte, endsFrame bool, sif []byte) (uint8, bool) {
	n := len(payload)
	if !endsFrame || n < trailerLength+ivLength+tagLength || payload[n-2] != ivLength ||
		(len(sif) > 0 && bytes.HasSuffix(payload, sif)) {
		return 0, false
	}
	return payload[n-1], true
}

// KeyIndex is the key index a frame was encrypted with.
func KeyIndex(frame []byte) (uint8, error) {
	if len(frame) < trailerLength {
		return 0, ErrMalformed
	}
	return frame[len(frame)-1], nil
}

// TransformFrame implements recording.FrameTransform: Decrypt, except that
// a server-injected frame comes out empty (not written, not an error).
func (d *Decryptor) TransformFrame(dst, frame []byte) ([]byte, error) {
	out, err := d.Decrypt(dst, frame)
	if errors.Is(err, ErrServerInjected) {
		return out[:0], nil
	}
	return out, err
}

// Decrypt appends the clear frame to dst[:0]. A zero-length frame (Opus
// DTX) stays empty. It allocates only when dst is too small.
func (d *Decryptor) Decrypt(dst, frame []byte) ([]byte, error) {
	dst = dst[:0]
	n := len(frame)
	if n == 0 {
		return dst, nil
	}
	if len(d.sif) > 0 && bytes.HasSuffix(frame, d.sif) {
		return dst, ErrServerInjected
	}
	if n < trailerLength {
		return dst, fmt.Errorf("%w: %d bytes", ErrMalformed, n)
	}
	if iv := int(frame[n-2]); iv != ivLength {
		return dst, fmt.Errorf("%w: IV length %d", ErrMalformed, iv)
	}
	index := frame[n-1]
	hdr := d.codec.headerLength(frame)
	ivStart := n - trailerLength - ivLength
	if ivStart-hdr < tagLength {
		return dst, fmt.Errorf("%w: %d bytes", ErrMalformed, n)
	}
	k := d.keys.ring[index].Load()
	if k == nil {
		return dst, fmt.Errorf("%w %d", ErrNoKey, index)
	}
	dst = append(dst, frame[:hdr]...)
	out, err := k.aead.Open(dst, frame[ivStart:n-trailerLength], frame[hdr:ivStart], frame[:hdr])
	if err != nil {
		return dst[:0], fmt.Errorf("%w (key index %d)", ErrAuth, index)
	}
	return out, nil
}
