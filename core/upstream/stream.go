package upstream

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/imaginebot/imaginebot/core"
)

// consumeStream reads an SSE body to its end ([DONE] or EOF). On a read
// error it returns the error together with what arrived before it (which
// may already hold the image).
func consumeStream(r io.Reader, max int, progress func(core.GenProgress)) (result, error) {
	st := &streamState{max: max, progress: progress, percent: -1, lastPct: -1}
	sr := newSSEReader(r, max)
	for {
		data, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				return result{}, errTooLarge
			}
			return st.acc.finish(), err
		}
		if isDone(data) {
			break
		}
		if len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		if err := st.feed(data); err != nil {
			return result{}, err
		}
	}
	res := st.acc.finish()
	if len(res.refs) == 0 && strings.TrimSpace(res.text) == "" && st.malformed > 0 {
		return result{}, &gatewayError{status: 200, malformed: true,
			why: fmt.Sprintf("%d of %d stream chunks were not JSON", st.malformed, st.chunks), body: st.sample}
	}
	return res, nil
}

// streamState accumulates a stream's chunks and reports progress.
type streamState struct {
	acc       accumulator
	max       int
	progress  func(core.GenProgress)
	lines     map[int]*lineTracker // content text, per choice index
	reasoning lineTracker

	percent   int // newest percentage seen, -1 before any
	lastText  string
	lastPct   int
	chunks    int
	malformed int
	sample    []byte // the first malformed chunk, for the operator
}

func (s *streamState) feed(data []byte) error {
	s.chunks++
	var ch completion
	if err := json.Unmarshal(data, &ch); err != nil {
		// Keep going: a relay's odd line ("data: ping") must not fail a job.
		s.malformed++
		if s.sample == nil {
			s.sample = append([]byte(nil), data[:min(len(data), 1024)]...)
		}
		return nil
	}
	if ae, ok := decodeAPIError(ch.Error); ok {
		return &gatewayError{status: 200, api: ae, malformed: ae.Message == "", why: "error object in the stream", body: data}
	}
	for _, c := range ch.Choices {
		m := c.Delta
		if m == nil {
			m = c.Message
		}
		if m == nil {
			continue
		}
		s.acc.add(c.Index, m, "")
		if s.acc.size > s.max {
			return errTooLarge
		}
		s.track(c.Index, m)
	}
	return nil
}

// track reports progress for the text of a delta, unless it is only image
// markdown or image data.
func (s *streamState) track(i int, m *message) {
	if s.progress == nil {
		return
	}
	var text string
	if r := m.ReasoningContent + m.Reasoning; r != "" {
		s.reasoning.add(r)
		text = s.reasoning.text()
	}
	var content strings.Builder
	for _, p := range m.Content.parts {
		content.WriteString(p.Text)
	}
	if content.Len() > 0 {
		if s.lines == nil {
			s.lines = map[int]*lineTracker{}
		}
		t := s.lines[i]
		if t == nil {
			t = &lineTracker{}
			s.lines[i] = t
		}
		t.add(content.String())
		if x := t.text(); x != "" {
			text = x
		}
	}
	if text == "" {
		return
	}
	if p := lastPercent(text); p >= 0 {
		s.percent = p
	}
	if text == s.lastText && s.percent == s.lastPct {
		return
	}
	s.lastText, s.lastPct = text, s.percent
	s.progress(core.GenProgress{Percent: s.percent, Text: text})
}

// maxProgressLine: a longer line is image data arriving in pieces, not progress.
const maxProgressLine = 4 << 10

// lineTracker follows streamed text line by line and keeps the newest line
// that reads as progress.
type lineTracker struct {
	cur  []byte
	over bool // cur outgrew maxProgressLine
	last string
}

func (t *lineTracker) add(s string) {
	for {
		seg, rest, nl := strings.Cut(s, "\n")
		if !t.over {
			if len(t.cur)+len(seg) > maxProgressLine {
				t.over, t.cur = true, t.cur[:0]
			} else {
				t.cur = append(t.cur, seg...)
			}
		}
		if !nl {
			return
		}
		if !t.over {
			if p := progressText(string(t.cur)); p != "" {
				t.last = p
			}
		}
		t.cur, t.over = t.cur[:0], false
		s = rest
	}
}

// text is the progress text of the line being received, or else of the
// last complete one.
func (t *lineTracker) text() string {
	if !t.over {
		if p := progressText(string(t.cur)); p != "" {
			return p
		}
	}
	return t.last
}

var (
	// Markdown images and links (also unfinished ones still streaming in),
	// bare URLs and data URIs: not progress.
	imageTextRe = regexp.MustCompile(`!?\[[^\]]*\]\([^)]*\)?|!?\[[^\]]*$|(?i:https?://|data:)\S*`)
	percentRe   = regexp.MustCompile(`(\d{1,3})(?:\.\d+)?\s*[%％]`)
)

// progressText is line without image references, or "" when nothing
// readable is left.
func progressText(line string) string {
	t := strings.TrimSpace(imageTextRe.ReplaceAllString(line, ""))
	if !strings.ContainsFunc(t, func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }) {
		return ""
	}
	return t
}

// lastPercent is the last "NN%" in s (0–100), or -1.
func lastPercent(s string) int {
	m := percentRe.FindAllStringSubmatch(s, -1)
	for i := len(m) - 1; i >= 0; i-- {
		if n, err := strconv.Atoi(m[i][1]); err == nil && n <= 100 {
			return n
		}
	}
	return -1
}

// idleReader calls reset whenever bytes arrive, to push an idle deadline back.
type idleReader struct {
	r     io.Reader
	reset func(time.Duration) bool
	d     time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.reset(r.d)
	}
	return n, err
}
