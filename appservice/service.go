// Package appservice is the recorder's Matrix side: the mautrix appservice
// (transactions, the bot user, virtual users with devices), per-room ordered
// event handling, invites and chat commands.
package appservice

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	mautrixas "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/config"
)

// Sentinel errors of this package.
var (
	// ErrNotInNamespace means a user ID is outside the recorder's virtual user namespace.
	ErrNotInNamespace = errors.New("user is not in the recorder's namespace")
	// ErrStopped means the service is shutting down.
	ErrStopped = errors.New("appservice stopped")
)

// TxnStore remembers processed transaction IDs across restarts.
type TxnStore interface {
	IsProcessed(ctx context.Context, txnID string) (bool, error)
	MarkProcessed(ctx context.Context, txnID string) error
}

// RoomStore keeps the rooms the bot is in.
type RoomStore interface {
	RoomJoined(ctx context.Context, roomID id.RoomID, inviter id.UserID) error
	// RoomLeft records that the bot left; greetAgain clears the room's
	// greeted mark.
	RoomLeft(ctx context.Context, roomID id.RoomID, greetAgain bool) error
	// MarkGreeted reports true only the first time it is called for a room.
	MarkGreeted(ctx context.Context, roomID id.RoomID) (bool, error)
}

// Config is the appservice's section of the configuration.
type Config struct {
	Homeserver  config.HomeserverConfig
	Appservice  config.AppserviceConfig
	Permissions config.Permissions
	// CommandPrefix starts a command in a room message (e.g. "!rec").
	CommandPrefix string
	// MinPowerLevel is the lowest room power level for commands that
	// require an event level (start, stop, auto), on top of that level.
	MinPowerLevel int
}

// Options are what New needs.
type Options struct {
	Config     Config
	StateStore mautrixas.StateStore // persisted mautrix state store (sqlstatestore)
	Txns       TxnStore
	Rooms      RoomStore
	// VirtualUsers configures the virtual users' devices.
	VirtualUsers VirtualUsersOptions
	Version      string // shown by the help and version commands
	// RoomKeyWait bounds the wait for a late Megolm room key
	// (DefaultRoomKeyWait when zero).
	RoomKeyWait time.Duration
}

// EventHandler handles a room event in that room's order.
type EventHandler func(ctx context.Context, evt *event.Event)

// Service is the running appservice.
type Service struct {
	cfg     Config
	version string
	txns    TxnStore
	rooms   RoomStore

	AS    *mautrixas.AppService
	Bot   *mautrixas.IntentAPI
	Users *VirtualUsers

	userRegex *regexp.Regexp

	handlersLock sync.RWMutex
	handlers     map[event.Type][]EventHandler
	commands     *commandSet

	queuesLock sync.Mutex
	queues     map[id.RoomID]*roomQueue

	// The bot's own device (encrypted rooms); botReady is closed once it
	// runs, and room events wait for it.
	botDev     *Device
	botReady   chan struct{}
	keyWait    time.Duration
	waitLock   sync.Mutex
	keyWaiters int

	bgCtx    context.Context
	bgCancel context.CancelFunc
	wg       sync.WaitGroup
	listener net.Listener
	server   *http.Server
}

// roomQueueSize bounds each room's backlog; beyond it the room's oldest
// events are dropped: the transaction handler, which serves every room,
// never waits for one room.
const roomQueueSize = 256

// New builds the service; Start runs it.
func New(opts Options) (*Service, error) {
	cfg := opts.Config
	reg := BuildRegistration(cfg.Homeserver, cfg.Appservice)
	as, err := mautrixas.CreateFull(mautrixas.CreateOpts{
		Registration:     reg,
		HomeserverDomain: cfg.Homeserver.Domain,
		HomeserverURL:    cfg.Homeserver.Address,
		HostConfig:       mautrixas.HostConfig{Hostname: cfg.Appservice.Hostname, Port: uint16(cfg.Appservice.Port)},
		StateStore:       opts.StateStore,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create appservice: %w", err)
	}
	as.UserAgent = "recorder/" + opts.Version + " " + mautrix.DefaultUserAgent
	s := &Service{
		cfg:       cfg,
		version:   opts.Version,
		txns:      opts.Txns,
		rooms:     opts.Rooms,
		AS:        as,
		userRegex: regexp.MustCompile("^@" + regexp.QuoteMeta(cfg.Appservice.UserPrefix) + "[a-z0-9._=/+-]+:" + regexp.QuoteMeta(cfg.Homeserver.Domain) + "$"),
		handlers:  make(map[event.Type][]EventHandler),
		queues:    make(map[id.RoomID]*roomQueue),
		botReady:  make(chan struct{}),
		keyWait:   opts.RoomKeyWait,
	}
	if s.keyWait <= 0 {
		s.keyWait = DefaultRoomKeyWait
	}
	s.Bot = as.Intent(s.BotUserID())
	s.Users = newVirtualUsers(s, opts.VirtualUsers)
	s.commands = newCommandSet(s)
	return s, nil
}

// CommandPrefix is the configured command prefix.
func (s *Service) CommandPrefix() string { return s.cfg.CommandPrefix }

// BotUserID is the bot's MXID.
func (s *Service) BotUserID() id.UserID {
	return id.NewUserID(s.cfg.Appservice.Bot.Username, s.cfg.Homeserver.Domain)
}

// IsVirtualUser reports whether userID is one of the recorder's virtual users.
func (s *Service) IsVirtualUser(userID id.UserID) bool {
	return s.userRegex.MatchString(string(userID))
}

// On registers a handler for room events of a type (e.g. call member state).
// Handlers run in the room's order, after the service's own handling.
func (s *Service) On(evtType event.Type, handler EventHandler) {
	s.handlersLock.Lock()
	defer s.handlersLock.Unlock()
	s.handlers[evtType] = append(s.handlers[evtType], handler)
}

// Start registers the bot, starts the transaction listener and the event
// loops. It returns once the listener accepts connections.
func (s *Service) Start(ctx context.Context) error {
	log := zerolog.Ctx(ctx)
	s.startLoops(ctx)
	ln, err := net.Listen("tcp", net.JoinHostPort(s.cfg.Appservice.Hostname, fmt.Sprint(s.cfg.Appservice.Port)))
	if err != nil {
		return fmt.Errorf("failed to listen for transactions: %w", err)
	}
	s.listener = ln
	s.server = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Err(err).Msg("Transaction listener failed")
		}
	}()
	log.Info().Str("address", ln.Addr().String()).Msg("Listening for homeserver transactions")

	if err = s.setupBot(ctx); err != nil {
		return err
	}
	return nil
}

// startLoops sets up the background context and starts the event consumer.
func (s *Service) startLoops(ctx context.Context) {
	log := zerolog.Ctx(ctx)
	s.AS.Log = log.With().Str("component", "mautrix-appservice").Logger()
	s.bgCtx, s.bgCancel = context.WithCancel(log.WithContext(context.WithoutCancel(ctx)))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.consumeEvents(s.bgCtx)
	}()
}

// ListenAddr is the address the transaction listener is bound to.
func (s *Service) ListenAddr() string {
	if s.listener == nil {
		return ""
	}
	return s.listener.Addr().String()
}

func (s *Service) setupBot(ctx context.Context) error {
	if err := s.Bot.EnsureRegistered(ctx); err != nil {
		return fmt.Errorf("failed to register bot user %s: %w", s.Bot.UserID, err)
	}
	bot := s.cfg.Appservice.Bot
	if bot.Displayname != "" {
		if err := s.Bot.SetDisplayName(ctx, bot.Displayname); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to set bot display name")
		}
	}
	switch bot.Avatar {
	case "":
	case "remove":
		if err := s.Bot.SetAvatarURL(ctx, id.ContentURI{}); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to remove bot avatar")
		}
	default:
		uri, err := id.ParseContentURI(bot.Avatar)
		if err == nil {
			err = s.Bot.SetAvatarURL(ctx, uri)
		}
		if err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to set bot avatar")
		}
	}
	zerolog.Ctx(ctx).Info().Stringer("bot", s.Bot.UserID).Msg("Bot user ready")
	return s.startBotDevice(ctx)
}

// Stop stops the listener, the event loops and every virtual user's sync.
func (s *Service) Stop(ctx context.Context) error {
	if s.server != nil {
		if err := s.server.Shutdown(ctx); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Transaction listener did not shut down cleanly")
		}
	}
	s.Users.stopAll(ctx)
	if s.bgCancel != nil {
		s.bgCancel()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("timed out waiting for appservice goroutines: %w", ctx.Err())
	}
	// The bot's device last: the room queues and key waiters that use it
	// have ended, and so has its sync loop (the background context's).
	select {
	case <-s.botReady:
		if s.botDev != nil {
			s.botDev.stop(ctx)
		}
	default:
	}
	return nil
}

// consumeEvents reads mautrix's event channels and routes each room event to
// its room's queue and each to-device event to its virtual user.
func (s *Service) consumeEvents(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case evt := <-s.AS.Events:
			s.enqueue(ctx, &queuedEvent{evt: evt})
		case evt := <-s.AS.ToDeviceEvents:
			s.Users.handleTransactionToDevice(ctx, evt)
		case dl := <-s.AS.DeviceLists:
			s.Users.handleTransactionDeviceLists(ctx, dl)
		case otk := <-s.AS.OTKCounts:
			s.Users.handleTransactionOTKCount(ctx, otk)
		}
	}
}

// queuedEvent is a room event waiting in its room's queue; keyRetried marks
// an encrypted event queued again after its late room key arrived.
type queuedEvent struct {
	evt        *event.Event
	keyRetried bool
}

func (s *Service) enqueue(ctx context.Context, qe *queuedEvent) {
	evt := qe.evt
	if evt.RoomID == "" {
		zerolog.Ctx(ctx).Warn().Stringer("event_id", evt.ID).Msg("Dropping room event without room ID")
		return
	}
	s.queuesLock.Lock()
	defer s.queuesLock.Unlock()
	q := s.queues[evt.RoomID]
	if q == nil {
		q = &roomQueue{}
		s.queues[evt.RoomID] = q
	}
	if len(q.items) >= roomQueueSize {
		// Never block the transaction handler, which serves every room:
		// a room that floods the recorder loses its oldest events.
		q.items = q.items[1:]
		if !q.warned {
			q.warned = true
			zerolog.Ctx(ctx).Warn().Stringer("room_id", evt.RoomID).Int("backlog", roomQueueSize).
				Msg("A room sends more events than the recorder handles; dropping its oldest")
		}
	}
	q.items = append(q.items, qe)
	if !q.running {
		q.running = true
		s.wg.Add(1)
		go s.runRoomQueue(ctx, evt.RoomID, q)
	}
}

// roomQueue is one room's backlog; at most one goroutine drains it, and
// only while it holds events (under queuesLock).
type roomQueue struct {
	items   []*queuedEvent
	running bool
	warned  bool
}

// runRoomQueue handles one room's events strictly in arrival order, and
// ends (forgetting the room's queue) when the backlog is empty.
func (s *Service) runRoomQueue(ctx context.Context, roomID id.RoomID, q *roomQueue) {
	defer s.wg.Done()
	log := zerolog.Ctx(ctx).With().Stringer("room_id", roomID).Logger()
	ctx = log.WithContext(ctx)
	// Nothing is handled (no invite accepted) before the bot's device runs.
	select {
	case <-ctx.Done():
		return
	case <-s.botReady:
	}
	for ctx.Err() == nil {
		s.queuesLock.Lock()
		if len(q.items) == 0 {
			q.running = false
			if s.queues[roomID] == q {
				delete(s.queues, roomID)
			}
			s.queuesLock.Unlock()
			return
		}
		qe := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		s.queuesLock.Unlock()
		s.handleRoomEvent(ctx, qe.evt, qe.keyRetried)
	}
}

func (s *Service) handleRoomEvent(ctx context.Context, evt *event.Event, keyRetried bool) {
	log := zerolog.Ctx(ctx).With().Stringer("event_id", evt.ID).Str("event_type", evt.Type.Type).Stringer("sender", evt.Sender).Logger()
	ctx = log.WithContext(ctx)
	defer func() {
		if r := recover(); r != nil {
			log.Error().Any("panic", r).Stack().Msg("Panic while handling room event")
		}
	}()
	if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) && !errors.Is(err, event.ErrUnsupportedContentType) {
		log.Warn().Err(err).Msg("Dropping event with malformed content")
		return
	}
	if evt.Type == event.EventEncrypted {
		dec := s.decryptRoomEvent(ctx, evt, keyRetried)
		if dec == nil {
			return
		}
		evt = dec
		log = log.With().Str("decrypted_type", evt.Type.Type).Logger()
		ctx = log.WithContext(ctx)
	}
	switch evt.Type {
	case event.StateMember:
		if s.botDev != nil && s.botDev.olm != nil {
			s.botDev.olm.HandleMemberEvent(ctx, evt)
		}
		s.handleMember(ctx, evt)
	case event.EventMessage:
		s.handleMessage(ctx, evt)
	}
	s.handlersLock.RLock()
	handlers := s.handlers[evt.Type]
	s.handlersLock.RUnlock()
	for _, h := range handlers {
		h(ctx, evt)
	}
}

// SendNotice sends markdown as an m.notice (Megolm-encrypted in an
// encrypted room), as a reply when replyTo is set.
func (s *Service) SendNotice(ctx context.Context, roomID id.RoomID, markdown string, replyTo id.EventID) {
	if _, err := s.SendNoticeEvent(ctx, roomID, markdown, replyTo); err != nil {
		zerolog.Ctx(ctx).Err(err).Stringer("room_id", roomID).Msg("Failed to send notice")
	}
}

// SendNoticeEvent is SendNotice returning the event ID or the error.
func (s *Service) SendNoticeEvent(ctx context.Context, roomID id.RoomID, markdown string, replyTo id.EventID) (id.EventID, error) {
	content := renderNotice(markdown)
	if replyTo != "" {
		content.RelatesTo = (&event.RelatesTo{}).SetReplyTo(replyTo)
	}
	evtType, payload, err := s.encryptIfNeeded(ctx, roomID, event.EventMessage, content)
	if err != nil {
		return "", err
	}
	resp, err := s.Bot.SendMessageEvent(ctx, roomID, evtType, payload)
	if err != nil {
		return "", fmt.Errorf("failed to send notice: %w", err)
	}
	return resp.EventID, nil
}

// IsInRoom reports whether the state store has userID joined to roomID.
func (s *Service) IsInRoom(ctx context.Context, roomID id.RoomID, userID id.UserID) bool {
	return s.AS.StateStore.IsInRoom(ctx, roomID, userID)
}

// LoadMembers makes sure the state store has the room's members, even if
// the bot joined long ago.
func (s *Service) LoadMembers(ctx context.Context, roomID id.RoomID) error {
	_, err := s.Bot.Members(ctx, roomID)
	return err
}

// PowerLevels returns the room's power levels (cached in the state store).
func (s *Service) PowerLevels(ctx context.Context, roomID id.RoomID) (*event.PowerLevelsEventContent, error) {
	return s.Bot.PowerLevels(ctx, roomID)
}

// TURNServer asks the homeserver for TURN servers and credentials.
func (s *Service) TURNServer(ctx context.Context) (*mautrix.RespTurnServer, error) {
	return s.Bot.TurnServer(ctx)
}
