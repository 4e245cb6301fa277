package archive

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/storage"
)

// FuzzStreamFilesAreStored: whatever user and device ids a client chooses,
// the files the archive names for their streams are taken by the file store.
func FuzzStreamFilesAreStored(f *testing.F) {
	for _, seed := range [][2]string{
		{"@bob:localhost", "FZ1Buwm-"}, {"@a_b:x.org", "_x_"}, {"@c:y", "dev.ice~1"}, {"@d:z", "..."}, {"@é:ü", "~"},
		{"@e:f", "-lead"}, {"@../..:x", "../../etc"},
	} {
		f.Add(seed[0], seed[1])
	}
	dir := f.TempDir()
	store, err := storage.NewLocalStore(filepath.Join(dir, "store"))
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, user, device string) {
		peer := callbot.PeerInfo{UserID: id.UserID(user), DeviceID: id.DeviceID(device), CallID: "1764400000000abcdef"}
		base := streamBaseName(peer, signaling.PurposeUserMedia)
		for _, name := range []string{base + "-000.webm", base + "-012.ogg"} {
			src := filepath.Join(dir, "spooled")
			require.NoError(t, os.WriteFile(src, []byte("x"), 0o600))
			require.NoError(t, store.Put(context.Background(), "rec", name, src), "user %q device %q", user, device)
			require.NoError(t, store.DeleteFolder(context.Background(), "rec"))
		}
	})
}
