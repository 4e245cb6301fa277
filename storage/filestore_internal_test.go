package storage

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPutSyncsFolder: a rename is durable only once the folder holding the
// new name is synced; Put does that before it reports success.
func TestPutSyncsFolder(t *testing.T) {
	var synced []string
	orig := syncDir
	syncDir = func(dir string) error {
		synced = append(synced, dir)
		return orig(dir)
	}
	t.Cleanup(func() { syncDir = orig })
	root := t.TempDir()
	store, err := NewLocalStore(root)
	require.NoError(t, err)
	src := filepath.Join(t.TempDir(), "x.part")
	require.NoError(t, os.WriteFile(src, []byte("media"), 0o600))
	require.NoError(t, store.Put(context.Background(), "folder1", "a.ogg", src))
	require.Contains(t, synced, filepath.Join(root, "folder1"))
}
