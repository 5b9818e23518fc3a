// Package statuspage is the daemon's status page, mounted at / of the admin
// listener (admin.Handler.Page): every app with its live release, its
// workers and the draining ones, the ledger as a timeline with each
// operation's phases drawn as a bar and failures with their reason, a
// release's build log, and one action, Roll back.
//
// It is plain HTML rendered on the server (html/template) with a little
// JavaScript, all embedded in the binary. The page follows the daemon
// without a reload: /events is a stream of server-sent events, each
// carrying the page's sections that changed, rendered by the same
// templates as the page. A stream is told at once when the ledger is
// written (Notify, fed by deployer.Options.OnEvent) and looks again every
// few seconds for what has no event (workers starting, draining, exiting).
//
// Invariants:
//   - a GET or HEAD never changes anything; the only change, a rollback, is
//     a POST that needs a token bound to the user (HMAC of the user's name
//     under a secret of this process), the same token in a SameSite=Strict
//     cookie, and a same-origin request by Origin or Sec-Fetch-Site
//     (http.CrossOriginProtection); any of them missing is a 403 and
//     nothing is done;
//   - a rollback goes through Source.Rollback, the path of `deployer
//     rollback`, recorded as by "status page (USER)", and only if the
//     release live when the user confirmed is live still;
//   - every string from a repository or the ledger (subjects, reasons,
//     build output) is HTML-escaped by the templates and has its control
//     characters written as escapes; pages forbid inline script and
//     framing (Content-Security-Policy);
//   - the page never waits for a running operation: it reads the daemon's
//     published status and the disk, as `deployer status` does.
//
// The package assumes the auth in front of it (admin.Handler): admin.User
// names the user a rollback is recorded under.
package statuspage
