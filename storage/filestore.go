package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/matrix-recorder/recorder/storage/naming"
)

// ErrBadKey means a folder or file name is not a safe single path component.
var ErrBadKey = naming.ErrUnsafe

// ErrExists means a file or row of that name is already stored; nothing
// is ever replaced.
var ErrExists = errors.New("already stored")

// ErrNotFound means the file store has no such file.
var ErrNotFound = errors.New("file not found")

// FileStore keeps finished recording files, addressed by folder and name.
// Today it is a local directory; an S3-compatible store will implement the
// same interface, so nothing outside it assumes local paths.
type FileStore interface {
	// Put takes a finished local file into the store under folder/name.
	// The local file is gone afterwards.
	Put(ctx context.Context, folder, name, localPath string) error
	// Open returns a stored file for reading.
	Open(ctx context.Context, folder, name string) (*StoredFile, error)
	// DeleteFolder removes a folder and everything in it.
	DeleteFolder(ctx context.Context, folder string) error
}

// StoredFile is an open stored file.
type StoredFile struct {
	io.ReadSeekCloser
	Size    int64
	ModTime time.Time
}

// CheckKey validates folder and file names by the store's one naming rule
// (naming.Check); names made with naming.Safe always pass.
func CheckKey(parts ...string) error {
	return naming.Check(parts...)
}

// LocalStore is a FileStore in a local directory.
type LocalStore struct {
	root string
}

// Modes of everything the store creates: recordings are private
// conversations, so only the recorder's own user may read them.
const (
	dirMode  os.FileMode = 0o700
	fileMode os.FileMode = 0o600
)

// NewLocalStore uses root (created if missing). Root is made owner-only
// even when it already existed; the spool of unfinished files lives in it.
func NewLocalStore(root string) (*LocalStore, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err = os.MkdirAll(abs, dirMode); err != nil {
		return nil, fmt.Errorf("failed to create file store directory: %w", err)
	}
	if err = os.Chmod(abs, dirMode); err != nil {
		return nil, fmt.Errorf("failed to make file store directory owner-only: %w", err)
	}
	return &LocalStore{root: abs}, nil
}

func (ls *LocalStore) path(folder, name string) (string, error) {
	if err := CheckKey(folder); err != nil {
		return "", err
	}
	if name == "" {
		return filepath.Join(ls.root, folder), nil
	}
	if err := CheckKey(name); err != nil {
		return "", err
	}
	return filepath.Join(ls.root, folder, name), nil
}

// Put implements FileStore: a hard link and unlink (a copy when the spool
// is on another file system). It never replaces a stored file: a name
// already taken fails with ErrExists and the local file stays where it is.
// The file is owner-only, and the folder (and, for a new folder, the
// store's root) is synced so the new name survives a crash.
func (ls *LocalStore) Put(_ context.Context, folder, name, localPath string) error {
	dst, err := ls.path(folder, name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(dst)
	_, statErr := os.Stat(dir)
	newFolder := errors.Is(statErr, os.ErrNotExist)
	if err = os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("failed to create folder: %w", err)
	}
	if err = os.Chmod(dir, dirMode); err != nil {
		return fmt.Errorf("failed to make folder owner-only: %w", err)
	}
	if err = os.Chmod(localPath, fileMode); err != nil {
		return fmt.Errorf("failed to make %s owner-only: %w", localPath, err)
	}
	err = os.Link(localPath, dst)
	if errors.Is(err, syscall.EXDEV) {
		err = copyFile(localPath, dst)
	}
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w: %s/%s", ErrExists, folder, name)
	}
	if err == nil {
		err = os.Remove(localPath)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err == nil && newFolder {
		err = syncDir(ls.root)
	}
	if err != nil {
		return fmt.Errorf("failed to store %s/%s: %w", folder, name, err)
	}
	return nil
}

// syncDir fsyncs a directory, making renames and new entries in it durable.
// A variable so tests can watch it.
var syncDir = func(dir string) error {
	d, err := os.Open(dir) //nolint:gosec // a folder of the store
	if err != nil {
		return err
	}
	err = d.Sync()
	if closeErr := d.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("failed to sync folder %s: %w", dir, err)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fileMode)
	if err != nil {
		return err
	}
	if _, err = io.Copy(out, in); err == nil {
		err = out.Sync()
	}
	if closeErr := out.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Link(tmp, dst) // fails if dst exists: never replace
	}
	_ = os.Remove(tmp)
	return err
}

// Replacer is a FileStore that can replace a stored file (the manifest of
// a recording that goes on after a restart or was repaired again).
type Replacer interface {
	Replace(ctx context.Context, folder, name, localPath string) error
}

// Replace implements Replacer: the local file takes name's place
// atomically (a rename; a copy when the spool is on another file system).
func (ls *LocalStore) Replace(_ context.Context, folder, name, localPath string) error {
	dst, err := ls.path(folder, name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(dst)
	if err = os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("failed to create folder: %w", err)
	}
	if err = os.Chmod(localPath, fileMode); err != nil {
		return fmt.Errorf("failed to make %s owner-only: %w", localPath, err)
	}
	err = os.Rename(localPath, dst)
	if errors.Is(err, syscall.EXDEV) {
		tmp := dst + ".new"
		_ = os.Remove(tmp)
		if err = copyFile(localPath, tmp); err == nil {
			err = os.Rename(tmp, dst)
		}
		if err == nil {
			err = os.Remove(localPath)
		}
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("failed to replace %s/%s: %w", folder, name, err)
	}
	return nil
}

// Reclaimer is a FileStore that lists a folder and gives a stored file
// back: recovery finds a file stored right before a crash, whose row was
// never saved, and takes it back to record it like any unstored file.
type Reclaimer interface {
	List(ctx context.Context, folder string) ([]string, error)
	Reclaim(ctx context.Context, folder, name, localPath string) error
}

// List implements Reclaimer: the regular files in folder (none if it does
// not exist).
func (ls *LocalStore) List(_ context.Context, folder string) ([]string, error) {
	p, err := ls.path(folder, "")
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to list %s: %w", folder, err)
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Reclaim implements Reclaimer: the stored file moves to localPath, which
// must not exist.
func (ls *LocalStore) Reclaim(_ context.Context, folder, name, localPath string) error {
	src, err := ls.path(folder, name)
	if err != nil {
		return err
	}
	err = os.Link(src, localPath)
	if errors.Is(err, syscall.EXDEV) {
		err = copyFile(src, localPath)
	}
	if err == nil {
		err = os.Remove(src)
	}
	if err == nil {
		err = syncDir(filepath.Dir(src))
	}
	if err != nil {
		return fmt.Errorf("failed to take back %s/%s: %w", folder, name, err)
	}
	return nil
}

// Open implements FileStore.
func (ls *LocalStore) Open(_ context.Context, folder, name string) (*StoredFile, error) {
	p, err := ls.path(folder, name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, folder, name)
	} else if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, folder, name)
	}
	return &StoredFile{ReadSeekCloser: f, Size: info.Size(), ModTime: info.ModTime()}, nil
}

// DeleteFolder implements FileStore.
func (ls *LocalStore) DeleteFolder(_ context.Context, folder string) error {
	p, err := ls.path(folder, "")
	if err != nil {
		return err
	}
	return os.RemoveAll(p)
}

// Delete removes one file of a folder; a missing file is no error. Only
// derived files (a mixdown being replaced) are ever deleted one by one.
func (ls *LocalStore) Delete(_ context.Context, folder, name string) error {
	p, err := ls.path(folder, name)
	if err != nil {
		return err
	}
	if err = os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to delete %s/%s: %w", folder, name, err)
	}
	return nil
}

// LocalPath is where a stored file is on disk (readers such as ffmpeg
// that need a path use it in place).
func (ls *LocalStore) LocalPath(folder, name string) (string, error) {
	return ls.path(folder, name)
}
