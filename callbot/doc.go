// Package callbot joins Matrix group calls as a virtual recorder user.
package callbot
