package upstream

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// errLineTooLong is returned for an SSE line over the reader's cap.
var errLineTooLong = errors.New("upstream: SSE line too long")

// sseReader reads the data lines of a Server-Sent Events stream.
//
// Every "data:" line is one payload (with or without the space after the
// colon). Gateways send one JSON chunk per data line, and some omit the blank
// line between events, so lines are not joined into multi-line events as the
// SSE spec would. Comments (":" keep-alives), event:, id: and retry: lines and
// blank lines are skipped. Lines end in "\n" or "\r\n".
//
// Lines have no length cap short of max: a data-URI image arrives as one
// line of megabytes, which bufio.Scanner's 64 KiB default would truncate.
type sseReader struct {
	r     *bufio.Reader
	max   int
	line  []byte // reused for lines longer than r's buffer
	first bool
}

func newSSEReader(r io.Reader, max int) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 64<<10), max: max, first: true}
}

// Next returns the payload of the next data line, valid until the next call,
// or io.EOF at the end of the stream (a last line without a newline is still
// returned first), or the reader's error.
func (s *sseReader) Next() ([]byte, error) {
	for {
		line, err := s.readLine()
		if s.first {
			s.first = false
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")) // a BOM
		}
		if data, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			if len(data) > 0 && data[0] == ' ' {
				data = data[1:]
			}
			if err != nil && err != io.EOF {
				return nil, err // a line cut short by a read error is not a payload
			}
			return data, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// readLine returns the next line without its end of line, and io.EOF (or the
// read error) with the last line.
func (s *sseReader) readLine() ([]byte, error) {
	frag, err := s.r.ReadSlice('\n')
	if err != bufio.ErrBufferFull {
		return trimEOL(frag), err
	}
	s.line = append(s.line[:0], frag...)
	for {
		if len(s.line) > s.max {
			return nil, fmt.Errorf("%w (over %d bytes)", errLineTooLong, s.max)
		}
		frag, err = s.r.ReadSlice('\n')
		if len(s.line)+len(frag) > cap(s.line) {
			// Double: append's gentler growth copies a 5 MB line about 25 MB.
			grown := make([]byte, len(s.line), 2*cap(s.line)+len(frag))
			copy(grown, s.line)
			s.line = grown
		}
		s.line = append(s.line, frag...)
		if err != bufio.ErrBufferFull {
			return trimEOL(s.line), err
		}
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// isDone reports the end-of-stream marker.
func isDone(data []byte) bool {
	return string(bytes.TrimSpace(data)) == "[DONE]"
}
