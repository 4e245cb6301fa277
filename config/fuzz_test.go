package config

import (
	"errors"
	"strings"
	"testing"
)

// FuzzApplyEnv: any RECORDER_ variable is applied, warned about or refused
// with ErrBadEnv; it never panics and never fails for a name that names no
// key (Kubernetes-style variables must not stop the recorder).
func FuzzApplyEnv(f *testing.F) {
	for _, seed := range [][2]string{
		{"RECORDER_HOMESERVER__ADDRESS", "http://127.0.0.1:8008"},
		{"RECORDER_APPSERVICE__PORT", "eighty"},
		{"RECORDER_APPSERVICE__PORT", "99999999999999999999999"},
		{"RECORDER_WEBRTC__UDP_PORT_MIN", "70000"},
		{"RECORDER_WEBRTC__UDP_PORT_MIN", "-1"},
		{"RECORDER_WEBRTC__LOOPBACK_ONLY", "maybe"},
		{"RECORDER_API__TOKENS", ",, ,a,"},
		{"RECORDER_PERMISSIONS", "*=user,=,@a:b=admin,novalue"},
		{"RECORDER_PERMISSIONS__EXAMPLE.COM", "user"},
		{"RECORDER_PORT", "tcp://10.0.0.7:29331"},
		{"RECORDER_PORT_29331_TCP_ADDR", "10.0.0.7"},
		{"RECORDER_SERVICE_HOST", "10.0.0.7"},
		{"RECORDER_", "x"},
		{"RECORDER___", "x"},
		{"RECORDER_HOMESERVER", "x"},
		{"RECORDER_HOMESERVER__ADDRESS__X", "x"},
		{"RECORDER_LOGGING__FORMAT_FIL", "x"},
		{"recorder_homeserver__address", "x"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		if strings.Contains(name, "=") {
			return // os.Environ never has "=" in a name
		}
		if strings.HasSuffix(strings.ToLower(name), "_file") {
			return // reads a file named by value: not for a fuzzer
		}
		cfg := Default()
		warnings, err := ApplyEnv(cfg, []string{name + "=" + value})
		if err != nil && !errors.Is(err, ErrBadEnv) {
			t.Fatalf("%s: error is neither a warning nor ErrBadEnv: %v", name, err)
		}
		if err != nil && len(warnings) > 0 {
			t.Fatalf("%s: both a warning and an error", name)
		}
		if !strings.HasPrefix(name, EnvPrefix) && (err != nil || len(warnings) > 0) {
			t.Fatalf("%s: a variable without the prefix was looked at", name)
		}
		// EnvWarning has no field for the value, so it cannot leak it.
		for _, w := range warnings {
			if w.Name != name {
				t.Fatalf("warning %q names the wrong variable", w.String())
			}
			if w.DidYouMean != "" && !envKeyExists(w.DidYouMean) {
				t.Fatalf("suggestion %s names no key", w.DidYouMean)
			}
		}
		_ = cfg.Validate(true)
	})
}

// FuzzParse: any config file is parsed or refused with an error; never a
// panic, and a parsed one validates without panicking.
func FuzzParse(f *testing.F) {
	f.Add([]byte(ExampleConfig))
	f.Add([]byte("homeserver: [1, 2]\n"))
	f.Add([]byte("permissions:\n  \"*\": [user]\n"))
	f.Add([]byte("a: &a [*a, *a]\nb: *a\n"))
	f.Add([]byte("api:\n  <<: {listen: x}\n"))
	f.Add([]byte("webrtc:\n  udp_port_min: 70000\n"))
	f.Add([]byte("appservice: !!binary aGVsbG8=\n"))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := Default()
		if err := Parse(data, cfg); err != nil {
			return
		}
		_ = cfg.Validate(true)
		_ = cfg.API.HostNames()
	})
}
