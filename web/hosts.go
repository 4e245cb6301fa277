package web

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// hostChecker refuses requests whose Host names a host the operator did not
// configure. A page on an attacker's domain whose name is rebound to the
// recorder's address (DNS rebinding) reaches the API with the attacker's
// name in Host; IP literals and localhost cannot be rebound and are always
// served, so direct access, probes and the loopback default keep working.
type hostChecker struct {
	any   bool
	names map[string]bool
}

func newHostChecker(allowed []string) *hostChecker {
	hc := &hostChecker{names: map[string]bool{"localhost": true}}
	for _, name := range allowed {
		name = normalizeHost(name)
		if name == "*" {
			hc.any = true
		}
		if name != "" {
			hc.names[name] = true
		}
	}
	return hc
}

// normalizeHost strips the port, brackets and a trailing dot and lowers
// the case: "Recorder.Example.org.:443" -> "recorder.example.org".
func normalizeHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

func (hc *hostChecker) allowed(host string) bool {
	if hc.any || host == "" {
		return true
	}
	name := normalizeHost(host)
	if _, err := netip.ParseAddr(name); err == nil {
		return true
	}
	return hc.names[name]
}

func (hc *hostChecker) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hc.allowed(r.Host) {
			writeError(w, http.StatusMisdirectedRequest, CodeForbidden,
				"This host name is not served here; add it to api.allowed_hosts")
			return
		}
		next.ServeHTTP(w, r)
	})
}
