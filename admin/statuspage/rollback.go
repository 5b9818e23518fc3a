package statuspage

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
	"sync"

	"github.com/deployer/deployer/admin"
	"github.com/deployer/deployer/internal/escape"
	"github.com/deployer/deployer/releases"
)

// csrfCookie carries the rollback form's token too. SameSite=Strict: a
// browser sends it only with requests made from the page itself, while it
// sends the cached basic-auth credentials with any.
const csrfCookie = "deployer_csrf"

// token is user's rollback form token: an HMAC of the name under this
// process's secret, so it needs no storage and a token of one user is no
// good to another.
func (p *Page) token(user string) string {
	m := hmac.New(sha256.New, p.secret)
	m.Write([]byte("rollback\x00" + user))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkToken says whether r carries user's token in both the form and the
// cookie.
func (p *Page) checkToken(r *http.Request, user string) bool {
	want := []byte(p.token(user))
	c, err := r.Cookie(csrfCookie)
	return user != "" && err == nil &&
		hmac.Equal([]byte(r.PostFormValue("csrf")), want) && hmac.Equal([]byte(c.Value), want)
}

type confirmData struct {
	App     string
	Live    *releaseView
	Target  *releaseView
	Forward bool // the target is newer than the live release
	Token   string
}

// serveConfirm asks to confirm a rollback of an app to the release of
// ?to= (default: the previous good one, as `deployer rollback`). It
// changes nothing.
func (p *Page) serveConfirm(w http.ResponseWriter, r *http.Request) {
	app := r.PathValue("app")
	list, live, err := p.src.Releases(app)
	if err != nil {
		p.failRead(w, app, err)
		return
	}
	to := r.URL.Query().Get("to")
	var target, current *releases.Release
	for _, x := range list {
		if x.ID == to {
			target = x
		}
		if x.ID == live {
			current = x
		}
	}
	switch {
	case current == nil:
		p.fail(w, http.StatusConflict, "Nothing to roll back", app+" has no live release.")
		return
	case to == "":
		if target = releases.PreviousGood(list, live); target == nil {
			p.fail(w, http.StatusConflict, "Nothing to roll back to",
				"No release of "+app+" older than "+live+" was live and is still on disk.")
			return
		}
	case target == nil:
		p.fail(w, http.StatusNotFound, "No such release", app+" has no release "+escape.Controls(to)+".")
		return
	case !rollbackable(target, live):
		p.fail(w, http.StatusConflict, "Cannot roll back to "+target.ID,
			target.ID+" is "+string(target.Status)+": only a release that was live and is still on disk can go live again.")
		return
	}
	user := admin.User(r.Context())
	tok := p.token(user)
	http.SetCookie(w, &http.Cookie{
		Name: csrfCookie, Value: tok, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	p.render(w, http.StatusOK, "confirm.html", confirmData{
		App: app, Live: newReleaseView(current), Target: newReleaseView(target),
		Forward: target.Number > current.Number, Token: tok,
	})
}

type resultData struct {
	App, From, To string
	Err           string // "" if it went live
	Output        string
	Current       *appView // the app as it is now
}

// serveRollback rolls an app back to the release the user confirmed, if
// the release live then is live still. The origin check is done before
// (http.CrossOriginProtection); the token is checked here.
func (p *Page) serveRollback(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		p.fail(w, http.StatusBadRequest, "Bad request", escape.Controls(err.Error()))
		return
	}
	user := admin.User(r.Context())
	if !p.checkToken(r, user) {
		p.refuse(w, r, "no valid form token")
		return
	}
	app, to, from := r.PathValue("app"), r.PostFormValue("to"), r.PostFormValue("from")
	_, live, err := p.src.Releases(app)
	if err != nil {
		p.failRead(w, app, err)
		return
	}
	if to == "" || from == "" {
		p.fail(w, http.StatusBadRequest, "Bad request", "The form names no release.")
		return
	}
	if live != from {
		p.fail(w, http.StatusConflict, "Nothing was done",
			"The live release of "+app+" is now "+orNone(live)+", not "+escape.Controls(from)+
				" as when you confirmed. Look at the page again before you roll back.")
		return
	}
	by := "status page (" + user + ")"
	p.log.Info("status page: rollback", "app", app, "to", to, "from", from, "by", by, "peer", r.RemoteAddr)
	out := &capped{max: 64 << 10}
	err = p.src.Rollback(r.Context(), app, to, by, out)
	res := resultData{App: app, From: from, To: to, Output: cleanLog(out.String())}
	code := http.StatusOK
	if err != nil {
		res.Err, code = escape.Controls(err.Error()), http.StatusConflict
	}
	for _, st := range p.src.Status() {
		if st.App == app {
			v := p.app(st)
			res.Current = &v
		}
	}
	p.render(w, code, "result.html", res)
}

// refuse answers 403 to a rollback that is not proven to come from the
// page, and logs it: it may be an attack on a logged-in browser.
func (p *Page) refuse(w http.ResponseWriter, r *http.Request, why string) {
	p.log.Warn("status page: rollback refused", "why", why, "user", admin.User(r.Context()),
		"peer", r.RemoteAddr, "origin", r.Header.Get("Origin"), "path", r.URL.Path)
	p.fail(w, http.StatusForbidden, "Refused",
		"This request did not come from the status page ("+why+"). Nothing was done. "+
			"Open the page again and use its Roll back button.")
}

// capped keeps the first max bytes of an operation's output. The daemon
// may still write to it after Rollback returned (a client that left), so
// it is locked.
type capped struct {
	mu  sync.Mutex
	max int
	b   strings.Builder
}

func (c *capped) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - c.b.Len(); room > 0 {
		c.b.Write(b[:min(len(b), room)])
	}
	return len(b), nil
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

func orNone(id string) string {
	if id == "" {
		return "none"
	}
	return id
}
