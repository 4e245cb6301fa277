package config

import "strings"

// PermissionOf returns the level configured for a user ID, looked up the way
// mautrix bridges do: the exact MXID, then its server name, then "*".
func (c *Config) PermissionOf(userID string) PermissionLevel {
	if level, ok := c.Permissions[userID]; ok {
		return level
	}
	if _, server, ok := strings.Cut(userID, ":"); ok {
		if level, ok := c.Permissions[server]; ok {
			return level
		}
	}
	return c.Permissions["*"]
}
