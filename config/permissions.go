package config

import "strings"

// Permissions maps user IDs, server names and "*" to permission levels.
type Permissions map[string]PermissionLevel

// Of returns the level configured for a user ID, looked up the way mautrix
// bridges do: the exact MXID, then its server name, then "*".
func (p Permissions) Of(userID string) PermissionLevel {
	if level, ok := p[userID]; ok {
		return level
	}
	if _, server, ok := strings.Cut(userID, ":"); ok {
		if level, ok := p[server]; ok {
			return level
		}
	}
	return p["*"]
}

// PermissionOf returns the level configured for a user ID (Permissions.Of).
func (c *Config) PermissionOf(userID string) PermissionLevel { return c.Permissions.Of(userID) }
