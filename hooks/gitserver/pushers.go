package gitserver

import (
	"fmt"

	"github.com/deployer/deployer/deployer"
)

// notAdmitted is the one-line reason an authenticated pusher may not use
// app (apps.APP.pushers), or "" if it may. Both transports ask it before
// git runs, for git-upload-pack as for git-receive-pack: who may not deploy
// an app may not read its code either.
func notAdmitted(app *deployer.App, pusher string) string {
	if app.Admits(pusher) {
		return ""
	}
	return fmt.Sprintf("pusher %q may not push to or fetch from app %s: it is not in apps.%s.pushers", pusher, app.Name(), app.Name())
}
