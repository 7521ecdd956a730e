package progress

import (
	"strings"

	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/types"
)

// layerState is where one layer of a pull is.
type layerState int

const (
	layerPending layerState = iota // no event yet
	layerActive                    // NewArtifact or Read seen
	layerDone                      // Done seen: fetched (perhaps partly, see cached)
	layerSkipped                   // Skipped seen: the store already had it
)

// pullLayer is one layer of a pull.
type pullLayer struct {
	info    types.BlobInfo
	size    int64  // bytes of the blob; -1 while unknown
	fetched uint64 // bytes fetched so far; never decreases
	cached  uint64 // bytes the store already had (whole blob, or a partial pull's rest)
	state   layerState
}

// total is the layer's size as far as known: its size, or what was fetched if
// that is more (or the size is unknown).
func (l *pullLayer) total() uint64 {
	if l.size >= 0 {
		return max(uint64(l.size), l.fetched)
	}
	return l.fetched
}

// learnSize takes the size from an event's artifact if the layer's is unknown.
func (l *pullLayer) learnSize(info types.BlobInfo) {
	if l.size < 0 && info.Size >= 0 {
		l.size = info.Size
	}
}

// pull is the progress of one image pull, fed copy.Image's events. It is
// owned by one goroutine at a time.
type pull struct {
	ref     string
	layers  []*pullLayer
	dynamic bool // no layers were given: take them from the events
}

func newPull(ref string, layers []types.BlobInfo) *pull {
	p := &pull{ref: ref, dynamic: len(layers) == 0}
	for _, info := range layers {
		p.layers = append(p.layers, &pullLayer{info: info, size: info.Size})
	}
	return p
}

// isConfig tells whether a blob is an image config, which copy.Image reports
// like a layer but which is no layer.
func isConfig(info types.BlobInfo) bool {
	switch info.MediaType {
	case imgspecv1.MediaTypeImageConfig, manifest.DockerV2Schema2ConfigMediaType:
		return true
	}
	return false
}

// find returns the first layer with the artifact's digest in the first of
// states that has one. A layer may appear more than once in a manifest; each
// appearance is one layer of the pull, and events go to them in order. With
// no layers given in advance, an artifact that is not a config becomes a new
// layer. It returns nil for artifacts that are no layer of this pull, such as
// the config.
func (p *pull) find(info types.BlobInfo, states ...layerState) *pullLayer {
	for _, st := range states {
		for _, l := range p.layers {
			if l.state == st && l.info.Digest == info.Digest {
				return l
			}
		}
	}
	if !p.dynamic || isConfig(info) || info.Digest == "" {
		return nil
	}
	l := &pullLayer{info: info, size: info.Size}
	p.layers = append(p.layers, l)
	return l
}

// apply takes one event from copy.Image. It tells whether the event changed
// what a report would say, and whether it is a milestone (a layer finished)
// that should be reported without throttling.
func (p *pull) apply(e types.ProgressProperties) (changed, milestone bool) {
	switch e.Event {
	case types.ProgressEventNewArtifact:
		l := p.find(e.Artifact, layerPending)
		if l == nil {
			return false, false
		}
		l.learnSize(e.Artifact)
		l.state = layerActive
		return true, false
	case types.ProgressEventRead:
		l := p.find(e.Artifact, layerActive, layerPending)
		if l == nil {
			return false, false
		}
		l.learnSize(e.Artifact)
		changed = l.state != layerActive || e.Offset > l.fetched
		l.state = layerActive
		l.fetched = max(l.fetched, e.Offset)
		return changed, false
	case types.ProgressEventDone:
		l := p.find(e.Artifact, layerActive, layerPending)
		if l == nil {
			return false, false
		}
		l.learnSize(e.Artifact)
		l.fetched = max(l.fetched, e.Offset)
		l.finish()
		return true, true
	case types.ProgressEventSkipped:
		l := p.find(e.Artifact, layerPending, layerActive)
		if l == nil {
			return false, false
		}
		l.learnSize(e.Artifact)
		l.skip()
		return true, true
	}
	// An event kind newer than this code.
	return false, false
}

// finish marks the layer fetched. What a partial pull did not fetch, the
// store already had.
func (l *pullLayer) finish() {
	l.state = layerDone
	if l.size < 0 {
		l.size = int64(l.fetched)
	}
	l.cached = l.total() - l.fetched
}

// skip marks the layer as one the store already had. Bytes already read
// for it were still fetched: such a layer is finished instead, with the
// rest counted as cached, so that the bytes reported never go down.
func (l *pullLayer) skip() {
	if l.fetched > 0 {
		l.finish()
		return
	}
	l.state = layerSkipped
	l.cached = l.total()
}

// complete is called when copy.Image succeeded: every layer is in the store
// now. A layer that saw no event (copy.Image reports nothing without a
// ProgressInterval, and nothing for foreign layers it does not copy) counts
// as cached, since no bytes were reported for it; one that saw no Done counts
// as fetched whole.
func (p *pull) complete() {
	for _, l := range p.layers {
		switch l.state {
		case layerPending:
			l.skip()
		case layerActive:
			if l.size >= 0 {
				l.fetched = max(l.fetched, uint64(l.size))
			}
			l.finish()
		}
	}
}

// event is the pull as bootc's ProgressBytes event.
func (p *pull) event() bytesEvent {
	ev := bytesEvent{
		Type:        "ProgressBytes",
		Task:        "pulling",
		Description: "Pulling Image: " + p.ref,
		ID:          p.ref,
		Subtasks:    make([]subTaskBytes, 0, len(p.layers)),
	}
	for _, l := range p.layers {
		total := l.total()
		sub := subTaskBytes{
			Subtask:     "layer",
			Description: "Layer: " + shortDigest(string(l.info.Digest)),
			ID:          string(l.info.Digest),
		}
		switch l.state {
		case layerPending:
			ev.BytesTotal += total
			continue
		case layerActive:
			ev.BytesTotal += total
			ev.Bytes += l.fetched
			sub.Bytes = l.fetched
			if l.size >= 0 {
				sub.BytesTotal = total
			}
		case layerDone:
			ev.BytesTotal += total - l.cached
			ev.Bytes += total - l.cached
			ev.BytesCached += l.cached
			ev.Steps++
			sub.Bytes, sub.BytesCached, sub.BytesTotal = total, l.cached, total
		case layerSkipped:
			ev.BytesCached += total
			ev.StepsCached++
			sub.Bytes, sub.BytesCached, sub.BytesTotal = total, total, total
		}
		ev.Subtasks = append(ev.Subtasks, sub)
	}
	ev.StepsTotal = uint64(len(p.layers)) - ev.StepsCached
	return ev
}

// shortDigest is the first 12 characters of a digest's hex, as podman shows
// layer and image IDs.
func shortDigest(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 {
		d = d[i+1:]
	}
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}
