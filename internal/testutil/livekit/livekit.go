// Package livekit runs a real LiveKit SFU and an authorization service
// stand-in for the MatrixRTC integration tests, and simulated MatrixRTC
// participants that publish the test media.
//
// The server binary comes from .tools/bin (scripts/livekit.sh install, or
// make tools) and its config is written by `scripts/livekit.sh config`. It
// runs with --dev (API key devkey, secret secret) on 127.0.0.1 only: HTTP
// and WebSocket on a free TCP port, ICE on a free UDP port, no TCP, no STUN.
package livekit

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matrix-recorder/recorder/internal/testutil"
)

// Development keys of `livekit-server --dev`.
const (
	APIKey    = "devkey"
	APISecret = "secret"
)

// StartTimeout bounds how long Start waits for the server to answer.
const StartTimeout = 30 * time.Second

// Server is a running livekit-server.
type Server struct {
	// URL is the WebSocket URL clients connect to (ws://127.0.0.1:PORT).
	URL string
	// HTTPURL is the same server's HTTP URL (Twirp API).
	HTTPURL string
	Dir     string
	cmd     *exec.Cmd
	done    chan struct{}
}

// Start starts a LiveKit server for the test and stops it (by its pid) when
// the test ends. It fails the test if the server is not installed.
func Start(t testing.TB) *Server {
	t.Helper()
	root := testutil.ModuleRoot(t)
	binary := filepath.Join(root, ".tools", "bin", "livekit-server")
	if _, err := os.Stat(binary); err != nil {
		t.Fatalf("livekit: livekit-server is not installed at %s (%v): run `make tools` or `scripts/livekit.sh install`", binary, err)
	}
	s := &Server{Dir: t.TempDir(), done: make(chan struct{})}
	port, err := testutil.FreePort()
	if err != nil {
		t.Fatalf("livekit: %v", err)
	}
	udp, err := freeUDPPort()
	if err != nil {
		t.Fatalf("livekit: %v", err)
	}
	out, err := exec.Command("bash", filepath.Join(root, "scripts", "livekit.sh"), "config", s.Dir, strconv.Itoa(port), strconv.Itoa(udp)).CombinedOutput()
	if err != nil {
		t.Fatalf("livekit: scripts/livekit.sh config failed: %v\n%s", err, out)
	}
	logPath := filepath.Join(s.Dir, "livekit.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("livekit: %v", err)
	}
	s.cmd = exec.Command(binary, "--dev", "--config", filepath.Join(s.Dir, "livekit.yaml"))
	s.cmd.Dir = s.Dir
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err = s.cmd.Start(); err != nil {
		_ = logFile.Close()
		t.Fatalf("livekit: failed to start %s: %v", binary, err)
	}
	go func() {
		_ = s.cmd.Wait()
		_ = logFile.Close()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			if data, err := os.ReadFile(logPath); err == nil {
				if len(data) > 6000 {
					data = data[len(data)-6000:]
				}
				t.Logf("livekit: tail of %s:\n%s", logPath, data)
			}
		}
	})
	s.HTTPURL = "http://127.0.0.1:" + strconv.Itoa(port)
	s.URL = "ws://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(StartTimeout)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(s.HTTPURL)
		if err == nil {
			_ = resp.Body.Close()
			return s
		}
		select {
		case <-s.done:
			t.Fatalf("livekit: server exited during startup (log %s)", logPath)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("livekit: server did not answer %s within %s", s.HTTPURL, StartTimeout)
		}
	}
}

// stop sends SIGTERM to the server's pid, then SIGKILL after 10 s.
func (s *Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("failed to find a free UDP port: %w", err)
	}
	defer c.Close()
	_, port, _ := strings.Cut(c.LocalAddr().String(), ":")
	return strconv.Atoi(port)
}
