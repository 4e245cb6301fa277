package web

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Server runs a handler on its own listener with graceful shutdown.
type Server struct {
	addr string
	srv  *http.Server

	lock sync.Mutex
	ln   net.Listener
	done chan struct{}
}

// NewServer serves h on addr (host:port; port 0 picks a free one).
func NewServer(addr string, h http.Handler) *Server {
	return &Server{addr: addr, srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}}
}

// Start binds the listener (so a busy port is reported here) and serves in
// the background until Stop. Request contexts derive from ctx without its
// cancellation, so they carry its logger.
func (s *Server) Start(ctx context.Context) error {
	s.lock.Lock()
	defer s.lock.Unlock()
	if s.ln != nil {
		return errors.New("server already started")
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", s.addr, err)
	}
	base := context.WithoutCancel(ctx)
	s.srv.BaseContext = func(net.Listener) context.Context { return base }
	s.ln, s.done = ln, make(chan struct{})
	log := zerolog.Ctx(ctx)
	log.Info().Str("address", ln.Addr().String()).Msg("Operator API listening")
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Err(err).Msg("Operator API server failed")
		}
	}()
	return nil
}

// Addr is the bound address after Start.
func (s *Server) Addr() string {
	s.lock.Lock()
	defer s.lock.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Stop stops accepting connections and waits for running requests until
// ctx ends; then it closes the remaining connections.
func (s *Server) Stop(ctx context.Context) error {
	s.lock.Lock()
	done := s.done
	s.lock.Unlock()
	if done == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-done
	return err
}
