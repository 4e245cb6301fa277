package appservice

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// FuzzCommandText: any message body, with any configured prefix, is
// recognised or not without panicking, and a recognised command is part of
// the body.
func FuzzCommandText(f *testing.F) {
	for _, seed := range [][2]string{
		{"!rec", "!rec start"}, {"!rec", "!REC stop now"}, {"!rec", "@recorder:localhost: status"}, {"ⱥ", "Ⱥ"},
		{"!rec", "!rec\u202e"}, {"!rec", "\xff\xfe"}, {"", ""},
	} {
		f.Add(seed[0], seed[1], false)
	}
	f.Fuzz(func(t *testing.T, prefix, body string, mention bool) {
		cfg := testConfig()
		if prefix != "" {
			cfg.CommandPrefix = prefix
		}
		s, err := New(Options{Config: cfg, Version: "test"})
		require.NoError(t, err)
		content := &event.MessageEventContent{MsgType: event.MsgText, Body: body}
		if mention {
			content.Mentions = &event.Mentions{UserIDs: []id.UserID{s.BotUserID()}}
		}
		if got, ok := s.commandText(context.Background(), "!room:localhost", content); ok {
			require.LessOrEqual(t, len(got), len(body))
		}
	})
}
