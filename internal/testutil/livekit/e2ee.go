package livekit

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
)

// frameEncryptor encrypts frames as Element Call's livekit-client does
// (per-participant key, AES-128-GCM, clear codec header as additional
// data, trailer IV | 12 | key index). It is the test side's own
// implementation, independent of the recorder's decryptor.
type frameEncryptor struct {
	index uint8
	gcm   cipher.AEAD
}

func newFrameEncryptor(index uint8, raw []byte) (*frameEncryptor, error) {
	key, err := hkdf.Key(sha256.New, raw, []byte("LKFrameEncryptionKey"), string(make([]byte, 128)), 16)
	if err != nil {
		return nil, fmt.Errorf("failed to derive the frame key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &frameEncryptor{index: index, gcm: gcm}, nil
}

// encrypt returns the encrypted frame: audio (Opus) keeps 1 byte in the
// clear, VP8 10 on key frames and 3 on delta frames.
func (e *frameEncryptor) encrypt(frame []byte, audio bool) []byte {
	if len(frame) == 0 {
		return frame
	}
	hdr := 1
	if !audio {
		hdr = 3
		if isVP8Key(frame) {
			hdr = 10
		}
	}
	hdr = min(hdr, len(frame))
	iv := make([]byte, 12)
	_, _ = rand.Read(iv)
	out := make([]byte, 0, len(frame)+16+14)
	out = append(out, frame[:hdr]...)
	out = e.gcm.Seal(out, iv, frame[hdr:], frame[:hdr])
	out = append(out, iv...)
	return append(out, 12, e.index)
}
