package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/appservice"
	"github.com/matrix-recorder/recorder/callbot/signaling"
	"github.com/matrix-recorder/recorder/config"
	"github.com/matrix-recorder/recorder/internal/testutil"
	"github.com/matrix-recorder/recorder/internal/testutil/homeserver"
	lktest "github.com/matrix-recorder/recorder/internal/testutil/livekit"
	"github.com/matrix-recorder/recorder/internal/testutil/simpeer"
)

const (
	// setupDeadline bounds every wait of the setup and teardown.
	setupDeadline = 60 * time.Second
	// pollEvery is how often the spool and the counters are looked at.
	pollEvery = 20 * time.Millisecond
	// loadPrefix and basePrefix start the localparts of the participants
	// and of the baseline joiner's users.
	loadPrefix = "load-"
	basePrefix = "base-"
)

// pointResult is everything measured for one N.
type pointResult struct {
	N, Calls int
	Window   time.Duration

	// the recorder's window
	RecCPU    time.Duration // recorder process CPU in the window
	RecRSS    int64         // at the end of the window
	RecRSS0   int64         // at the start of the window
	SenderCPU time.Duration // the load tool's own CPU in the window (the senders)
	Sent      uint64        // RTP packets the participants sent in the window
	Received  uint64        // packets handed to the writers in the window (metrics)
	Lost      uint64        // packets the jitter buffers gave up in the window
	Frames    uint64        // audio packets + video frames written in the window
	// totals of the whole recording, read after every file was finalized
	TotalSent, TotalReceived, TotalLost uint64
	QueueDropped                        uint64 // dropped by full write queues, whole recording
	QueueHighWater                      uint64 // deepest write queue, packets
	BytesReceived, BytesWritten         uint64
	Keyframes                           uint64
	Recorded                            int // participants with a stored file
	Files                               int

	JoinToFirst []time.Duration // per participant recorded, sorted
	// JoinToMedia is from the join to the wall-clock start of the
	// participant's first file (its first media, held while the file
	// waited for sender reports), per participant, sorted.
	JoinToMedia []time.Duration
	NotStarted  int // participants never written

	// CPUTop and HeapTop are the top of the recorder's profiles (-profile).
	CPUTop, HeapTop string
	// HeapGrowthTop is the top of the heap's growth over the window (the
	// heap at its end less the heap at its start): who keeps more.
	HeapGrowthTop string

	// the baseline's window
	Baseline        bool
	BaseCPU         time.Duration
	BaseRSS         int64
	BaseSenderCPU   time.Duration
	BaseSent        uint64
	BaseReceived    uint64
	BaseConnected   int
	BaseWindowStart time.Time
}

// participant is one simulated sender.
type participant struct {
	name string
	call int
	p    *simpeer.Participant // a mesh participant
	lk   *lktest.Participant  // or a MatrixRTC one (-matrixrtc)
}

// point is the state of one run.
type point struct {
	t      testing.TB
	ctx    context.Context
	o      options
	n      int
	dir    string
	cfg    *config.Config
	hs     *homeserver.Server
	api    string
	token  string
	rec    *child
	rooms  []id.RoomID
	parts  []*participant
	joined []time.Time     // per call: when the recorder was asked to join
	probe  *mautrix.Client // a participant's client, to look at the homeserver
	// MatrixRTC (-matrixrtc): the LiveKit SFU and its authorization service.
	lk   *lktest.Server
	auth *lktest.AuthService
}

// runPoint measures one N. It fails t on any setup error; it never fails
// on a number.
func runPoint(ctx context.Context, t testing.TB, o options, n int) pointResult {
	t.Helper()
	pt := &point{t: t, ctx: ctx, o: o, n: n, dir: t.TempDir()}
	calls := (n + o.callSize - 1) / o.callSize
	res := pointResult{N: n, Calls: calls, Window: o.window}
	log := zerolog.Ctx(ctx).With().Int("n", n).Int("calls", calls).Logger()
	ctx = log.WithContext(ctx)
	pt.ctx = ctx

	pt.startStack(calls)
	pt.startParticipants(calls)
	pt.waitReadyUsers()
	log.Info().Msg("Participants in their calls; the recorder joins every call")

	first := pt.joinAll()
	pt.wait(first.all, setupDeadline+o.warmup) // bounded: participants that never start are reported
	log.Info().Msg("Warm-up")
	pt.sleep(o.warmup)

	// the recorder's window
	met0 := pt.metrics()
	sent0, self0 := pt.sent(), selfCPU()
	cpu0, rss0 := pt.procSample(pt.rec.pid())
	log.Info().Dur("window", o.window).Msg("Recorder window")
	prof := pt.startCPUProfile()
	pt.sleep(o.window)
	cpu1, rss1 := pt.procSample(pt.rec.pid())
	res.CPUTop, res.HeapTop, res.HeapGrowthTop = pt.finishProfiles(prof)
	sent1, self1 := pt.sent(), selfCPU()
	met1 := pt.metrics()
	res.RecCPU, res.RecRSS, res.RecRSS0 = cpu1-cpu0, rss1, rss0
	res.SenderCPU = self1 - self0
	res.Sent = sent1 - sent0
	res.Received = delta(met0, met1, metPacketsReceived)
	res.Lost = delta(met0, met1, metPacketsLost)
	res.Frames = delta(met0, met1, metFramesWritten)
	res.JoinToFirst, res.NotStarted = first.durations(pt)

	// stop, and count what was stored
	res.TotalSent = pt.sent()
	pt.stopAll()
	res.Recorded, res.Files = pt.waitStored()
	res.JoinToMedia = pt.joinToMedia()
	met2 := pt.metrics()
	res.TotalReceived = uint64(met2[metPacketsReceived])
	res.TotalLost = uint64(met2[metPacketsLost])
	res.BytesReceived = uint64(met2[metBytesReceived])
	res.BytesWritten = uint64(met2[metBytesWritten])
	res.Keyframes = uint64(met2[metKeyframes])
	res.QueueDropped = uint64(met2[metQueueDropped])
	res.QueueHighWater = uint64(met2[metQueueHighWater])
	first.stop()

	if o.baseline {
		pt.runBaseline(&res)
	}
	log.Info().Msg("Point done")
	return res
}

// ---- the stack ----

func (pt *point) startStack(calls int) {
	t := pt.t
	t.Helper()
	port, err := testutil.FreePort()
	require.NoError(t, err)
	apiPort, err := testutil.FreePort()
	require.NoError(t, err)
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	pt.token = hex.EncodeToString(tok[:])

	cfg := config.Default()
	cfg.Homeserver.Domain = homeserver.Domain
	cfg.Homeserver.Address = "http://127.0.0.1:1" // replaced once Dendrite runs
	cfg.Appservice.Hostname = "127.0.0.1"
	cfg.Appservice.Port = port
	cfg.Appservice.Address = "http://127.0.0.1:" + strconv.Itoa(port)
	cfg.Database.URI = "file:" + filepath.Join(pt.dir, "recorder.db") + "?_txlock=immediate"
	cfg.Recordings.Path = filepath.Join(pt.dir, "recordings")
	cfg.API.Listen = "127.0.0.1:" + strconv.Itoa(apiPort)
	cfg.API.Tokens = []string{pt.token}
	cfg.API.Pprof = true
	cfg.WebRTC = config.WebRTCConfig{LoopbackOnly: true}
	cfg.Permissions = map[string]config.PermissionLevel{"*": config.PermissionUser}
	cfg.Mixdown.Enabled = false
	cfg.Limits.MaxCalls = max(cfg.Limits.MaxCalls, pt.n)
	cfg.Appservice.ReadyUsers = pt.o.readyUsers
	if pt.o.readyUsers < 0 {
		cfg.Appservice.ReadyUsers = min(calls, 64)
	}
	reg := appservice.GenerateRegistration(cfg.Homeserver, cfg.Appservice)
	cfg.Appservice.ASToken, cfg.Appservice.HSToken = reg.AppToken, reg.ServerToken
	regPath := filepath.Join(pt.dir, "registration.yaml")
	require.NoError(t, reg.Save(regPath))

	// MatrixRTC: the authorization service checks OpenID tokens through
	// the federation API.
	pt.hs = homeserver.Start(t, homeserver.Options{RegistrationFiles: []string{regPath}, Federation: pt.o.rtc})
	if pt.o.rtc {
		pt.lk = lktest.Start(t)
		pt.auth = lktest.StartAuthService(t, pt.lk, map[string]string{homeserver.Domain: pt.hs.URL})
	}
	cfg.Homeserver.Address = pt.hs.URL
	require.NoError(t, cfg.Validate(true))
	data, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	cfgPath := filepath.Join(pt.dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, data, 0o600))
	pt.cfg = cfg
	pt.api = "http://" + cfg.API.Listen

	pt.rec = startChild(t, exec.Command(pt.o.recorder, "-c", cfgPath), filepath.Join(pt.dir, "recorder.log"), false)
	pt.waitFor(func() bool { return httpOK(pt.ctx, cfg.Appservice.Address+"/_matrix/mau/live") }, "the recorder did not start")
}

// startParticipants registers the participants and the baseline users,
// creates one room per call and starts every participant in its call.
func (pt *point) startParticipants(calls int) {
	t, ctx := pt.t, pt.ctx
	t.Helper()
	bot := id.NewUserID(pt.cfg.Appservice.Bot.Username, pt.cfg.Homeserver.Domain)
	media := filepath.Join(testutil.ModuleRoot(t), "testdata", "media")
	members := make([][]int, calls)
	for i := range pt.n {
		members[i%calls] = append(members[i%calls], i)
	}
	clients := make([]*mautrix.Client, pt.n)
	for i := range pt.n {
		clients[i] = pt.hs.RegisterUser(ctx, t, fmt.Sprintf("%s%03d", loadPrefix, i))
	}
	pt.probe = clients[0]
	skip := func(k signaling.DeviceKey) bool { return strings.HasPrefix(k.UserID.Localpart(), loadPrefix) }
	for k, idx := range members {
		base := fmt.Sprintf("%s%02d", basePrefix, k)
		baseCli := pt.hs.RegisterUser(ctx, t, base)
		invite := []id.UserID{bot, baseCli.UserID}
		for _, i := range idx[1:] {
			invite = append(invite, clients[i].UserID)
		}
		creator := clients[idx[0]]
		room := pt.hs.CreateRoom(ctx, t, creator, homeserver.RoomOptions{
			Name: "Load " + strconv.Itoa(k), Invite: invite, CallPowerLevelsZero: true,
			EventLevels: map[string]int{"org.matrix.recorder.recording": 0},
		})
		pt.rooms = append(pt.rooms, room)
		pt.waitFor(func() bool {
			var m event.MemberEventContent
			return creator.StateEvent(ctx, room, event.StateMember, string(bot), &m) == nil && m.Membership == event.MembershipJoin
		}, "the bot did not join a room")
		_, err := baseCli.JoinRoomByID(ctx, room)
		require.NoError(t, err)
		for j, i := range idx {
			cli := clients[i]
			if j > 0 {
				_, err := cli.JoinRoomByID(ctx, room)
				require.NoError(t, err)
			}
			if pt.o.rtc {
				p, err := lktest.Join(ctx, lktest.ParticipantOptions{Client: cli, RoomID: room, ServiceURL: pt.auth.URL,
					MediaDir: media, Camera: true, VideoFrameBytes: pt.o.videoBytes})
				require.NoError(t, err)
				t.Cleanup(p.Disconnect)
				pt.parts = append(pt.parts, &participant{name: cli.UserID.Localpart(), call: k, lk: p})
				continue
			}
			p, err := simpeer.New(ctx, simpeer.Config{
				Client: cli, RoomID: room, CreateCall: j == 0, Video: true, MediaDir: media,
				SyncTimeout: 30 * time.Second, SkipPeer: skip, VideoFrameBytes: pt.o.videoBytes,
			})
			require.NoError(t, err)
			p.Start(ctx)
			t.Cleanup(func() {
				stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
				defer cancel()
				_ = p.Stop(stopCtx)
			})
			require.NoError(t, p.Join(ctx))
			pt.parts = append(pt.parts, &participant{name: cli.UserID.Localpart(), call: k, p: p})
		}
	}
}

// waitReadyUsers waits until the virtual users the recorder sets up at
// start-up (appservice.ready_users, mesh ones first) have their devices on
// the homeserver: a recorder that has been running a while has them.
func (pt *point) waitReadyUsers() {
	n := pt.cfg.Appservice.ReadyUsers
	if n == 0 {
		return
	}
	users := make(map[id.UserID]mautrix.DeviceIDList, n)
	kind := "" // mesh users are set up first, then MatrixRTC ones ("rtc")
	if pt.o.rtc {
		kind = "rtc"
	}
	for i := 1; i <= n; i++ {
		users[id.NewUserID(pt.cfg.Appservice.UserPrefix+kind+strconv.Itoa(i), pt.cfg.Homeserver.Domain)] = nil
	}
	pt.waitFor(func() bool {
		resp, err := pt.probe.QueryKeys(pt.ctx, &mautrix.ReqQueryKeys{DeviceKeys: users})
		if err != nil {
			return false
		}
		for u := range users {
			if len(resp.DeviceKeys[u]) == 0 {
				return false
			}
		}
		return true
	}, "the recorder did not set up its ready virtual users")
}

// ---- the recorder's phase ----

// firstWritten watches the spool for each participant's first file.
type firstWritten struct {
	all    chan struct{} // closed when every participant has a file
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	first map[string]time.Time
}

// joinAll asks the recorder to join every call at once and watches for
// the first file of each participant.
func (pt *point) joinAll() *firstWritten {
	t := pt.t
	t.Helper()
	ctx, cancel := context.WithCancel(pt.ctx)
	fw := &firstWritten{all: make(chan struct{}), cancel: cancel, first: map[string]time.Time{}}
	fw.wg.Add(1)
	go func() {
		defer fw.wg.Done()
		fw.watch(ctx, filepath.Join(pt.cfg.Recordings.Path, ".spool"), pt.parts)
	}()
	pt.joined = make([]time.Time, len(pt.rooms))
	errs := make([]error, len(pt.rooms))
	var wg sync.WaitGroup
	for k, room := range pt.rooms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pt.joined[k] = time.Now()
			body, _ := json.Marshal(map[string]string{"room_id": string(room)})
			errs[k] = pt.call(http.MethodPost, "/api/v1/calls", body)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err, "the recorder did not join")
	}
	t.Cleanup(fw.stop)
	return fw
}

// watch polls the spool until every participant has a part file.
func (fw *firstWritten) watch(ctx context.Context, spool string, parts []*participant) {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		_ = filepath.WalkDir(spool, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".part") {
				return nil //nolint:nilerr // a directory that went away
			}
			now := time.Now()
			fw.mu.Lock()
			for _, p := range parts {
				if _, ok := fw.first[p.name]; !ok && strings.Contains(d.Name(), p.name) {
					fw.first[p.name] = now
				}
			}
			fw.mu.Unlock()
			return nil
		})
		fw.mu.Lock()
		done := len(fw.first) == len(parts)
		fw.mu.Unlock()
		if done {
			close(fw.all)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (fw *firstWritten) stop() {
	fw.cancel()
	fw.wg.Wait()
}

// durations returns join → first file per participant, sorted, and how
// many never got a file.
func (fw *firstWritten) durations(pt *point) ([]time.Duration, int) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	var out []time.Duration
	for _, p := range pt.parts {
		if at, ok := fw.first[p.name]; ok {
			out = append(out, at.Sub(pt.joined[p.call]))
		}
	}
	slices.Sort(out)
	return out, len(pt.parts) - len(out)
}

// stopAll stops every recording and waits until the recorder left.
func (pt *point) stopAll() {
	t := pt.t
	t.Helper()
	for _, room := range pt.rooms {
		require.NoError(t, pt.call(http.MethodDelete, "/api/v1/calls/"+url.PathEscape(string(room)), nil))
	}
	pt.waitFor(func() bool {
		var list struct {
			Calls []json.RawMessage `json:"calls"`
		}
		data, err := pt.get("/api/v1/calls")
		return err == nil && json.Unmarshal(data, &list) == nil && len(list.Calls) == 0
	}, "the recorder did not leave")
}

// waitStored waits until every participant has a finalized file in the
// store (no part left in the spool) and returns how many participants
// have one, and the number of files.
func (pt *point) waitStored() (int, int) {
	root := pt.cfg.Recordings.Path
	var recorded, files int
	scan := func() bool {
		recorded, files = 0, 0
		seen := map[string]bool{}
		parts := 0
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil //nolint:nilerr // a directory that went away
			}
			name := d.Name()
			switch {
			case strings.HasSuffix(name, ".part"):
				parts++
			case strings.Contains(path, string(filepath.Separator)+".spool"+string(filepath.Separator)):
			case strings.HasSuffix(name, ".webm") || strings.HasSuffix(name, ".ogg"):
				files++
				for _, p := range pt.parts {
					if strings.Contains(name, p.name) {
						seen[p.name] = true
					}
				}
			}
			return nil
		})
		recorded = len(seen)
		return parts == 0 && recorded == len(pt.parts)
	}
	pt.waitUntil(scan, setupDeadline) // bounded; what is missing is reported
	return recorded, files
}

// joinToMedia reads every stored file's start (its first media on the
// wall clock) from the API and returns, per participant, how long after
// the recorder was asked to join its call the earliest one starts.
func (pt *point) joinToMedia() []time.Duration {
	callOf := map[id.RoomID]int{}
	for k, room := range pt.rooms {
		callOf[room] = k
	}
	type listed struct {
		ID     string    `json:"id"`
		RoomID id.RoomID `json:"room_id"`
	}
	var recs []listed
	for cursor := ""; ; {
		var page struct {
			Recordings []listed `json:"recordings"`
			NextCursor string   `json:"next_cursor"`
		}
		data, err := pt.get("/api/v1/recordings?limit=100&cursor=" + url.QueryEscape(cursor))
		if err == nil {
			err = json.Unmarshal(data, &page)
		}
		if err != nil {
			zerolog.Ctx(pt.ctx).Warn().Err(err).Msg("Failed to list the recordings")
			return nil
		}
		recs = append(recs, page.Recordings...)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	first := map[id.UserID]time.Duration{}
	for _, rec := range recs {
		k, ok := callOf[rec.RoomID]
		if !ok {
			continue
		}
		var detail struct {
			Tracks []struct {
				UserID    id.UserID `json:"user_id"`
				StartedAt time.Time `json:"started_at"`
			} `json:"tracks"`
		}
		data, err := pt.get("/api/v1/recordings/" + url.PathEscape(rec.ID))
		if err != nil || json.Unmarshal(data, &detail) != nil {
			zerolog.Ctx(pt.ctx).Warn().Err(err).Str("recording_id", rec.ID).Msg("Failed to read a recording")
			continue
		}
		for _, tr := range detail.Tracks {
			d := tr.StartedAt.Sub(pt.joined[k])
			if at, ok := first[tr.UserID]; !ok || d < at {
				first[tr.UserID] = d
			}
		}
	}
	out := make([]time.Duration, 0, len(first))
	for _, d := range first {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// ---- the baseline's phase ----

func (pt *point) runBaseline(res *pointResult) {
	t := pt.t
	t.Helper()
	spec := baselineSpec{Homeserver: pt.hs.URL, MediaDir: filepath.Join(testutil.ModuleRoot(t), "testdata", "media")}
	if pt.auth != nil {
		spec.ServiceURL = pt.auth.URL
	}
	for k, room := range pt.rooms {
		spec.Calls = append(spec.Calls, baselineCall{RoomID: room, Localpart: fmt.Sprintf("%s%02d", basePrefix, k)})
	}
	data, err := json.Marshal(spec)
	require.NoError(t, err)
	specPath := filepath.Join(pt.dir, "baseline.json")
	require.NoError(t, os.WriteFile(specPath, data, 0o600))
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self, "-test.run=^$") // a test binary runs no test; the command ignores it
	cmd.Env = append(os.Environ(), baselineEnv+"="+specPath)
	b := startChild(t, cmd, filepath.Join(pt.dir, "baseline.log"), true)
	line, err := b.readLine(setupDeadline)
	require.NoError(t, err)
	require.Equal(t, "READY", line, "the baseline joiner did not start")
	var m baselineMark
	pt.waitFor(func() bool {
		m, err = b.mark()
		return err == nil && m.Senders >= pt.n
	}, "the baseline joiner does not receive every participant")
	zerolog.Ctx(pt.ctx).Info().Msg("Baseline warm-up")
	pt.sleep(pt.o.warmup)
	m0, err := b.mark()
	require.NoError(t, err)
	sent0, self0 := pt.sent(), selfCPU()
	cpu0, _ := pt.procSample(b.pid())
	res.BaseWindowStart = time.Now()
	zerolog.Ctx(pt.ctx).Info().Dur("window", pt.o.window).Msg("Baseline window")
	pt.sleep(pt.o.window)
	cpu1, rss1 := pt.procSample(b.pid())
	sent1, self1 := pt.sent(), selfCPU()
	m1, err := b.mark()
	require.NoError(t, err)
	res.Baseline = true
	res.BaseCPU, res.BaseRSS = cpu1-cpu0, rss1
	res.BaseSenderCPU = self1 - self0
	res.BaseSent = sent1 - sent0
	res.BaseReceived = m1.Packets - m0.Packets
	res.BaseConnected = m1.Connected
	b.closeInput()
}

// ---- profiles ----

// cpuProfile is a CPU profile being taken over the window.
type cpuProfile struct {
	path      string
	heapStart string // the heap profile at the window's start
	done      chan error
}

// startCPUProfile asks the recorder's pprof listener for a CPU profile of
// the window, if -profile is set.
func (pt *point) startCPUProfile() *cpuProfile {
	if pt.o.profile == "" {
		return nil
	}
	require.NoError(pt.t, os.MkdirAll(pt.o.profile, 0o755))
	p := &cpuProfile{path: filepath.Join(pt.o.profile, fmt.Sprintf("cpu-%d.pprof", pt.n)), done: make(chan error, 1),
		heapStart: filepath.Join(pt.o.profile, fmt.Sprintf("heap-start-%d.pprof", pt.n))}
	require.NoError(pt.t, pt.save("/debug/pprof/heap", p.heapStart))
	secs := strconv.Itoa(int(pt.o.window.Seconds()))
	go func() { p.done <- pt.save("/debug/pprof/profile?seconds="+secs, p.path) }()
	return p
}

// finishProfiles waits for the CPU profile, takes a heap profile and
// returns the top of both, and of what the heap grew by over the window.
func (pt *point) finishProfiles(p *cpuProfile) (string, string, string) {
	if p == nil {
		return "", "", ""
	}
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case err := <-p.done:
		require.NoError(pt.t, err)
	case <-timer.C:
		pt.t.Fatal("no CPU profile")
	}
	heap := filepath.Join(pt.o.profile, fmt.Sprintf("heap-%d.pprof", pt.n))
	require.NoError(pt.t, pt.save("/debug/pprof/heap", heap))
	return pt.top(p.path, "-top"), pt.top(heap, "-sample_index=inuse_space", "-top"),
		pt.top(heap, "-sample_index=inuse_space", "-diff_base="+p.heapStart, "-top")
}

// save writes an authorized GET of the API to path.
func (pt *point) save(path, to string) error {
	data, err := pt.get(path)
	if err != nil {
		return err
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		return fmt.Errorf("failed to save %s: %w", to, err)
	}
	return nil
}

// top is the head of `go tool pprof -top` of a profile of the recorder.
func (pt *point) top(profile string, args ...string) string {
	args = append(append([]string{"tool", "pprof", "-nodecount=15"}, args...), pt.o.recorder, profile)
	out, err := exec.CommandContext(pt.ctx, "go", args...).Output()
	if err != nil {
		return fmt.Sprintf("(go tool pprof failed: %v)", err)
	}
	return strings.TrimSpace(string(out))
}

// ---- helpers ----

// sent sums the RTP packets every participant has sent.
func (pt *point) sent() uint64 {
	var n uint64
	for _, p := range pt.parts {
		if p.p == nil {
			continue // MatrixRTC: the SFU, not the participant, sends to the recorder
		}
		s := p.p.Snapshot()
		n += s.SentPackets["audio"] + s.SentPackets["video"]
	}
	return n
}

func (pt *point) metrics() map[string]float64 {
	m, err := scrapeMetrics(pt.ctx, pt.api, pt.token)
	require.NoError(pt.t, err)
	return m
}

func (pt *point) procSample(pid int) (time.Duration, int64) {
	cpu, err := procCPU(pid)
	require.NoError(pt.t, err)
	rss, err := procRSS(pid)
	require.NoError(pt.t, err)
	return cpu, rss
}

func delta(a, b map[string]float64, name string) uint64 {
	if d := b[name] - a[name]; d > 0 {
		return uint64(d)
	}
	return 0
}

// call sends an authorized API request and checks for a 2xx answer.
func (pt *point) call(method, path string, body []byte) error {
	req, err := http.NewRequestWithContext(pt.ctx, method, pt.api+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("failed to build %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+pt.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%w: %s %s: %s: %s", errHTTP, method, path, resp.Status, data)
	}
	return nil
}

func (pt *point) get(path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(pt.ctx, http.MethodGet, pt.api+path, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to build GET %s: %w", path, err)
	}
	req.Header.Set("Authorization", "Bearer "+pt.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: GET %s: %s", errHTTP, path, resp.Status)
	}
	return data, nil
}

func httpOK(ctx context.Context, u string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitFor polls cond until it holds, and fails the point after the setup
// deadline.
func (pt *point) waitFor(cond func() bool, msg string) {
	pt.t.Helper()
	if !pt.waitUntil(cond, setupDeadline) {
		pt.t.Fatal(msg)
	}
}

// waitUntil polls cond until it holds or within passed (or the run is
// interrupted), and reports whether it held.
func (pt *point) waitUntil(cond func() bool, within time.Duration) bool {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery * 5)
	defer tick.Stop()
	for !cond() {
		select {
		case <-pt.ctx.Done():
			return false
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
	return true
}

// wait waits for ch to close, at most within.
func (pt *point) wait(ch <-chan struct{}, within time.Duration) {
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
	case <-pt.ctx.Done():
	}
}

// sleep is a measured span (warm-up, window): the load runs meanwhile. An
// interrupt fails the point.
func (pt *point) sleep(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-pt.ctx.Done():
		pt.t.Fatal("interrupted")
	}
}

// ---- child processes ----

// child is a process the point started (the recorder or the baseline
// joiner); the point's cleanup ends it (SIGTERM, SIGKILL after 15 s).
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	exited chan struct{}
	once   sync.Once
}

// startChild starts cmd with its output in logPath; with pipe its stdin
// and stdout are the load tool's to use (lines, mark).
func startChild(t testing.TB, cmd *exec.Cmd, logPath string, pipe bool) *child {
	t.Helper()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the load tool
	c := &child{cmd: cmd, lines: make(chan string, 16), exited: make(chan struct{})}
	var stdout io.ReadCloser
	if pipe {
		c.stdin, err = cmd.StdinPipe()
		require.NoError(t, err)
		stdout, err = cmd.StdoutPipe()
		require.NoError(t, err)
	} else {
		cmd.Stdout = logFile
	}
	require.NoError(t, cmd.Start())
	var readers sync.WaitGroup
	if stdout != nil {
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer close(c.lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				c.lines <- sc.Text()
			}
		}()
	}
	go func() {
		readers.Wait() // Wait closes stdout: read it all first
		_ = cmd.Wait()
		_ = logFile.Close()
		close(c.exited)
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) readLine(within time.Duration) (string, error) {
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case l, ok := <-c.lines:
		if !ok {
			return "", fmt.Errorf("%w: %s exited", errChild, c.cmd.Path)
		}
		return l, nil
	case <-timer.C:
		return "", fmt.Errorf("%w: no answer from %s within %s", errChild, c.cmd.Path, within)
	}
}

// mark asks the baseline joiner what it received.
func (c *child) mark() (baselineMark, error) {
	var m baselineMark
	if _, err := io.WriteString(c.stdin, "mark\n"); err != nil {
		return m, fmt.Errorf("failed to ask the baseline joiner: %w", err)
	}
	line, err := c.readLine(10 * time.Second)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		return m, fmt.Errorf("%w: bad mark %q: %w", errChild, line, err)
	}
	return m, nil
}

func (c *child) closeInput() {
	if c.stdin != nil {
		_ = c.stdin.Close()
	}
}

// stop ends the process: stdin closed (the baseline leaves its calls) or
// SIGTERM (the recorder finishes its files), SIGKILL after 15 s.
func (c *child) stop() {
	c.once.Do(func() {
		c.closeInput()
		if c.stdin == nil {
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
		}
		timer := time.NewTimer(15 * time.Second)
		defer timer.Stop()
		select {
		case <-c.exited:
			return
		case <-timer.C:
		}
		_ = c.cmd.Process.Kill()
		<-c.exited
	})
}

var errChild = errors.New("child process")
