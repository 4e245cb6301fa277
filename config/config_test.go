package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const validYAML = `
homeserver:
  address: http://127.0.0.1:8008
  domain: localhost
appservice:
  address: http://127.0.0.1:29330
  as_token: astoken
  hs_token: hstoken
permissions:
  "*": user
api:
  tokens: [abcdefghijklmnopqrstuvwxyz]
`

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	return path
}

func TestLoadValid(t *testing.T) {
	cfg, err := Load(writeConfig(t, validYAML), nil)
	require.NoError(t, err)
	require.NoError(t, cfg.Validate(true))
	require.Equal(t, "!rec", cfg.Commands.Prefix)
	require.Equal(t, "sqlite3-fk-wal", cfg.Database.Type)
	require.Equal(t, "recorder", cfg.Appservice.Bot.Username)
	require.Zero(t, cfg.Recordings.Retention, "retention is off by default")
	require.True(t, cfg.Mixdown.Enabled)
	require.Equal(t, 1, cfg.Mixdown.Concurrency)
	require.Empty(t, cfg.Webhooks)
}

func TestExampleConfigParsesButIsRefused(t *testing.T) {
	cfg := Default()
	require.NoError(t, Parse([]byte(ExampleConfig), cfg))
	err := cfg.Validate(true)
	require.Error(t, err)
	for _, key := range []string{"homeserver.domain", "homeserver.address", "appservice.as_token", "permissions.example.com"} {
		require.Contains(t, err.Error(), "config key "+key+":")
	}
}

func TestLoadErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		env     []string
		wantKey string
	}{
		{"unknown top-level key", validYAML + "bogus: 1\n", nil, "bogus"},
		{"unknown nested key", strings.Replace(validYAML, "  domain: localhost", "  domain: localhost\n  domian: x", 1), nil, "homeserver.domian"},
		{"bad env int", validYAML, []string{"RECORDER_APPSERVICE__PORT=eighty"}, "RECORDER_APPSERVICE__PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, tt.yaml), tt.env)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.wantKey)
		})
	}
}

func TestValidateErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Config)
		wantKey string
	}{
		{"missing homeserver address", func(c *Config) { c.Homeserver.Address = "" }, "homeserver.address"},
		{"missing domain", func(c *Config) { c.Homeserver.Domain = "" }, "homeserver.domain"},
		{"placeholder domain", func(c *Config) { c.Homeserver.Domain = "example.org" }, "homeserver.domain"},
		{"placeholder address", func(c *Config) { c.Homeserver.Address = "https://matrix.example.com" }, "homeserver.address"},
		{"missing as token", func(c *Config) { c.Appservice.ASToken = "" }, "appservice.as_token"},
		{"placeholder hs token", func(c *Config) { c.Appservice.HSToken = TokenPlaceholder }, "appservice.hs_token"},
		{"bad db type", func(c *Config) { c.Database.Type = "sqlite3" }, "database.type"},
		{"bad bot username", func(c *Config) { c.Appservice.Bot.Username = "Bad User" }, "appservice.bot.username"},
		{"bot inside prefix", func(c *Config) { c.Appservice.Bot.Username = "recorder_bot" }, "appservice.bot.username"},
		{"no permissions", func(c *Config) { c.Permissions = nil }, "permissions"},
		{"bad level", func(c *Config) { c.Permissions = map[string]PermissionLevel{"*": "root"} }, "permissions.*"},
		{"short api token", func(c *Config) { c.API.Tokens = []string{"short"} }, "api.tokens"},
		{"api without tokens", func(c *Config) { c.API.Tokens = nil }, "api.tokens"},
		{"bad proxy prefix", func(c *Config) { c.API.TrustedProxies = []string{"10.0.0.0/33"} }, "api.trusted_proxies"},
		{"bad port", func(c *Config) { c.Appservice.Port = 0 }, "appservice.port"},
		{"bad log level", func(c *Config) { c.Logging.MinLevel = "loud" }, "logging.min_level"},
		{"negative retention", func(c *Config) { c.Recordings.Retention = -1 }, "recordings.retention"},
		{"no mixdown worker", func(c *Config) { c.Mixdown.Concurrency = 0 }, "mixdown.concurrency"},
		{"public url without scheme", func(c *Config) { c.API.PublicURL = "recorder.example.org" }, "api.public_url"},
		{"webhook url", func(c *Config) { c.Webhooks = []WebhookConfig{{URL: "ftp://x", Secret: "0123456789abcdef"}} }, "webhooks[0].url"},
		{"webhook secret", func(c *Config) { c.Webhooks = []WebhookConfig{{URL: "https://x.test/h", Secret: "short"}} }, "webhooks[0].secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(writeConfig(t, validYAML), nil)
			require.NoError(t, err)
			tt.edit(cfg)
			err = cfg.Validate(true)
			require.Error(t, err)
			require.Contains(t, err.Error(), "config key "+tt.wantKey+":")
		})
	}
}

func TestEnvOverridesWin(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte("from-file-token\n"), 0o600))
	cfg, err := Load(writeConfig(t, validYAML), []string{
		"RECORDER_HOMESERVER__ADDRESS=http://127.0.0.1:9999",
		"RECORDER_APPSERVICE__PORT=12345",
		"RECORDER_APPSERVICE__BOT__DISPLAYNAME=Env Bot",
		"RECORDER_APPSERVICE__AS_TOKEN_FILE=" + secret,
		"RECORDER_API__TOKENS=tok-aaaaaaaaaaaaaaaa, tok-bbbbbbbbbbbbbbbb",
		"RECORDER_PERMISSIONS=*=block,@boss:localhost=admin",
		"RECORDER_WEBRTC__UDP_PORT_MIN=40000",
		"RECORDER_WEBRTC__UDP_PORT_MAX=40100",
		"RECORDER_WEBRTC__LOOPBACK_ONLY=true",
		"UNRELATED=1",
	})
	require.NoError(t, err)
	require.Equal(t, "http://127.0.0.1:9999", cfg.Homeserver.Address)
	require.Equal(t, 12345, cfg.Appservice.Port)
	require.Equal(t, "Env Bot", cfg.Appservice.Bot.Displayname)
	require.Equal(t, "from-file-token", cfg.Appservice.ASToken)
	require.Equal(t, []string{"tok-aaaaaaaaaaaaaaaa", "tok-bbbbbbbbbbbbbbbb"}, cfg.API.Tokens)
	require.Equal(t, PermissionAdmin, cfg.PermissionOf("@boss:localhost"))
	require.Equal(t, PermissionBlock, cfg.PermissionOf("@other:localhost"))
	require.Equal(t, uint16(40000), cfg.WebRTC.UDPPortMin)
	require.True(t, cfg.WebRTC.LoopbackOnly)
	require.NoError(t, cfg.Validate(true))
}

func TestEnvOnlyWithoutFile(t *testing.T) {
	cfg, err := Load(filepath.Join(t.TempDir(), "absent.yaml"), []string{"RECORDER_HOMESERVER__DOMAIN=localhost"})
	require.NoError(t, err)
	require.Equal(t, "localhost", cfg.Homeserver.Domain)
	_, err = Load(filepath.Join(t.TempDir(), "absent.yaml"), nil)
	require.Error(t, err)
}

func TestPermissionLookupOrder(t *testing.T) {
	cfg := &Config{Permissions: map[string]PermissionLevel{
		"*": PermissionBlock, "good.org": PermissionUser, "@root:good.org": PermissionAdmin,
	}}
	require.Equal(t, PermissionAdmin, cfg.PermissionOf("@root:good.org"))
	require.Equal(t, PermissionUser, cfg.PermissionOf("@alice:good.org"))
	require.Equal(t, PermissionBlock, cfg.PermissionOf("@eve:evil.org"))
}

func TestSaveTokensKeepsComments(t *testing.T) {
	path := writeConfig(t, ExampleConfig)
	require.NoError(t, SaveTokens(path, "new-as", "new-hs"))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(data), "# Where the homeserver is.")
	cfg := Default()
	require.NoError(t, Parse(data, cfg))
	require.Equal(t, "new-as", cfg.Appservice.ASToken)
	require.Equal(t, "new-hs", cfg.Appservice.HSToken)
	require.Equal(t, "example.com", cfg.Homeserver.Domain)
}

// kubernetesEnv is what Kubernetes injects into every pod of a namespace
// that has a Service named "recorder" (docker links style variables).
var kubernetesEnv = []string{
	"RECORDER_PORT=tcp://10.0.0.7:29331",
	"RECORDER_PORT_29331_TCP=tcp://10.0.0.7:29331",
	"RECORDER_PORT_29331_TCP_ADDR=10.0.0.7",
	"RECORDER_PORT_29331_TCP_PORT=29331",
	"RECORDER_PORT_29331_TCP_PROTO=tcp",
	"RECORDER_SERVICE_HOST=10.0.0.7",
	"RECORDER_SERVICE_PORT=29331",
	"RECORDER_SERVICE_PORT_API=29331",
}

func TestKubernetesServiceEnvIsNotFatal(t *testing.T) {
	env := append([]string{"RECORDER_APPSERVICE__PORT=12345"}, kubernetesEnv...)
	cfg, err := Load(writeConfig(t, validYAML), env)
	require.NoError(t, err)
	require.Equal(t, 12345, cfg.Appservice.Port, "known keys still apply")
	require.NoError(t, cfg.Validate(true))

	// A bad value for a key that exists is still an error.
	_, err = Load(writeConfig(t, validYAML), append(env, "RECORDER_APPSERVICE__PORT=eighty"))
	require.ErrorIs(t, err, ErrBadEnv)
	// Unknown keys in the file are still an error.
	_, err = Load(writeConfig(t, validYAML+"port: 1\n"), kubernetesEnv)
	require.ErrorIs(t, err, ErrUnknownKey)
	// Kubernetes variables alone do not stand in for a missing config file.
	_, err = Load(filepath.Join(t.TempDir(), "absent.yaml"), kubernetesEnv)
	require.Error(t, err)
}

func TestUnknownEnvIsWarnedWithSuggestion(t *testing.T) {
	env := append([]string{
		"RECORDER_HOMESERVER__ADRESS=x",
		"RECORDER_HOMESERVER_DOMAIN=x",
		"RECORDER_APPSERVICE__AS_TOKN_FILE=/nonexistent",
	}, kubernetesEnv...)
	cfg, warnings, err := LoadWithWarnings(writeConfig(t, validYAML), env)
	require.NoError(t, err)
	require.Equal(t, "localhost", cfg.Homeserver.Domain, "a near miss is not applied")
	got := map[string]string{}
	for _, w := range warnings {
		got[w.Name] = w.DidYouMean
		require.NotContains(t, w.String(), "10.0.0.7", "values are never kept")
	}
	require.Equal(t, "RECORDER_HOMESERVER__ADDRESS", got["RECORDER_HOMESERVER__ADRESS"])
	require.Equal(t, "RECORDER_HOMESERVER__DOMAIN", got["RECORDER_HOMESERVER_DOMAIN"])
	require.Equal(t, "RECORDER_APPSERVICE__AS_TOKEN_FILE", got["RECORDER_APPSERVICE__AS_TOKN_FILE"])
	for _, kv := range kubernetesEnv {
		name, _, _ := strings.Cut(kv, "=")
		suggestion, ok := got[name]
		require.True(t, ok, "%s is warned about", name)
		require.Empty(t, suggestion, "%s is no near miss", name)
	}
	require.Len(t, warnings, len(env))
}

// TestSaveTokensOwnerOnlyAndAtomic: the config holds the appservice tokens
// once -g wrote them: it is replaced in one rename (never half written) and
// is owner-only even when the file it replaces was not.
func TestSaveTokensOwnerOnlyAndAtomic(t *testing.T) {
	path := writeConfig(t, ExampleConfig)
	require.NoError(t, os.Chmod(path, 0o644))
	before, err := os.Stat(path)
	require.NoError(t, err)
	require.NoError(t, SaveTokens(path, "new-as", "new-hs"))
	after, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), after.Mode().Perm())
	require.False(t, os.SameFile(before, after), "replaced by a rename, not rewritten in place")
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left behind")

	fresh := filepath.Join(t.TempDir(), "new.yaml")
	require.NoError(t, SaveTokens(fresh, "a", "b"))
	info, err := os.Stat(fresh)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}

func TestAPIDefaultsAndHostNames(t *testing.T) {
	cfg, err := Load(writeConfig(t, validYAML), nil)
	require.NoError(t, err)
	require.True(t, cfg.API.ProtectMetrics, "/metrics needs a token by default")
	require.False(t, cfg.Appservice.QueryTokenAuth, "hs_token only in the Authorization header by default")
	require.Empty(t, cfg.API.HostNames(), "an IP listen address needs no name")

	cfg, err = Load(writeConfig(t, validYAML), []string{
		"RECORDER_API__LISTEN=recorder.internal:29331",
		"RECORDER_API__ALLOWED_HOSTS=recorder.example.org",
	})
	require.NoError(t, err)
	require.NoError(t, cfg.Validate(true))
	require.Equal(t, []string{"recorder.example.org", "recorder.internal"}, cfg.API.HostNames())

	cfg.API.AllowedHosts = []string{"https://recorder.example.org", "recorder.example.org:443"}
	err = cfg.Validate(true)
	require.ErrorContains(t, err, "config key api.allowed_hosts: not a host name (no scheme, port or path): https://recorder.example.org")
	require.ErrorContains(t, err, "recorder.example.org:443")
	cfg.API.AllowedHosts = []string{"*", "Recorder.Example.org", "[::1]", "10.0.0.7"}
	require.NoError(t, cfg.Validate(true))
}

func TestOutputsConfig(t *testing.T) {
	cfg, err := Load(writeConfig(t, validYAML+`
recordings:
  path: recs
  retention: 14
mixdown:
  enabled: false
  concurrency: 2
webhooks:
  - url: https://hooks.example.test/rec
    secret: 0123456789abcdef0123
`), []string{"RECORDER_API__PUBLIC_URL=https://rec.example.test"})
	require.NoError(t, err)
	require.NoError(t, cfg.Validate(true))
	require.Equal(t, 14, cfg.Recordings.Retention)
	require.Equal(t, MixdownConfig{Enabled: false, Concurrency: 2}, cfg.Mixdown)
	require.Equal(t, []WebhookConfig{{URL: "https://hooks.example.test/rec", Secret: "0123456789abcdef0123"}}, cfg.Webhooks)
	require.Equal(t, "https://rec.example.test", cfg.API.PublicURL)
}

func TestRecordingDefaultsAndDurations(t *testing.T) {
	cfg, err := Load(writeConfig(t, validYAML), nil)
	require.NoError(t, err)
	require.Equal(t, RecordingConfig{Announce: true, EmptyTimeout: 30 * time.Second, NoMediaTimeout: 5 * time.Minute, MaxDuration: 4 * time.Hour},
		cfg.Recording, "defaults of the recording section")
	require.Zero(t, cfg.Commands.MinPowerLevel)

	cfg, err = Load(writeConfig(t, validYAML+"\nrecording:\n  empty_timeout: 45s\n  require_consent: true\n"), []string{
		"RECORDER_RECORDING__MAX_DURATION=90m",
		"RECORDER_COMMANDS__MIN_POWER_LEVEL=50",
		"RECORDER_API__PUBLIC_URL=https://recorder.example.org",
	})
	require.NoError(t, err)
	require.Equal(t, 45*time.Second, cfg.Recording.EmptyTimeout)
	require.True(t, cfg.Recording.RequireConsent)
	require.True(t, cfg.Recording.Announce, "keys not in the file keep their defaults")
	require.Equal(t, 90*time.Minute, cfg.Recording.MaxDuration)
	require.Equal(t, 50, cfg.Commands.MinPowerLevel)
	require.NoError(t, cfg.Validate(true))

	_, err = Load(writeConfig(t, validYAML), []string{"RECORDER_RECORDING__NO_MEDIA_TIMEOUT=five minutes"})
	require.ErrorContains(t, err, "not a duration")
	cfg.API.PublicURL = "recorder.example.org"
	cfg.Recording.EmptyTimeout = -time.Second
	err = cfg.Validate(true)
	require.ErrorContains(t, err, "api.public_url")
	require.ErrorContains(t, err, "recording.empty_timeout")
}
