package gitserver

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// Tokens checks HTTP credentials against a file of "NAME:SHA256-HEX" lines.
// The file is read on every check, so edits apply without a restart.
type Tokens struct {
	File string
}

// Check returns the name of the token, or false. Every line is compared in
// constant time, so timing does not tell how much of a token matched.
func (t Tokens) Check(token string) (string, bool) {
	if t.File == "" || token == "" {
		return "", false
	}
	f, err := os.Open(t.File)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sum := sha256.Sum256([]byte(token))
	got := []byte(hex.EncodeToString(sum[:]))
	name, found := "", false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		n, h, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if subtle.ConstantTimeCompare(got, []byte(strings.ToLower(strings.TrimSpace(h)))) == 1 && !found {
			name, found = strings.TrimSpace(n), true
		}
	}
	return name, found
}

// HashToken is the line to add to a tokens file for name and token.
func HashToken(name, token string) string {
	sum := sha256.Sum256([]byte(token))
	return fmt.Sprintf("%s:%s", name, hex.EncodeToString(sum[:]))
}
