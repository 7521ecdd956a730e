package status

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// WriteJSON writes h as indented JSON followed by a newline.
func WriteJSON(w io.Writer, h *Host) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(h); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

// WriteYAML writes h as a YAML document with exactly WriteJSON's
// members and values: the JSON is re-encoded in YAML's block style, so
// timestamps stay strings (quoted) as in JSON.
func WriteYAML(w io.Writer, h *Host) error {
	data, err := json.Marshal(h)
	if err != nil {
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return err
	}
	blockStyle(&doc)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	_, err = w.Write(b.Bytes())
	return err
}

// blockStyle clears the flow and quoting styles JSON's syntax gave the
// nodes; the encoder then quotes only what needs it.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// WriteHuman writes h the way `bootc status` prints a host: the staged,
// booted and rollback deployments (those present, in that order, blank
// line between), then any other deployments, each a header line and
// right-aligned rows:
//
//	  Staged image: quay.io/example/os:2
//	        Digest: sha256:... (amd64)
//	       Version: 43 (2024-02-01T00:00:00Z)
//	       Storage: unified
//
//	● Booted image: quay.io/example/os:1
//	...
//
// A host with nothing booted prints bootc's one line, "System is not
// deployed via bootc.". The Storage row is bootstore's.
func WriteHuman(w io.Writer, h *Host) error {
	var b strings.Builder
	if h.Status.Booted == nil {
		b.WriteString("System is not deployed via bootc.\n")
	} else {
		first := true
		sep := func() {
			if !first {
				b.WriteByte('\n')
			}
			first = false
		}
		for _, s := range []struct {
			name, header string
			entry        *BootEntry
		}{
			{"staged", "  Staged", h.Status.Staged},
			{"booted", "● Booted", h.Status.Booted},
			{"rollback", "  Rollback", h.Status.Rollback},
		} {
			if s.entry == nil {
				continue
			}
			sep()
			humanEntry(&b, s.name, s.header, s.entry, &h.Status)
		}
		for i := range h.Status.OtherDeployments {
			sep()
			humanEntry(&b, "other", "   Other", &h.Status.OtherDeployments[i], &h.Status)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// humanEntry writes one deployment; header is the slot's column ("●
// Booted"), to which " image" or " ostree" is appended.
func humanEntry(b *strings.Builder, slot, header string, e *BootEntry, hs *HostStatus) {
	if e.Image == nil {
		if e.Ostree == nil {
			fmt.Fprintf(b, "Current %s state is unknown\n", slot)
			return
		}
		prefix := header + " ostree"
		fmt.Fprintln(b, prefix)
		row(b, prefix, "Commit", e.Ostree.Checksum)
		humanTail(b, slot, prefix, e, hs)
		return
	}
	img := e.Image
	prefix := header + " image"
	fmt.Fprintf(b, "%s: %s\n", prefix, img.Image.String())
	row(b, prefix, "Digest", fmt.Sprintf("%s (%s)", img.ImageDigest, img.Architecture))
	var ts string
	if img.Timestamp != nil {
		ts = img.Timestamp.UTC().Format("2006-01-02T15:04:05Z")
	}
	switch {
	case img.Version != nil && ts != "":
		row(b, prefix, "Version", fmt.Sprintf("%s (%s)", *img.Version, ts))
	case img.Version != nil:
		row(b, prefix, "Version", *img.Version)
	case ts != "":
		row(b, prefix, "Timestamp", ts)
	}
	humanTail(b, slot, prefix, e, hs)
}

func humanTail(b *strings.Builder, slot, prefix string, e *BootEntry, hs *HostStatus) {
	if e.Pinned {
		row(b, prefix, "Pinned", "yes")
	}
	if slot == "booted" && hs.UsrOverlay != nil {
		row(b, prefix, "/usr overlay", hs.UsrOverlay.Persistence+", "+accessModeText(hs.UsrOverlay.AccessMode))
	}
	if e.Bootstore != nil && e.Bootstore.Storage != "" {
		row(b, prefix, "Storage", e.Bootstore.Storage)
	}
	if e.Bootstore != nil && e.Bootstore.Composefs != "" {
		v := e.Bootstore.Composefs
		if e.Bootstore.ComposefsVerity {
			v += " (fs-verity required)"
		}
		row(b, prefix, "Composefs", v)
	}
}

// row writes "name: value", name right-aligned to the header's width.
func row(b *strings.Builder, prefix, name, value string) {
	if n := utf8.RuneCountInString(prefix) - utf8.RuneCountInString(name); n > 0 {
		b.WriteString(strings.Repeat(" ", n))
	}
	fmt.Fprintf(b, "%s: %s\n", name, value)
}

func accessModeText(m string) string {
	switch m {
	case "readOnly":
		return "read-only"
	case "readWrite":
		return "read/write"
	}
	return m
}
