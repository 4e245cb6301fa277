//go:build integration

package e2ee_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream" // sqlite3-fk-wal driver
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/internal/e2ee"
	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
)

const waitTimeout = 15 * time.Second

var pickleKey = []byte("e2ee-test-pickle-key")

// countingTransport counts requests by "METHOD /path-prefix" where the path
// is cut after the event type of sendToDevice / before the query.
type countingTransport struct {
	mu     sync.Mutex
	counts map[string]int
}

func newCounter() *countingTransport { return &countingTransport{counts: map[string]int{}} }

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.counts[classify(req)]++
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

func classify(req *http.Request) string {
	p := req.URL.Path
	if i := strings.Index(p, "/sendToDevice/"); i >= 0 {
		rest := p[i+len("/sendToDevice/"):]
		if j := strings.Index(rest, "/"); j >= 0 {
			rest = rest[:j]
		}
		return req.Method + " sendToDevice " + rest
	}
	if i := strings.Index(p, "/keys/"); i >= 0 {
		return req.Method + " keys " + p[i+len("/keys/"):]
	}
	return req.Method + " " + p
}

func (c *countingTransport) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[key]
}

func (c *countingTransport) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts = map[string]int{}
}

func openDB(t *testing.T, path string) *dbutil.Database {
	t.Helper()
	db, err := dbutil.NewWithDialect("file:"+path+"?_txlock=immediate", "sqlite3-fk-wal")
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func testCtx(t *testing.T) context.Context {
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	ctx, cancel := context.WithTimeout(log.WithContext(context.Background()), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// peer is one user's device plus its own sync position.
type peer struct {
	cli     *mautrix.Client
	dev     *e2ee.Device
	counter *countingTransport
	since   string
}

func newPeer(ctx context.Context, t *testing.T, hs *homeserver.Server, db *dbutil.Database, localpart string) *peer {
	t.Helper()
	cli := hs.RegisterUser(ctx, t, localpart)
	p := &peer{cli: cli, counter: newCounter()}
	cli.Client = &http.Client{Transport: p.counter, Timeout: 30 * time.Second}
	dev, err := e2ee.Open(ctx, cli, db, pickleKey)
	require.NoError(t, err)
	t.Cleanup(func() { _ = dev.Close() })
	p.dev = dev
	return p
}

// syncUntil syncs p's device until match accepts a received event.
func (p *peer) syncUntil(ctx context.Context, t *testing.T, match func(e2ee.Received) bool) e2ee.Received {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		resp, err := p.cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: p.since, Timeout: 500})
		require.NoError(t, err)
		p.since = resp.NextBatch
		for _, rcv := range p.dev.HandleSync(ctx, resp.ToDevice.Events, &resp.DeviceLists, &resp.DeviceOTKCount) {
			if match(rcv) {
				return rcv
			}
		}
	}
	t.Fatalf("%s: no matching to-device event within %s", p.cli.UserID, waitTimeout)
	return e2ee.Received{}
}

// rawSyncUntil syncs cli without any crypto and returns the first to-device
// event of evtType.
func rawSyncUntil(ctx context.Context, t *testing.T, cli *mautrix.Client, evtType string) *event.Event {
	t.Helper()
	since := ""
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		resp, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: since, Timeout: 500})
		require.NoError(t, err)
		since = resp.NextBatch
		for _, evt := range resp.ToDevice.Events {
			if evt.Type.Type == evtType {
				return evt
			}
		}
	}
	t.Fatalf("%s: no %s within %s", cli.UserID, evtType, waitTimeout)
	return nil
}

func ofType(t event.Type) func(e2ee.Received) bool {
	return func(r e2ee.Received) bool { return r.Type.Type == t.Type }
}

func callContent(t *testing.T, callID string) json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(map[string]any{
		"call_id": callID, "party_id": "X", "version": "1", "conf_id": "conf1", "device_id": "X",
		"seq": 0, "offer": map[string]string{"type": "offer", "sdp": "v=0\r\n"}, "lifetime": 60000,
	})
	require.NoError(t, err)
	return raw
}

func to(user id.UserID, device id.DeviceID, raw json.RawMessage) map[id.UserID]map[id.DeviceID]json.RawMessage {
	return map[id.UserID]map[id.DeviceID]json.RawMessage{user: {device: raw}}
}

func TestEncryptedBothWays(t *testing.T) {
	ctx := testCtx(t)
	hs := homeserver.Start(t, homeserver.Options{})
	db := openDB(t, filepath.Join(t.TempDir(), "crypto.db"))
	alice := newPeer(ctx, t, hs, db, "alice")
	bob := newPeer(ctx, t, hs, db, "bob")
	require.NotEqual(t, alice.dev.IdentityKey(), bob.dev.IdentityKey())

	// Keys are on the server when Open returns.
	keys, err := bob.cli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: map[id.UserID]mautrix.DeviceIDList{alice.cli.UserID: {alice.cli.DeviceID}}})
	require.NoError(t, err)
	require.Equal(t, alice.dev.SigningKey(), keys.DeviceKeys[alice.cli.UserID][alice.cli.DeviceID].Keys.GetEd25519(alice.cli.DeviceID))

	invite := callContent(t, "c1")
	require.NoError(t, alice.dev.Send(ctx, signaling.EventInvite, to(bob.cli.UserID, bob.cli.DeviceID, invite), true))
	got := bob.syncUntil(ctx, t, ofType(signaling.EventInvite))
	require.True(t, got.Encrypted)
	require.Equal(t, alice.cli.UserID, got.Sender)
	require.Equal(t, alice.cli.DeviceID, got.SenderDevice)
	require.Equal(t, event.ToDeviceEventType, got.Type.Class)
	require.JSONEq(t, string(invite), string(got.Content))
	msg, err := signaling.Parse(got.Type.Type, got.Content)
	require.NoError(t, err)
	require.Equal(t, signaling.CallID("c1"), msg.Common().CallID)

	answer := json.RawMessage(`{"call_id":"c1","party_id":"BOBDEV","version":"1","conf_id":"conf1","device_id":"BOBDEV","seq":0,"answer":{"type":"answer","sdp":"v=0\r\n"}}`)
	require.NoError(t, bob.dev.Send(ctx, signaling.EventAnswer, to(alice.cli.UserID, alice.cli.DeviceID, answer), true))
	got = alice.syncUntil(ctx, t, ofType(signaling.EventAnswer))
	require.True(t, got.Encrypted)
	require.Equal(t, bob.cli.UserID, got.Sender)
	require.Equal(t, bob.cli.DeviceID, got.SenderDevice)
	require.JSONEq(t, string(answer), string(got.Content))

	// A second message rides on the established session.
	require.NoError(t, alice.dev.Send(ctx, signaling.EventHangup, to(bob.cli.UserID, bob.cli.DeviceID, json.RawMessage(`{"call_id":"c1","conf_id":"conf1","device_id":"ALICEDEV","seq":1}`)), true))
	got = bob.syncUntil(ctx, t, ofType(signaling.EventHangup))
	require.True(t, got.Encrypted)
	require.Equal(t, alice.cli.DeviceID, got.SenderDevice)

	// Garbage ciphertext and a plaintext crypto event are dropped, the
	// replayed copy of an already decrypted event is not decrypted again.
	_, err = alice.cli.SendToDevice(ctx, event.ToDeviceEncrypted, &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
		bob.cli.UserID: {bob.cli.DeviceID: {Raw: map[string]any{
			"algorithm": id.AlgorithmOlmV1, "sender_key": string(alice.dev.IdentityKey()),
			"ciphertext": map[string]any{string(bob.dev.IdentityKey()): map[string]any{"type": 1, "body": "AwoggarbageAAAA"}},
		}}},
	}})
	require.NoError(t, err)
	_, err = alice.cli.SendToDevice(ctx, event.ToDeviceDummy, &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
		bob.cli.UserID: {bob.cli.DeviceID: {Raw: map[string]any{}}},
	}})
	require.NoError(t, err)
	require.NoError(t, alice.dev.Send(ctx, signaling.EventHangup, to(bob.cli.UserID, bob.cli.DeviceID, json.RawMessage(`{"call_id":"c2"}`)), true))
	var raw []*event.Event
	deadline := time.Now().Add(waitTimeout)
	for len(raw) < 3 && time.Now().Before(deadline) {
		resp, err := bob.cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: bob.since, Timeout: 500})
		require.NoError(t, err)
		bob.since = resp.NextBatch
		raw = append(raw, resp.ToDevice.Events...)
	}
	require.Len(t, raw, 3)
	rcvd := bob.dev.HandleSync(ctx, raw, nil, nil)
	require.Len(t, rcvd, 1)
	require.JSONEq(t, `{"call_id":"c2"}`, string(rcvd[0].Content))
	require.True(t, rcvd[0].Encrypted)
	require.Empty(t, bob.dev.HandleSync(ctx, raw[2:], nil, nil), "an Olm message decrypts only once")

	// Plaintext path: Encrypted false, no vouched device.
	require.NoError(t, bob.dev.Send(ctx, signaling.EventCandidates, to(alice.cli.UserID, alice.cli.DeviceID, json.RawMessage(`{"call_id":"c1","candidates":[]}`)), false))
	got = alice.syncUntil(ctx, t, ofType(signaling.EventCandidates))
	require.False(t, got.Encrypted)
	require.Equal(t, bob.cli.UserID, got.Sender)
	require.Empty(t, got.SenderDevice)
	require.JSONEq(t, `{"call_id":"c1","candidates":[]}`, string(got.Content))
}

// TestSendBatchesAndFallback: one Send to two devices with keys and one
// without goes out as exactly one encrypted and one plaintext request; the
// device without keys gets plaintext.
func TestSendBatchesAndFallback(t *testing.T) {
	ctx := testCtx(t)
	hs := homeserver.Start(t, homeserver.Options{})
	db := openDB(t, filepath.Join(t.TempDir(), "crypto.db"))
	alice := newPeer(ctx, t, hs, db, "alice")
	bob := newPeer(ctx, t, hs, db, "bob")
	dave := newPeer(ctx, t, hs, db, "dave")
	carol := hs.RegisterUser(ctx, t, "carol") // no crypto device, no keys

	msgs := map[id.UserID]map[id.DeviceID]json.RawMessage{
		bob.cli.UserID:  {bob.cli.DeviceID: callContent(t, "cb")},
		dave.cli.UserID: {dave.cli.DeviceID: callContent(t, "cd")},
		carol.UserID:    {carol.DeviceID: callContent(t, "cc")},
	}
	alice.counter.reset()
	require.NoError(t, alice.dev.Send(ctx, signaling.EventInvite, msgs, true))
	require.Equal(t, 1, alice.counter.get("PUT sendToDevice m.room.encrypted"))
	require.Equal(t, 1, alice.counter.get("PUT sendToDevice m.call.invite"))
	require.Equal(t, 1, alice.counter.get("POST keys claim"), "one OTK claim for both new sessions")

	got := bob.syncUntil(ctx, t, ofType(signaling.EventInvite))
	require.True(t, got.Encrypted)
	require.JSONEq(t, string(msgs[bob.cli.UserID][bob.cli.DeviceID]), string(got.Content))
	got = dave.syncUntil(ctx, t, ofType(signaling.EventInvite))
	require.True(t, got.Encrypted)
	require.Equal(t, alice.cli.DeviceID, got.SenderDevice)

	plain := rawSyncUntil(ctx, t, carol, signaling.EventInvite.Type)
	require.Equal(t, alice.cli.UserID, plain.Sender)
	require.JSONEq(t, string(msgs[carol.UserID][carol.DeviceID]), string(plain.Content.VeryRaw))

	// The failed lookup for carol is cached: no new key query for her.
	alice.counter.reset()
	require.NoError(t, alice.dev.Send(ctx, signaling.EventHangup, to(carol.UserID, carol.DeviceID, json.RawMessage(`{"call_id":"cc"}`)), true))
	require.Zero(t, alice.counter.get("POST keys query"))
	require.Equal(t, 1, alice.counter.get("PUT sendToDevice m.call.hangup"))
	require.Zero(t, alice.counter.get("PUT sendToDevice m.room.encrypted"))

	// encrypt=false: one plaintext request for everyone.
	alice.counter.reset()
	require.NoError(t, alice.dev.Send(ctx, signaling.EventHangup, msgs, false))
	require.Equal(t, 1, alice.counter.get("PUT sendToDevice m.call.hangup"))
	require.Zero(t, alice.counter.get("PUT sendToDevice m.room.encrypted"))
}

func TestRestartPersistence(t *testing.T) {
	ctx := testCtx(t)
	hs := homeserver.Start(t, homeserver.Options{})
	dbPath := filepath.Join(t.TempDir(), "crypto.db")
	db := openDB(t, dbPath)
	alice := newPeer(ctx, t, hs, db, "alice")
	bob := newPeer(ctx, t, hs, db, "bob")
	identity := alice.dev.IdentityKey()

	require.NoError(t, bob.dev.Send(ctx, signaling.EventInvite, to(alice.cli.UserID, alice.cli.DeviceID, callContent(t, "r1")), true))
	got := alice.syncUntil(ctx, t, ofType(signaling.EventInvite))
	require.True(t, got.Encrypted)
	require.NoError(t, alice.dev.Close())
	require.ErrorIs(t, alice.dev.Send(ctx, signaling.EventInvite, nil, true), e2ee.ErrClosed)

	// New process: new login of the same device (new token), its own
	// connection to the same db file, same account id and pickle key.
	db2 := openDB(t, dbPath)
	cli := hs.RegisterUser(ctx, t, "alice")
	counter := newCounter()
	cli.Client = &http.Client{Transport: counter, Timeout: 30 * time.Second}
	dev, err := e2ee.Open(ctx, cli, db2, pickleKey)
	require.NoError(t, err)
	t.Cleanup(func() { _ = dev.Close() })
	require.Equal(t, identity, dev.IdentityKey())
	require.Zero(t, counter.get("POST keys upload"), "no key re-upload")
	alice2 := &peer{cli: cli, dev: dev, counter: counter, since: alice.since}

	// Bob's existing Olm session still works, both ways.
	require.NoError(t, bob.dev.Send(ctx, signaling.EventInvite, to(alice.cli.UserID, alice.cli.DeviceID, callContent(t, "r2")), true))
	got = alice2.syncUntil(ctx, t, func(r e2ee.Received) bool {
		return r.Type == signaling.EventInvite && strings.Contains(string(r.Content), `"r2"`)
	})
	require.True(t, got.Encrypted)
	require.Equal(t, bob.cli.DeviceID, got.SenderDevice)
	require.NoError(t, dev.Send(ctx, signaling.EventAnswer, to(bob.cli.UserID, bob.cli.DeviceID, json.RawMessage(`{"call_id":"r2"}`)), true))
	got = bob.syncUntil(ctx, t, ofType(signaling.EventAnswer))
	require.True(t, got.Encrypted)
	require.Equal(t, alice.cli.DeviceID, got.SenderDevice)
}

func TestOpenRefusesInconsistentStores(t *testing.T) {
	ctx := testCtx(t)
	hs := homeserver.Start(t, homeserver.Options{})
	db := openDB(t, filepath.Join(t.TempDir(), "crypto.db"))
	newPeer(ctx, t, hs, db, "alice")

	// Same account id, another device.
	other, err := mautrix.NewClient(hs.URL, "", "")
	require.NoError(t, err)
	_, err = other.Login(ctx, &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
		Password:         homeserver.Password("alice"),
		DeviceID:         "ALICEOTHER",
		StoreCredentials: true,
	})
	require.NoError(t, err)
	_, err = e2ee.Open(ctx, other, db, pickleKey)
	require.ErrorIs(t, err, e2ee.ErrDeviceMismatch)

	// A fresh store for a device whose keys are already on the server.
	fresh := openDB(t, filepath.Join(t.TempDir(), "fresh.db"))
	cli := hs.RegisterUser(ctx, t, "alice")
	_, err = e2ee.Open(ctx, cli, fresh, pickleKey)
	require.ErrorIs(t, err, e2ee.ErrKeysOnServer)

	_, err = e2ee.Open(ctx, &mautrix.Client{}, fresh, pickleKey)
	require.ErrorIs(t, err, e2ee.ErrNoDevice)
}
