// Package naming owns the one rule for names in the file store: which names
// are safe to use as a folder or file name (Check), and how identifiers from
// outside (Matrix user, device and room ids, stream purposes, call ids)
// become such names (Safe). Safe's results always pass Check, also with a
// segment suffix such as "-000.webm" appended, so what the recording side
// names the store accepts, by construction.
package naming

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// ErrUnsafe means a name is not one safe path component.
var ErrUnsafe = errors.New("unsafe file store key")

// MaxLen bounds a Safe result, leaving room in a 255-byte file name for a
// suffix (segment, extension, ".part").
const MaxLen = 180

// maxKeyLen bounds what Check accepts: a Safe result plus a suffix.
const maxKeyLen = 230

// isNameByte reports whether c may appear in a name: ASCII letters and
// digits, '.', '-' and '_'.
func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
}

// Check validates folder and file names: each must be one path component
// of name bytes, not starting with '.' or '-', without "..", at most 230
// bytes.
func Check(parts ...string) error {
	for _, p := range parts {
		if !checkOne(p) {
			return fmt.Errorf("%w: %q", ErrUnsafe, p)
		}
	}

	return nil
}

func checkOne(p string) bool {
	if p == "" || len(p) > maxKeyLen || p[0] == '.' || p[0] == '-' || strings.Contains(p, "..") {
		return false
	}
	for i := range len(p) {
		if !isNameByte(p[i]) {
			return false
		}
	}

	return true
}

// Safe turns untrusted identifiers into one name that passes Check: ASCII
// letters, digits, '.', '-' and '_', starting with a letter or digit, no
// "..", never empty, at most MaxLen bytes. Parts are joined with '-'.
//
// It is stable (the same input always gives the same name), idempotent
// (Safe(Safe(x)) == Safe(x)) and readable: "@alice:example.org" becomes
// "alice_example.org". A part that had to be changed beyond the readable
// mapping (other characters, trimmed ends, truncation) gets a short hash
// suffix so that different inputs stay distinct.
func Safe(parts ...string) string {
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		if s := safePart(p); s != "" {
			out = append(out, s)
		}
	}
	name := strings.Join(out, "-")
	if name == "" {
		return "unnamed"
	}
	if len(name) > MaxLen {
		name = strings.TrimRight(name[:MaxLen-9], "._-") + "_" + shortHash(strings.Join(parts, "\x00"))
	}

	return name
}

// safePart maps one component; see Safe.
func safePart(p string) string {
	orig := p
	// Matrix sigils carry no information in a file name.
	if p != "" && strings.ContainsRune("@!#$+", rune(p[0])) {
		p = p[1:]
	}
	b := make([]byte, 0, len(p))
	lossy := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case isNameByte(c):
		case c == ':' || c == '/' || c == ' ':
			c = '_'
		default:
			c = '_'
			lossy = true
		}
		n := len(b)
		if c == '_' && n > 0 && b[n-1] == '_' {
			lossy = lossy || p[i] != '_'

			continue
		}
		if c == '.' && n > 0 && b[n-1] == '.' {
			lossy = true // collapse ".." so no name can climb directories

			continue
		}
		b = append(b, c)
	}
	s := strings.Trim(string(b), "._-")
	if len(s) != len(b) {
		lossy = true
	}
	if len(s) > MaxLen {
		s = strings.TrimRight(s[:MaxLen-9], "._-")
		lossy = true
	}
	if lossy && orig != "" {
		if s == "" {
			s = "x"
		}
		s += "_" + shortHash(orig)
	}

	return s
}

// shortHash returns 8 hex digits of a stable FNV-1a hash of s.
func shortHash(s string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	v := strconv.FormatUint(uint64(h.Sum32()), 16)

	return strings.Repeat("0", 8-len(v)) + v
}
