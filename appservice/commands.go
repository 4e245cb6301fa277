package appservice

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/config"
)

// Command is a chat command such as `!rec start`.
type Command struct {
	Name    string
	Aliases []string
	Args    string // usage of the arguments, e.g. "[room ID]"
	Help    string
	// MinLevel is the config permission the sender needs (default: user).
	MinLevel config.PermissionLevel
	// RequiresEventLevel, when set, also requires the sender's room power
	// level to allow sending that event type; config admins bypass it.
	RequiresEventLevel *event.Type
	// Action names what the command does, for a refusal ("start a
	// recording").
	Action string
	Func   func(ctx context.Context, ce *CommandEvent)
}

// CommandEvent is one invocation of a command.
type CommandEvent struct {
	Service *Service
	RoomID  id.RoomID
	EventID id.EventID
	Sender  id.UserID
	Command string
	Args    []string
	Level   config.PermissionLevel
}

// Reply sends markdown as an m.notice reply to the command.
func (ce *CommandEvent) Reply(ctx context.Context, markdown string, args ...any) {
	if len(args) > 0 {
		markdown = fmt.Sprintf(markdown, args...)
	}
	ce.Service.SendNotice(ctx, ce.RoomID, markdown, ce.EventID)
}

type commandSet struct {
	svc  *Service
	lock sync.RWMutex
	byID map[string]*Command
	list []*Command
}

func newCommandSet(s *Service) *commandSet {
	cs := &commandSet{svc: s, byID: make(map[string]*Command)}
	cs.add(&Command{Name: "help", Help: "Show this help.", Func: cs.help})
	cs.add(&Command{Name: "version", Help: "Show the recorder's version.", Func: func(ctx context.Context, ce *CommandEvent) {
		ce.Reply(ctx, "recorder %s", s.version)
	}})
	return cs
}

// RegisterCommand adds a command; later packages register start/stop/status.
func (s *Service) RegisterCommand(cmd *Command) {
	s.commands.add(cmd)
}

func (cs *commandSet) add(cmd *Command) {
	if cmd.MinLevel == config.PermissionNone {
		cmd.MinLevel = config.PermissionUser
	}
	cs.lock.Lock()
	defer cs.lock.Unlock()
	cs.byID[cmd.Name] = cmd
	for _, alias := range cmd.Aliases {
		cs.byID[alias] = cmd
	}
	cs.list = append(cs.list, cmd)
	sort.Slice(cs.list, func(i, j int) bool { return cs.list[i].Name < cs.list[j].Name })
}

func (cs *commandSet) get(name string) *Command {
	cs.lock.RLock()
	defer cs.lock.RUnlock()
	return cs.byID[name]
}

func (cs *commandSet) help(ctx context.Context, ce *CommandEvent) {
	cs.lock.RLock()
	defer cs.lock.RUnlock()
	prefix := cs.svc.cfg.CommandPrefix
	var b strings.Builder
	b.WriteString("**Call recorder commands**\n\n")
	for _, cmd := range cs.list {
		if ce.Level.Rank() < cmd.MinLevel.Rank() {
			continue
		}
		usage := cmd.Name
		if cmd.Args != "" {
			usage += " " + cmd.Args
		}
		fmt.Fprintf(&b, "* `%s %s` - %s\n", prefix, usage, cmd.Help)
	}
	fmt.Fprintf(&b, "\nYou can also mention me instead of writing `%s`, and leave the prefix out in a direct chat with me.", prefix)
	ce.Reply(ctx, b.String())
}

// handleMessage parses commands out of m.room.message events.
func (s *Service) handleMessage(ctx context.Context, evt *event.Event) {
	if evt.Sender == s.Bot.UserID || s.IsVirtualUser(evt.Sender) {
		return
	}
	content := evt.Content.AsMessage()
	// Never answer notices (spec: prevents bot loops); only plain text commands.
	if content.MsgType != event.MsgText || content.RelatesTo.GetReplaceID() != "" {
		return
	}
	text, ok := s.commandText(ctx, evt.RoomID, content)
	if !ok {
		return
	}
	fields := strings.Fields(text)
	if len(fields) == 0 {
		fields = []string{"help"}
	}
	name := strings.ToLower(fields[0])
	ce := &CommandEvent{
		Service: s, RoomID: evt.RoomID, EventID: evt.ID, Sender: evt.Sender,
		Command: name, Args: fields[1:], Level: s.cfg.Permissions.Of(string(evt.Sender)),
	}
	log := zerolog.Ctx(ctx).With().Str("command", name).Logger()
	ctx = log.WithContext(ctx)
	if ce.Level.Rank() < config.PermissionUser.Rank() {
		log.Debug().Msg("Ignoring command from user without permission")
		ce.Reply(ctx, "You don't have permission to use this recorder bot.")
		return
	}
	cmd := s.commands.get(name)
	if cmd == nil {
		ce.Reply(ctx, "Unknown command `%s`. Use `%s help` for the list of commands.", sanitizeInline(name), s.cfg.CommandPrefix)
		return
	}
	if ce.Level.Rank() < cmd.MinLevel.Rank() {
		ce.Reply(ctx, "That command is for recorder admins only.")
		return
	}
	if cmd.RequiresEventLevel != nil && ce.Level != config.PermissionAdmin {
		// Not HasPowerLevel: the state stores dereference the levels
		// without a nil check and panic in a room whose power levels they
		// have not seen. Without levels the command is refused.
		levels, err := s.AS.StateStore.GetPowerLevels(ctx, evt.RoomID)
		if err != nil || levels == nil {
			if err == nil {
				err = errors.New("room power levels unknown")
			}
			log.Warn().Err(err).Msg("Failed to check power level")
			ce.Reply(ctx, "I couldn't check your power level in this room; try again later.")
			return
		}
		eventLevel := levels.GetEventLevel(*cmd.RequiresEventLevel)
		need, have := max(eventLevel, s.cfg.MinPowerLevel), levels.GetUserLevel(evt.Sender)
		if have < need {
			action := cmd.Action
			if action == "" {
				action = "use `" + cmd.Name + "`"
			}
			why := fmt.Sprintf("the level to start calls (`%s`) here is %d", cmd.RequiresEventLevel.Type, eventLevel)
			if s.cfg.MinPowerLevel > eventLevel {
				why = fmt.Sprintf("this recorder requires at least %d", s.cfg.MinPowerLevel)
			}
			log.Info().Int("need", need).Int("have", have).Msg("Refusing command: power level too low")
			ce.Reply(ctx, "You need power level %d in this room to %s (%s); you have %d. A room admin can raise your level, "+
				"or a recorder admin can do it for you.", need, action, why, have)
			return
		}
	}
	log.Info().Strs("args", ce.Args).Msg("Running command")
	func() {
		defer func() {
			if r := recover(); r != nil {
				log.Error().Any("panic", r).Stack().Msg("Panic in command handler")
				ce.Reply(ctx, "Something went wrong running that command; the recorder's logs have the details.")
			}
		}()
		cmd.Func(ctx, ce)
	}()
}

// commandText returns the command part of a message: after the prefix, after
// a leading mention of the bot (m.mentions), or the whole text in a direct chat
// of two members.
func (s *Service) commandText(ctx context.Context, roomID id.RoomID, content *event.MessageEventContent) (string, bool) {
	body := strings.TrimSpace(content.Body)
	prefix := s.cfg.CommandPrefix
	if rest, ok := cutWord(body, prefix); ok {
		return rest, true
	}
	if content.Mentions != nil && content.Mentions.Has(s.Bot.UserID) {
		return s.stripMention(ctx, roomID, body), true
	}
	if s.isDirectChat(ctx, roomID) {
		return body, true
	}
	return "", false
}

// cutWord reports whether body starts with word followed by whitespace or the end.
// The comparison folds case byte for byte: lowercasing may change a
// string's length, so it is never used to find where the word ends.
func cutWord(body, word string) (string, bool) {
	if len(body) < len(word) || !strings.EqualFold(body[:len(word)], word) {
		return "", false
	}
	rest := body[len(word):]
	if rest != "" && rest[0] != ' ' && rest[0] != '\t' && rest[0] != '\n' {
		return "", false
	}
	return strings.TrimSpace(rest), true
}

func (s *Service) stripMention(ctx context.Context, roomID id.RoomID, body string) string {
	candidates := []string{string(s.Bot.UserID), s.Bot.UserID.Localpart(), "@" + s.Bot.UserID.Localpart()}
	if member, err := s.AS.StateStore.TryGetMember(ctx, roomID, s.Bot.UserID); err == nil && member != nil && member.Displayname != "" {
		candidates = append(candidates, member.Displayname)
	}
	if s.cfg.Appservice.Bot.Displayname != "" {
		candidates = append(candidates, s.cfg.Appservice.Bot.Displayname)
	}
	sort.Slice(candidates, func(i, j int) bool { return len(candidates[i]) > len(candidates[j]) })
	lower := strings.ToLower(body)
	for _, c := range candidates {
		if strings.HasPrefix(lower, strings.ToLower(c)) {
			body = strings.TrimLeft(body[len(c):], ":, \t")
			break
		}
	}
	if rest, ok := cutWord(body, s.cfg.CommandPrefix); ok {
		body = rest
	}
	return strings.TrimSpace(body)
}

// isDirectChat reports whether the room has exactly two joined members: the
// bot and one user.
func (s *Service) isDirectChat(ctx context.Context, roomID id.RoomID) bool {
	members, err := s.AS.StateStore.GetAllMembers(ctx, roomID)
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to get room members")
		return false
	}
	joined := 0
	for _, m := range members {
		if m.Membership == event.MembershipJoin {
			joined++
		}
	}
	return joined == 2 && s.AS.StateStore.IsInRoom(ctx, roomID, s.Bot.UserID)
}

func renderNotice(markdown string) *event.MessageEventContent {
	content := format.RenderMarkdown(markdown, true, false)
	content.MsgType = event.MsgNotice
	content.Mentions = &event.Mentions{}
	return &content
}

// sanitizeInline keeps user text from breaking out of an inline code span.
func sanitizeInline(s string) string {
	s = strings.ReplaceAll(s, "`", "'")
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return s
}
