package hooks

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// errFlush marks a flush-pkt ("0000").
var errFlush = errors.New("flush-pkt")

// readPkt reads one pkt-line; a flush-pkt returns errFlush.
func readPkt(r *bufio.Reader) (string, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", fmt.Errorf("read pkt-line: %w", err)
	}
	n, err := strconv.ParseUint(string(hdr[:]), 16, 16)
	if err != nil {
		return "", fmt.Errorf("read pkt-line: bad length %q", hdr)
	}
	if n == 0 {
		return "", errFlush
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

// readSection reads pkt-lines up to a flush-pkt.
func readSection(r *bufio.Reader) ([]string, error) {
	var out []string
	for {
		s, err := readPkt(r)
		if errors.Is(err, errFlush) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
}

func writePkt(w io.Writer, s string) error {
	_, err := fmt.Fprintf(w, "%04x%s", len(s)+4, s)
	return err
}

func writeFlush(w io.Writer) error {
	_, err := io.WriteString(w, "0000")
	return err
}
