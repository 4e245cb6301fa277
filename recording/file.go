package recording

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// File is what a StreamWriter writes a recording to. *os.File implements it.
// WriteAt is used to patch the WebM Cues and Duration when a file is
// finalized.
type File interface {
	io.Writer
	io.WriterAt
	Sync() error
	Close() error
}

// CreateFunc creates a new file for writing. StreamConfig.Create defaults to
// CreateFile; tests inject failing files through it.
type CreateFunc func(path string) (File, error)

// CreateFile creates path exclusively (it must not exist), owner-only (0600).
func CreateFile(path string) (File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) //nolint:gosec // path built from naming.Safe
	if err != nil {
		return nil, fmt.Errorf("failed to create %s: %w", path, err)
	}

	return f, nil
}

// stickyFile wraps a File. After the first write error it stops writing and
// remembers the error; it never reports errors to its caller (ebml-go would
// otherwise treat them as fatal and stop its writer goroutine, blocking later
// writes forever). Callers check err() instead. Close is a no-op so that
// ebml-go cannot close the file; closeFile really closes it.
type stickyFile struct {
	f  File
	mu sync.Mutex
	e  error
	n  int64
}

func (s *stickyFile) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.e == nil {
		n, err := s.f.Write(p)
		s.n += int64(n)
		if err == nil && n < len(p) {
			err = io.ErrShortWrite
		}
		s.e = err
	}

	return len(p), nil
}

func (s *stickyFile) WriteAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.e == nil {
		n, err := s.f.WriteAt(p, off)
		if err == nil && n < len(p) {
			err = io.ErrShortWrite
		}
		s.e = err
	}

	return len(p), nil
}

func (*stickyFile) Close() error { return nil }

func (s *stickyFile) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()

	return s.e
}

func (s *stickyFile) size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()

	return s.n
}

// closeFile syncs and closes the underlying file and returns the first error
// seen on it.
func (s *stickyFile) closeFile() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.e == nil {
		s.e = s.f.Sync()
	}
	if err := s.f.Close(); s.e == nil {
		s.e = err
	}

	return s.e
}
