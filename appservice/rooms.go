package appservice

import (
	"context"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/config"
)

func (s *Service) handleMember(ctx context.Context, evt *event.Event) {
	content := evt.Content.AsMember()
	target := id.UserID(evt.GetStateKey())
	switch {
	case target == s.Bot.UserID:
		s.handleBotMembership(ctx, evt, content)
	case s.IsVirtualUser(target) && content.Membership == event.MembershipInvite:
		s.handleVirtualUserInvite(ctx, evt, target)
	}
}

func (s *Service) handleBotMembership(ctx context.Context, evt *event.Event, content *event.MemberEventContent) {
	log := zerolog.Ctx(ctx)
	switch content.Membership {
	case event.MembershipInvite:
		level := s.cfg.Permissions.Of(string(evt.Sender))
		if level.Rank() < config.PermissionUser.Rank() {
			log.Info().Msg("Rejecting invite from a user without permission")
			_, err := s.Bot.LeaveRoom(ctx, evt.RoomID, &mautrix.ReqLeave{
				Reason: "You don't have permission to use this recorder bot.",
			})
			if err != nil {
				log.Err(err).Msg("Failed to reject invite")
			}
			return
		}
		log.Info().Msg("Accepting invite")
		if _, err := s.Bot.JoinRoomByID(ctx, evt.RoomID); err != nil {
			log.Err(err).Msg("Failed to join room after invite")
			return
		}
		if err := s.rooms.RoomJoined(ctx, evt.RoomID, evt.Sender); err != nil {
			log.Err(err).Msg("Failed to store joined room")
		}
		s.afterJoin(ctx, evt.RoomID)
	case event.MembershipJoin:
		// Joins we caused arrive here too; joins by other means (e.g. an
		// admin force-join) are recorded as well.
		if err := s.rooms.RoomJoined(ctx, evt.RoomID, ""); err != nil {
			log.Err(err).Msg("Failed to store joined room")
		}
	case event.MembershipLeave, event.MembershipBan:
		log.Info().Str("membership", string(content.Membership)).Msg("Bot left the room")
		// A room that invites the bot back is greeted again.
		if err := s.rooms.RoomLeft(ctx, evt.RoomID, true); err != nil {
			log.Err(err).Msg("Failed to store left room")
		}
	}
}

// afterJoin fetches the room's members and power levels into the state store
// and greets once.
func (s *Service) afterJoin(ctx context.Context, roomID id.RoomID) {
	log := zerolog.Ctx(ctx)
	if _, err := s.Bot.Members(ctx, roomID); err != nil {
		log.Warn().Err(err).Msg("Failed to fetch room members")
	}
	if _, err := s.Bot.PowerLevels(ctx, roomID); err != nil {
		log.Warn().Err(err).Msg("Failed to fetch power levels")
	}
	s.loadEncryption(ctx, roomID)
	first, err := s.rooms.MarkGreeted(ctx, roomID)
	if err != nil {
		log.Err(err).Msg("Failed to mark room greeted")
		return
	}
	if first {
		s.SendNotice(ctx, roomID, "Hello! I record group calls in this room when asked to. Use `"+
			s.cfg.CommandPrefix+" help` to see what I can do.", "")
	}
}

// handleVirtualUserInvite accepts invites the bot sent to its virtual users
// (the call bot does that to bring a recorder into a call) and rejects the rest.
func (s *Service) handleVirtualUserInvite(ctx context.Context, evt *event.Event, target id.UserID) {
	log := zerolog.Ctx(ctx).With().Stringer("virtual_user", target).Logger()
	intent := s.AS.Intent(target)
	if evt.Sender != s.Bot.UserID && s.cfg.Permissions.Of(string(evt.Sender)) != config.PermissionAdmin {
		log.Info().Msg("Rejecting invite of a virtual user by someone other than the bot")
		if _, err := intent.LeaveRoom(ctx, evt.RoomID, &mautrix.ReqLeave{Reason: "Invite the recorder bot instead."}); err != nil {
			log.Err(err).Msg("Failed to reject invite")
		}
		return
	}
	if evt.Sender == s.Bot.UserID && s.Users.joins.marked(evt.RoomID, target) {
		log.Debug().Msg("Not accepting the invite: the virtual user joins by itself")
		return
	}
	if err := intent.EnsureRegistered(ctx); err != nil {
		log.Err(err).Msg("Failed to register virtual user")
		return
	}
	if _, err := intent.JoinRoomByID(ctx, evt.RoomID); err != nil {
		log.Err(err).Msg("Virtual user failed to join")
	}
}
