#!/usr/bin/env bash
# Generates the small synthetic media files used by the recording/ tests.
# The outputs are committed to testdata/media/; rerun only to change them.
#
# All clips are 5 s long. Every second, at t = k + 0.5 s (k = 0..4), the audio
# has a 100 ms 1 kHz beep and the video shows white frames for 100 ms, so a
# recording of both can be checked for A/V sync. Requires ffmpeg with libopus
# and libvpx.
set -euo pipefail

cd "$(dirname "$0")/.."
out=testdata/media
mkdir -p "$out"

ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }

beep="between(mod(t\,1)\,0.5\,0.6)"

# Opus, 48 kHz stereo, 20 ms frames, one packet per Ogg page (so pion's
# oggreader yields one Opus packet per ParseNextPage call).
ff -f lavfi -i "aevalsrc=if(${beep}\,0.5*sin(2*PI*1000*t)\,0)|if(${beep}\,0.5*sin(2*PI*1000*t)\,0):s=48000:d=5" \
	-c:a libopus -b:a 24k -frame_duration 20 -application audio \
	-page_duration 20000 -map_metadata -1 "$out/beeps-opus-48k-stereo.ogg"

# Continuous tones, one frequency per simulated participant, for the
# mixdown tests (which participant sounds when): 5 s, amplitude 0.2.
for freq in 600 1500; do
	ff -f lavfi -i "aevalsrc=0.2*sin(2*PI*${freq}*t)|0.2*sin(2*PI*${freq}*t):s=48000:d=5" \
		-c:a libopus -b:a 24k -frame_duration 20 -application audio \
		-page_duration 20000 -map_metadata -1 "$out/tone-${freq}-opus-48k-stereo.ogg"
done

# Video: black background, a grey box moving across (so frames differ), and a
# white full-frame flash aligned with the beeps. Keyframe every second, no
# alt-ref frames (like a real-time WebRTC encoder).
video() { # size codec file extra...
	local size=$1 codec=$2 file=$3
	shift 3
	ff -f lavfi -i "color=c=black:s=${size}:r=30:d=5" \
		-vf "drawbox=x='mod(t*60\,iw-20)':y=ih/3:w=20:h=20:c=gray:t=fill,drawbox=enable='${beep}':x=0:y=0:w=iw:h=ih:c=white:t=fill" \
		-c:v "$codec" -g 30 -keyint_min 30 -b:v 60k -deadline realtime -cpu-used 8 \
		-auto-alt-ref 0 -lag-in-frames 0 "$@" -f ivf "$out/$file"
}
video 320x240 libvpx vp8-320x240.ivf
video 160x120 libvpx vp8-160x120.ivf
video 320x240 libvpx-vp9 vp9-320x240.ivf -row-mt 0

# Browser-like camera for the simulator: 10 s with a key frame only at the
# start (browsers send key frames on request; the simulator makes one by
# going back to frame 0 on a PLI).
ff -f lavfi -i "color=c=black:s=320x240:r=30:d=10" \
	-vf "drawbox=x='mod(t*60\,iw-20)':y=ih/3:w=20:h=20:c=gray:t=fill,drawbox=enable='${beep}':x=0:y=0:w=iw:h=ih:c=white:t=fill" \
	-c:v libvpx -g 1000 -keyint_min 1000 -b:v 60k -deadline realtime -cpu-used 8 \
	-auto-alt-ref 0 -lag-in-frames 0 -f ivf "$out/vp8-320x240-longgop.ivf"

ls -l "$out"
du -ch "$out"/* | tail -1
