// Package config holds the recorder's configuration: the YAML schema, the embedded
// example, environment overrides and validation.
package config

import (
	_ "embed"
	"fmt"
	"net"
	"time"
)

// ExampleConfig is the commented example configuration written by `recorder -e`.
//
//go:embed example-config.yaml
var ExampleConfig string

// EnvPrefix is the prefix of environment variables that override config keys:
// RECORDER_HOMESERVER__ADDRESS overrides homeserver.address.
const EnvPrefix = "RECORDER_"

// Config is the whole recorder configuration.
type Config struct {
	Homeserver  HomeserverConfig `yaml:"homeserver"`
	Appservice  AppserviceConfig `yaml:"appservice"`
	Database    DatabaseConfig   `yaml:"database"`
	Recordings  RecordingsConfig `yaml:"recordings"`
	Recording   RecordingConfig  `yaml:"recording"`
	API         APIConfig        `yaml:"api"`
	Permissions Permissions      `yaml:"permissions"`
	Commands    CommandsConfig   `yaml:"commands"`
	WebRTC      WebRTCConfig     `yaml:"webrtc"`
	Limits      LimitsConfig     `yaml:"limits"`
	MatrixRTC   MatrixRTCConfig  `yaml:"matrixrtc"`
	Logging     LoggingConfig    `yaml:"logging"`
	Mixdown     MixdownConfig    `yaml:"mixdown"`
	Webhooks    []WebhookConfig  `yaml:"webhooks"`
}

// MixdownConfig configures the one-file-per-recording mixdown.
type MixdownConfig struct {
	// Enabled mixes every recording down when it ends.
	Enabled bool `yaml:"enabled"`
	// Concurrency is how many mixdowns run at once.
	Concurrency int `yaml:"concurrency"`
}

// WebhookConfig is one receiver of recording events.
type WebhookConfig struct {
	URL    string `yaml:"url"`
	Secret string `yaml:"secret"` // HMAC-SHA256 key of the signature
}

// HomeserverConfig says where the homeserver is.
type HomeserverConfig struct {
	Address string `yaml:"address"` // client-server API base URL
	Domain  string `yaml:"domain"`  // server_name, the part after ':' in user IDs
}

// AppserviceConfig is the appservice side of the registration.
type AppserviceConfig struct {
	Address    string    `yaml:"address"`  // URL the homeserver pushes transactions to
	Hostname   string    `yaml:"hostname"` // address the appservice listener binds
	Port       int       `yaml:"port"`
	ID         string    `yaml:"id"`
	Bot        BotConfig `yaml:"bot"`
	UserPrefix string    `yaml:"user_prefix"` // virtual users are @<user_prefix><n>:<domain>
	ASToken    string    `yaml:"as_token"`
	HSToken    string    `yaml:"hs_token"`
	// QueryTokenAuth also accepts the hs_token as ?access_token= (the
	// legacy way, before Matrix 1.4); by default only the Authorization
	// header counts, so the token stays out of access logs.
	QueryTokenAuth bool `yaml:"query_token_auth"`
	// ReadyUsers is how many virtual users of each kind (mesh, MatrixRTC)
	// are set up at start-up: registered, a device with its keys on the
	// homeserver, syncing. That many calls starting together do not wait
	// for it. A user set up once keeps its device across restarts.
	ReadyUsers int `yaml:"ready_users"`
}

// BotConfig is the bot user's identity.
type BotConfig struct {
	Username    string `yaml:"username"`
	Displayname string `yaml:"displayname"`
	Avatar      string `yaml:"avatar"` // mxc:// URI, "remove" to clear, empty to leave as is
}

// DatabaseConfig selects the SQL backend.
type DatabaseConfig struct {
	Type         string `yaml:"type"` // sqlite3-fk-wal or postgres
	URI          string `yaml:"uri"`
	MaxOpenConns int    `yaml:"max_open_conns"`
	MaxIdleConns int    `yaml:"max_idle_conns"`
}

// RecordingsConfig says where recordings go.
type RecordingsConfig struct {
	Path string `yaml:"path"`
	// MaxRecordingSizeMB stops a recording whose files reach this size
	// (MiB; 0 = no limit).
	MaxRecordingSizeMB int64 `yaml:"max_recording_size_mb"`
	// MaxDiskUsageMB stops recording when everything under Path reaches
	// this size (MiB; 0 = no limit); no new call is recorded until space
	// is freed.
	MaxDiskUsageMB int64 `yaml:"max_disk_usage_mb"`
	// Retention deletes recordings older than this many days; 0 keeps
	// them.
	Retention int `yaml:"retention"`
}

// RecordingConfig is how a recording behaves in the room: announcements,
// consent and when it stops by itself.
type RecordingConfig struct {
	// Announce posts a notice when recording starts and stops (default on).
	Announce bool `yaml:"announce"`
	// RequireConsent records only participants who said `!rec consent` in
	// the room; the others' streams are not written.
	RequireConsent bool `yaml:"require_consent"`
	// EmptyTimeout stops a recording when the recorder has been alone in
	// the call for this long.
	EmptyTimeout time.Duration `yaml:"empty_timeout"`
	// NoMediaTimeout stops a recording when no media arrived from anyone
	// for this long.
	NoMediaTimeout time.Duration `yaml:"no_media_timeout"`
	// MaxDuration stops a recording this long after it started (0: never).
	MaxDuration time.Duration `yaml:"max_duration"`
}

// APIConfig is the operator HTTP API.
type APIConfig struct {
	Listen string `yaml:"listen"` // host:port; empty disables the API
	// PublicURL is the base URL users reach the API and page at (e.g.
	// https://recorder.example.com): `!rec list`, the stop notice and
	// webhooks link recordings to it; empty: no links.
	PublicURL string   `yaml:"public_url"`
	Tokens    []string `yaml:"tokens"` // bearer tokens accepted by the API
	// ProtectMetrics requires a token on /metrics too (the default).
	ProtectMetrics bool `yaml:"protect_metrics"`
	// AllowedHosts are the host names clients may reach the API by (the
	// Host header), against DNS rebinding. IP literals, localhost and the
	// host of Listen are always allowed; "*" allows any name.
	AllowedHosts []string `yaml:"allowed_hosts"`
	// TrustedProxies are CIDR prefixes of reverse proxies whose
	// X-Forwarded-For gives the client address in the request log.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Pprof serves Go's CPU, heap and goroutine profiles under
	// /debug/pprof/ on this listener, behind the token.
	Pprof bool `yaml:"pprof"`
}

// HostNames are the host names the API answers to: AllowedHosts and the
// host of Listen when it is a name (IP literals and localhost need no entry).
func (ac APIConfig) HostNames() []string {
	names := append([]string(nil), ac.AllowedHosts...)
	if host, _, err := net.SplitHostPort(ac.Listen); err == nil && host != "" && net.ParseIP(host) == nil {
		names = append(names, host)
	}
	return names
}

// CommandsConfig configures chat commands.
type CommandsConfig struct {
	Prefix string `yaml:"prefix"`
	// MinPowerLevel is the lowest room power level that may start and stop
	// recordings and change auto-record, on top of the level the room
	// requires to start a call (org.matrix.msc3401.call); config admins
	// need neither.
	MinPowerLevel int `yaml:"min_power_level"`
	// MembersStopOperatorRecordings lets room members who may stop
	// recordings also stop one the operator started through the API; by
	// default only config admins (and the API) may.
	MembersStopOperatorRecordings bool `yaml:"members_stop_operator_recordings"`
}

// WebRTCConfig configures the call bot's peer connections.
type WebRTCConfig struct {
	UDPPortMin uint16   `yaml:"udp_port_min"` // ephemeral ICE port range; 0 = any
	UDPPortMax uint16   `yaml:"udp_port_max"`
	UDPMuxPort int      `yaml:"udp_mux_port"` // one UDP port for every peer connection; 0 = off
	NAT1To1IPs []string `yaml:"nat_1to1_ips"` // public addresses to announce as host candidates
	Interfaces []string `yaml:"interfaces"`   // only gather candidates on these interfaces; empty = all
	// LoopbackOnly gathers 127.0.0.1 candidates only (tests and demos on one
	// machine); peers on loopback are then allowed too.
	LoopbackOnly bool `yaml:"loopback_only"`
	// PeerNetworks are networks (CIDR) whose addresses a peer's ICE
	// candidates may name besides public unicast addresses. Empty: public
	// addresses only, so a room member cannot make the recorder send
	// STUN to internal services (127.0.0.1:6379, 169.254.169.254, RFC 1918).
	PeerNetworks []string `yaml:"peer_networks"`
	// TURN asks the homeserver for TURN servers (/voip/turnServer).
	TURN bool `yaml:"turn"`
}

// LimitsConfig bounds what participants can make the recorder hold, so no
// room can take resources from the others. 0 means no limit.
type LimitsConfig struct {
	MaxCalls         int `yaml:"max_calls"`           // calls recorded at once
	MaxPeersPerCall  int `yaml:"max_peers_per_call"`  // peer connections in one call
	MaxTracksPerPeer int `yaml:"max_tracks_per_peer"` // tracks recorded from one peer
}

// MatrixRTCConfig configures recording MatrixRTC calls on LiveKit SFUs.
type MatrixRTCConfig struct {
	// AllowedHosts, when not empty, are the only hosts (name or name:port) of
	// authorization services and SFUs the recorder connects to; empty = any
	// focus a call's memberships name.
	AllowedHosts []string `yaml:"allowed_hosts"`
}

// LoggingConfig configures the zerolog logger.
type LoggingConfig struct {
	MinLevel string `yaml:"min_level"` // trace, debug, info, warn, error
	Format   string `yaml:"format"`    // pretty or json
}

// PermissionLevel is what a user may do with the bot.
type PermissionLevel string

// Permission levels, lowest first.
const (
	PermissionNone  PermissionLevel = ""
	PermissionBlock PermissionLevel = "block"
	PermissionUser  PermissionLevel = "user"
	PermissionAdmin PermissionLevel = "admin"
)

// Rank orders permission levels; unknown levels rank as none.
func (pl PermissionLevel) Rank() int {
	switch pl {
	case PermissionUser:
		return 2
	case PermissionAdmin:
		return 3
	default:
		return 0
	}
}

// Defaults used when a key is absent.
const (
	DefaultCommandPrefix = "!rec"
	DefaultDatabaseType  = "sqlite3-fk-wal"
	DefaultDatabaseURI   = "file:recorder.db?_txlock=immediate"
	DefaultUserPrefix    = "recorder_"
	ShutdownTimeout      = 10 * time.Second

	DefaultEmptyTimeout   = 30 * time.Second
	DefaultNoMediaTimeout = 5 * time.Minute
	DefaultMaxDuration    = 4 * time.Hour
)

// Default returns a config with every default filled in; Load decodes over it.
func Default() *Config {
	return &Config{
		Appservice: AppserviceConfig{
			Hostname:   "127.0.0.1",
			Port:       29330,
			ID:         "recorder",
			UserPrefix: DefaultUserPrefix,
			Bot:        BotConfig{Username: "recorder", Displayname: "Call recorder"},
			ReadyUsers: 2,
		},
		Database:   DatabaseConfig{Type: DefaultDatabaseType, URI: DefaultDatabaseURI, MaxOpenConns: 5, MaxIdleConns: 2},
		Recordings: RecordingsConfig{Path: "recordings"},
		Recording: RecordingConfig{Announce: true, EmptyTimeout: DefaultEmptyTimeout,
			NoMediaTimeout: DefaultNoMediaTimeout, MaxDuration: DefaultMaxDuration},
		API:      APIConfig{Listen: "127.0.0.1:29331", ProtectMetrics: true},
		Commands: CommandsConfig{Prefix: DefaultCommandPrefix},
		WebRTC:   WebRTCConfig{TURN: true},
		Limits:   LimitsConfig{MaxCalls: 50, MaxPeersPerCall: 32, MaxTracksPerPeer: 8},
		Logging:  LoggingConfig{MinLevel: "info", Format: "pretty"},
		Mixdown:  MixdownConfig{Enabled: true, Concurrency: 1},
	}
}

// FieldError is a validation failure of one config key.
type FieldError struct {
	Key    string
	Reason string
}

func (fe *FieldError) Error() string {
	return fmt.Sprintf("config key %s: %s", fe.Key, fe.Reason)
}
