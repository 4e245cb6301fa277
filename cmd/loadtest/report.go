package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// report is the Markdown report of a run.
type report struct {
	o       options
	command string
	started time.Time
	machine string
	points  []pointResult
	fails   []string
}

func newReport(o options, command string) *report {
	return &report{o: o, command: command, started: time.Now().UTC(), machine: machine()}
}

func (r *report) add(p pointResult) { r.points = append(r.points, p) }

func (r *report) failed(n int, err error) {
	r.fails = append(r.fails, fmt.Sprintf("N=%d: %v", n, err))
}

// machine describes the CPU and the load when the run started.
func machine() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		_ = f.Close()
	}
	load := "?"
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(data))[:3], " ")
	}
	return fmt.Sprintf("%d CPUs (%s), %s/%s, %s; load average at start %s", runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH, runtime.Version(), load)
}

func (r *report) write(path string) error {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Load test report\n\n")
	w("- started: %s\n- machine: %s\n- command: `%s`\n", r.started.Format(time.RFC3339), r.machine, r.command)
	if r.o.rtc {
		w("- MatrixRTC calls: participants publish Opus 20 ms + VP8 %d-byte frames (key frames %d) at 30 fps with server-sdk-go to a LiveKit SFU on this machine (livekit-server --dev), calls of %d; the recorder, then the baseline (a bare server-sdk-go subscriber), subscribe to every track; the SFU's CPU is on the machine too, and packets sent are not counted (the SFU sends to the recorder)\n",
			r.o.videoBytes, 3*r.o.videoBytes, r.o.callSize)
	} else {
		w("- participants: Opus 20 ms + VP8 %d-byte frames (key frames %d) at 30 fps, sent only to the recorder (and then to the baseline joiner), calls of %d\n",
			r.o.videoBytes, 3*r.o.videoBytes, r.o.callSize)
	}
	w("- warm-up %s after every participant was first written, window %s; the baseline joiner is measured right after the recorder, against the same senders, with the same warm-up and window\n",
		r.o.warmup, r.o.window)
	if r.o.readyUsers < 0 {
		w("- the recorder sets up one virtual user per call at start-up (`appservice.ready_users`), and the calls are joined once they are ready\n\n")
	} else {
		w("- the recorder sets up %d virtual users at start-up (`appservice.ready_users`); the calls are joined once they are ready, and users beyond them are set up on the join path\n\n", r.o.readyUsers)
	}

	w("| N / calls | recorder CPU / baseline CPU | recorder µs per stream-second (baseline) | recorder µs per packet received (baseline) | RSS MiB (per participant) | baseline RSS MiB (per participant) | join → first written p50 / p95 / max | join → first media in the file p50 / p95 / max | sender CPU (cores) |\n")
	w("|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range r.points {
		streams := float64(2*p.N) * p.Window.Seconds()
		ratio, baseUS, basePkt := "n/a", "n/a", "n/a"
		if p.Baseline && p.BaseCPU > 0 {
			ratio = fmt.Sprintf("%.2f", p.RecCPU.Seconds()/p.BaseCPU.Seconds())
			baseUS = fmt.Sprintf("%.0f", float64(p.BaseCPU.Microseconds())/streams)
			basePkt = perPacket(p.BaseCPU, p.BaseReceived)
		}
		w("| %d / %d | %s | %.0f (%s) | %s (%s) | %.1f (%.2f) | %s | %s / %s / %s | %s / %s / %s | %.2f (baseline phase %.2f) |\n",
			p.N, p.Calls, ratio, float64(p.RecCPU.Microseconds())/streams, baseUS, perPacket(p.RecCPU, p.Received), basePkt,
			mib(p.RecRSS), mib(p.RecRSS)/float64(p.N), baseRSS(p),
			ms(percentile(p.JoinToFirst, 0.5)), ms(percentile(p.JoinToFirst, 0.95)), ms(percentile(p.JoinToFirst, 1)),
			ms(percentile(p.JoinToMedia, 0.5)), ms(percentile(p.JoinToMedia, 0.95)), ms(percentile(p.JoinToMedia, 1)),
			p.SenderCPU.Seconds()/p.Window.Seconds(), p.BaseSenderCPU.Seconds()/p.Window.Seconds())
	}
	w("\n## Packets and bytes\n\n")
	w("| N | window: sent / received / frames written / given up | baseline window: sent / received (lost) | recorder-caused loss: given up / received, whole recording | write queue: dropped / high water | whole recording: sent / received | bytes written / received | participants recorded (files) | RSS slope in window |\n")
	w("|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range r.points {
		lossPct, over := 0.0, 0.0
		if p.TotalReceived > 0 {
			lossPct = 100 * float64(p.TotalLost) / float64(p.TotalReceived)
		}
		if p.BytesReceived > 0 {
			over = 100 * (float64(p.BytesWritten)/float64(p.BytesReceived) - 1)
		}
		base, sent, totalSent := "n/a", fmt.Sprint(p.Sent), fmt.Sprint(p.TotalSent)
		if r.o.rtc {
			sent, totalSent = "n/a", "n/a"
		}
		if p.Baseline {
			base = fmt.Sprintf("%d / %d (%d)", p.BaseSent, p.BaseReceived, int64(p.BaseSent)-int64(p.BaseReceived)) //nolint:gosec // counts
			if r.o.rtc {
				base = fmt.Sprintf("n/a / %d", p.BaseReceived)
			}
		}
		w("| %d | %s / %d / %d / %d | %s | %d / %d (%.3f %%) | %d / %d | %s / %d | %d / %d (%+.2f %%) | %d of %d (%d) | %+.1f KiB/s |\n",
			p.N, sent, p.Received, p.Frames, p.Lost, base, p.TotalLost, p.TotalReceived, lossPct, p.QueueDropped, p.QueueHighWater, totalSent, p.TotalReceived,
			p.BytesWritten, p.BytesReceived, over, p.Recorded, p.N, p.Files,
			float64(p.RecRSS-p.RecRSS0)/1024/p.Window.Seconds())
	}
	w("\nReading the columns:\n\n")
	w("- CPU is user + system time of the process (`/proc/<pid>/stat`, the counters of its rusage) over the window; a stream is one track (audio or video), so N participants are 2N streams.\n")
	w("- Compare the windows' packet counts: a sender starved by a busy machine falls behind and catches up in bursts, so a window may carry more (or fewer) packets than real time; CPU per packet received is the fairer ratio then.\n")
	w("- Sender CPU is the load tool's own rusage over the window, in cores: if it nears the machine's cores, the senders and not the recorder are the limit.\n")
	w("- Received comes from the recorder's `/metrics` (`recorder_packets_received_total`, added every 256 packets of a track, so a window's count is off by up to 256 per track at each end); whole-recording numbers are read after every file was finalized and are exact.\n")
	w("- Recorder-caused loss is `recorder_packets_lost_total`: the sequence gaps its jitter buffers gave up on (not repaired by NACK within the jitter delay). On loopback, with a sender that is not saturated, a gap is a packet the recorder did not read in time. The whole-recording sent count also holds packets sent before the connection was up (dropped by the sender's pion), so sent − received is not loss.\n")
	w("- Write queue: packets the per-stream write queues dropped because the stream's writer fell behind (`recorder_write_queue_dropped_packets_total`, also recorder-caused loss) and the deepest queue seen (`recorder_write_queue_high_water_packets`).\n")
	w("- The baseline's counts are exact (the joiner reads its own packet counters at the window's edges).\n")
	w("- Frames written are audio packets plus video frames (a frame is several packets). Bytes written include the container; bytes received are RTP payloads.\n")
	w("- Join → first written is from the API call that made the recorder join a participant's call to the first file of that participant appearing in the spool (the writer opens it with the first frame, once sender reports came or 1.5 s passed), all calls joined at once. Join → first media in the file is from the same API call to the wall-clock start of the participant's first stored file: the first media the recording holds, which the writer held while it waited for the reports.\n")
	for _, p := range r.points {
		if p.CPUTop == "" {
			continue
		}
		w("\n## Recorder profiles at N=%d\n\nCPU over the window:\n\n```\n%s\n```\n\nHeap in use at the window's end:\n\n```\n%s\n```\n\nWhat the heap in use grew by over the window (end less start):\n\n```\n%s\n```\n",
			p.N, p.CPUTop, p.HeapTop, p.HeapGrowthTop)
	}
	if len(r.fails) > 0 {
		w("\n## Failed points\n\n")
		for _, f := range r.fails {
			w("- %s\n", f)
		}
	}
	for _, p := range r.points {
		if p.NotStarted > 0 || p.Recorded < p.N {
			w("\nN=%d: %d participants never written during the run, %d of %d with a stored file.\n", p.N, p.NotStarted, p.Recorded, p.N)
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil { //nolint:gosec // a report
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}

func baseRSS(p pointResult) string {
	if !p.Baseline {
		return "n/a"
	}
	return fmt.Sprintf("%.1f (%.2f)", mib(p.BaseRSS), mib(p.BaseRSS)/float64(p.N))
}

// perPacket is CPU time per packet in µs: comparable when the senders did
// not keep their pace in one of the windows (a starved sender catches up
// in bursts).
func perPacket(cpu time.Duration, packets uint64) string {
	if packets == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", float64(cpu.Nanoseconds())/1000/float64(packets))
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
