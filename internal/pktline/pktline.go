package pktline

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// ErrFlush marks a flush-pkt ("0000").
var ErrFlush = errors.New("flush-pkt")

// maxLen is the longest pkt-line git sends or accepts, header included.
const maxLen = 65520

// Read reads one pkt-line; a flush-pkt returns ErrFlush.
func Read(r *bufio.Reader) (string, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", fmt.Errorf("read pkt-line: %w", err)
	}
	n, err := strconv.ParseUint(string(hdr[:]), 16, 16)
	if err != nil {
		return "", fmt.Errorf("read pkt-line: bad length %q", hdr)
	}
	if n == 0 {
		return "", ErrFlush
	}
	if n < 4 {
		return "", fmt.Errorf("read pkt-line: bad length %d", n)
	}
	buf := make([]byte, n-4)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", fmt.Errorf("read pkt-line: %w", err)
	}
	s := string(buf)
	if len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	return s, nil
}

// ReadSection reads pkt-lines up to a flush-pkt.
func ReadSection(r *bufio.Reader) ([]string, error) {
	var out []string
	for {
		s, err := Read(r)
		if errors.Is(err, ErrFlush) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
}

// Write writes s as one pkt-line; s includes its newline, if any.
func Write(w io.Writer, s string) error {
	if len(s)+4 > maxLen {
		return fmt.Errorf("write pkt-line: %d bytes, more than a pkt-line holds", len(s))
	}
	_, err := fmt.Fprintf(w, "%04x%s", len(s)+4, s)
	return err
}

// Flush writes a flush-pkt.
func Flush(w io.Writer) error {
	_, err := io.WriteString(w, "0000")
	return err
}
