// Command demo-client plays a room member for `make demo`: it registers a user
// on the local homeserver, invites the recorder bot into a room, asks it for
// help and prints the conversation.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func main() {
	hsURL := flag.String("hs", "", "homeserver URL")
	bot := flag.String("bot", "", "bot user ID")
	user := flag.String("user", "demo", "user to register and log in as")
	password := flag.String("password", "demo-password", "password of that user")
	timeout := flag.Duration("timeout", 30*time.Second, "how long to wait for the bot")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, *hsURL, id.UserID(*bot), *user, *password); err != nil {
		fmt.Fprintln(os.Stderr, "demo-client:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, hsURL string, bot id.UserID, user, password string) error {
	cli, err := mautrix.NewClient(hsURL, "", "")
	if err != nil {
		return err
	}
	_, err = cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: user, Password: password, InhibitLogin: true})
	if err != nil && !errors.Is(err, mautrix.MUserInUse) {
		return fmt.Errorf("register %s: %w", user, err)
	}
	if _, err = cli.Login(ctx, &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Password: password, StoreCredentials: true,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
	}); err != nil {
		return fmt.Errorf("log in %s: %w", user, err)
	}
	room, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Recorder demo", Preset: "private_chat", Invite: []id.UserID{bot}})
	if err != nil {
		return fmt.Errorf("create room: %w", err)
	}
	fmt.Printf("%s created room %s and invited %s\n", cli.UserID, room.RoomID, bot)
	seen := map[id.EventID]bool{}
	if err = waitBot(ctx, cli, room.RoomID, bot, seen, "help"); err != nil {
		return err
	}
	if _, err = cli.SendText(ctx, room.RoomID, "!rec help"); err != nil {
		return fmt.Errorf("send command: %w", err)
	}
	fmt.Printf("%s: !rec help\n", cli.UserID)
	return waitBot(ctx, cli, room.RoomID, bot, seen, "commands")
}

// waitBot polls the room until the bot says something containing want,
// printing every new bot message.
func waitBot(ctx context.Context, cli *mautrix.Client, roomID id.RoomID, bot id.UserID, seen map[id.EventID]bool, want string) error {
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for {
		resp, err := cli.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err == nil {
			for i := len(resp.Chunk) - 1; i >= 0; i-- {
				evt := resp.Chunk[i]
				if evt.Sender != bot || evt.Type != event.EventMessage || seen[evt.ID] {
					continue
				}
				seen[evt.ID] = true
				_ = evt.Content.ParseRaw(evt.Type)
				body := evt.Content.AsMessage().Body
				fmt.Printf("%s (%s):\n  %s\n", bot, evt.Content.AsMessage().MsgType, strings.ReplaceAll(body, "\n", "\n  "))
				if strings.Contains(body, want) {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the bot did not answer in time (%w)", ctx.Err())
		case <-ticker.C:
		}
	}
}
