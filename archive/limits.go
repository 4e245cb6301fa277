package archive

import (
	"context"
	"io/fs"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-recorder/recorder/callbot"
)

// Stop reasons the archive gives when a limit ends a recording.
const (
	StopReasonSizeLimit = callbot.StopSizeLimit
	StopReasonDiskFull  = callbot.StopDiskFull
)

// Limits are the disk limits of recordings; 0 means no limit.
type Limits struct {
	// MaxRecordingBytes bounds one recording's files.
	MaxRecordingBytes int64
	// MaxDiskBytes bounds everything under the recordings path.
	MaxDiskBytes int64
	// OnLimit is told (in a goroutine of its own, bounded by its context)
	// that a room's recording must stop, and why; the wiring makes the
	// call bot leave and tell the room.
	OnLimit func(ctx context.Context, roomID id.RoomID, reason callbot.StopReason)
}

// limitTimeout bounds one OnLimit call.
const limitTimeout = time.Minute

// diskRecheck is how often the real disk usage is measured again once the
// running count says the limit is reached (deleted recordings free space).
const diskRecheck = 30 * time.Second

// diskUsage counts the bytes under the recordings path: measured at start,
// then kept up to date by the writers' reports.
type diskUsage struct {
	dir     string
	lock    sync.Mutex
	used    int64
	checked time.Time
}

func newDiskUsage(dir string) *diskUsage {
	d := &diskUsage{dir: dir}
	d.used = d.measure()
	d.checked = time.Now()
	return d
}

// measure walks the recordings path.
func (d *diskUsage) measure() int64 {
	var total int64
	_ = filepath.WalkDir(d.dir, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if info, err := e.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}

// add counts n more bytes and reports whether the usage is over max, after
// measuring again if the last measurement is old.
func (d *diskUsage) add(n, maxBytes int64) bool {
	d.lock.Lock()
	defer d.lock.Unlock()
	d.used += n
	if maxBytes <= 0 || d.used < maxBytes {
		return false
	}
	if time.Since(d.checked) >= diskRecheck {
		d.used, d.checked = d.measure(), time.Now()
	}
	return d.used >= maxBytes
}

// full reports whether the usage is at or over max.
func (d *diskUsage) full(maxBytes int64) bool {
	return d.add(0, maxBytes)
}

// checkLimits is called with the bytes a stream wrote since its last
// report; it stops the recording (once) when a limit is reached.
func (c *callRec) checkLimits(delta int64) {
	r := c.r
	if r.limits.MaxRecordingBytes <= 0 && r.limits.MaxDiskBytes <= 0 {
		return
	}
	total := c.bytes.Add(delta)
	switch {
	case r.disk.add(delta, r.limits.MaxDiskBytes):
		c.stopFor(StopReasonDiskFull)
	case r.limits.MaxRecordingBytes > 0 && total >= r.limits.MaxRecordingBytes:
		c.stopFor(StopReasonSizeLimit)
	}
}

// stopFor asks, once, for the recording to stop for reason.
func (c *callRec) stopFor(reason callbot.StopReason) {
	if c.limitHit.CompareAndSwap(false, true) {
		c.r.requestStop(c.rec.RoomID, reason)
	}
}

// requestStop tells the wiring that a room's recording must stop.
func (r *Recorder) requestStop(roomID id.RoomID, reason callbot.StopReason) {
	zerolog.Ctx(r.bgCtx).Warn().Stringer("room_id", roomID).Str("reason", string(reason)).Msg("A recording limit was reached; stopping the recording")
	if r.met != nil {
		r.met.LimitsHit.WithLabelValues(string(reason)).Inc()
	}
	if r.limits.OnLimit == nil {
		return
	}
	r.stops.Add(1)
	go func() {
		defer r.stops.Done()
		ctx, cancel := context.WithTimeout(r.bgCtx, limitTimeout)
		defer cancel()
		r.limits.OnLimit(ctx, roomID, reason)
	}()
}
