package framecrypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	lksdk "github.com/livekit/server-sdk-go/v2"
)

// vectors are frames captured on a live Element-Call-stack call
// (livekit-client 2.21 in Chromium, livekit-server 1.13.5).
type vectors struct {
	RawKey     string `json:"raw_key_b64"`
	KeyIndex   uint8  `json:"key_index"`
	DerivedHex string `json:"derived_aes_key_hex"`
	Frames     []struct {
		Kind       string `json:"kind"`
		FrameType  string `json:"chromium_frame_type"`
		KeyIndex   uint8  `json:"key_index"`
		HeaderLen  int    `json:"header_len"`
		Encrypted  string `json:"encrypted_b64"`
		Plaintext  string `json:"plaintext_b64"`
		VP8KeyInfo *struct {
			Width, Height int
		} `json:"vp8_keyframe"`
	} `json:"frames"`
}

func loadVectors(t testing.TB) vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/matrixrtc-frame-e2ee-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err = json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func b64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCapturedFramesDecrypt(t *testing.T) {
	v := loadVectors(t)
	raw := b64(t, v.RawKey)
	derived, err := DeriveKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(derived); got != v.DerivedHex {
		t.Fatalf("derived key %s, the browser's is %s", got, v.DerivedHex)
	}
	keys := NewKeys()
	if _, err = keys.Set(v.KeyIndex, raw); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, f := range v.Frames {
		codec := CodecOpus
		if f.Kind == "video" {
			codec = CodecVP8
		}
		enc, want := b64(t, f.Encrypted), b64(t, f.Plaintext)
		if idx, err := KeyIndex(enc); err != nil || idx != f.KeyIndex {
			t.Fatalf("%s %s: key index %d (%v), want %d", f.Kind, f.FrameType, idx, err, f.KeyIndex)
		}
		if h := codec.headerLength(enc); h != f.HeaderLen {
			t.Fatalf("%s %s: clear header %d bytes, the browser left %d", f.Kind, f.FrameType, h, f.HeaderLen)
		}
		got, err := NewDecryptor(keys, codec, nil).Decrypt(nil, enc)
		if err != nil {
			t.Fatalf("%s %s: %v", f.Kind, f.FrameType, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s %s: decrypted frame differs from the browser's plaintext", f.Kind, f.FrameType)
		}
		if f.VP8KeyInfo != nil {
			// The decrypted key frame is a VP8 key frame of the camera's size.
			w := int(got[6]) | int(got[7]&0x3f)<<8
			h := int(got[8]) | int(got[9]&0x3f)<<8
			if got[3] != 0x9d || got[4] != 0x01 || got[5] != 0x2a || w != f.VP8KeyInfo.Width || h != f.VP8KeyInfo.Height {
				t.Fatalf("decrypted key frame: %x…, %dx%d", got[:10], w, h)
			}
		}
		kinds[f.Kind+"/"+f.FrameType] = true
		// server-sdk-go's own Opus decryptor agrees.
		if codec == CodecOpus {
			lk, err := lksdk.DecryptGCMAudioSample(enc, derived, nil)
			if err != nil || !bytes.Equal(lk, want) {
				t.Fatalf("server-sdk-go decrypts the Opus frame to %x (%v)", lk, err)
			}
		}
	}
	for _, k := range []string{"audio/", "video/key", "video/delta"} {
		if !kinds[k] {
			t.Errorf("no captured %s frame was checked", k)
		}
	}
}

// encrypt is an independent implementation of LiveKit's frame encryption
// (standard library HKDF, not server-sdk-go's), for frames of every codec.
func encrypt(t testing.TB, raw []byte, index uint8, hdr int, plain []byte) []byte {
	t.Helper()
	aesKey, err := hkdf.Key(sha256.New, raw, []byte("LKFrameEncryptionKey"), string(make([]byte, 128)), 16)
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(aesKey)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	iv := make([]byte, 12)
	_, _ = rand.Read(iv)
	out := append([]byte{}, plain[:hdr]...)
	out = gcm.Seal(out, iv, plain[hdr:], plain[:hdr])
	out = append(out, iv...)
	return append(out, 12, index)
}

func randomKey() []byte {
	k := make([]byte, KeySize)
	_, _ = rand.Read(k)
	return k
}

// Frames of every codec, encrypted by the test's own implementation.
func TestCodecsRoundTrip(t *testing.T) {
	vp8Key := append([]byte{0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00}, bytes.Repeat([]byte{7}, 900)...)
	vp8Delta := append([]byte{0x31, 0x08, 0x00}, bytes.Repeat([]byte{9}, 300)...)
	vp9 := append([]byte{0x82, 0x49, 0x83, 0x42, 0x00}, bytes.Repeat([]byte{3}, 500)...)
	opus := append([]byte{0x78}, bytes.Repeat([]byte{1}, 80)...)
	cases := []struct {
		name  string
		codec Codec
		hdr   int
		frame []byte
	}{
		{"opus", CodecOpus, 1, opus},
		{"vp8 key", CodecVP8, 10, vp8Key},
		{"vp8 delta", CodecVP8, 3, vp8Delta},
		{"vp9", CodecVP9, 0, vp9},
	}
	raw := randomKey()
	keys := NewKeys()
	if _, err := keys.Set(3, raw); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			enc := encrypt(t, raw, 3, c.hdr, c.frame)
			got, err := NewDecryptor(keys, c.codec, nil).Decrypt(make([]byte, 0, 16), enc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, c.frame) {
				t.Fatal("decrypted frame differs")
			}
		})
	}
}

func TestRejected(t *testing.T) {
	raw, other := randomKey(), randomKey()
	opus := append([]byte{0x78}, bytes.Repeat([]byte{1}, 80)...)
	enc := encrypt(t, raw, 0, 1, opus)
	sif := []byte("LKROCKS")
	keys := NewKeys()
	if _, err := keys.Set(0, other); err != nil {
		t.Fatal(err)
	}
	wrong := NewDecryptor(keys, CodecOpus, sif)
	if _, err := wrong.Decrypt(nil, enc); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong key: %v, want ErrAuth", err)
	}
	unknown := append(bytes.Clone(enc[:len(enc)-1]), 7)
	if _, err := wrong.Decrypt(nil, unknown); !errors.Is(err, ErrNoKey) {
		t.Errorf("unknown index: %v, want ErrNoKey", err)
	}
	for _, n := range []int{1, 2, 14, 15, 30} {
		if _, err := wrong.Decrypt(nil, enc[len(enc)-n:]); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d-byte frame: %v, want ErrMalformed", n, err)
		}
	}
	badIV := bytes.Clone(enc)
	badIV[len(badIV)-2] = 16
	if _, err := wrong.Decrypt(nil, badIV); !errors.Is(err, ErrMalformed) {
		t.Errorf("IV length 16: %v, want ErrMalformed", err)
	}
	injected := append([]byte{0xf8, 0xff, 0xfe}, sif...)
	if _, err := wrong.Decrypt(nil, injected); !errors.Is(err, ErrServerInjected) {
		t.Errorf("server-injected frame: %v, want ErrServerInjected", err)
	}
	if out, err := wrong.Decrypt(nil, nil); err != nil || len(out) != 0 {
		t.Errorf("empty frame: %x, %v", out, err)
	}
	// With the right key (rotation to a new index keeps the old one).
	if _, err := keys.Set(1, raw); err != nil {
		t.Fatal(err)
	}
	enc1 := encrypt(t, raw, 1, 1, opus)
	if out, err := wrong.Decrypt(nil, enc1); err != nil || !bytes.Equal(out, opus) {
		t.Errorf("index 1: %v", err)
	}
	if n, _ := keys.Latest(); n != 1 || keys.Count() != 2 {
		t.Errorf("latest %d, count %d", n, keys.Count())
	}
	if _, err := keys.Set(2, []byte("short")); !errors.Is(err, ErrKeySize) {
		t.Errorf("short key: %v", err)
	}
}

func TestDecryptDoesNotAllocate(t *testing.T) {
	raw := randomKey()
	keys := NewKeys()
	if _, err := keys.Set(0, raw); err != nil {
		t.Fatal(err)
	}
	frame := append([]byte{0x31, 0x08, 0x00}, bytes.Repeat([]byte{9}, 1200)...)
	enc := encrypt(t, raw, 0, 3, frame)
	d := NewDecryptor(keys, CodecVP8, []byte("LKROCKS"))
	dst := make([]byte, 0, 2048)
	if n := testing.AllocsPerRun(100, func() {
		var err error
		if dst, err = d.Decrypt(dst, enc); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per frame", n)
	}
}

// FuzzDecrypt: any input is rejected or decrypted, never a panic, and
// nothing is returned for a frame that did not authenticate.
func FuzzDecrypt(f *testing.F) {
	v := loadVectors(f)
	for _, fr := range v.Frames {
		f.Add(b64(f, fr.Encrypted), fr.Kind == "video")
	}
	f.Add([]byte{}, false)
	f.Add([]byte{12, 0}, true)
	keys := NewKeys()
	if _, err := keys.Set(v.KeyIndex, b64(f, v.RawKey)); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, frame []byte, video bool) {
		codec := CodecOpus
		if video {
			codec = CodecVP8
		}
		out, err := NewDecryptor(keys, codec, []byte{1, 2, 3}).Decrypt(nil, frame)
		if err != nil && len(out) != 0 {
			t.Fatalf("%v with %d bytes out", err, len(out))
		}
		if _, err := KeyIndex(frame); err != nil && len(frame) >= 2 {
			t.Fatal(err)
		}
	})
}

// BenchmarkDecrypt is the CPU cost of decryption per stream: a 1 Mbit/s
// VP8 camera at 30 fps (~4.2 KB frames) and Opus at 50 frames/s.
func BenchmarkDecrypt(b *testing.B) {
	raw := randomKey()
	keys := NewKeys()
	if _, err := keys.Set(0, raw); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		codec Codec
		hdr   int
		frame []byte
	}{
		{"vp8-4200B", CodecVP8, 3, append([]byte{0x31, 0x08, 0x00}, bytes.Repeat([]byte{9}, 4200)...)},
		{"opus-80B", CodecOpus, 1, append([]byte{0x78}, bytes.Repeat([]byte{1}, 80)...)},
	} {
		b.Run(c.name, func(b *testing.B) {
			enc := encrypt(b, raw, 0, c.hdr, c.frame)
			d := NewDecryptor(keys, c.codec, []byte("LKROCKS"))
			dst := make([]byte, 0, 8192)
			b.SetBytes(int64(len(enc)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if dst, err = d.Decrypt(dst, enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestPacketKeyIndex(t *testing.T) {
	raw := randomKey()
	enc := encrypt(t, raw, 7, 1, append([]byte{0x78}, bytes.Repeat([]byte{1}, 40)...))
	if idx, ok := PacketKeyIndex(enc, true, []byte("LKROCKS")); !ok || idx != 7 {
		t.Fatalf("index %d, %v", idx, ok)
	}
	if _, ok := PacketKeyIndex(enc, false, nil); ok {
		t.Fatal("a packet that ends no frame has no trailer")
	}
	if _, ok := PacketKeyIndex(append([]byte{0xf8, 0xff}, []byte("LKROCKS")...), true, []byte("LKROCKS")); ok {
		t.Fatal("a server-injected frame has no key index")
	}
	if _, ok := PacketKeyIndex([]byte{12, 0}, true, nil); ok {
		t.Fatal("too short for a trailer")
	}
}
