package recording

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/testutil"
)

// Seeds for the repair fuzzers: real files, cut and damaged the ways a
// crash or a bad disk leaves them. The fuzzers start from these.
const (
	seedOgg  = mediaDir + "/beeps-opus-48k-stereo.ogg"
	seedWebM = "../web/testdata/camera-vp8-opus.webm"
)

func addFileSeeds(f *testing.F, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		f.Fatalf("seed %s: %v", path, err)
	}
	if len(data) > 4<<10 {
		// A truncated file: headers and the first pages or blocks, small
		// enough that the fuzzer mutates and minimizes it fast.
		data = data[:4<<10]
	}
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Add(data[:len(data)/7])
	damaged := append([]byte(nil), data...)
	for i := 200; i < len(damaged); i += 397 {
		damaged[i] ^= 0x5a
	}
	f.Add(damaged)
}

// fuzzRepair writes data as a part file, repairs it and checks that the
// repair never panics, never loses a part it could not repair, and leaves a
// repaired file or nothing (a part without media is removed).
func fuzzRepair(t *testing.T, ext string, data []byte) string {
	dir := t.TempDir()
	part := filepath.Join(dir, "fuzz-000"+ext+partSuffix)
	final := strings.TrimSuffix(part, partSuffix)
	if err := os.WriteFile(part, data, 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Repair(testutil.Ctx(t), dir)
	_, partErr := os.Stat(part)
	_, finalErr := os.Stat(final)
	switch {
	case err != nil:
		if len(res) != 0 || partErr != nil || finalErr == nil {
			t.Fatalf("failed repair must keep the part untouched: %v (results %v, part %v, final %v)", err, res, partErr, finalErr)
		}
		return ""
	case len(res) != 1:
		t.Fatalf("one part, %d results", len(res))
	case res[0].Removed:
		if partErr == nil || finalErr == nil {
			t.Fatalf("removed part must leave no files (part %v, final %v)", partErr, finalErr)
		}
		return ""
	case partErr == nil || finalErr != nil || res[0].Path != final:
		t.Fatalf("repaired part must become %s (part %v, final %v, result %+v)", final, partErr, finalErr, res[0])
	}
	return final
}

// FuzzRepairOgg: truncated and corrupted Ogg Opus parts.
func FuzzRepairOgg(f *testing.F) {
	addFileSeeds(f, seedOgg)
	f.Add([]byte("OggS"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		final := fuzzRepair(t, ".ogg", data)
		if final == "" {
			return
		}
		// A repaired Ogg is whole pages with good CRCs, the last with EOS.
		in, err := os.Open(final) //nolint:gosec // test file
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		r := bufio.NewReader(in)
		buf := make([]byte, 0, oggPageHeaderLen+oggMaxSegments+oggMaxSegments*255)
		var last []byte
		for {
			p, err := readOggPage(r, buf)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("repaired Ogg has a bad page after %d bytes: %v", len(last), err)
				}
				break
			}
			last = append(last[:0], p...)
		}
		if len(last) == 0 || last[5]&oggFlagEOS == 0 {
			t.Fatalf("repaired Ogg does not end with an EOS page")
		}
	})
}

// FuzzRepairWebM: truncated and corrupted WebM parts (EBML sizes, block
// headers, unknown-size clusters).
func FuzzRepairWebM(f *testing.F) {
	addFileSeeds(f, seedWebM)
	f.Add([]byte{0x1A, 0x45, 0xDF, 0xA3, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00})
	f.Add([]byte{0x1A, 0x45, 0xDF, 0xA3, 0xFF, 0x18, 0x53, 0x80, 0x67, 0xFF, 0x1F, 0x43, 0xB6, 0x75, 0xFF})
	f.Add([]byte{0x1A, 0x45, 0xDF, 0xA3, 0x08, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE})
	f.Fuzz(func(t *testing.T, data []byte) {
		final := fuzzRepair(t, ".webm", data)
		if final == "" {
			return
		}
		// A repaired WebM repairs again as a whole file: nothing lost twice.
		data, err := os.ReadFile(final) //nolint:gosec // test file
		if err != nil {
			t.Fatal(err)
		}
		if fuzzRepair(t, ".webm", data) == "" {
			t.Fatalf("a repaired WebM (%d bytes) does not repair again", len(data))
		}
	})
}

// TestCreateFileOwnerOnly: recording files hold private conversations and
// are created owner-only whatever the umask allows.
func TestCreateFileOwnerOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.ogg.part")
	f, err := CreateFile(path)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}
