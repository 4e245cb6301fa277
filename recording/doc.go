// Package recording turns the RTP packets of one participant stream into
// correct, seekable, crash-safe media files: WebM (VP8 or VP9 video plus
// Opus audio) for streams with video, Ogg Opus for audio-only streams.
//
// It imports only the standard library, pion, ebml-go and zerolog, and knows
// nothing about Matrix or PeerConnections: the caller feeds packets and
// RTCP sender reports, and sends PLIs when asked to.
//
// # API
//
//	w, err := recording.NewStreamWriter(ctx, recording.StreamConfig{
//		Dir:      dir,
//		BaseName: naming.Safe(userID, deviceID, purpose),
//		Audio:    &recording.TrackParams{MimeType: recording.MimeTypeOpus, ClockRate: 48000, Channels: 2, SSRC: a},
//		Video:    &recording.TrackParams{MimeType: recording.MimeTypeVP8, ClockRate: 90000, SSRC: v},
//		RequestKeyframe: func() { _ = pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: v}}) },
//	})
//	// per track reader goroutine:   w.WriteRTP(recording.KindVideo, pkt, time.Now())
//	// per RTCP reader goroutine:    w.SenderReport(sr.SSRC, sr.NTPTime, sr.RTPTime)
//	// on mute/unmute signalling:    w.SetMuted(recording.KindAudio, true, time.Time{})
//	files, err := w.Close(ctx)
//
// At startup, before writers use a directory, Repair(ctx, dir) finalizes
// the "*.part" files a crash left behind and returns what it repaired.
// WriteManifest writes a manifest.json describing a recording's files.
//
// # Files and segments
//
// Each StreamWriter writes files named BaseName-NNN.webm or BaseName-NNN.ogg
// (NNN = segment index, starting at StreamConfig.FirstSegment). BaseName
// must be a naming.Safe result; nothing else from outside reaches a path.
// A new segment starts when a video keyframe has a different resolution
// (WebM track dimensions are fixed) and when video (re)appears on a stream
// that is currently written as Ogg. A new peer session or a rejoin is a new
// StreamWriter; pass the next FirstSegment (or another BaseName).
//
// Audio-only vs video: a stream whose config (or a later AddTrack) has a
// video track waits up to KeyframeWait (5 s) for the first keyframe, holding
// the audio meanwhile, and then writes one WebM with both tracks (audio from
// before the keyframe included). If no keyframe comes in time (camera off),
// it writes an Ogg and switches to a new WebM segment at the first keyframe.
// The new segment starts where the previous file's audio ended (at most 1 s
// before the keyframe), so segments line up back to back.
//
// FileResult.Start is the wall-clock time of each file's time zero, so all
// files of all participants can be placed on one call timeline.
//
// # Timing
//
// Packets go through a per-track reorder buffer (sequence numbers unwrapped
// to 64 bit; duplicates and late packets dropped; a hole is given up after
// JitterDelay or when too many packets queue behind it). Media time comes
// from the RTP timestamp, unwrapped to 64 bit (so the 2^32 wrap needs no new
// file), mapped to the local wall clock. Before the first file opens, media
// is held for up to SyncWait (1.5 s) so that sender reports can arrive. If
// every track has one by then, each track is mapped through its report
// (NTP time), which aligns audio and video, and the sender clock is shifted
// onto the local clock by the audio's first arrival (participants' clocks
// differ; the local clock is the common call timeline). Otherwise tracks
// start on arrival time and are aligned once the reports come: the track
// that must move is always moved later (the other one if needed), so the
// file gets a short gap instead of dropped frames. A file's mapping is
// otherwise fixed, so its timeline is continuous. An RTP timestamp jump that
// disagrees with arrival time by more than 10 s is taken as a sender
// discontinuity and re-anchored on arrival time.
//
// Gaps (DTX, mute, loss) keep their wall-clock length: in WebM the block
// timestamps jump; in Ogg the gap is filled with Opus CELT silence frames
// (20/10/5/2.5 ms) so the granule position stays continuous with the data
// (RFC 7845 §4.1). Per track, timestamps are kept monotonic; the two WebM
// tracks are interleaved by this package (ebml-go's sorter would silently
// drop late frames).
//
// Opus pre-skip: both containers declare a pre-skip of 3840 samples (80 ms,
// RFC 7845 §4.2 for streams cut from a running encoder) and prepend exactly
// 80 ms of silence frames, so playback time zero is the first real packet.
// In WebM, CodecPrivate is the matching OpusHead, CodecDelay is 80 ms and
// SeekPreRoll 80 ms; the audio blocks are stamped 80 ms late and players
// subtract CodecDelay (ffprobe shows the Opus track starting at -0.080 s).
//
// # Video health
//
// A keyframe is requested when the stream (or video track) is created,
// then every 300 ms until the first keyframe; nothing is written before it.
// When a packet is lost or a frame is incomplete, a keyframe is requested
// and video is dropped until the next keyframe. If no keyframe has been seen
// for 4 s, one is requested (at most every 500 ms). While video is muted no
// requests are made; unmuting requests one at once. Requests are driven by
// WriteRTP calls of any track (there is no timer goroutine).
//
// # Containers
//
// WebM: the header (EBML, SeekHead, Info with DateUTC = the file's
// wall-clock start, Tracks) and the Cues are marshalled with ebml-go once
// per file; Clusters (unknown size) and SimpleBlocks are encoded by this
// package into a reused buffer, without reflection or allocation per block.
// Cues go into 128 KiB reserved after the header and Duration is patched at
// close; a cluster starts at each video keyframe at least 1 s apart (so
// every cue is a keyframe). Ogg Opus is written by an own page
// writer (RFC 3533 pages with CRC, RFC 7845 headers: OpusHead alone on the
// BOS page, OpusTags on the next, granule = 48 kHz position + pre-skip, a
// page every 200 ms, EOS on the last page).
//
// # Crash safety and errors
//
// Files are written as "<name>.part" and renamed when finalized. After a
// crash a part holds everything up to its last complete block handed to
// the file (WebM: the block buffer is written every 200 ms of media or
// 64 KiB, so at most that is lost) or page (Ogg, at most 200 ms lost).
// Nothing is fsynced while recording, once at finalization: a machine crash
// may lose what the kernel had not written back yet. Repair remuxes WebM
// parts in Go into files with Cues and Duration and gives Ogg parts an EOS
// page. A write error (disk full) fails only that StreamWriter: WriteRTP and
// Close return an error wrapping ErrWriterFailed and the cause (a WebM write
// error shows at the next buffer flush), the part stays for Repair, other
// writers are unaffected.
//
// # Concurrency and allocation
//
// A StreamWriter is safe for concurrent use and starts no goroutine (Repair
// remuxes through ebml-go's writer, which runs three until the file ends).
// RequestKeyframe is never called with a lock held. Payloads are copied into
// reused buffers: neither the Ogg nor the WebM path allocates per packet in
// steady state (BenchmarkOggWrite, BenchmarkWebMWrite1M).
package recording
