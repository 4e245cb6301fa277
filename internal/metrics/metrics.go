// Package metrics owns the recorder's Prometheus registry and the typed
// collectors the other packages update. It only defines and exposes them:
// the packages that know when a call starts, a packet is lost or a sync
// fails increment them (see the field docs for who is meant to).
//
// Everything is registered on a private *prometheus.Registry (never the
// global default one), so tests can build as many independent Metrics as
// they like and /metrics shows exactly these series plus the Go runtime and
// process collectors.
package metrics

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every metric name.
const Namespace = "recorder"

// Peer connection states, as pion's webrtc.PeerConnectionState.String()
// spells them. They are the values of the peer_connections "state" label.
const (
	PeerStateNew          = "new"
	PeerStateConnecting   = "connecting"
	PeerStateConnected    = "connected"
	PeerStateDisconnected = "disconnected"
	PeerStateFailed       = "failed"
	PeerStateClosed       = "closed"
)

// peerStates are pre-created so every state shows up as 0 before it is used.
var peerStates = []string{PeerStateNew, PeerStateConnecting, PeerStateConnected, PeerStateDisconnected, PeerStateFailed}

// Metrics is the registry and every collector of the recorder.
// The zero value is not usable; build it with New. A nil *Metrics is not
// usable either: packages that treat metrics as optional should hold a
// Metrics from New (they cost nothing when nobody scrapes them).
type Metrics struct {
	// Registry holds every collector below plus the Go and process collectors.
	Registry *prometheus.Registry

	// ActiveCalls is the number of calls being recorded (callbot: +1 on join, -1 on leave).
	ActiveCalls prometheus.Gauge
	// PeerConnections counts peer connections by state (label "state");
	// use PeerStateChanged to move one between states.
	PeerConnections *prometheus.GaugeVec
	// TracksRecording is the number of remote tracks being written (archive).
	TracksRecording prometheus.Gauge
	// BytesWritten counts bytes of media written to recording files (archive).
	BytesWritten prometheus.Counter
	// PacketsReceived and BytesReceived count the RTP packets (and their
	// payload bytes) handed to the writers (archive, every 256 packets of a
	// track and when a stream ends): with PacketsLost and BytesWritten, what the recorder lost or
	// added on its way to disk.
	PacketsReceived prometheus.Counter
	BytesReceived   prometheus.Counter
	// PacketsLost counts RTP packets given up by the jitter buffers (archive, from recording.Stats).
	PacketsLost prometheus.Counter
	// FramesWritten counts audio packets and video frames written to files (archive).
	FramesWritten prometheus.Counter
	// FramesUndecryptable counts end-to-end encrypted frames that did not
	// decrypt and were skipped (archive, from recording.Stats).
	FramesUndecryptable prometheus.Counter
	// KeyframeRequests counts PLIs/FIRs sent to participants (callbot/archive).
	KeyframeRequests prometheus.Counter
	// WriteQueueHighWater is the most packets any stream's write queue
	// has held since the start: how far a writer fell behind its tracks
	// (archive).
	WriteQueueHighWater prometheus.Gauge
	// WriteQueueDropped counts RTP packets (and RTCP sender reports)
	// dropped because a stream's write queue was full (its writer fell
	// too far behind) (archive).
	WriteQueueDropped prometheus.Counter
	// JoinToFirstPacket observes the seconds from joining a call to the
	// first media packet of the first track (callbot).
	JoinToFirstPacket prometheus.Histogram
	// SyncErrors counts failed /sync (or transaction) rounds of the virtual users (appservice).
	SyncErrors prometheus.Counter
	// Panics counts panics contained to one unit of work, by component
	// ("track", "stream", "handler", "sender"): each is a bug, logged with
	// its stack; the rest of the recorder goes on.
	Panics *prometheus.CounterVec
	// LimitsHit counts what participants sent beyond a limit (label
	// "limit": max_peers_per_call, max_tracks_per_peer, ...) (callbot).
	LimitsHit *prometheus.CounterVec

	// HTTPRequests counts operator API requests by route pattern, method and status code (web).
	HTTPRequests *prometheus.CounterVec
	// HTTPDuration observes operator API request durations in seconds by route pattern and method (web).
	HTTPDuration *prometheus.HistogramVec

	handlerOnce sync.Once
	handler     http.Handler
}

// New builds a Metrics with a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		ActiveCalls: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "active_calls",
			Help: "Calls the recorder is in and recording.",
		}),
		PeerConnections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "peer_connections",
			Help: "WebRTC peer connections to call participants, by connection state.",
		}, []string{"state"}),
		TracksRecording: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "tracks_recording",
			Help: "Remote media tracks being written to files.",
		}),
		BytesWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "bytes_written_total",
			Help: "Bytes of media written to recording files.",
		}),
		PacketsReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "packets_received_total",
			Help: "RTP packets handed to the recording writers (added every 256 packets of a track).",
		}),
		BytesReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "bytes_received_total",
			Help: "RTP payload bytes handed to the recording writers (added every 256 packets of a track).",
		}),
		PacketsLost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "packets_lost_total",
			Help: "RTP packets that never arrived in time and were given up.",
		}),
		FramesWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "frames_written_total",
			Help: "Audio packets and video frames written to recording files.",
		}),
		FramesUndecryptable: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "frames_undecryptable_total",
			Help: "End-to-end encrypted media frames that could not be decrypted (no key, wrong key) and were skipped.",
		}),
		KeyframeRequests: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "keyframe_requests_total",
			Help: "Keyframe requests (PLI/FIR) sent to participants.",
		}),
		WriteQueueHighWater: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "write_queue_high_water_packets",
			Help: "Most RTP packets any stream's write queue has held since the start.",
		}),
		WriteQueueDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "write_queue_dropped_packets_total",
			Help: "RTP packets and sender reports dropped because a stream's write queue was full.",
		}),
		JoinToFirstPacket: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "join_to_first_packet_seconds",
			Help:    "Time from joining a call to receiving its first media packet.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60},
		}),
		SyncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "sync_errors_total",
			Help: "Failed sync rounds with the homeserver.",
		}),
		Panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "panics_total",
			Help: "Panics contained to one track, stream or handler (each is a bug).",
		}, []string{"component"}),
		LimitsHit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "limits_hit_total",
			Help: "Things participants sent beyond a limit (not recorded), by limit.",
		}, []string{"limit"}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "http", Name: "requests_total",
			Help: "Operator API requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Operator API request durations by route and method.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method"}),
	}
	for _, st := range peerStates {
		m.PeerConnections.WithLabelValues(st)
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.ActiveCalls, m.PeerConnections, m.TracksRecording, m.BytesWritten, m.PacketsLost, m.FramesWritten, m.FramesUndecryptable,
		m.KeyframeRequests, m.WriteQueueHighWater, m.WriteQueueDropped, m.JoinToFirstPacket, m.SyncErrors, m.Panics, m.LimitsHit, m.HTTPRequests, m.HTTPDuration,
	)
	m.Registry.MustRegister(m.PacketsReceived, m.BytesReceived)
	return m
}

// PeerStateChanged moves one peer connection from one state to another.
// Pass "" as from for a new connection; a transition to "closed" only
// removes it from its old state (closed connections are not kept).
func (m *Metrics) PeerStateChanged(from, to string) {
	if from == to {
		return
	}
	if from != "" && from != PeerStateClosed {
		m.PeerConnections.WithLabelValues(from).Dec()
	}
	if to != "" && to != PeerStateClosed {
		m.PeerConnections.WithLabelValues(to).Inc()
	}
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	m.handlerOnce.Do(func() {
		m.handler = promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
	})
	return m.handler
}
