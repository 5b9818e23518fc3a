package escape

import "testing"

func TestControlsEscapesEveryControlButTab(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"plain", "fix the login page", "fix the login page"},
		{"unicode kept", "café ✓ 日本", "café ✓ 日本"},
		{"tab kept", "a\tb", "a\tb"},
		{"backslash kept", `C:\path`, `C:\path`},
		{"colour", "\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`},
		{"title", "\x1b]0;pwned\a", `\x1b]0;pwned\a`},
		{"clear line", "ok\r\x1b[2K", `ok\r\x1b[2K`},
		{"newline", "one\ntwo", `one\ntwo`},
		{"nul and del", "a\x00b\x7f", `a\x00b\x7f`},
		{"C1 CSI", "a\u009b31m", `a\u009b31m`},
		{"invalid UTF-8", "a\x9b31m\xff", `a\x9b31m\xff`},
		{"others named", "\b\f\v", `\b\f\v`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Controls(tc.in); got != tc.want {
				t.Fatalf("Controls(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
