package statuspage

import (
	"html/template"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/deployer/deployer/internal/escape"
	"github.com/deployer/deployer/releases"
)

func (p *Page) funcs() template.FuncMap {
	return template.FuncMap{
		"secs": secs,
		"ago":  func(t time.Time) string { return ago(p.now(), t) },
		"utc":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
		"iso":  func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"join": strings.Join,
	}
}

type indexData struct {
	Fragments []fragment
	Now       time.Time
}

func (p *Page) serveIndex(w http.ResponseWriter, r *http.Request) {
	frags, err := p.fragments()
	if err != nil {
		p.log.Error("status page", "err", err)
		p.fail(w, http.StatusInternalServerError, "The page could not be rendered", "See the daemon's log.")
		return
	}
	p.render(w, http.StatusOK, "index.html", indexData{Fragments: frags, Now: p.now()})
}

type buildLogData struct {
	App     string
	Release *releaseView
	Text    string
	Cut     int64 // bytes left out at the start
	Size    int64
}

// serveBuildLog shows the end of a release's build log (opts.BuildLogTail
// bytes), read by the same code as `deployer logs --build`.
func (p *Page) serveBuildLog(w http.ResponseWriter, r *http.Request) {
	app, id := r.PathValue("app"), r.PathValue("id")
	if n, ok := releases.ParseID(id); !ok || id != "v"+strconv.Itoa(n) {
		p.fail(w, http.StatusNotFound, "No such release", "A release is named v1, v2, …")
		return
	}
	list, _, err := p.src.Releases(app)
	if err != nil {
		p.failRead(w, app, err)
		return
	}
	var rel *releases.Release
	for _, x := range list {
		if x.ID == id {
			rel = x
		}
	}
	if rel == nil {
		p.fail(w, http.StatusNotFound, "No such release", app+" has no release "+id+".")
		return
	}
	t := &tail{max: p.opts.BuildLogTail}
	if err := p.src.Logs(r.Context(), app, id, 0, false, t); err != nil {
		code := http.StatusInternalServerError
		if rel.Status == releases.Pruned {
			code = http.StatusNotFound
		}
		p.fail(w, code, "No build log", escape.Controls(err.Error()))
		return
	}
	text, cut := t.text()
	p.render(w, http.StatusOK, "buildlog.html", buildLogData{
		App: app, Release: newReleaseView(rel), Text: cleanLog(text), Cut: cut, Size: t.size,
	})
}

// tail keeps the last max bytes written to it, from the start of a line.
type tail struct {
	max  int
	buf  []byte
	size int64 // every byte written
}

func (t *tail) Write(b []byte) (int, error) {
	t.size += int64(len(b))
	t.buf = append(t.buf, b...)
	if len(t.buf) > 2*t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(b), nil
}

// text is what was kept and how many bytes before it were not.
func (t *tail) text() (string, int64) {
	b := t.buf
	if len(b) > t.max {
		b = b[len(b)-t.max:]
	}
	if int64(len(b)) < t.size {
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			b = b[i+1:] // a cut line is dropped whole
		}
	}
	return string(b), t.size - int64(len(b))
}

// ansi matches terminal escape sequences: colours (CSI) and titles (OSC).
var ansi = regexp.MustCompile(`\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)`)

// cleanLog is build output for a page: colour sequences dropped (they mean
// nothing there), a line overwritten with \r shown as its last state, any
// other control character written as an escape. The template escapes
// HTML.
func cleanLog(s string) string {
	s = ansi.ReplaceAllString(s, "")
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		l = strings.TrimSuffix(l, "\r")
		if j := strings.LastIndexByte(l, '\r'); j >= 0 {
			l = l[j+1:]
		}
		lines[i] = escape.Controls(l)
	}
	return strings.Join(lines, "\n")
}
