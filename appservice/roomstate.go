package appservice

import (
	"context"
	"fmt"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// MemberDisplayName is userID's display name in the room, from its member
// event ("" when it has none).
func (s *Service) MemberDisplayName(ctx context.Context, roomID id.RoomID, userID id.UserID) string {
	var content event.MemberEventContent
	if err := s.AS.Intent(userID).StateEvent(ctx, roomID, event.StateMember, string(userID), &content); err != nil {
		return ""
	}
	return content.Displayname
}

// SetMemberDisplayName sets a namespaced user's display name in one room by
// rewriting its member event (the rest of it kept).
func (s *Service) SetMemberDisplayName(ctx context.Context, roomID id.RoomID, userID id.UserID, name string) error {
	if userID != s.Bot.UserID && !s.IsVirtualUser(userID) {
		return fmt.Errorf("%w: %s", ErrNotInNamespace, userID)
	}
	intent := s.AS.Intent(userID)
	var content event.MemberEventContent
	if err := intent.StateEvent(ctx, roomID, event.StateMember, string(userID), &content); err != nil {
		return fmt.Errorf("failed to read the member event of %s: %w", userID, err)
	}
	if content.Membership != event.MembershipJoin {
		return fmt.Errorf("%s is not joined to %s", userID, roomID)
	}
	content.Displayname = name
	if _, err := intent.SendStateEvent(ctx, roomID, event.StateMember, string(userID), &content); err != nil {
		return fmt.Errorf("failed to set the display name of %s: %w", userID, err)
	}
	return nil
}

// SendStateAs sends a state event as a namespaced user.
func (s *Service) SendStateAs(ctx context.Context, roomID id.RoomID, userID id.UserID, evtType event.Type, stateKey string, content any) error {
	if userID != s.Bot.UserID && !s.IsVirtualUser(userID) {
		return fmt.Errorf("%w: %s", ErrNotInNamespace, userID)
	}
	if _, err := s.AS.Intent(userID).SendStateEvent(ctx, roomID, evtType, stateKey, content); err != nil {
		return fmt.Errorf("failed to send %s as %s: %w", evtType.Type, userID, err)
	}
	return nil
}

// JoinedPeople are the room's joined members other than the bot and the
// virtual users, from the state store.
func (s *Service) JoinedPeople(ctx context.Context, roomID id.RoomID) ([]id.UserID, error) {
	members, err := s.AS.StateStore.GetAllMembers(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("failed to read members of %s: %w", roomID, err)
	}
	var out []id.UserID
	for userID, m := range members {
		if m.Membership == event.MembershipJoin && userID != s.Bot.UserID && !s.IsVirtualUser(userID) {
			out = append(out, userID)
		}
	}
	return out, nil
}
