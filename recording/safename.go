package recording

import (
	"hash/fnv"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxSafeNameLen bounds the byte length of a SafeName result, leaving room in
// a 255-byte file name for a segment suffix, extension and ".part".
const maxSafeNameLen = 180

// maxSafePartLen bounds a single component before joining (equal to the
// whole bound, so that SafeName is idempotent).
const maxSafePartLen = maxSafeNameLen

// SafeName turns untrusted identifiers (Matrix user ids, device ids, stream
// purposes, room ids, ...) into one file-name component that is safe to join
// to a directory: the result contains only ASCII letters, digits, '.', '-',
// '_' (and '~' inside a name), never starts with '.', contains no "..", no path separator and no
// control character, is never empty and is at most 180 bytes long.
//
// It is stable (the same input always gives the same name) and readable:
// "@alice:example.org" becomes "alice_example.org". Parts are joined with '-'.
// A part that had to be changed beyond the readable mapping (non-ASCII runes,
// truncation) gets a short hash suffix so that different inputs stay distinct.
func SafeName(parts ...string) string {
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
	if len(name) > maxSafeNameLen {
		name = name[:maxSafeNameLen-9] + "~" + shortHash(strings.Join(parts, "\x00"))
	}

	return name
}

// safePart maps one component; see SafeName.
func safePart(p string) string {
	orig := p
	// Matrix sigils carry no information in a file name.
	if p != "" && strings.ContainsRune("@!#$+", rune(p[0])) {
		p = p[1:]
	}
	var b strings.Builder
	lossy := false
	lastUnderscore := false
	for _, r := range p {
		var c byte
		switch {
		case r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			c = byte(r)
		case r == '.' || r == '-' || r == '_' || r == '~':
			c = byte(r)
		case r == ':' || r == '/' || r == '\\' || r == ' ' || r == '=' || r == '+':
			c = '_'
		default:
			c = '_'
			lossy = true
		}
		if c == '_' && lastUnderscore {
			continue
		}
		lastUnderscore = c == '_'
		// Collapse ".." sequences so no component can climb directories.
		if c == '.' && b.Len() > 0 && b.String()[b.Len()-1] == '.' {
			lossy = true

			continue
		}
		b.WriteByte(c)
	}
	s := strings.Trim(b.String(), "._-~")
	if s != strings.Trim(b.String(), "_") {
		lossy = true
	}
	if len(s) > maxSafePartLen {
		s = s[:maxSafePartLen-9]
		lossy = true
	}
	if lossy && orig != "" {
		if s == "" {
			s = "x"
		}
		s += "~" + shortHash(orig)
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
