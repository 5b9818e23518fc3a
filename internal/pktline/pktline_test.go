package pktline

import (
	"bufio"
	"errors"
	"strings"
	"testing"
)

func TestReadSection(t *testing.T) {
	cases := []struct {
		in   string
		want []string // nil: an error
	}{
		{"0000", []string{}},
		{"000aabcdef0000", []string{"abcdef"}},
		{"000cversion\n0009a b c0000", []string{"version", "a b c"}},
		{"0004" + "0000", []string{""}},
		{"0003x0000", nil},               // shorter than its own header
		{"00zz0000", nil},                // not hex
		{"000aabc", nil},                 // cut short
		{"000aabcdef", nil},              // no flush-pkt
		{"", nil},                        // nothing
		{"0008abcd000", nil},             // truncated flush
		{"ffffabcd0000", nil},            // longer than the input
		{"0006\n\n0000", []string{"\n"}}, // only the last newline goes
	}
	for _, c := range cases {
		got, err := ReadSection(bufio.NewReader(strings.NewReader(c.in)))
		if c.want == nil {
			if err == nil {
				t.Errorf("%q: %q, want an error", c.in, got)
			}
			continue
		}
		if err != nil || strings.Join(got, "|") != strings.Join(c.want, "|") || len(got) != len(c.want) {
			t.Errorf("%q: %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestWriteThenReadIsTheSameLine(t *testing.T) {
	var b strings.Builder
	for _, s := range []string{"# service=git-receive-pack\n", "ok refs/heads/main\n", "ng refs/heads/main deploy failed: build\n"} {
		if err := Write(&b, s); err != nil {
			t.Fatal(err)
		}
	}
	Flush(&b)
	if !strings.HasPrefix(b.String(), "001f# service=git-receive-pack\n") {
		t.Errorf("framing: %q", b.String())
	}
	got, err := ReadSection(bufio.NewReader(strings.NewReader(b.String())))
	if err != nil || strings.Join(got, "|") != "# service=git-receive-pack|ok refs/heads/main|ng refs/heads/main deploy failed: build" {
		t.Errorf("%q, %v", got, err)
	}
	if _, err := Read(bufio.NewReader(strings.NewReader("0000"))); !errors.Is(err, ErrFlush) {
		t.Errorf("flush-pkt: %v", err)
	}
	if err := Write(&b, strings.Repeat("x", maxLen)); err == nil {
		t.Error("a line longer than a pkt-line holds was written")
	}
}
