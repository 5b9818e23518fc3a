package statuspage

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/deployer/deployer/deployer"
	"github.com/deployer/deployer/internal/escape"
	"github.com/deployer/deployer/releases"
)

// Source is what the page shows and acts on: the daemon
// (*deployer.Daemon). Status, Releases and History must not wait for a
// running operation.
type Source interface {
	// Status is every configured app with its workers.
	Status() []deployer.Status
	// Releases is app's releases, newest first, and the live one's id.
	Releases(app string) ([]*releases.Release, string, error)
	// History is app's ledger, oldest first.
	History(app string) ([]releases.Event, error)
	// Logs writes the build log of release build of app (lines and follow
	// unused: 0 and false).
	Logs(ctx context.Context, app, build string, lines int, follow bool, out io.Writer) error
	// Rollback makes release to of app live again, as `deployer rollback`.
	Rollback(ctx context.Context, app, to, by string, out io.Writer) error
}

// Defaults of Options.
const (
	DefaultEvery        = 2 * time.Second
	DefaultTimeline     = 50
	DefaultBuildLogTail = 256 << 10
)

// Options tune a Page; the zero value takes the defaults.
type Options struct {
	// Log is where refused rollbacks and failed renders are logged; nil
	// discards.
	Log *slog.Logger
	// Every is how often a live stream looks at the workers (default 2s).
	Every time.Duration
	// Timeline is how many ledger events of an app the page shows,
	// newest first (default 50).
	Timeline int
	// BuildLogTail is the most of a build log a page shows: its end
	// (default 256 KiB).
	BuildLogTail int
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Page is the status page, an http.Handler. Make it with New.
type Page struct {
	src    Source
	opts   Options
	log    *slog.Logger
	tmpl   *template.Template
	mux    *http.ServeMux
	secret []byte // keys the rollback form's tokens; new at every start
	origin *http.CrossOriginProtection
	hub    *hub
	ledger *ledgerCache
	now    func() time.Time
}

// New is the status page of src.
func New(src Source, opts Options) *Page {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Every <= 0 {
		opts.Every = DefaultEvery
	}
	if opts.Timeline <= 0 {
		opts.Timeline = DefaultTimeline
	}
	if opts.BuildLogTail <= 0 {
		opts.BuildLogTail = DefaultBuildLogTail
	}
	p := &Page{
		src: src, opts: opts, log: opts.Log,
		secret: make([]byte, 32),
		origin: http.NewCrossOriginProtection(),
		hub:    newHub(),
		ledger: newLedgerCache(src),
		now:    time.Now,
	}
	rand.Read(p.secret) // never fails (crypto/rand)
	p.tmpl = template.Must(template.New("").Funcs(p.funcs()).ParseFS(templateFS, "templates/*.html"))
	static, _ := fs.Sub(staticFS, "static")
	p.origin.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.refuse(w, r, "cross-origin request")
	}))

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", p.serveIndex)
	mux.HandleFunc("GET /events", p.serveEvents)
	mux.HandleFunc("GET /apps/{app}/releases/{id}/build", p.serveBuildLog)
	mux.HandleFunc("GET /apps/{app}/rollback", p.serveConfirm)
	mux.Handle("POST /apps/{app}/rollback", p.origin.Handler(http.HandlerFunc(p.serveRollback)))
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	p.mux = mux
	return p
}

// ServeHTTP serves the page with headers that keep it out of caches and
// frames and forbid any script or style not served by the page itself.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	p.mux.ServeHTTP(w, r)
}

// Notify tells the page of an event of app's ledger, once written; it
// never blocks (deployer.Options.OnEvent).
func (p *Page) Notify(app string, _ releases.Event) {
	p.ledger.changed(app)
	p.hub.publish()
}

// EndStreams ends every live stream open now, so that the admin server
// can shut down at once (http.Server.RegisterOnShutdown); the browsers
// connect again, to whichever daemon serves then. The ledger is read
// afresh after it: another daemon may have written it meanwhile.
func (p *Page) EndStreams() {
	p.ledger.forget()
	p.hub.end()
}

// render executes template name into a buffer first, so that a failure
// is a clean 500 rather than half a page.
func (p *Page) render(w http.ResponseWriter, code int, name string, data any) {
	var b bytes.Buffer
	if err := p.tmpl.ExecuteTemplate(&b, name, data); err != nil {
		p.log.Error("status page: render", "template", name, "err", err)
		http.Error(w, "the page could not be rendered: see the daemon's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

// problem is a page that says what went wrong, with a way back.
type problem struct {
	Title, Message string
}

func (p *Page) fail(w http.ResponseWriter, code int, title, msg string) {
	p.render(w, code, "problem.html", problem{Title: title, Message: msg})
}

// failRead answers a request whose app could not be read from the
// source: 404 for an app not configured.
func (p *Page) failRead(w http.ResponseWriter, app string, err error) {
	if errors.Is(err, deployer.ErrUnknownApp) {
		p.fail(w, http.StatusNotFound, "No such app", "No app "+escape.Controls(app)+" is configured.")
		return
	}
	p.log.Error("status page: read", "app", app, "err", err)
	p.fail(w, http.StatusInternalServerError, "Could not read "+escape.Controls(app), escape.Controls(err.Error()))
}
