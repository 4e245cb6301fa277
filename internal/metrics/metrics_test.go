package metrics_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/matrix-recorder/recorder/internal/metrics"
)

func TestMetrics(t *testing.T) {
	m := metrics.New()
	m.ActiveCalls.Inc()
	m.TracksRecording.Add(3)
	m.BytesWritten.Add(1500)
	m.PacketsLost.Add(2)
	m.KeyframeRequests.Inc()
	m.WriteQueueHighWater.Set(40)
	m.WriteQueueDropped.Add(3)
	m.JoinToFirstPacket.Observe(0.7)
	m.SyncErrors.Inc()
	m.PeerStateChanged("", metrics.PeerStateNew)
	m.PeerStateChanged(metrics.PeerStateNew, metrics.PeerStateConnecting)
	m.PeerStateChanged(metrics.PeerStateConnecting, metrics.PeerStateConnected)
	m.PeerStateChanged("", metrics.PeerStateNew)
	m.PeerStateChanged(metrics.PeerStateNew, metrics.PeerStateClosed)

	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, w.Code)
	body, err := io.ReadAll(w.Body)
	require.NoError(t, err)
	for _, name := range []string{
		"recorder_active_calls 1", `recorder_peer_connections{state="connected"} 1`, `recorder_peer_connections{state="failed"} 0`,
		`recorder_peer_connections{state="new"} 0`, `recorder_peer_connections{state="connecting"} 0`,
		"recorder_tracks_recording 3", "recorder_bytes_written_total 1500", "recorder_packets_lost_total 2",
		"recorder_keyframe_requests_total 1", "recorder_write_queue_high_water_packets 40", "recorder_write_queue_dropped_packets_total 3",
		"recorder_join_to_first_packet_seconds_count 1", "recorder_sync_errors_total 1",
		"go_goroutines", "process_cpu_seconds_total",
	} {
		require.True(t, strings.Contains(string(body), name), "exposition has %s", name)
	}

	for _, absent := range []string{`recorder_peer_connections{state="closed"}`, `recorder_peer_connections{state="new"} 1`} {
		require.NotContains(t, string(body), absent)
	}

	// Independent registries: a second Metrics starts from zero.
	w = httptest.NewRecorder()
	metrics.New().Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Contains(t, w.Body.String(), "recorder_active_calls 0")
}
