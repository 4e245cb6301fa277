// Package mixdown turns a recording's per-participant files into one file
// per recording: every participant's audio mixed on the manifest's
// timeline (Ogg Opus) and, when anyone sent video, a WebM with a grid of
// the camera streams (a screen share as the large tile) and the mixed
// audio. ffmpeg does the work; this package builds its filter graph from
// the manifest and runs it as a bounded, niced background job queue.
package mixdown

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Canvas and encoding of the video mixdown.
const (
	Width  = 960
	Height = 540
	FPS    = 15
)

// Input is one file placed on the call timeline.
type Input struct {
	// Path is a local path ffmpeg can read.
	Path string
	// Tile groups the files of one participant stream (its segments)
	// into one tile; Screen marks a screen share.
	Tile   string
	Screen bool
	// Label is drawn on the tile (the participant's name).
	Label  string
	Offset time.Duration
	// Duration is the file's length: an audio-only file is shown as a
	// name tile for that long.
	Duration time.Duration
	Audio    bool
	Video    bool
	// VideoOff are spans (relative to the file's start) in which the
	// participant's camera was off: the tile is hidden then.
	VideoOff [][2]time.Duration
}

// Plan is a whole mixdown: the call's length and its files.
type Plan struct {
	Duration time.Duration
	Inputs   []Input
}

// HasVideo reports whether anyone sent video: only then is there a WebM.
func (p Plan) HasVideo() bool {
	for _, in := range p.Inputs {
		if in.Video {
			return true
		}
	}
	return false
}

// audioTile is the colour of an audio-only participant's tile.
const audioTile = "0x34405a"

// tiled reports whether the input gets a tile in the video: cameras and
// screens, and audio-only participants (a name tile).
func (in Input) tiled() bool { return in.Video || (in.Audio && in.Duration > 0) }

// rect is a tile's place on the canvas.
type rect struct{ x, y, w, h int }

func even(n int) int { return n &^ 1 }

// layout places the tiles: with a screen share, the screen takes the
// left three quarters and the cameras share a column on the right;
// otherwise the cameras form a near-square grid.
func layout(cameras, screens []string) map[string]rect {
	out := map[string]rect{}
	if len(screens) > 0 {
		sw := even(Width * 3 / 4)
		for _, s := range screens { // later shares cover earlier ones
			out[s] = rect{0, 0, sw, Height}
		}
		if len(cameras) == 0 {
			for _, s := range screens {
				out[s] = rect{0, 0, Width, Height}
			}
			return out
		}
		h := even(Height / len(cameras))
		for i, c := range cameras {
			out[c] = rect{sw, i * h, even(Width - sw), h}
		}
		return out
	}
	n := len(cameras)
	if n == 0 {
		return out
	}
	cols := int(math.Ceil(math.Sqrt(float64(n))))
	rows := (n + cols - 1) / cols
	w, h := even(Width/cols), even(Height/rows)
	for i, c := range cameras {
		out[c] = rect{(i % cols) * w, (i / cols) * h, w, h}
	}
	return out
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) }

// Args builds ffmpeg's arguments: inputs, the filter graph, and the
// outputs audioOut (Ogg Opus) and, when the plan has video, videoOut
// (WebM). Labels are written as text files into dir (drawtext reads them
// from there, which needs no escaping of names).
func Args(p Plan, dir, audioOut, videoOut string) ([]string, error) {
	args := []string{"-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-progress", "pipe:1", "-nostats"}
	for _, in := range p.Inputs {
		args = append(args, "-i", in.Path)
	}
	var g []string
	dur := secs(p.Duration)
	// Audio: a silent bed of the call's length plus every file, delayed
	// to its offset; gaps inside a file (by timestamps) become silence.
	g = append(g, fmt.Sprintf("anullsrc=r=48000:cl=stereo,atrim=duration=%s[bed]", dur))
	mix := "[bed]"
	n := 1
	for i, in := range p.Inputs {
		if !in.Audio {
			continue
		}
		f := fmt.Sprintf("[%d:a:0]aresample=48000:async=1:first_pts=0,aformat=sample_fmts=fltp:channel_layouts=stereo", i)
		if in.Offset >= 0 {
			f += fmt.Sprintf(",adelay=delays=%d:all=1", in.Offset.Milliseconds())
		} else {
			f += fmt.Sprintf(",atrim=start=%s,asetpts=PTS-STARTPTS", secs(-in.Offset))
		}
		g = append(g, f+fmt.Sprintf("[a%d]", i))
		mix += fmt.Sprintf("[a%d]", i)
		n++
	}
	video := p.HasVideo()
	amixOut := "[aout]"
	if video {
		amixOut = "[amix]"
	}
	g = append(g, fmt.Sprintf("%samix=inputs=%d:duration=first:normalize=0:dropout_transition=0,atrim=duration=%s%s", mix, n, dur, amixOut))
	if video {
		g = append(g, "[amix]asplit=2[aout][aout2]")
		var cameras, screens []string
		seen := map[string]bool{}
		for _, in := range p.Inputs {
			if !in.tiled() || seen[in.Tile] {
				continue
			}
			seen[in.Tile] = true
			if in.Screen {
				screens = append(screens, in.Tile)
			} else {
				cameras = append(cameras, in.Tile)
			}
		}
		tiles := layout(cameras, screens)
		g = append(g, fmt.Sprintf("color=c=0x202020:s=%dx%d:r=%d:d=%s[bg0]", Width, Height, FPS, dur))
		last := "[bg0]"
		k := 0
		for i, in := range p.Inputs {
			if !in.tiled() {
				continue
			}
			r := tiles[in.Tile]
			f := fmt.Sprintf("[%d:v:0]setpts=PTS+%s/TB,fps=%d,scale=%d:%d:force_original_aspect_ratio=decrease,"+
				"pad=%d:%d:(ow-iw)/2:(oh-ih)/2:color=0x202020,setsar=1", i, secs(in.Offset), FPS, r.w, r.h, r.w, r.h)
			if !in.Video { // audio only: a plain tile with the name while the file lasts
				f = fmt.Sprintf("color=c=%s:s=%dx%d:r=%d:d=%s,setpts=PTS+%s/TB", audioTile, r.w, r.h, FPS, secs(in.Duration), secs(in.Offset))
			}
			if in.Label != "" && HasDrawtext() {
				name := filepath.Join(dir, fmt.Sprintf("label%d.txt", i))
				if err := os.WriteFile(name, []byte(in.Label), 0o600); err != nil {
					return nil, fmt.Errorf("failed to write tile label: %w", err)
				}
				size := max(10, min(24, r.h/12))
				f += fmt.Sprintf(",drawtext=textfile=%s:fontcolor=white:fontsize=%d:x=8:y=h-th-8:box=1:boxcolor=black@0.5:boxborderw=4",
					filterQuote(name), size)
			}
			g = append(g, f+fmt.Sprintf("[v%d]", i))
			enable := ""
			if len(in.VideoOff) > 0 {
				var off []string
				for _, iv := range in.VideoOff {
					off = append(off, fmt.Sprintf("between(t,%s,%s)", secs(in.Offset+iv[0]), secs(in.Offset+iv[1])))
				}
				enable = fmt.Sprintf(":enable='not(%s)'", strings.Join(off, "+"))
			}
			next := fmt.Sprintf("[bg%d]", k+1)
			g = append(g, fmt.Sprintf("%s[v%d]overlay=x=%d:y=%d:eof_action=pass:repeatlast=0%s%s", last, i, r.x, r.y, enable, next))
			last = next
			k++
		}
		g = append(g, last+"format=yuv420p[vout]")
	}
	args = append(args, "-filter_complex", strings.Join(g, ";\n"))
	args = append(args, "-map", "[aout]", "-c:a", "libopus", "-b:a", "64k", "-t", dur, "-f", "ogg", audioOut)
	if video {
		args = append(args, "-map", "[vout]", "-map", "[aout2]", "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8",
			"-b:v", "1M", "-g", strconv.Itoa(FPS*2), "-c:a", "libopus", "-b:a", "64k", "-t", dur, "-f", "webm", videoOut)
	}
	return args, nil
}

// filterQuote quotes a value for an ffmpeg filter option (the label
// files are in the job's own work folder, so ' is all that can need care).
func filterQuote(s string) string {
	return "'" + strings.ReplaceAll(s, `'`, `'\''`) + "'"
}

var drawtext = sync.OnceValue(func() bool {
	out, err := exec.Command("ffmpeg", "-hide_banner", "-filters").Output() //nolint:gosec // fixed arguments
	return err == nil && strings.Contains(string(out), " drawtext ")
})

// HasDrawtext reports whether ffmpeg can draw names on tiles (it needs
// libfreetype); without it tiles have no names.
func HasDrawtext() bool { return drawtext() }
