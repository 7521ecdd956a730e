package boundimages

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"
	"go.podman.io/image/v5/docker/reference"
)

// parseUnit parses systemd unit syntax from r and returns the last value of
// each of keys in section (systemd's "last assignment wins"; an empty
// assignment resets). Values are raw: see specValue.
func parseUnit(r io.Reader, section string, keys ...string) (map[string]string, error) {
	opts, err := unit.DeserializeOptions(r)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errors.New("unexpected end of file")
		}
		return nil, err
	}
	vals := make(map[string]string, len(keys))
	for _, o := range opts {
		if o.Section != section {
			continue
		}
		for _, k := range keys {
			if o.Name == k {
				vals[k] = o.Value
			}
		}
	}
	return vals, nil
}

// specValue turns a raw value from parseUnit into the string systemd and
// quadlet would use: continuation lines are joined with a space (systemd
// replaces the trailing backslash with one), surrounding whitespace and one
// pair of surrounding quotes are removed, and "%%" becomes "%". Any other
// systemd specifier ("%h", "%i", a lone trailing "%") is an error: its value
// depends on the unit instance and the host, not on the image.
func specValue(raw string) (string, error) {
	s := strings.ReplaceAll(raw, "\\\n", " ")
	s = strings.TrimSpace(s)
	s = strings.TrimSpace(strings.TrimSuffix(s, "\\")) // continuation at end of file
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		s = s[1 : len(s)-1]
	}
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		return "", errors.New("systemd specifiers are not supported in bound images")
	}
	return b.String(), nil
}

// otherTransports are containers/image's transports other than docker,
// named so that their references are refused as such rather than as a
// malformed registry reference (podman's quadlets pull from registries).
var otherTransports = map[string]bool{
	"oci": true, "oci-archive": true, "dir": true, "docker-archive": true, "docker-daemon": true,
	"containers-storage": true, "ostree": true, "sif": true, "tarball": true,
}

// normalize parses an Image= value as a docker reference and returns it
// fully qualified: a "docker://" transport prefix is dropped, short names
// get "docker.io/" (and "library/"), a bare name gets ":latest", and a
// reference with both a tag and a digest keeps only the digest.
func normalize(image string) (string, error) {
	if name, _, ok := strings.Cut(image, ":"); ok && otherTransports[name] {
		return "", fmt.Errorf("transport %s: is not a registry; a bound image is pulled from a registry (docker://)", name)
	}
	ref, err := reference.ParseDockerRef(strings.TrimPrefix(image, "docker://"))
	if err != nil {
		return "", err
	}
	return ref.String(), nil
}
