package e2ee

import "errors"

var (
	// ErrNoDevice means the client has no user ID, device ID or access token.
	ErrNoDevice = errors.New("client has no logged-in device")
	// ErrDeviceMismatch means the crypto store already holds an account for
	// this account id (the user ID) but for another device ID. mautrix's
	// account upsert never changes device_id, so reusing the account would
	// publish keys under the wrong device.
	ErrDeviceMismatch = errors.New("crypto store account belongs to another device")
	// ErrKeysOnServer means the local account was never shared but the
	// server already has keys for this device: the store was lost or the
	// account id or pickle key changed. Recover by logging in a new device.
	ErrKeysOnServer = errors.New("olm account is not shared, but the device already has keys on the server")
	// ErrKeysVanished means the local account is marked as shared but the
	// server has no keys for the device (the device was deleted).
	ErrKeysVanished = errors.New("olm account is shared, but the device has no keys on the server")
	// ErrKeyMismatch means the server holds other keys for this device than
	// the local account.
	ErrKeyMismatch = errors.New("device keys on the server do not match the local olm account")
	// ErrClosed is returned by Send after Close.
	ErrClosed = errors.New("device is closed")
)
