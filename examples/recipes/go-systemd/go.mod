module example.com/recipe-go-systemd

go 1.23

require github.com/coreos/go-systemd/v22 v22.7.0

require golang.org/x/sys v0.1.0 // indirect
