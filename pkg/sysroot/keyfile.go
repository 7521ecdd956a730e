package sysroot

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// Origin files are GLib key files (ostree writes them with GKeyFile). The
// systemd unit parser bootstore used before reads a trailing backslash as a
// line continuation (a value ending in '\' swallowed the next key) and
// refuses lines longer than 2048 bytes (a bound-images list of 32 images),
// so origins are read and written here with GLib's rules instead:
//
//   - "[group]" lines, "key=value" lines, '#' comments and blank lines;
//     no continuation lines;
//   - in values, "\s" "\n" "\t" "\r" "\\" are space, newline, tab, carriage
//     return and backslash; a leading space is written as "\s".
//
// An unknown escape is kept as it is (GLib refuses it); origins written by
// earlier bootstore versions, whose lists use "\;", read back unchanged.

// keyfileEntry is one key=value line.
type keyfileEntry struct {
	group, key, value string
}

// parseKeyfile reads a key file; errors name the line.
func parseKeyfile(data []byte) ([]keyfileEntry, error) {
	var out []keyfileEntry
	group := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		trimmed := strings.TrimLeft(line, " \t")
		switch {
		case trimmed == "" || trimmed[0] == '#':
			continue
		case trimmed[0] == '[':
			end := strings.IndexByte(trimmed, ']')
			if end < 0 || strings.TrimSpace(trimmed[end+1:]) != "" {
				return nil, fmt.Errorf("line %d: malformed group header %q", n, trimmed)
			}
			group = trimmed[1:end]
			continue
		}
		key, value, ok := strings.Cut(trimmed, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: %q is neither a group nor key=value", n, trimmed)
		}
		if group == "" {
			return nil, fmt.Errorf("line %d: key %q outside of any group", n, strings.TrimSpace(key))
		}
		out = append(out, keyfileEntry{group: group, key: strings.TrimSpace(key), value: unescapeValue(strings.TrimLeft(value, " \t"))})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// escapeValue writes s so that parseKeyfile returns it unchanged.
func escapeValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == ' ' && i == 0:
			b.WriteString(`\s`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func unescapeValue(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 's':
			b.WriteByte(' ')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case '\\':
			b.WriteByte('\\')
		default:
			b.WriteByte('\\')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}
