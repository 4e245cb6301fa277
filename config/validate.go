package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
)

// TokenPlaceholder is the value the example config holds until -g generates tokens.
const TokenPlaceholder = "This value is generated when generating the registration"

var placeholderDomains = []string{"example.com", "example.org", "example.net", "example.invalid"}

// localpartRegex is the grammar of Matrix user ID localparts (spec: historical chars excluded).
var localpartRegex = regexp.MustCompile(`^[a-z0-9._=/+-]+$`)

// hostNameRegex is a DNS name or IP literal as api.allowed_hosts takes it.
var hostNameRegex = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\.?$|^\[?[0-9A-Fa-f:.]+\]?$`)

func isPlaceholderHost(host string) bool {
	host = strings.ToLower(host)
	for _, p := range placeholderDomains {
		if host == p || strings.HasSuffix(host, "."+p) {
			return true
		}
	}
	return false
}

// Validate checks everything needed to generate a registration; with
// needTokens it also checks what is needed to run (tokens present). All
// problems are returned together, each naming its key.
func (c *Config) Validate(needTokens bool) error {
	var errs []error
	add := func(key, reason string) { errs = append(errs, &FieldError{Key: key, Reason: reason}) }

	checkURL := func(key, value string) {
		if value == "" {
			add(key, "not configured")
			return
		}
		u, err := url.Parse(value)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(key, "must be an http(s) URL")
			return
		}
		if isPlaceholderHost(u.Hostname()) {
			add(key, "still has the example value "+value)
		}
	}
	checkURL("homeserver.address", c.Homeserver.Address)
	switch {
	case c.Homeserver.Domain == "":
		add("homeserver.domain", "not configured")
	case isPlaceholderHost(c.Homeserver.Domain):
		add("homeserver.domain", "still has the example value "+c.Homeserver.Domain)
	case strings.ContainsAny(c.Homeserver.Domain, "/@ "):
		add("homeserver.domain", "must be a server name such as matrix.org")
	}
	checkURL("appservice.address", c.Appservice.Address)
	if c.API.PublicURL != "" {
		if u, err := url.Parse(c.API.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("api.public_url", "must be an http(s) URL")
		}
	}
	if c.Recording.EmptyTimeout < 0 {
		add("recording.empty_timeout", "must not be negative")
	}
	if c.Recording.NoMediaTimeout < 0 {
		add("recording.no_media_timeout", "must not be negative")
	}
	if c.Recording.MaxDuration < 0 {
		add("recording.max_duration", "must not be negative")
	}
	if c.Appservice.Hostname == "" {
		add("appservice.hostname", "not configured")
	} else if net.ParseIP(c.Appservice.Hostname) == nil && c.Appservice.Hostname != "localhost" && !strings.HasPrefix(c.Appservice.Hostname, "/") {
		add("appservice.hostname", "must be an IP address, localhost or a unix socket path")
	}
	if c.Appservice.Port <= 0 || c.Appservice.Port > 65535 {
		add("appservice.port", "must be between 1 and 65535")
	}
	if c.Appservice.ID == "" {
		add("appservice.id", "not configured")
	}
	if !localpartRegex.MatchString(c.Appservice.Bot.Username) {
		add("appservice.bot.username", "must be a valid Matrix localpart (lowercase letters, digits, ._=/+-)")
	}
	if c.Appservice.UserPrefix == "" || !localpartRegex.MatchString(c.Appservice.UserPrefix) {
		add("appservice.user_prefix", "must be a non-empty valid Matrix localpart prefix")
	} else if strings.HasPrefix(c.Appservice.Bot.Username, c.Appservice.UserPrefix) {
		add("appservice.bot.username", "must not start with appservice.user_prefix ("+c.Appservice.UserPrefix+")")
	}
	if a := c.Appservice.Bot.Avatar; a != "" && a != "remove" && !strings.HasPrefix(a, "mxc://") {
		add("appservice.bot.avatar", "must be an mxc:// URI, \"remove\" or empty")
	}
	if needTokens {
		for key, value := range map[string]string{"appservice.as_token": c.Appservice.ASToken, "appservice.hs_token": c.Appservice.HSToken} {
			if value == "" || value == TokenPlaceholder {
				add(key, "not generated: run `recorder -g` to generate the registration")
			}
		}
	}
	switch c.Database.Type {
	case "sqlite3-fk-wal", "postgres":
	default:
		add("database.type", "must be sqlite3-fk-wal or postgres, not "+c.Database.Type)
	}
	if c.Database.URI == "" {
		add("database.uri", "not configured")
	}
	if c.Recordings.Path == "" {
		add("recordings.path", "not configured")
	}
	if c.API.Listen != "" {
		if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
			add("api.listen", "must be host:port")
		}
		if needTokens && len(c.API.Tokens) == 0 {
			add("api.tokens", "at least one token is needed while api.listen is set (or leave api.listen empty)")
		}
		for _, prefix := range c.API.TrustedProxies {
			if _, err := netip.ParsePrefix(prefix); err != nil {
				add("api.trusted_proxies", "not a CIDR prefix: "+prefix)
			}
		}
		for _, host := range c.API.AllowedHosts {
			if host != "*" && !hostNameRegex.MatchString(host) {
				add("api.allowed_hosts", "not a host name (no scheme, port or path): "+host)
			}
		}
		for _, tok := range c.API.Tokens {
			if len(tok) < 16 {
				add("api.tokens", "every token must have at least 16 characters")
				break
			}
		}
	}
	if c.Recordings.Retention < 0 {
		add("recordings.retention", "must be a number of days (0 keeps recordings forever)")
	}
	if c.Mixdown.Concurrency < 1 || c.Mixdown.Concurrency > 16 {
		add("mixdown.concurrency", "must be between 1 and 16")
	}
	for i, wh := range c.Webhooks {
		key := fmt.Sprintf("webhooks[%d]", i)
		if u, err := url.Parse(wh.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(key+".url", "must be an http(s) URL")
		}
		if len(wh.Secret) < 16 {
			add(key+".secret", "must have at least 16 characters")
		}
	}
	if (c.WebRTC.UDPPortMin == 0) != (c.WebRTC.UDPPortMax == 0) || c.WebRTC.UDPPortMin > c.WebRTC.UDPPortMax {
		add("webrtc.udp_port_min", "udp_port_min and udp_port_max must both be set, min <= max")
	}
	if c.WebRTC.UDPMuxPort < 0 || c.WebRTC.UDPMuxPort > 65535 {
		add("webrtc.udp_mux_port", "must be between 0 and 65535")
	}
	for key, v := range map[string]int{"limits.max_calls": c.Limits.MaxCalls, "limits.max_peers_per_call": c.Limits.MaxPeersPerCall,
		"limits.max_tracks_per_peer": c.Limits.MaxTracksPerPeer} {
		if v < 0 {
			add(key, "must be 0 (no limit) or more")
		}
	}
	if c.Appservice.ReadyUsers < 0 || c.Appservice.ReadyUsers > 64 {
		add("appservice.ready_users", "must be between 0 and 64")
	} else if c.Limits.MaxCalls > 0 && c.Appservice.ReadyUsers > c.Limits.MaxCalls {
		add("appservice.ready_users", "must not be more than limits.max_calls")
	}
	if c.Recordings.MaxRecordingSizeMB < 0 || c.Recordings.MaxDiskUsageMB < 0 {
		add("recordings.max_disk_usage_mb", "sizes must be 0 (no limit) or more")
	}
	for _, cidr := range c.WebRTC.PeerNetworks {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			add("webrtc.peer_networks", "not a network in CIDR notation: "+cidr)
		}
	}
	for _, ip := range c.WebRTC.NAT1To1IPs {
		if net.ParseIP(ip) == nil {
			add("webrtc.nat_1to1_ips", "not an IP address: "+ip)
		}
	}
	c.validatePermissions(add)
	if strings.TrimSpace(c.Commands.Prefix) == "" || strings.ContainsAny(c.Commands.Prefix, " \t\n") {
		add("commands.prefix", "must be a single non-empty word such as !rec")
	}
	switch c.Logging.MinLevel {
	case "trace", "debug", "info", "warn", "error":
	default:
		add("logging.min_level", "must be one of trace, debug, info, warn, error")
	}
	switch c.Logging.Format {
	case "pretty", "json":
	default:
		add("logging.format", "must be pretty or json")
	}
	return errors.Join(errs...)
}

func (c *Config) validatePermissions(add func(key, reason string)) {
	if len(c.Permissions) == 0 {
		add("permissions", "not configured: add at least one user, domain or * entry")
		return
	}
	for who, level := range c.Permissions {
		key := "permissions." + who
		switch level {
		case PermissionBlock, PermissionUser, PermissionAdmin:
		default:
			add(key, "level must be block, user or admin, not "+string(level))
		}
		host := who
		if strings.HasPrefix(who, "@") {
			_, host, _ = strings.Cut(who, ":")
		}
		if who != "*" && isPlaceholderHost(host) {
			add(key, "still has the example value "+who)
		}
	}
}
